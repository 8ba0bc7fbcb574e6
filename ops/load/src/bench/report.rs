//! The printed results: the machine facts every figure depends on, and one table per part, so
//! a run's output can be pasted next to another's and compared line by line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::bench::apply::{self, ApplyRun};
use crate::bench::capacity::CapacityRun;
use crate::bench::env::ServerFacts;
use crate::bench::latency::LatencyRun;
use crate::bench::sql_baseline::BaselineRun;
use crate::procstat::table;

/// Where the figures were taken: printed first, since every figure depends on it.
#[derive(Debug)]
pub struct MachineFacts {
    pub cores: usize,
    pub cpu: String,
    pub rabbitmq_version: String,
    pub server: ServerFacts,
    pub seed_orders: u64,
}

impl MachineFacts {
    /// Reads the core count and CPU model of this machine, and asks `rabbitmqctl` (when
    /// installed here) for the broker's version.
    pub async fn gather(server: ServerFacts, seed_orders: u64) -> Self {
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let rabbitmq_version = match tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::process::Command::new("rabbitmqctl")
                .arg("version")
                .output(),
        )
        .await
        {
            Ok(Ok(output)) if output.status.success() => String::from_utf8_lossy(&output.stdout)
                .lines()
                .last()
                .unwrap_or("unknown")
                .trim()
                .to_owned(),
            _ => "unknown version".into(),
        };
        Self {
            cores,
            cpu,
            rabbitmq_version,
            server,
            seed_orders,
        }
    }

    pub fn report(&self) -> String {
        let s = &self.server;
        let place = |local: bool| {
            if local {
                "on this machine, sharing its cores"
            } else {
                "on another host"
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "== Machine");
        let _ = writeln!(out, "  cores (nproc)  {} ({})", self.cores, self.cpu);
        let _ = writeln!(
            out,
            "  PostgreSQL     {} {}; synchronous_commit={}, fsync={}, shared_buffers={}",
            s.postgres_version,
            place(s.postgres_local),
            s.synchronous_commit,
            s.fsync,
            s.shared_buffers
        );
        let _ = writeln!(
            out,
            "  RabbitMQ       {} {}; quorum queues, persistent messages",
            self.rabbitmq_version,
            place(s.rabbitmq_local)
        );
        let _ = writeln!(
            out,
            "  per run        a fresh database (migrated, {} seeded orders, ANALYZE) and a fresh bench-<uuid> topology, both removed afterwards",
            self.seed_orders
        );
        let _ = writeln!(
            out,
            "  build          {}; the bench, its workers and its ingress share the same cores",
            if cfg!(debug_assertions) {
                "DEBUG (figures not representative: use --release)"
            } else {
                "release"
            }
        );
        out
    }
}

/// Part 1's table.
pub fn apply_table(runs: &[ApplyRun], concurrency: usize, prefetch: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== 1. Apply throughput: preloaded intake queue -> W apply workers (each its own broker connection and pool; concurrency {concurrency}, prefetch {prefetch}) -> PostgreSQL"
    );
    let rows = runs
        .iter()
        .map(|r| {
            vec![
                r.batch_size.to_string(),
                r.workers.to_string(),
                format!("{}/{}", r.applied, r.messages),
                (r.applied * r.batch_size as u64).to_string(),
                format!("{:.2}", r.elapsed.as_secs_f64()),
                format!("{:.0}", r.messages_per_second()),
                format!("{:.0}", r.orders_per_second()),
                r.quarantined.to_string(),
                r.dead_lettered.to_string(),
                format!("{:.2}", r.preload.as_secs_f64()),
                apply::micros_per_order(&r.cpu, apply::BENCH_PROCESS, r.orders()),
                apply::micros_per_order(&r.cpu, apply::POSTGRES, r.orders()),
                apply::micros_per_order(&r.cpu, apply::RABBITMQ, r.orders()),
                r.cpu.share_of_cores(r.cpu.machine_busy),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "orders/msg",
            "W",
            "applied msgs",
            "orders",
            "seconds",
            "msgs/s",
            "orders/s",
            "quarantined",
            "dead-lettered",
            "preload s",
            "workers CPU µs/order",
            "PostgreSQL µs/order",
            "RabbitMQ µs/order",
            "machine busy",
        ],
        rows,
    ));
    let _ = writeln!(
        out,
        "  CPU over each timed window, per applied order: workers = this process (the W apply workers: consume, decode, hash, apply through sqlx, ack; the tokio runtime; the 20 ms progress query); PostgreSQL = every postgres process (backends, WAL writer, checkpointer); RabbitMQ = beam.smp; machine busy = all cores, everything"
    );
    for run in runs.iter().filter(|r| r.left_on_queue > 0) {
        let _ = writeln!(
            out,
            "  batch {} W {}: {} messages still on the intake queue after the run stalled",
            run.batch_size, run.workers, run.left_on_queue
        );
    }
    out
}

