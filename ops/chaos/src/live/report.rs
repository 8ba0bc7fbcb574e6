//! What the run prints at the end: the alert table (alert, fault, seconds to firing, seconds to
//! clear), the alerts not driven with their reasons, and the panels' verdict.

use std::time::Duration;

use crate::console::out;
use crate::faults::{NOT_DRIVEN, Outcome};
use crate::panels::{Verdict, WITHOUT_DATA};

fn seconds(d: Option<Duration>) -> String {
    d.map_or_else(
        || "TIMEOUT".to_owned(),
        |d| format!("{:.1}", d.as_secs_f64()),
    )
}

/// The alert table; returns the failures it shows.
pub fn alerts(outcomes: &[Outcome]) -> Vec<String> {
    let mut failures = Vec::new();
    out("");
    out(format!(
        "{:<36} {:>8} {:>8}  fault",
        "alert", "firing", "clear"
    ));
    for o in outcomes {
        let cleared = if o.fired.is_none() {
            "-".to_owned()
        } else {
            seconds(o.cleared)
        };
        out(format!(
            "{:<36} {:>8} {:>8}  {}{}",
            o.alert,
            seconds(o.fired),
            cleared,
            o.fault.describe(),
            o.note
                .as_deref()
                .map(|n| format!(" [{n}]"))
                .unwrap_or_default()
        ));
        if o.fired.is_none() {
            failures.push(format!(
                "{} did not fire within the timeout ({})",
                o.alert,
                o.fault.describe()
            ));
        } else if o.cleared.is_none() {
            failures.push(format!(
                "{} did not clear within the timeout after: {}",
                o.alert,
                o.fault.describe()
            ));
        } else if let Some(note) = &o.note {
            failures.push(format!("{}: {note}", o.alert));
        }
    }
    out(
        "(seconds from the fault to firing, and from its removal to clear; background faults: both from the fault)",
    );
    out("");
    out("alerts not driven by this run:");
    for (alert, reason) in NOT_DRIVEN {
        out(format!("  {alert}: {reason}"));
    }
    failures
}

/// The panels' verdict; returns the failures it shows.
pub fn panels(total: usize, verdict: &Verdict) -> Vec<String> {
    out("");
    out(format!(
        "panels: {} of {total} queries with data; {} listed without data in {WITHOUT_DATA}:",
        verdict.with_data,
        verdict.listed_empty.len()
    ));
    for (key, reason) in &verdict.listed_empty {
        out(format!("  {key}: {reason}"));
    }
    if !verdict.during_faults_only.is_empty() {
        out("with data only during a fault:");
        for line in &verdict.during_faults_only {
            out(format!("  {line}"));
        }
    }
    verdict.problems.clone()
}
