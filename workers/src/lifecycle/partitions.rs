//! The partition grid of the time-partitioned tables: which partitions exist, creating them
//! ahead of time, and dropping those past their table's retention. Our own maintenance rather
//! than pg_partman: it is not on every managed PostgreSQL, and raw requests must be archived
//! before their partition goes, a hook it does not offer.

use anyhow::Context as _;
use sqlx::{PgConnection, PgPool};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use crate::config::RetentionSettings;
use crate::metrics;

/// A table partitioned by RANGE on its insert-time column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionedTable {
    ReceivedMessages,
    OrderHistory,
    PaysafeItemHistory,
    LedgerOutbox,
}

impl PartitionedTable {
    pub const ALL: [Self; 4] = [
        Self::ReceivedMessages,
        Self::OrderHistory,
        Self::PaysafeItemHistory,
        Self::LedgerOutbox,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::ReceivedMessages => "received_messages",
            Self::OrderHistory => "order_history",
            Self::PaysafeItemHistory => "paysafe_item_history",
            Self::LedgerOutbox => "ledger_outbox",
        }
    }

    /// How long its rows are kept.
    pub fn retention(self, settings: &RetentionSettings) -> Duration {
        let secs = match self {
            Self::ReceivedMessages => settings.raw_requests_secs,
            Self::OrderHistory | Self::PaysafeItemHistory => settings.order_history_secs,
            Self::LedgerOutbox => settings.published_events_secs,
        };
        Duration::seconds(i64::try_from(secs).unwrap_or(i64::MAX))
    }
}

/// One partition: `[lower, upper)`; `lower` is `None` for the legacy one (MINVALUE).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub table: PartitionedTable,
    pub name: String,
    pub lower: Option<OffsetDateTime>,
    pub upper: OffsetDateTime,
}

/// The partitions of `table`, oldest first.
pub async fn list(
    connection: &mut PgConnection,
    table: PartitionedTable,
) -> sqlx::Result<Vec<Partition>> {
    let rows: Vec<(String, Option<OffsetDateTime>, OffsetDateTime)> = sqlx::query_as(
        "SELECT child.relname::text,
                substring(bound FROM 'FROM \\(''([^'']+)''\\)')::timestamptz,
                substring(bound FROM 'TO \\(''([^'']+)''\\)')::timestamptz AS upper
         FROM pg_inherits
         JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
         JOIN pg_class child ON child.oid = pg_inherits.inhrelid
         CROSS JOIN LATERAL pg_get_expr(child.relpartbound, child.oid) AS bound
         WHERE parent.relname = $1 AND parent.relnamespace = 'public'::regnamespace
         ORDER BY upper",
    )
    .bind(table.name())
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, lower, upper)| Partition {
            table,
            name,
            lower,
            upper,
        })
        .collect())
}

/// The partition name for a lower bound: `<table>_p<YYYYMMDD>t<HHMMSS>` in UTC.
pub fn partition_name(table: PartitionedTable, lower: OffsetDateTime) -> String {
    let lower = lower.to_offset(time::UtcOffset::UTC);
    format!(
        "{}_p{:04}{:02}{:02}t{:02}{:02}{:02}",
        table.name(),
        lower.year(),
        u8::from(lower.month()),
        lower.day(),
        lower.hour(),
        lower.minute(),
        lower.second()
    )
}

/// The grid boundary after `instant`: the next multiple of `interval` since the Unix epoch.
pub fn next_boundary(instant: OffsetDateTime, interval_secs: u64) -> OffsetDateTime {
    let interval = i64::try_from(interval_secs).unwrap_or(i64::MAX);
    let seconds = instant.unix_timestamp();
    let next = (seconds.div_euclid(interval) + 1) * interval;
    OffsetDateTime::from_unix_timestamp(next).unwrap_or(instant)
}

/// Creates the partitions of every table from the one holding `now` up to
/// `now + partitions_ahead × interval`; returns how many it created. Missing ranges are filled
/// on the grid: after the last existing partition, a partition starts where it ends (the first
/// one after the legacy partition), then on multiples of the interval. A range that lost its
/// partition (dropped by a cycle run with a later clock, or never created while the role was
/// down) is created again. Several processes may run this at once: each table is extended under
/// a transaction-scoped advisory lock.
pub async fn ensure_ahead(
    pool: &PgPool,
    settings: &RetentionSettings,
    now: OffsetDateTime,
) -> anyhow::Result<u32> {
    let interval_secs = settings.partition_interval_secs;
    let interval = Duration::seconds(i64::try_from(interval_secs)?);
    let horizon = now + interval * settings.partitions_ahead.max(2);
    let mut created = 0;
    for table in PartitionedTable::ALL {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('partitions:' || $1))")
            .bind(table.name())
            .execute(&mut *tx)
            .await?;
        let existing = list(&mut tx, table).await?;
        for (lower, upper) in missing_ranges(&existing, now, horizon, interval_secs) {
            let name = partition_name(table, lower);
            sqlx::query(&format!(
                "CREATE TABLE {name} PARTITION OF {} FOR VALUES FROM ('{}') TO ('{}')",
                table.name(),
                lower.format(&Rfc3339)?,
                upper.format(&Rfc3339)?,
            ))
            .execute(&mut *tx)
            .await
            .with_context(|| format!("creating partition {name}"))?;
            metrics::partition_created(table.name());
            created += 1;
        }
        tx.commit().await?;
        let ahead = list(&mut *pool.acquire().await?, table)
            .await?
            .iter()
            .filter(|partition| partition.lower.is_some_and(|lower| lower > now))
            .count();
        metrics::partitions_ahead(table.name(), ahead);
    }
    Ok(created)
}