/// Part 2's table, with the ratio to the matching part-1 run when there is one.
pub fn baseline_table(runs: &[BaselineRun], apply: &[ApplyRun], concurrency: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== 2. SQL baseline: the same orders and statements through sqlx, one transaction per message, W x {concurrency} at once, no broker and no worker logic{}",
        if runs.iter().any(|r| r.custom_plans) {
            "; plan_cache_mode = force_custom_plan, as the workers"
        } else {
            "; default plan cache (the workers force custom plans)"
        }
    );
    let rows = runs
        .iter()
        .map(|b| {
            let ratio = apply
                .iter()
                .find(|a| a.batch_size == b.batch_size && a.workers == b.workers)
                .map_or("-".to_owned(), |a| {
                    format!("{:.2}", a.orders_per_second() / b.orders_per_second())
                });
            vec![
                b.batch_size.to_string(),
                b.workers.to_string(),
                b.parallel.to_string(),
                format!("{}/{}", b.recorded, b.transactions),
                format!("{:.2}", b.elapsed.as_secs_f64()),
                format!("{:.0}", b.transactions_per_second()),
                format!("{:.0}", b.orders_per_second()),
                ratio,
                apply::micros_per_order(&b.cpu, apply::BENCH_PROCESS, b.orders()),
                apply::micros_per_order(&b.cpu, apply::POSTGRES, b.orders()),
                b.cpu.share_of_cores(b.cpu.machine_busy),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "orders/msg",
            "W",
            "parallel tx",
            "committed tx",
            "seconds",
            "tx/s",
            "orders/s",
            "worker/baseline",
            "sqlx client CPU µs/order",
            "PostgreSQL µs/order",
            "machine busy",
        ],
        rows,
    ));
    for run in runs.iter().filter(|r| r.errors > 0) {
        let _ = writeln!(
            out,
            "  batch {} W {}: {} transactions failed (first: {})",
            run.batch_size,
            run.workers,
            run.errors,
            run.first_error.as_deref().unwrap_or_default()
        );
    }
    out
}

/// Part 3's block.
pub fn latency_report(run: &LatencyRun, warmup: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== 3. End-to-end latency: signed unit callback -> ingress 200 -> apply -> outbox -> relay -> ledger queue (one ingress, one workers process with apply + relay, all defaults)"
    );
    let _ = writeln!(
        out,
        "  load           {} /s open loop for {:.1} s (achieved {:.1} /s); {warmup} warm-up callbacks before, not counted",
        run.rate,
        run.send_elapsed.as_secs_f64(),
        if run.send_elapsed.as_secs_f64() > 0.0 {
            run.sent as f64 / run.send_elapsed.as_secs_f64()
        } else {
            0.0
        }
    );
    let refused = refused_list(&run.refused);
    let _ = writeln!(
        out,
        "  callbacks      {} sent, {} accepted (200), refused: {refused}",
        run.sent, run.accepted
    );
    let _ = writeln!(
        out,
        "  matched        {} of {} accepted have their ledger event ({} duplicates, {} unexpected, {} arrived before the client read the 200)",
        run.matched, run.accepted, run.duplicates, run.unexpected, run.before_answer
    );
    out.push_str(&table(
        &["latency ms", "p50", "p90", "p99", "max", "samples"],
        vec![
            percentiles("200 -> ledger event", &run.end_to_end_us),
            percentiles("  200 -> group begins", &run.to_group_us),
            percentiles("  group -> ledger event", &run.group_to_event_us),
            percentiles("send -> 200 (ingress)", &run.http_us),
        ],
    ));
    let _ = writeln!(
        out,
        "  afterwards     quarantined {}, dead-lettered intake {} / ledger {}, outbox rows unpublished {}",
        run.leftovers.quarantined,
        run.leftovers.intake_dead_lettered,
        run.leftovers.ledger_dead_lettered,
        run.leftovers.unpublished
    );
    out
}

