//! Every dashboard panel's query, asked of the live Prometheus: each `expr` of every panel (rows'
//! nested panels included) of ops/grafana/dashboards/*.json, Grafana's variables replaced as
//! ops/check-ops does, must return at least one series, once with the run's traffic and once
//! more after the faults. The panels that have no data in such a run are listed, each with its
//! reason, in ops/prometheus/panels-without-data.txt; a listed one that has data fails the
//! check too, so the list cannot rot.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::prometheus::Api;

pub const DASHBOARDS: &str = "ops/grafana/dashboards";
pub const WITHOUT_DATA: &str = "ops/prometheus/panels-without-data.txt";

/// One query of one panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// `<dashboard file>#<panel id>/<refId>`: the list's key.
    pub key: String,
    pub title: String,
    pub expr: String,
}

/// Every panel query of every dashboard, variables replaced.
pub fn load(dir: &Path) -> anyhow::Result<Vec<PanelQuery>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut queries = Vec::new();
    for path in files {
        let file = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("dashboard file name")?
            .to_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let variables = template_values(&dashboard);
        walk(&file, &dashboard["panels"], &variables, &mut queries)?;
    }
    if queries.is_empty() {
        bail!("no panel query in {}", dir.display());
    }
    Ok(queries)
}

/// The dashboard's template variables: their current value, or every value.
fn template_values(dashboard: &Value) -> Vec<(String, String)> {
    let mut values = Vec::new();
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = variable["name"].as_str() else {
            continue;
        };
        let current = variable["current"]["value"]
            .as_str()
            .filter(|v| !v.is_empty() && *v != "$__all")
            .unwrap_or(".*");
        values.push((name.to_owned(), current.to_owned()));
    }
    values
}

fn walk(
    file: &str,
    panels: &Value,
    variables: &[(String, String)],
    queries: &mut Vec<PanelQuery>,
) -> anyhow::Result<()> {
    for panel in panels.as_array().into_iter().flatten() {
        let id = &panel["id"];
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
        for (index, target) in panel["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let reference = target["refId"]
                .as_str()
                .map_or_else(|| index.to_string(), str::to_owned);
            let expr = substitute(expr, variables);
            if let Some(left) = expr.find('$') {
                bail!(
                    "{file} panel {id} ({title}): unknown Grafana variable in {:?}",
                    &expr[left..]
                );
            }
            queries.push(PanelQuery {
                key: format!("{file}#{id}/{reference}"),
                title: title.clone(),
                expr,
            });
        }
        walk(file, &panel["panels"], variables, queries)?;
    }
    Ok(())
}

/// Grafana's built-in intervals as ops/check-ops replaces them (1m, 1h; `$__interval` 15s),
/// then the template variables.
fn substitute(expr: &str, variables: &[(String, String)]) -> String {
    let mut expr = expr
        .replace("$__rate_interval", "1m")
        .replace("${__rate_interval}", "1m")
        .replace("$__interval", "15s")
        .replace("${__interval}", "15s")
        .replace("$__range", "1h")
        .replace("${__range}", "1h");
    // Longest names first, so that `$kind` does not eat the start of `$kind_name`.
    let mut variables = variables.to_vec();
    variables.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    for (name, value) in variables {
        expr = expr
            .replace(&format!("${{{name}}}"), &value)
            .replace(&format!("${name}"), &value);
    }
    expr
}

/// The listed panels: key, and the reason it has no data in this run.
pub fn read_list(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut listed = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, reason) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        if reason.trim().is_empty() {
            bail!("{}:{}: {key} has no reason", path.display(), number + 1);
        }
        listed.insert(key.to_owned(), reason.trim().to_owned());
    }
    Ok(listed)
}

/// Series per query (or Prometheus's refusal).
pub type Pass = BTreeMap<String, Result<usize, String>>;

pub async fn ask(prometheus: &Api, queries: &[PanelQuery]) -> Pass {
    let mut pass = BTreeMap::new();
    for query in queries {
        let answer = prometheus
            .query(&query.expr)
            .await
            .map(|series| series.len())
            .map_err(|e| format!("{e:#}"));
        pass.insert(query.key.clone(), answer);
    }
    pass
}

/// The verdict over every pass: the panels with data (and those with data during a fault
/// only), and what is wrong (an unlisted panel empty in every pass, a listed one with data, a
/// listed key that names no query, a query Prometheus refused).
#[derive(Debug, Default)]
pub struct Verdict {
    pub with_data: usize,
    pub during_faults_only: Vec<String>,
    pub listed_empty: Vec<(String, String)>,
    pub problems: Vec<String>,
}

/// `passes`: (name, pass) in the order asked; names starting with "during" were asked during
/// a fault.
pub fn verdict(
    queries: &[PanelQuery],
    listed: &BTreeMap<String, String>,
    passes: &[(String, Pass)],
) -> Verdict {
    let mut verdict = Verdict::default();
    for query in queries {
        let label = format!("{} ({}): {}", query.key, query.title, query.expr);
        let answers: Vec<(&str, Result<usize, String>)> = passes
            .iter()
            .map(|(name, pass)| {
                let answer = pass.get(&query.key).cloned().unwrap_or(Ok(0));
                (name.as_str(), answer)
            })
            .collect();
        if let Some((name, Err(error))) = answers.iter().find(|(_, a)| a.is_err()) {
            verdict
                .problems
                .push(format!("{label}: refused by Prometheus ({name}): {error}"));
            continue;
        }
        let with_data: Vec<&str> = answers
            .iter()
            .filter(|(_, a)| a.as_ref().is_ok_and(|n| *n > 0))
            .map(|(name, _)| *name)
            .collect();
        match (listed.get(&query.key), with_data.is_empty()) {
            (None, false) => {
                verdict.with_data += 1;
                if with_data.iter().all(|name| name.starts_with("during")) {
                    verdict.during_faults_only.push(format!(
                        "{} ({}): {}",
                        query.key,
                        query.title,
                        with_data.join("; ")
                    ));
                }
            }
            (None, true) => verdict.problems.push(format!(
                "{label}: no series, before, during or after the faults"
            )),
            (Some(reason), true) => verdict
                .listed_empty
                .push((query.key.clone(), reason.clone())),
            (Some(_), false) => verdict.problems.push(format!(
                "{label}: has data ({}), but {WITHOUT_DATA} lists it as without: remove it from the list",
                with_data.join("; ")
            )),
        }
    }
    for key in listed.keys() {
        if !queries.iter().any(|q| &q.key == key) {
            verdict
                .problems
                .push(format!("{WITHOUT_DATA}: {key} is no panel query"));
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced() {
        let vars = vec![("kind".to_owned(), "payment".to_owned())];
        assert_eq!(
            substitute("rate(x{kind=\"$kind\"}[$__rate_interval]) / ${kind}", &vars),
            "rate(x{kind=\"payment\"}[1m]) / payment"
        );
    }
}