/// The `[lower, upper)` ranges to create so that partitions cover the grid slot holding `now`
/// through `horizon`, around the `existing` ones (sorted by upper bound).
pub fn missing_ranges(
    existing: &[Partition],
    now: OffsetDateTime,
    horizon: OffsetDateTime,
    interval_secs: u64,
) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let interval = Duration::seconds(i64::try_from(interval_secs).unwrap_or(i64::MAX));
    let mut cursor = next_boundary(now, interval_secs) - interval;
    let mut ranges = Vec::new();
    while cursor < horizon {
        let covering = existing.iter().find(|partition| {
            partition.lower.is_none_or(|lower| lower <= cursor) && cursor < partition.upper
        });
        if let Some(partition) = covering {
            cursor = partition.upper;
            continue;
        }
        let next_existing = existing
            .iter()
            .filter_map(|partition| partition.lower)
            .filter(|&lower| lower > cursor)
            .min();
        let mut upper = next_boundary(cursor, interval_secs);
        if let Some(lower) = next_existing {
            upper = upper.min(lower);
        }
        ranges.push((cursor, upper));
        cursor = upper;
    }
    ranges
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn names_say_the_utc_lower_bound() {
        let lower = datetime!(2026-12-02 13:04:05.123 +01:00);
        assert_eq!(
            partition_name(PartitionedTable::LedgerOutbox, lower),
            "ledger_outbox_p20261202t120405"
        );
    }

    fn partition(lower: Option<OffsetDateTime>, upper: OffsetDateTime) -> Partition {
        Partition {
            table: PartitionedTable::OrderHistory,
            name: String::new(),
            lower,
            upper,
        }
    }

    #[test]
    fn after_the_legacy_partition_the_grid_starts_where_it_ends() {
        let upgraded = datetime!(2026-12-02 13:04:05.5 UTC);
        let existing = [partition(None, upgraded)];
        let ranges = missing_ranges(
            &existing,
            upgraded,
            datetime!(2026-12-05 13:04:05.5 UTC),
            86_400,
        );
        assert_eq!(
            ranges,
            [
                (upgraded, datetime!(2026-12-03 0:00 UTC)),
                (
                    datetime!(2026-12-03 0:00 UTC),
                    datetime!(2026-12-04 0:00 UTC)
                ),
                (
                    datetime!(2026-12-04 0:00 UTC),
                    datetime!(2026-12-05 0:00 UTC)
                ),
                (
                    datetime!(2026-12-05 0:00 UTC),
                    datetime!(2026-12-06 0:00 UTC)
                ),
            ]
        );
    }

    #[test]
    fn a_missing_range_is_filled_up_to_the_next_existing_partition() {
        let existing = [partition(
            Some(datetime!(2026-12-02 12:03:30 UTC)),
            datetime!(2026-12-02 12:04 UTC),
        )];
        let ranges = missing_ranges(
            &existing,
            datetime!(2026-12-02 12:02:10 UTC),
            datetime!(2026-12-02 12:04:10 UTC),
            60,
        );
        assert_eq!(
            ranges,
            [
                (
                    datetime!(2026-12-02 12:02 UTC),
                    datetime!(2026-12-02 12:03 UTC)
                ),
                (
                    datetime!(2026-12-02 12:03 UTC),
                    datetime!(2026-12-02 12:03:30 UTC)
                ),
                (
                    datetime!(2026-12-02 12:04 UTC),
                    datetime!(2026-12-02 12:05 UTC)
                ),
            ]
        );
    }

    #[test]
    fn boundaries_are_multiples_of_the_interval_since_the_epoch() {
        let instant = datetime!(2026-12-02 13:04:05.5 UTC);
        assert_eq!(
            next_boundary(instant, 86_400),
            datetime!(2026-12-03 0:00 UTC)
        );
        assert_eq!(next_boundary(instant, 60), datetime!(2026-12-02 13:05 UTC));
        // On a boundary: the next one, so a partition is never empty.
        assert_eq!(
            next_boundary(datetime!(2026-12-02 13:05 UTC), 60),
            datetime!(2026-12-02 13:06 UTC)
        );
    }
}
