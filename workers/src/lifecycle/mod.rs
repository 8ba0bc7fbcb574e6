//! The `lifecycle` role: keeps the database's size bounded by its retentions. Each cycle it
//! creates the partitions ahead, drops those past their table's retention (raw requests only
//! after the evidence archive took them), and purges the unpartitioned tables in small
//! batches. Whether a ledger event is emitted never depends on what it removes: that is decided
//! by the state tables and `emitted_ledger_events`, kept for ever (README "Data retention").

pub mod drops;
pub mod partitions;
pub mod purge;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::Step;
use crate::config::RetentionSettings;
use crate::metrics;
pub use drops::{DropReport, Kept};
pub use partitions::{Partition, PartitionedTable};

/// What must be done with a partition's rows before it is dropped, in the dropping
/// transaction (the partition is locked SHARE first, so no row can arrive meanwhile).
pub trait BeforeDrop: Send + Sync + std::fmt::Debug {
    fn before_drop<'a>(
        &'a self,
        connection: &'a mut sqlx::PgConnection,
        partition: &'a Partition,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// What one cycle did.
#[derive(Debug, Default)]
pub struct CycleReport {
    pub created: u32,
    pub drops: DropReport,
    pub purged: purge::PurgeReport,
}

#[derive(Debug)]
pub struct Lifecycle {
    pool: PgPool,
    settings: RetentionSettings,
    nonce_retention_secs: u64,
    before_drop: Option<Arc<dyn BeforeDrop>>,
    warned: drops::Warned,
}

impl Lifecycle {
    pub fn new(
        pool: PgPool,
        settings: RetentionSettings,
        nonce_retention_secs: u64,
        before_drop: Option<Arc<dyn BeforeDrop>>,
    ) -> Self {
        Self {
            pool,
            settings,
            nonce_retention_secs,
            before_drop,
            warned: drops::Warned::default(),
        }
    }

    /// One cycle at `now`, with what it did. A cycle that returns is a success, recorded as the
    /// role's heartbeat at `now`, even when it kept partitions (a lock timeout, an archive
    /// failure, unpublished events: counted and alerted on by their reason); one that errors is
    /// not, and leaves the heartbeat where it was.
    pub async fn cycle(&self, now: OffsetDateTime) -> anyhow::Result<CycleReport> {
        let report = self.steps(now).await?;
        metrics::lifecycle_succeeded(now);
        Ok(report)
    }

    async fn steps(&self, now: OffsetDateTime) -> anyhow::Result<CycleReport> {
        let created = partitions::ensure_ahead(&self.pool, &self.settings, now).await?;
        let drops = drops::drop_expired(
            &self.pool,
            &self.settings,
            self.before_drop.as_deref(),
            &self.warned,
            now,
        )
        .await?;
        let purged =
            purge::purge_expired(&self.pool, &self.settings, self.nonce_retention_secs, now)
                .await?;
        Ok(CycleReport {
            created,
            drops,
            purged,
        })
    }

    /// One cycle at `now`: `Processed` when it changed anything.
    /// The role's counters, at zero (`metrics::at_zero` says why): partitions created,
    /// dropped and kept (by reason) by table, rows and nonces purged.
    pub fn export_counters_at_zero() {
        for table in partitions::PartitionedTable::ALL {
            let table = table.name();
            metrics::at_zero(metrics::PARTITIONS_CREATED_TOTAL, &[("table", table)]);
            metrics::at_zero(metrics::PARTITIONS_DROPPED_TOTAL, &[("table", table)]);
            for reason in drops::Kept::ALL {
                let labels = [("table", table), ("reason", reason.label())];
                metrics::at_zero(metrics::PARTITIONS_KEPT_TOTAL, &labels);
            }
        }
        for table in metrics::PURGED_TABLES {
            metrics::at_zero(metrics::ROWS_PURGED_TOTAL, &[("table", table)]);
        }
        metrics::at_zero(metrics::NONCES_PURGED_TOTAL, &[]);
    }

    pub async fn run_once(&self, now: OffsetDateTime) -> anyhow::Result<Step> {
        let report = self.cycle(now).await?;
        let changed =
            report.created > 0 || !report.drops.dropped.is_empty() || report.purged.total() > 0;
        Ok(if changed { Step::Processed } else { Step::Idle })
    }

    /// A cycle every `maintenance_interval_secs` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.settings.maintenance_interval_secs);
        loop {
            if let Err(error) = self.run_once(OffsetDateTime::now_utc()).await {
                tracing::warn!(error = %format!("{error:#}"), "data lifecycle cycle failed; will try again");
            }
            if !crate::broker::pause(interval, &shutdown).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records the partitions it is asked about.
    #[derive(Debug, Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl BeforeDrop for Recorder {
        fn before_drop<'a>(
            &'a self,
            _connection: &'a mut sqlx::PgConnection,
            partition: &'a Partition,
        ) -> BoxFuture<'a, anyhow::Result<()>> {
            self.0.lock().unwrap().push(partition.name.clone());
            Box::pin(async { Ok(()) })
        }
    }

    #[test]
    fn a_hook_is_an_object_the_role_can_hold() {
        let hook: Arc<dyn BeforeDrop> = Arc::new(Recorder::default());
        assert!(format!("{hook:?}").contains("Recorder"));
    }
}
