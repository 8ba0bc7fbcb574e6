//! The end-of-run table: the one-line summary (the row the README's result tables copy), one
//! line per figure, node losses, notes, and the first problems. It only prints what the run
//! and the checks measured.

use crate::cli::Cli;
use crate::console::out;
use crate::failover::Failover;
use crate::faults::FaultLog;
use crate::load::Snapshot;
use crate::soak::SoakSummary;
use crate::verify::Report;

/// Everything the table shows.
#[derive(Debug)]
pub struct Summary<'a> {
    pub cli: &'a Cli,
    pub report: &'a Report,
    pub totals: Snapshot,
    pub load_secs: f64,
    pub soak: Option<&'a SoakSummary>,
    pub faults: &'a FaultLog,
    /// Connections the proxies accepted: (broker, database).
    pub proxy_connections: (usize, usize),
}

impl Summary<'_> {
    pub fn print(&self) {
        let Self {
            cli,
            report,
            totals,
            load_secs,
            soak,
            faults,
            proxy_connections: (broker_connections, database_connections),
        } = *self;
        let mode = match (cli.soak, cli.cluster) {
            (Some(_), _) => "soak, single node",
            (None, true) => "3-node cluster",
            (None, false) => "single node",
        };
        out("");
        if let Some(soak) = soak {
            for line in &soak.lines {
                out(format!("  {line}"));
            }
            out("");
        }
        out(
            "| rounds | faults injected | requests sent | 200s | applied | lost | duplicated | ledger events republished (same event_id) |",
        );
        out("|---:|---:|---:|---:|---:|---:|---:|---:|");
        out(format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            if cli.soak.is_some() { 0 } else { cli.rounds },
            faults.injected,
            totals.sent,
            totals.ok,
            report.applied,
            report.acked_orders,
            report.lost,
            report.duplicated,
            report.ledger_republished
        ));
        out("");
        let rows: Vec<(String, String)> = vec![
            (
                "mode".into(),
                match cli.soak_plan() {
                    Some(plan) => format!(
                        "{mode}, {load_secs:.0} s of load (capacity measurement included), {} client tasks",
                        plan.concurrency
                    ),
                    None => format!(
                        "{mode}, {} s rounds, {load_secs:.0} s of load, {} client tasks",
                        cli.round_secs, cli.concurrency
                    ),
                },
            ),
            (
                "requests sent (HTTP)".into(),
                format!(
                    "{} ({} deliberate duplicate sends; {} logical requests)",
                    totals.sent, totals.duplicate_sends, totals.logical
                ),
            ),
            (
                "answers".into(),
                format!(
                    "{} × 200, {} × 503/5xx, {} timeouts, {} connection errors, {} other (unexpected)",
                    totals.ok,
                    totals.unavailable,
                    totals.timeouts,
                    totals.transport,
                    totals.rejected
                ),
            ),
            (
                "proxy connections accepted".into(),
                format!(
                    "broker {broker_connections}, database {database_connections} (reconnections included)"
                ),
            ),
            (
                "abandoned at the end".into(),
                format!(
                    "{} requests without a 200 when the run ended",
                    totals.abandoned
                ),
            ),
            (
                "acknowledged orders".into(),
                format!(
                    "{} (incl. {} conflict pairs)",
                    report.acked_orders, report.conflict_pairs
                ),
            ),
            ("applied exactly once".into(), report.applied.to_string()),
            (
                "lost / duplicated".into(),
                format!("{} / {}", report.lost, report.duplicated),
            ),
            (
                "acknowledged batches applied by one message".into(),
                format!("{} / {}", report.batches_applied_once, report.acked_batches),
            ),
            (
                "orders applied without a 200".into(),
                report.applied_without_200.to_string(),
            ),
            (
                "ledger queue".into(),
                format!(
                    "{} messages, {} distinct events",
                    report.ledger_messages, report.ledger_events
                ),
            ),
            (
                "ledger: same event_id twice (relay republish)".into(),
                format!(
                    "{} ({} after a lost confirm, {} confirmed but never marked published)",
                    report.ledger_republished,
                    report.republished_after_unconfirmed,
                    report.republished_after_lost_mark
                ),
            ),
            (
                "ledger: two events for one reference and type".into(),
                report.ledger_duplicated.to_string(),
            ),
            (
                "outbox unpublished".into(),
                report.outbox_unpublished.to_string(),
            ),
            (
                "final statuses without their notification".into(),
                report.unbacked_final.to_string(),
            ),
            (
                "quarantined: expected (conflict losers) / unexpected".into(),
                format!(
                    "{} / {}",
                    report.quarantined_expected, report.quarantined_unexpected
                ),
            ),
            (
                "intake DLQ: expected (poison) / unexpected".into(),
                format!(
                    "{} / {}",
                    report.intake_dlq_expected, report.intake_dlq_unexpected
                ),
            ),
            ("ledger DLQ".into(), report.ledger_dlq.to_string()),
            (
                "rows or events nobody sent".into(),
                report.unknown_rows.to_string(),
            ),
            (
                "unexpected answers".into(),
                report.unexpected_answers.to_string(),
            ),
            (
                "503s during a memory alarm / of them received by the workers".into(),
                format!("{} / {}", report.refused_in_alarm, report.refused_applied),
            ),
            (
                "failed run verdicts (soak sizes and memory, journal, mid-group proof)".into(),
                report.run_failures.to_string(),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            out(format!("  {key:<width$}  {value}"));
        }
        for line in &faults.node_losses {
            out(format!("  node loss: {line}"));
        }
        for line in &faults.mid_group {
            out(format!("  killed mid-group: {line}"));
        }
        if !faults.failovers.is_empty() {
            out(format!(
                "  postgresql: {}",
                failover_summary(&faults.failovers)
            ));
            for failover in &faults.failovers {
                out(format!("  {:?}: {}", failover.fault, failover.line()));
            }
        }
        for note in &report.notes {
            out(format!("  note: {note}"));
        }
        if !report.problems.is_empty() {
            out(format!("problems ({}; first 40):", report.problems.len()));
            for problem in report.problems.iter().take(40) {
                out(format!("  - {problem}"));
            }
        }
    }
}

