//! The test overlay of the alert rules: a copy of the shipped ops/prometheus/alerts.yml,
//! generated at run time, with every duration divided by the time scale (`for:`, range
//! selectors `[10m]` and `offset 15m` alike: at 60, a minute of the shipped rules is a second
//! of the run), so that every alert keeps its shape (a window and a hold, in the same
//! proportion) and a run takes minutes instead of hours. Thresholds are not touched. The
//! shipped file is only read.
//!
//! A negative control can replace one alert's expression with one that never fires
//! (`--sabotage-alert`): the run must then time out naming it.

use anyhow::bail;

/// The shipped rules.
pub const SHIPPED_RULES: &str = "ops/prometheus/alerts.yml";

/// An expression that never returns a series.
pub const NEVER: &str = "vector(0) > 1";

/// The overlay's text, and the alert names it holds (in file order).
pub fn overlay(
    shipped: &str,
    scale: u32,
    sabotage: Option<&str>,
) -> anyhow::Result<(String, Vec<String>)> {
    let mut lines = Vec::new();
    let mut names = Vec::new();
    let mut current: Option<String> = None;
    // While skipping the rest of a replaced expression: the indentation of its `expr:` key.
    let mut skipping: Option<usize> = None;
    for line in shipped.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(key_indent) = skipping {
            if line.trim().is_empty() || indent > key_indent {
                continue;
            }
            skipping = None;
        }
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            let name = name.trim().to_owned();
            names.push(name.clone());
            current = Some(name);
        }
        if trimmed.starts_with("expr:") && sabotage.is_some() && current.as_deref() == sabotage {
            lines.push(format!("{}expr: {NEVER}", &line[..indent]));
            skipping = Some(indent);
            continue;
        }
        // Comments keep their text (they may quote durations).
        if trimmed.starts_with('#') {
            lines.push(line.to_owned());
        } else {
            lines.push(scale_line(line, scale)?);
        }
    }
    if let Some(name) = sabotage
        && !names.iter().any(|n| n == name)
    {
        bail!("--sabotage-alert {name}: no such alert in {SHIPPED_RULES}");
    }
    if names.is_empty() {
        bail!("no alert in {SHIPPED_RULES}");
    }
    Ok((lines.join("\n") + "\n", names))
}

/// One line with its durations scaled: the value of `for:`, and in expressions every duration
/// inside `[...]` and after `offset`.
fn scale_line(line: &str, scale: u32) -> anyhow::Result<String> {
    let trimmed = line.trim_start();
    if let Some(value) = trimmed.strip_prefix("for:") {
        let indent = &line[..line.len() - trimmed.len()];
        return Ok(format!(
            "{indent}for: {}",
            scale_duration(value.trim(), scale)?
        ));
    }
    let mut result = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        // The next duration position: after `[` or after `offset `.
        let bracket = rest.find('[').map(|i| (i + 1, ']'));
        let offset = rest.find("offset ").map(|i| (i + "offset ".len(), ' '));
        let next = match (bracket, offset) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        let Some((start, _)) = next else {
            result.push_str(rest);
            return Ok(result);
        };
        result.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        // `[` also opens label-free character classes in regular expressions (`connector[.]`):
        // only a token that is a duration is scaled.
        match scale_duration(token, scale) {
            Ok(scaled) if !token.is_empty() => result.push_str(&scaled),
            _ => result.push_str(token),
        }
        rest = &rest[end..];
    }
}

/// `10m` / 60 = `10s`; a result under a second is written in milliseconds.
fn scale_duration(text: &str, scale: u32) -> anyhow::Result<String> {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    let value: u64 = digits
        .parse()
        .map_err(|_| anyhow::anyhow!("not a duration: {text:?}"))?;
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => bail!("not a duration: {text:?}"),
    };
    let ms = (value * unit_ms / u64::from(scale.max(1))).max(1);
    Ok(if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_scaled_and_regex_classes_are_not() {
        let line =
            r#"min_over_time(x{queue=~"connector[.](intake)[.]dlq"}[10m]) unless y offset 15m"#;
        assert_eq!(
            scale_line(line, 60).unwrap(),
            r#"min_over_time(x{queue=~"connector[.](intake)[.]dlq"}[10s]) unless y offset 15s"#
        );
        assert_eq!(
            scale_line("        for: 1m", 60).unwrap(),
            "        for: 1s"
        );
        assert_eq!(
            scale_line("increase(x[1h])", 60).unwrap(),
            "increase(x[60s])"
        );
        assert_eq!(scale_line("rate(x[5m])", 600).unwrap(), "rate(x[500ms])");
    }

    #[test]
    fn a_sabotaged_expression_is_replaced_whole() {
        let shipped = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: |-\n          up == 0\n          or up > 2\n        for: 5m\n      - alert: B\n        expr: up == 1\n";
        let (text, names) = overlay(shipped, 60, Some("A")).unwrap();
        assert_eq!(names, ["A", "B"]);
        assert!(
            text.contains("        expr: vector(0) > 1\n        for: 5s\n"),
            "{text}"
        );
        assert!(text.contains("expr: up == 1"));
        assert!(overlay(shipped, 60, Some("C")).is_err());
    }
}
