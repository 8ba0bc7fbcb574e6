//! Soak (`--soak SECS`): no faults, a long run at a fixed fraction of the capacity measured at
//! the start of the same run, sampling every process's memory, the tables' sizes and the nonce
//! purge, while a consumer keeps the ledger queue empty as the ledger would. The end of the run
//! is the fault harness's: drain, then every 200 checked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinHandle;

use crate::configs::NoncePurge;
use crate::console::out;
use crate::harness::Harness;
use crate::ledger_collector::LedgerCollector;
use crate::load::Bank;
use crate::quarantine_review;
use crate::services::rss_mib;
use crate::table_sizes;

/// How the soak is run.
#[derive(Debug, Clone, Copy)]
pub struct SoakPlan {
    pub seconds: u64,
    /// Fraction of the measured capacity to run at.
    pub load: f64,
    /// Skip the measurement: start this many orders-or-batches per second.
    pub rate: Option<f64>,
    pub calibrate_secs: u64,
    pub sample_secs: u64,
    pub concurrency: usize,
    /// The workers' nonce retention and purge interval for this run.
    pub nonce_retention_secs: u64,
    pub purge_interval_secs: u64,
    /// Every kind of data's retention (`--retention-secs`); None: the workers' defaults.
    pub retention_secs: Option<u64>,
}

impl SoakPlan {
    /// What the workers' configuration says of the nonce purge.
    pub fn nonce_purge(&self) -> NoncePurge {
        NoncePurge {
            retention_secs: self.nonce_retention_secs,
            interval_secs: self.purge_interval_secs,
            data_retention_secs: self.retention_secs,
        }
    }
}

/// One sample of the running system.
#[derive(Debug, Clone, Default)]
struct Sample {
    at_secs: f64,
    started: u64,
    ok: u64,
    ledger_taken: usize,
    intake: Option<u64>,
    /// MiB, per connector process (ingress-1, ingress-2, workers-1, workers-2), then RabbitMQ.
    rss: Vec<(String, Option<f64>)>,
    nonces: i64,
    oldest_nonce_secs: f64,
    /// Bytes per table, with indexes and TOAST.
    tables: BTreeMap<String, i64>,
    /// The evidence archive: bytes of its files, requests archived.
    archive_bytes: u64,
    archived: i64,
}

/// What the soak measured, for the final report.
#[derive(Debug, Default)]
pub struct SoakSummary {
    pub lines: Vec<String>,
    pub problems: Vec<String>,
}

/// Measures the capacity (unless given), then runs the paced load for the soak's length,
/// sampling. Returns the client tasks, still running, for the caller to stop.
pub async fn run(
    harness: &mut Harness,
    plan: SoakPlan,
    bank: &Arc<Bank>,
    db: &PgPool,
    ledger: &LedgerCollector,
) -> anyhow::Result<(Vec<JoinHandle<()>>, SoakSummary)> {
    let mut summary = SoakSummary::default();
    let rate = match plan.rate {
        Some(rate) => {
            summary.lines.push(format!(
                "rate: {rate:.1} orders-or-batches/s, as given (no capacity measured)"
            ));
            rate
        }
        None => {
            let capacity = measure_capacity(harness, plan, bank, db).await?;
            let rate = capacity * plan.load;
            summary.lines.push(format!(
                "capacity: {capacity:.1} orders-or-batches/s ({} s closed loop with {} clients, until drained); soak at {:.0} % of it: {rate:.1}/s",
                plan.calibrate_secs,
                plan.concurrency,
                plan.load * 100.0
            ));
            rate
        }
    };
    out(summary.lines.last().cloned().unwrap_or_default());

    let clients = bank.start(plan.concurrency, Some(rate));
    let started = Instant::now();
    let base = bank.counters.snapshot();
    let base_started = bank.started();
    let mut samples: Vec<Sample> = Vec::new();
    let csv = harness.work_dir().join("soak-samples.csv");
    out(Sample::header());
    let interval = Duration::from_secs(plan.sample_secs);
    let end = started + Duration::from_secs(plan.seconds);
    let mut next = started;
    let mut discarded = 0;
    while next < end {
        next = (next + interval).min(end);
        harness.tick_until(next).await;
        let mut sample = take_sample(harness, db, ledger).await;
        sample.at_secs = started.elapsed().as_secs_f64();
        sample.started = bank.started() - base_started;
        sample.ok = bank.counters.snapshot().ok - base.ok;
        out(sample.row(samples.last()));
        if samples.is_empty() {
            std::fs::write(&csv, sample.csv_header())?;
        }
        append(&csv, &sample.csv_row())?;
        samples.push(sample);
        if plan.retention_secs.is_some() {
            match quarantine_review::discard_conflict_losers(harness).await {
                Ok(n) => discarded += n,
                Err(e) => summary.problems.push(format!("quarantine review: {e:#}")),
            }
        }
    }
    if plan.retention_secs.is_some() {
        summary.lines.push(format!(
            "quarantine review: {discarded} conflict losers discarded with `connector-workers quarantine discard --reason FINAL_STATUS_CONFLICT --held-for {}` after each sample",
            quarantine_review::HELD_FOR_SECS
        ));
    }
    judge(plan, &samples, &mut summary);
    summary
        .lines
        .push(format!("every sample: {}", csv.display()));
    Ok((clients, summary))
}

