//! Per-run results (latency histogram, outcome counts) so the ingress and the raw baseline are
//! measured and printed the same way.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Outcome key of a success, for both runs.
pub const ACCEPTED: &str = "200 ACCEPTED";

/// Largest latency the histogram tracks exactly (one hour, in microseconds); larger values
/// saturate rather than fail.
const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;

/// What one worker task saw: merged into a [`RunStats`] at the end, so the timed loop never
/// shares a lock.
#[derive(Debug)]
pub struct WorkerStats {
    /// Latency of every request, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Count per outcome: [`ACCEPTED`], `"<status> <error.code>"`, or `"transport: <kind>"`.
    pub outcomes: BTreeMap<String, u64>,
    /// Orders inside the accepted requests (a batch counts its orders).
    pub accepted_orders: u64,
    /// Requests that never got an answer (connection, timeout, channel errors).
    pub transport_errors: u64,
    /// First transport error message, to show what went wrong.
    pub first_transport_error: Option<String>,
}

impl WorkerStats {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            latency_us: Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, 3)?,
            outcomes: BTreeMap::new(),
            accepted_orders: 0,
            transport_errors: 0,
            first_transport_error: None,
        })
    }

    /// Records one answered request.
    pub fn record(&mut self, latency: Duration, outcome: String, orders: u64) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        if outcome == ACCEPTED {
            self.accepted_orders += orders;
        }
        *self.outcomes.entry(outcome).or_default() += 1;
    }

    /// Records one request that got no answer.
    pub fn record_transport_error(&mut self, latency: Duration, kind: &str, message: String) {
        self.transport_errors += 1;
        self.first_transport_error.get_or_insert(message);
        self.record(latency, format!("transport: {kind}"), 0);
    }

    fn merge(&mut self, other: WorkerStats) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        for (outcome, count) in other.outcomes {
            *self.outcomes.entry(outcome).or_default() += count;
        }
        self.accepted_orders += other.accepted_orders;
        self.transport_errors += other.transport_errors;
        if self.first_transport_error.is_none() {
            self.first_transport_error = other.first_transport_error;
        }
        Ok(())
    }
}

/// One complete run (ingress or baseline): what gets printed and compared.
#[derive(Debug)]
pub struct RunStats {
    pub label: String,
    pub concurrency: usize,
    pub elapsed: Duration,
    pub merged: WorkerStats,
}

impl RunStats {
    pub fn from_workers(
        label: &str,
        concurrency: usize,
        elapsed: Duration,
        workers: Vec<WorkerStats>,
    ) -> anyhow::Result<Self> {
        let mut merged = WorkerStats::new()?;
        for worker in workers {
            merged.merge(worker)?;
        }
        Ok(Self {
            label: label.to_owned(),
            concurrency,
            elapsed,
            merged,
        })
    }

    pub fn total(&self) -> u64 {
        self.merged.latency_us.len()
    }

    pub fn accepted(&self) -> u64 {
        self.merged.outcomes.get(ACCEPTED).copied().unwrap_or(0)
    }

    /// Accepted requests per second of wall-clock time.
    pub fn throughput(&self) -> f64 {
        per_second(self.accepted(), self.elapsed)
    }

    /// Latency at `quantile` (0..=1), in milliseconds.
    pub fn latency_ms(&self, quantile: f64) -> f64 {
        micros_to_ms(self.merged.latency_us.value_at_quantile(quantile))
    }

    pub fn max_ms(&self) -> f64 {
        micros_to_ms(self.merged.latency_us.max())
    }

    /// The human-readable block printed after the run.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== {} (concurrency {})", self.label, self.concurrency);
        let _ = writeln!(out, "  total       {}", self.total());
        let _ = writeln!(out, "  elapsed     {:.3} s", self.elapsed.as_secs_f64());
        let _ = writeln!(
            out,
            "  accepted    {} ({:.1}/s; {} orders, {:.1} orders/s)",
            self.accepted(),
            self.throughput(),
            self.merged.accepted_orders,
            per_second(self.merged.accepted_orders, self.elapsed)
        );
        let _ = writeln!(
            out,
            "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            self.latency_ms(0.50),
            self.latency_ms(0.90),
            self.latency_ms(0.99),
            self.max_ms()
        );
        let errors: Vec<_> = self
            .merged
            .outcomes
            .iter()
            .filter(|(outcome, _)| outcome.as_str() != ACCEPTED)
            .collect();
        if errors.is_empty() {
            let _ = writeln!(out, "  errors      none");
        } else {
            let _ = writeln!(out, "  errors");
            for (outcome, count) in errors {
                let _ = writeln!(out, "    {count:>8}  {outcome}");
            }
        }
        if let Some(first) = &self.merged.first_transport_error {
            let _ = writeln!(out, "  first transport error: {first}");
        }
        out
    }
}

/// Ingress-versus-raw ratios: what the HTTP edge, authentication and validation cost on top of
/// the broker round trip.
pub fn comparison(ingress: &RunStats, raw: &RunStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== ingress / raw broker");
    let _ = writeln!(
        out,
        "  throughput  {:.3}  ({:.1}/s vs {:.1}/s; target at concurrency 64: >= 0.5)",
        ratio(ingress.throughput(), raw.throughput()),
        ingress.throughput(),
        raw.throughput()
    );
    for (name, quantile, target) in [("p50", 0.50, "1.3"), ("p99", 0.99, "1.5")] {
        let _ = writeln!(
            out,
            "  {name}         {:.2}  ({:.2} ms vs {:.2} ms; target at concurrency 1: <= {target})",
            ratio(ingress.latency_ms(quantile), raw.latency_ms(quantile)),
            ingress.latency_ms(quantile),
            raw.latency_ms(quantile)
        );
    }
    out
}

fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count as f64 / secs } else { 0.0 }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn micros_to_ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_workers_and_reports_percentiles_and_error_codes() {
        let mut a = WorkerStats::new().unwrap();
        let mut b = WorkerStats::new().unwrap();
        for ms in 1..=99 {
            a.record(Duration::from_millis(ms), ACCEPTED.into(), 1);
        }
        b.record(Duration::from_millis(100), ACCEPTED.into(), 10);
        b.record(Duration::from_millis(5), "409 NONCE_REPLAYED".into(), 1);
        b.record_transport_error(Duration::from_millis(7), "connect", "refused".into());
        let run = RunStats::from_workers("t", 2, Duration::from_secs(2), vec![a, b]).unwrap();
        assert_eq!(run.total(), 102);
        assert_eq!(run.accepted(), 100);
        assert_eq!(run.merged.accepted_orders, 109);
        assert_eq!(run.merged.transport_errors, 1);
        assert!((run.throughput() - 50.0).abs() < 1e-9);
        assert!((run.max_ms() - 100.0).abs() < 0.1);
        let report = run.report();
        assert!(report.contains("409 NONCE_REPLAYED"), "{report}");
        assert!(report.contains("transport: connect"), "{report}");
        assert!(
            report.contains("first transport error: refused"),
            "{report}"
        );
    }
}
