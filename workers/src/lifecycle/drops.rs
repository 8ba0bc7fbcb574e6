//! Dropping partitions past their table's retention: each in its own short transaction under
//! `lock_timeout`, so a busy parent costs a retry next cycle instead of a queue of blocked
//! inserts behind an ACCESS EXCLUSIVE lock.

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::{Connection as _, PgPool};
use time::OffsetDateTime;

use super::BeforeDrop;
use super::partitions::{self, Partition, PartitionedTable};
use crate::config::RetentionSettings;
use crate::metrics;

/// Why a partition past its retention is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    UnpublishedEvents,
    NoArchive,
    LockTimeout,
    ArchiveFailed,
}

impl Kept {
    pub const ALL: [Kept; 4] = [
        Self::UnpublishedEvents,
        Self::NoArchive,
        Self::LockTimeout,
        Self::ArchiveFailed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::UnpublishedEvents => "unpublished_events",
            Self::NoArchive => "no_archive",
            Self::LockTimeout => "lock_timeout",
            Self::ArchiveFailed => "archive_failed",
        }
    }
}

/// What one pass over the expired partitions did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DropReport {
    pub dropped: Vec<String>,
    pub kept: Vec<(String, Kept)>,
}

/// Remembers which partitions were already warned about, so a kept partition is logged once,
/// not every cycle.
#[derive(Debug, Default)]
pub struct Warned(Mutex<HashSet<String>>);

impl Warned {
    fn first_time(&self, partition: &str) -> bool {
        self.0
            .lock()
            .map(|mut seen| seen.insert(partition.to_owned()))
            .unwrap_or(true)
    }
}

/// Drops every partition whose upper bound is older than `now - retention` of its table.
pub async fn drop_expired(
    pool: &PgPool,
    settings: &RetentionSettings,
    before_drop: Option<&dyn BeforeDrop>,
    warned: &Warned,
    now: OffsetDateTime,
) -> anyhow::Result<DropReport> {
    let mut report = DropReport::default();
    for table in PartitionedTable::ALL {
        let cutoff = now - table.retention(settings);
        let expired: Vec<Partition> = partitions::list(&mut *pool.acquire().await?, table)
            .await?
            .into_iter()
            .filter(|partition| partition.upper <= cutoff)
            .collect();
        for partition in expired {
            match drop_one(pool, settings, before_drop, &partition).await? {
                None => {
                    metrics::partition_dropped(table.name());
                    // A raw-request partition is dropped only in the transaction that anchored
                    // its archive file: the drop's commit is the archive's.
                    if table == PartitionedTable::ReceivedMessages {
                        metrics::evidence_archived(now);
                    }
                    tracing::info!(partition = %partition.name, "dropped partition past its retention");
                    report.dropped.push(partition.name);
                }
                Some(reason) => {
                    metrics::partition_kept(table.name(), reason.label());
                    if warned.first_time(&partition.name) {
                        tracing::warn!(partition = %partition.name, reason = reason.label(), "partition past its retention kept");
                    }
                    report.kept.push((partition.name, reason));
                }
            }
        }
    }
    Ok(report)
}

/// Drops one partition, or says why it is kept. Errors other than a lock timeout are real.
async fn drop_one(
    pool: &PgPool,
    settings: &RetentionSettings,
    before_drop: Option<&dyn BeforeDrop>,
    partition: &Partition,
) -> anyhow::Result<Option<Kept>> {
    let hook = match (partition.table, before_drop) {
        // Unarchived evidence is never dropped.
        (PartitionedTable::ReceivedMessages, None) => return Ok(Some(Kept::NoArchive)),
        (PartitionedTable::ReceivedMessages, Some(hook)) => Some(hook),
        _ => None,
    };
    let mut connection = pool.acquire().await?;
    let mut tx = connection.begin().await?;
    let attempt: Result<Option<Kept>, StepError> = async {
        sqlx::query(&format!(
            "SET LOCAL lock_timeout = '{}ms'",
            settings.lock_timeout_ms
        ))
        .execute(&mut *tx)
        .await?;
        if let Some(hook) = hook {
            // SHARE: no row can arrive (none should: its range is past) while it is archived.
            sqlx::query(&format!("LOCK TABLE {} IN SHARE MODE", partition.name))
                .execute(&mut *tx)
                .await?;
            hook.before_drop(&mut tx, partition)
                .await
                .map_err(StepError::Hook)?;
        }
        if partition.table == PartitionedTable::LedgerOutbox {
            let unpublished: bool = sqlx::query_scalar(&format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE published_at IS NULL)",
                partition.name
            ))
            .fetch_one(&mut *tx)
            .await?;
            if unpublished {
                return Ok(Some(Kept::UnpublishedEvents));
            }
        }
        sqlx::query(&format!("DROP TABLE {}", partition.name))
            .execute(&mut *tx)
            .await?;
        Ok(None)
    }
    .await;
    match attempt {
        Ok(None) => {
            tx.commit().await?;
            Ok(None)
        }
        Ok(Some(kept)) => {
            tx.rollback().await?;
            Ok(Some(kept))
        }
        Err(StepError::Database(error)) if is_lock_timeout(&error) => {
            tx.rollback().await.ok();
            Ok(Some(Kept::LockTimeout))
        }
        // Another process exporting at the same moment holds the archive's lock: a retry
        // next cycle, like a busy parent, not an archive failure.
        Err(StepError::Hook(error))
            if error.chain().any(|cause| {
                cause
                    .downcast_ref::<sqlx::Error>()
                    .is_some_and(is_lock_timeout)
            }) =>
        {
            tx.rollback().await.ok();
            Ok(Some(Kept::LockTimeout))
        }
        Err(StepError::Hook(error)) => {
            tx.rollback().await.ok();
            tracing::warn!(partition = %partition.name, error = %format!("{error:#}"), "archiving a partition before its drop failed");
            Ok(Some(Kept::ArchiveFailed))
        }
        Err(StepError::Database(error)) => {
            Err(anyhow::Error::new(error).context(format!("dropping {}", partition.name)))
        }
    }
}

enum StepError {
    Database(sqlx::Error),
    Hook(anyhow::Error),
}

impl From<sqlx::Error> for StepError {
    fn from(error: sqlx::Error) -> Self {
        Self::Database(error)
    }
}

/// 55P03 lock_not_available: what `lock_timeout` raises.
fn is_lock_timeout(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"))
}