/// Closed-loop load for `calibrate_secs`, then the time until everything is applied and
/// published: what the pipeline sustains, in orders-or-batches per second.
async fn measure_capacity(
    harness: &mut Harness,
    plan: SoakPlan,
    bank: &Arc<Bank>,
    db: &PgPool,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let before = bank.started();
    let clients = bank.start(plan.concurrency, None);
    harness.tick(Duration::from_secs(plan.calibrate_secs)).await;
    bank.stop_new();
    for client in clients {
        let _ = client.await;
    }
    let done = bank.started() - before;
    harness.drain(db, Duration::from_secs(300)).await?;
    let capacity = done as f64 / started.elapsed().as_secs_f64();
    out(format!(
        "capacity measured: {done} orders-or-batches in {:.1} s (load and drain) = {capacity:.1}/s",
        started.elapsed().as_secs_f64()
    ));
    Ok(capacity)
}

/// The connector processes' and RabbitMQ's memory, the intake depth, the nonces and the
/// tables' sizes, now.
async fn take_sample(harness: &Harness, db: &PgPool, ledger: &LedgerCollector) -> Sample {
    let mut rss: Vec<(String, Option<f64>)> = harness
        .process_pids()
        .into_iter()
        .map(|(name, pid)| (name, pid.and_then(rss_mib)))
        .collect();
    rss.push(("rabbitmq".into(), harness.broker_pid().and_then(rss_mib)));
    let (nonces, oldest_nonce_secs): (i64, f64) = sqlx::query_as(
        "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(seen_at)), 0)::float8
         FROM seen_nonces",
    )
    .fetch_one(db)
    .await
    .unwrap_or((-1, -1.0));
    let (archive_bytes, archived) =
        table_sizes::archive(db, &harness.work_dir().join("evidence")).await;
    Sample {
        ledger_taken: ledger.taken(),
        intake: harness.intake_messages().await,
        rss,
        nonces,
        oldest_nonce_secs,
        tables: table_sizes::sample(db).await,
        archive_bytes,
        archived,
        ..Sample::default()
    }
}

