//! The real Prometheus: Debian's `prometheus` package (taken from apt when the binary is not on
//! PATH), run as our own process on a free loopback port with its own database in the work
//! directory, scraping every second the jobs of ops/prometheus/prometheus.yml (same job names,
//! same `roles` labels) and evaluating the time-scaled copy of the shipped rules (`overlay`).
//! Also the HTTP API client the checks read it through.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use tokio::process::{Child, Command};

use connector_chaos::services::{kill_group, run, spawn_logged};

/// The shipped scrape configuration: the job names (and workers' `roles` labels) we keep.
pub const SHIPPED_CONFIG: &str = "ops/prometheus/prometheus.yml";

/// What the generated configuration scrapes.
#[derive(Debug, Default)]
pub struct Targets {
    pub ingress: Vec<String>,
    /// (`roles` label, address).
    pub workers: Vec<(&'static str, String)>,
    pub rabbitmq: String,
}

/// `prometheus` on PATH, else Debian's package's binary, installed by `ops/prometheus/install`
/// (not the package: its maintainer script would start the packaged service on :9090).
pub async fn ensure_installed() -> anyhow::Result<PathBuf> {
    if let Some(found) = which("prometheus") {
        return Ok(found);
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../prometheus/install");
    run(
        Command::new(&script).arg("prometheus"),
        "ops/prometheus/install prometheus",
    )
    .await?;
    which("prometheus").context("ops/prometheus/install left no prometheus on PATH")
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// The scrape jobs of `shipped` that we generate, each checked to be there, so that a renamed
/// job in the shipped file (which the rules and dashboards name) fails this check.
pub fn check_shipped_jobs(shipped: &str) -> anyhow::Result<()> {
    for needed in [
        "job_name: connector-ingress",
        "job_name: connector-workers",
        "job_name: rabbitmq",
        "roles: apply",
        "roles: relay+purge",
        "roles: poller",
    ] {
        if !shipped.contains(needed) {
            bail!(
                "{SHIPPED_CONFIG} has no `{needed}`: the generated configuration would not match it"
            );
        }
    }
    Ok(())
}

/// The generated configuration: the shipped jobs on our processes, every second.
pub fn config(targets: &Targets, rules: &Path) -> String {
    let list = |addrs: &[String]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut workers = String::new();
    for (roles, addr) in &targets.workers {
        workers.push_str(&format!(
            "      - targets: [\"{addr}\"]\n        labels:\n          roles: {roles}\n"
        ));
    }
    format!(
        r#"# Written by ops-live: the jobs of {SHIPPED_CONFIG}, on this run's processes.
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {}
scrape_configs:
  - job_name: connector-ingress
    static_configs:
      - targets: [{}]
  - job_name: connector-workers
    static_configs:
{workers}  - job_name: rabbitmq
    metrics_path: /metrics
    static_configs:
      - targets: ["{}"]
"#,
        rules.display(),
        list(&targets.ingress),
        targets.rabbitmq
    )
}

/// Our Prometheus process.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    pub api: Api,
}

/// Its HTTP API (cheap to clone: the alert watcher has its own).
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus on `port` (chosen before the stack, whose console asks it).
    pub async fn start(binary: &Path, dir: &Path, config: &str, port: u16) -> anyhow::Result<Self> {
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config)?;
        let data = dir.join("prometheus-data");
        std::fs::create_dir_all(&data)?;
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir);
        let child = spawn_logged(&mut command, &dir.join("prometheus.log"), "prometheus")?;
        let prometheus = Self {
            child: Some(child),
            api: Api {
                base: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?,
            },
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = prometheus
                .api
                .http
                .get(format!("{}/-/ready", prometheus.api.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                bail!(
                    "Prometheus not ready within 60 s; see {}",
                    dir.join("prometheus.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    pub async fn stop(&mut self) {
        kill_group(self.child.take()).await;
    }
}

impl Api {
    async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let answer: Value = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .send()
            .await
            .with_context(|| format!("GET {path}"))?
            .json()
            .await
            .with_context(|| format!("GET {path}: not JSON"))?;
        if answer["status"] != "success" {
            bail!("GET {path}: {}", answer);
        }
        Ok(answer["data"].clone())
    }

    /// The series an instant query returns (an error for a query Prometheus refuses).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.get("/api/v1/query", &[("query", expr)]).await?;
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().cloned().unwrap_or_default(),
            // A scalar or a string is one value.
            _ => vec![data["result"].clone()],
        })
    }

    /// Names of the alerts in state `firing`.
    pub async fn firing(&self) -> anyhow::Result<Vec<String>> {
        let data = self.get("/api/v1/alerts", &[]).await?;
        Ok(data["alerts"]
            .as_array()
            .map(|alerts| {
                alerts
                    .iter()
                    .filter(|a| a["state"] == "firing")
                    .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The rule groups Prometheus loaded, to prove the overlay is the one evaluated.
    pub async fn alert_rule_names(&self) -> anyhow::Result<Vec<String>> {
        let data = self.get("/api/v1/rules", &[("type", "alert")]).await?;
        let mut names = Vec::new();
        for group in data["groups"].as_array().into_iter().flatten() {
            for rule in group["rules"].as_array().into_iter().flatten() {
                if let Some(name) = rule["name"].as_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    /// Waits until every scrape target is up (`up == 1` for all of them).
    pub async fn wait_targets_up(&self, expected: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let up = self.query("up == 1").await.map(|s| s.len()).unwrap_or(0);
            if up >= expected {
                return Ok(());
            }
            if Instant::now() > deadline {
                let down = self.query("up == 0").await.unwrap_or_default();
                let names: Vec<String> = down
                    .iter()
                    .map(|s| format!("{} {}", s["metric"]["job"], s["metric"]["instance"]))
                    .collect();
                bail!("{up} of {expected} scrape targets up after {within:?}; down: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