/// The primary losses and their failover times as the workers saw them, then what readiness
/// and the relay showed through every cluster fault.
fn failover_summary(failovers: &[Failover]) -> String {
    format!(
        "{}\n  {}",
        first_commits(failovers),
        readiness_and_relay(failovers)
    )
}

fn readiness_and_relay(failovers: &[Failover]) -> String {
    let spans: Vec<f64> = failovers
        .iter()
        .filter_map(|f| f.seen.not_ready.map(|(a, b)| (b - a).as_secs_f64()))
        .collect();
    let still = failovers.iter().filter(|f| !f.seen.ready_at_end).count();
    let mut relay: Vec<f64> = failovers
        .iter()
        .filter_map(|f| f.seen.relay_after_commit.map(|d| d.as_secs_f64()))
        .collect();
    relay.sort_by(f64::total_cmp);
    format!(
        "/readyz said the database unreachable during {} of {} cluster faults (longest {:.1} s), {still} still so once the cluster was whole; the relay publishing again after the first commit: {}",
        spans.len(),
        failovers.len(),
        spans.iter().copied().fold(0.0, f64::max),
        match (relay.first(), relay.last()) {
            (Some(min), Some(max)) => format!(
                "min {min:.1} s, median {:.1} s, max {max:.1} s ({} of {})",
                relay[relay.len() / 2],
                relay.len(),
                failovers.len()
            ),
            _ => "never seen".into(),
        }
    )
}

fn first_commits(failovers: &[Failover]) -> String {
    let losses: Vec<&Failover> = failovers.iter().filter(|f| f.primary_lost()).collect();
    let mut seconds: Vec<f64> = losses
        .iter()
        .filter_map(|f| f.first_commit.map(|d| d.as_secs_f64()))
        .collect();
    seconds.sort_by(f64::total_cmp);
    let unseen = losses.len() - seconds.len();
    match (seconds.first(), seconds.last()) {
        (Some(min), Some(max)) => format!(
            "{} primary losses; from the fault to the first commit on the new primary: min {min:.1} s, median {:.1} s, max {max:.1} s{}",
            losses.len(),
            seconds[seconds.len() / 2],
            if unseen > 0 {
                format!("; {unseen} without a commit seen")
            } else {
                String::new()
            }
        ),
        _ => format!("{} primary losses, no commit seen after any", losses.len()),
    }
}