/// Flatness: the nonce purge holds the table to its retention, and no process's memory
/// keeps growing once warm.
fn judge(plan: SoakPlan, samples: &[Sample], summary: &mut SoakSummary) {
    let Some(last) = samples.last() else {
        return;
    };
    let secs = last.at_secs.max(1.0);
    summary.lines.push(format!(
        "soak: {:.0} s, {} orders-or-batches started ({:.1}/s), {} × 200 ({:.1}/s), ledger events taken meanwhile {}",
        last.at_secs,
        last.started,
        last.started as f64 / secs,
        last.ok,
        last.ok as f64 / secs,
        last.ledger_taken
    ));
    let backlog = samples.iter().filter_map(|s| s.intake).max().unwrap_or(0);
    summary.lines.push(format!(
        "intake queue: at most {backlog} messages waiting at a sample"
    ));

    // The purge: from one retention plus one interval on, no nonce is older than that.
    let bound = (plan.nonce_retention_secs + plan.purge_interval_secs + 30) as f64;
    let steady: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.at_secs >= bound + 60.0)
        .collect();
    let oldest = samples
        .iter()
        .map(|s| s.oldest_nonce_secs)
        .fold(0.0, f64::max);
    match (steady.first(), steady.last()) {
        (Some(first), Some(last)) => {
            let size = |s: &Sample| mib(s.tables.get("seen_nonces").copied().unwrap_or(0));
            summary.lines.push(format!(
                "seen_nonces, steady state ({:.0} s → {:.0} s): {} → {} rows, {:.1} → {:.1} MiB; oldest nonce ever {oldest:.0} s (retention {} s, purge every {} s)",
                first.at_secs,
                last.at_secs,
                first.nonces,
                last.nonces,
                size(first),
                size(last),
                plan.nonce_retention_secs,
                plan.purge_interval_secs
            ));
            if oldest > bound {
                summary.problems.push(format!(
                    "a nonce {oldest:.0} s old was still there: the purge (retention {} s, every {} s) is not keeping up",
                    plan.nonce_retention_secs, plan.purge_interval_secs
                ));
            }
        }
        _ => summary.lines.push(format!(
            "seen_nonces: the soak is shorter than retention + purge interval ({bound:.0} s): no steady state to judge"
        )),
    }

    // Memory: from the end of the first third (warm: caches and pools filled) to the end.
    let warm = samples
        .iter()
        .find(|s| s.at_secs >= last.at_secs / 3.0)
        .unwrap_or(last);
    for (index, (name, _)) in last.rss.iter().enumerate() {
        let series: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.at_secs >= warm.at_secs)
            .filter_map(|s| Some((s.at_secs, s.rss.get(index)?.1?)))
            .collect();
        let (Some(&(from_secs, from)), Some(&(_, to))) = (series.first(), series.last()) else {
            summary
                .lines
                .push(format!("memory {name}: not sampled (process not running)"));
            continue;
        };
        let max = samples
            .iter()
            .filter_map(|s| s.rss.get(index).and_then(|(_, m)| *m))
            .fold(0.0, f64::max);
        // RabbitMQ's memory follows its quorum-queue write-ahead log, a saw-tooth that a
        // trend would misread: its range is what to size the broker for.
        if name == "rabbitmq" {
            let min = series.iter().map(|(_, m)| *m).fold(f64::INFINITY, f64::min);
            summary.lines.push(format!(
                "memory {name}: between {min:.1} and {max:.1} MiB since {from_secs:.0} s (write-ahead log filling and rolling over), {to:.1} MiB at the end"
            ));
            continue;
        }
        let slope = mib_per_hour(&series);
        summary.lines.push(format!(
            "memory {name}: {from:.1} MiB at {from_secs:.0} s, {to:.1} MiB at the end, at most {max:.1} MiB; trend since {from_secs:.0} s {slope:+.1} MiB/h"
        ));
        if let Some(leak) = growing(&series) {
            summary.problems.push(format!("{name}: {leak}"));
        }
    }
    // Tables: each retained one flat once its retention is reached (plus a partition, the
    // lifecycle cycle and the partitions kept ahead).
    for table in table_sizes::all() {
        let series = table_sizes::Series {
            table,
            points: samples
                .iter()
                .map(|s| {
                    (
                        s.at_secs,
                        s.tables.get(table).copied().unwrap_or(0),
                        s.started,
                    )
                })
                .collect(),
        };
        let retention =
            table_sizes::retention_of(table, plan.retention_secs, plan.nonce_retention_secs);
        let (line, problem) = table_sizes::judge(&series, retention, 180);
        summary.lines.push(line);
        summary.problems.extend(problem);
    }
    if last.archived > 0 {
        summary.lines.push(format!(
            "evidence archive: {} requests in {:.1} MiB of files, {:.0} bytes per request",
            last.archived,
            last.archive_bytes as f64 / 1_048_576.0,
            last.archive_bytes as f64 / last.archived as f64
        ));
    } else if plan.retention_secs.is_some() {
        summary
            .problems
            .push("no request was archived, although raw requests outlived their retention".into());
    }
}

impl Sample {
    fn csv_header(&self) -> String {
        let mut columns = vec![
            "secs".to_owned(),
            "started".into(),
            "ok".into(),
            "ledger_taken".into(),
            "intake".into(),
        ];
        columns.extend(self.rss.iter().map(|(name, _)| format!("{name}_rss_mib")));
        columns.extend(["nonces".into(), "oldest_nonce_secs".into()]);
        columns.extend(table_sizes::all().map(|table| format!("{table}_bytes")));
        columns.extend(["archive_bytes".into(), "archived".into()]);
        columns.join(",") + "\n"
    }

    fn csv_row(&self) -> String {
        let mut values = vec![
            format!("{:.0}", self.at_secs),
            self.started.to_string(),
            self.ok.to_string(),
            self.ledger_taken.to_string(),
            self.intake.map_or_else(String::new, |n| n.to_string()),
        ];
        values.extend(
            self.rss
                .iter()
                .map(|(_, m)| m.map_or_else(String::new, |m| format!("{m:.1}"))),
        );
        values.extend([
            self.nonces.to_string(),
            format!("{:.0}", self.oldest_nonce_secs),
        ]);
        values.extend(
            table_sizes::all()
                .map(|table| self.tables.get(table).copied().unwrap_or(0).to_string()),
        );
        values.extend([self.archive_bytes.to_string(), self.archived.to_string()]);
        values.join(",") + "\n"
    }