/// Part 4's block. `bench-all` reads the figure after `capacity`.
pub fn capacity_report(run: &CapacityRun, warmup: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== 4. End-to-end capacity: signed unit callbacks, closed loop -> ingress 200 -> apply -> outbox -> relay -> ledger queue, until drained (one ingress, one workers process with apply + relay, all defaults)"
    );
    let _ = writeln!(
        out,
        "  load           {} clients, closed loop for {:.1} s (planned {} s, {} callbacks signed up front{}); {warmup} warm-up callbacks before, not counted",
        run.plan.concurrency,
        run.load.as_secs_f64(),
        run.plan.seconds,
        run.plan.requests,
        if run.exhausted {
            ": ALL USED before the time was up, raise --capacity-requests"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  callbacks      {} sent, {} accepted (200) = {:.1} /s during the load, refused: {}",
        run.sent,
        run.accepted,
        run.accepted_per_second(),
        refused_list(&run.refused)
    );
    let _ = writeln!(
        out,
        "  drained        {} of {} accepted have their ledger event, the last {:.1} s after the last answer ({} duplicates, {} unexpected)",
        run.matched,
        run.accepted,
        run.drain.as_secs_f64(),
        run.duplicates,
        run.unexpected
    );
    let _ = writeln!(
        out,
        "  capacity       {:.1} /s = {} through / ({:.1} s load + {:.1} s drain)",
        run.capacity(),
        run.matched,
        run.load.as_secs_f64(),
        run.drain.as_secs_f64()
    );
    out.push_str(&table(
        &["latency ms", "p50", "p90", "p99", "max", "samples"],
        vec![percentiles("send -> 200 (ingress)", &run.http_us)],
    ));
    if let Some(cpu) = &run.cpu {
        let _ = writeln!(
            out,
            "  CPU from the first send to the last ledger event ({:.1} s, {} cores), per callback through:",
            cpu.elapsed.as_secs_f64(),
            cpu.cores
        );
        out.push_str(&cpu.table(run.matched as u64, "callback"));
    }
    let l = &run.leftovers;
    let _ = writeln!(
        out,
        "  afterwards     intake queue {}, quarantined {}, dead-lettered intake {} / ledger {}, outbox rows unpublished {}",
        l.intake_depth,
        l.quarantined,
        l.intake_dead_lettered,
        l.ledger_dead_lettered,
        l.unpublished
    );
    out
}

fn refused_list(refused: &BTreeMap<String, u64>) -> String {
    if refused.is_empty() {
        return "none".to_owned();
    }
    refused
        .iter()
        .map(|(outcome, count)| format!("{count} x {outcome}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn percentiles(label: &str, histogram: &Histogram<u64>) -> Vec<String> {
    let ms = |micros: u64| format!("{:.2}", micros as f64 / 1000.0);
    vec![
        label.to_owned(),
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.90)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
        histogram.len().to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_aligned_markdown() {
        let text = table(
            &["a", "bb"],
            vec![
                vec!["x".into(), "1".into()],
                vec!["long".into(), "22".into()],
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "| a    |  bb |");
        assert_eq!(lines[1], "| ---- | --: |");
        assert_eq!(lines[2], "| x    |   1 |");
        assert_eq!(lines[3], "| long |  22 |");
    }
}
