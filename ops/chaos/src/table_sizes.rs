//! The soak's view of the database's size: every table the lifecycle role keeps to a retention
//! must level off once its retention is reached, and the tables kept for ever (state, one row
//! per business object) are reported per order; plus the evidence archive's bytes per request.

use std::collections::BTreeMap;
use std::path::Path;

use sqlx::PgPool;

/// Tables kept to a retention.
pub const RETAINED: [&str; 7] = [
    "received_messages",
    "order_history",
    "paysafe_item_history",
    "ledger_outbox",
    "idempotency_keys",
    "seen_nonces",
    "quarantined_messages",
];

/// Tables kept for ever: they grow with the number of orders, items and bindings, by design
/// (README "Data retention": they decide whether an event is emitted).
pub const KEPT: [&str; 4] = [
    "orders",
    "paysafe_items",
    "emitted_ledger_events",
    "evidence_archive_files",
];

/// How a table's size is judged: the retention that bounds it (None: kept for ever).
pub fn retention_of(table: &str, data_secs: Option<u64>, nonce_secs: u64) -> Option<u64> {
    match table {
        "seen_nonces" => Some(nonce_secs),
        // The workers require keys to outlive nonces.
        "idempotency_keys" => data_secs.map(|secs| secs.max(nonce_secs)),
        // Held rows wait for the soak's review, then their resolved retention runs.
        "quarantined_messages" => {
            data_secs.map(|secs| secs + crate::quarantine_review::HELD_FOR_SECS)
        }
        t if RETAINED.contains(&t) => data_secs,
        _ => None,
    }
}

/// Every table sampled.
pub fn all() -> impl Iterator<Item = &'static str> {
    RETAINED.iter().chain(KEPT.iter()).copied()
}

/// Bytes per table (a partitioned table: all its partitions), with indexes and TOAST.
pub async fn sample(db: &PgPool) -> BTreeMap<String, i64> {
    let tables: Vec<&str> = all().collect();
    sqlx::query_as::<_, (String, i64)>(
        "SELECT t, CASE WHEN c.relkind = 'p'
                        THEN (SELECT COALESCE(sum(pg_total_relation_size(p.relid)), 0)
                              FROM pg_partition_tree(c.oid) AS p)
                        ELSE pg_total_relation_size(c.oid) END::int8
         FROM unnest($1::text[]) AS t JOIN pg_class c ON c.oid = t::regclass",
    )
    .bind(tables)
    .fetch_all(db)
    .await
    .unwrap_or_default()
    .into_iter()
    .collect()
}

/// The archive so far: (bytes of its files, requests archived).
pub async fn archive(db: &PgPool, dir: &Path) -> (u64, i64) {
    let bytes = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let entries: i64 =
        sqlx::query_scalar("SELECT COALESCE(sum(entries), 0)::int8 FROM evidence_archive_files")
            .fetch_one(db)
            .await
            .unwrap_or(0);
    (bytes, entries)
}

/// One table's sizes over the run: (seconds, bytes, orders started so far).
pub struct Series<'a> {
    pub table: &'a str,
    pub points: Vec<(f64, i64, u64)>,
}

/// The verdict on one table: a line for the report and, when a retained table keeps growing
/// after its steady state, a problem.
pub fn judge(
    series: &Series<'_>,
    retention: Option<u64>,
    settle_secs: u64,
) -> (String, Option<String>) {
    let table = series.table;
    let (Some(first), Some(last)) = (series.points.first(), series.points.last()) else {
        return (format!("table {table}: not sampled"), None);
    };
    // Every table has at least its index's metapage: zero means the sample failed.
    if series.points.iter().all(|p| p.1 == 0) {
        return (
            format!("table {table}: size not measured"),
            Some(format!("table {table}: its size could not be measured")),
        );
    }
    let Some(retention) = retention else {
        let per_order = if last.2 > first.2 {
            (last.1 - first.1) as f64 / (last.2 - first.2) as f64
        } else {
            0.0
        };
        return (
            format!(
                "table {table} ({}): {:.1} → {:.1} MiB, {per_order:.0} bytes per order-or-batch",
                if KEPT.contains(&table) {
                    "kept for ever"
                } else {
                    "retention longer than the run"
                },
                mib(first.1),
                mib(last.1)
            ),
            None,
        );
    };
    // Steady state: once the oldest rows are older than the retention and the partition (or
    // purge batch) holding them has had its cycle.
    let steady_from = (retention + settle_secs) as f64;
    let steady: Vec<&(f64, i64, u64)> = series
        .points
        .iter()
        .filter(|p| p.0 >= steady_from)
        .collect();
    if steady.len() < 4 {
        return (
            format!(
                "table {table}: retention {retention} s, the run is too short to reach its steady state ({steady_from:.0} s + 4 samples)"
            ),
            None,
        );
    }
    let half = steady.len() / 2;
    let max = |points: &[&(f64, i64, u64)]| points.iter().map(|p| p.1).max().unwrap_or(0);
    let (earlier, later) = (max(&steady[..half]), max(&steady[half..]));
    let peak = series.points.iter().map(|p| p.1).max().unwrap_or(0);
    // Flat: the later half's peak within 10 % (and 1 MiB, for small tables) of the earlier's.
    let flat = later as f64 <= earlier as f64 * 1.10 + 1_048_576.0;
    let line = format!(
        "table {table}: retention {retention} s; {:.1} MiB at {:.0} s (steady state reached), at most {:.1} MiB in the first half of it, {:.1} MiB in the second, {:.1} MiB at the end (peak of the run {:.1} MiB): {}",
        mib(steady[0].1),
        steady[0].0,
        mib(earlier),
        mib(later),
        mib(last.1),
        mib(peak),
        if flat { "flat" } else { "GROWING" }
    );
    let problem = (!flat).then(|| {
        format!(
            "table {table} keeps growing after its retention: {:.1} → {:.1} MiB",
            mib(earlier),
            mib(later)
        )
    });
    (line, problem)
}

fn mib(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(size_at: impl Fn(f64) -> i64) -> Series<'static> {
        Series {
            table: "received_messages",
            points: (0..=30)
                .map(|m| f64::from(m) * 60.0)
                .map(|t| (t, size_at(t), (t * 100.0) as u64))
                .collect(),
        }
    }

    #[test]
    fn a_table_that_levels_off_is_flat_and_one_that_keeps_growing_is_not() {
        let mb = 1_048_576.0;
        let levelled = series(|t| (t.min(400.0) * 0.1 * mb) as i64);
        let (line, problem) = judge(&levelled, Some(180), 180);
        assert!(problem.is_none(), "{line}");
        assert!(line.ends_with("flat"), "{line}");

        let growing = series(|t| (t * 0.1 * mb) as i64);
        let (line, problem) = judge(&growing, Some(180), 180);
        assert!(problem.is_some(), "{line}");
    }

    #[test]
    fn kept_tables_are_reported_per_order() {
        let (line, problem) = judge(&series(|t| (t * 1000.0) as i64), None, 180);
        assert!(problem.is_none());
        assert!(line.contains("10 bytes per order"), "{line}");
    }

    #[test]
    fn retentions_follow_the_soaks_settings() {
        assert_eq!(retention_of("seen_nonces", Some(180), 600), Some(600));
        assert_eq!(retention_of("idempotency_keys", Some(180), 600), Some(600));
        assert_eq!(retention_of("ledger_outbox", Some(180), 600), Some(180));
        assert_eq!(retention_of("ledger_outbox", None, 600), None);
        assert_eq!(retention_of("orders", Some(180), 600), None);
    }
}