    fn header() -> String {
        format!(
            "{:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8}",
            "t s",
            "start/s",
            "200/s",
            "intake",
            "ingr1 M",
            "ingr2 M",
            "work1 M",
            "work2 M",
            "rabbit M",
            "nonces",
            "oldest",
            "nonce M",
            "orders M",
            "recv M",
            "outbox M"
        )
    }

    fn row(&self, previous: Option<&Sample>) -> String {
        let (secs, started, ok) = previous.map_or((self.at_secs, self.started, self.ok), |p| {
            (
                self.at_secs - p.at_secs,
                self.started - p.started,
                self.ok - p.ok,
            )
        });
        let secs = secs.max(0.001);
        let rss = |i: usize| {
            self.rss
                .get(i)
                .and_then(|(_, m)| *m)
                .map_or_else(|| "-".into(), |m| format!("{m:.1}"))
        };
        let table = |name: &str| format!("{:.1}", mib(self.tables.get(name).copied().unwrap_or(0)));
        format!(
            "{:>6.0} {:>7.1} {:>7.1} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7.0} {:>8} {:>8} {:>8} {:>8}",
            self.at_secs,
            started as f64 / secs,
            ok as f64 / secs,
            self.intake.map_or_else(|| "?".into(), |n| n.to_string()),
            rss(0),
            rss(1),
            rss(2),
            rss(3),
            rss(4),
            self.nonces,
            self.oldest_nonce_secs,
            table("seen_nonces"),
            table("orders"),
            table("received_messages"),
            table("ledger_outbox"),
        )
    }
}

/// Least-squares slope of (seconds, MiB) samples, in MiB per hour.
fn mib_per_hour(series: &[(f64, f64)]) -> f64 {
    let n = series.len() as f64;
    if series.len() < 2 {
        return 0.0;
    }
    let mean_t = series.iter().map(|(t, _)| t).sum::<f64>() / n;
    let mean_m = series.iter().map(|(_, m)| m).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (t, m) in series {
        covariance += (t - mean_t) * (m - mean_m);
        variance += (t - mean_t) * (t - mean_t);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 3600.0
    }
}

/// A warm process whose memory keeps rising: over the later half of the window, a trend above
/// 4 MiB an hour (about 100 MiB a day) that also added more than 1 MiB, so that neither a cache
/// that filled early in the window nor the sampling jitter of a flat process is taken for a
/// leak.
fn growing(series: &[(f64, f64)]) -> Option<String> {
    let later = &series[series.len() / 2..];
    if later.len() < 5 {
        return None;
    }
    let (&(_, first), &(_, last)) = (later.first()?, later.last()?);
    let slope = mib_per_hour(later);
    (slope > 4.0 && last - first > 1.0).then(|| {
        format!(
            "memory keeps growing after warming up: {first:.1} → {last:.1} MiB, {slope:+.1} MiB/h"
        )
    })
}

fn append(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)?
        .write_all(line.as_bytes())
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::{growing, mib_per_hour};

    /// Samples every 60 s from 600 s to 1800 s.
    fn series(mib_at: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
        (10..=30)
            .map(|m| f64::from(m) * 60.0)
            .map(|t| (t, mib_at(t)))
            .collect()
    }

    #[test]
    fn a_steady_rise_is_a_leak() {
        // What the workers did before their histograms had an upkeep: 0.22 MiB a minute.
        let leaking = series(|t| 30.0 + 0.22 * t / 60.0);
        assert!((mib_per_hour(&leaking) - 13.2).abs() < 0.01);
        assert!(growing(&leaking).is_some());
    }

    #[test]
    fn a_flat_or_jittery_process_is_not() {
        assert!(growing(&series(|_| 27.1)).is_none());
        let jitter = series(|t| {
            27.0 + if ((t / 60.0) as u32).is_multiple_of(2) {
                0.8
            } else {
                0.0
            }
        });
        assert!(growing(&jitter).is_none());
        // A cache that fills once and stays: growth, then flat.
        let filled = series(|t| 25.0 + (t.min(900.0) - 600.0) / 100.0);
        assert!(growing(&filled).is_none(), "{:?}", growing(&filled));
    }
}
