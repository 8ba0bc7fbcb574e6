//! The evidence archive as the lifecycle role's [`BeforeDrop`] hook: a partition of raw requests
//! is dropped only in the transaction that exported it (README "Evidence archive").

use std::sync::Arc;

use futures_util::future::BoxFuture;
use time::OffsetDateTime;

use connector_schema::evidence::{ArchiveBounds, ArchiveStore};

use super::export_partition;
use crate::lifecycle::{BeforeDrop, Partition};

#[derive(Debug)]
pub struct EvidenceArchiver {
    store: Arc<dyn ArchiveStore>,
}

impl EvidenceArchiver {
    /// Also exports the archive's counters at zero: a process that archives shows its series
    /// from the start, so the first file written is an increase (dashboards, alerts).
    pub fn new(store: Arc<dyn ArchiveStore>) -> Self {
        for counter in [
            super::ARCHIVE_FILES_TOTAL,
            super::ARCHIVE_ENTRIES_TOTAL,
            super::ARCHIVE_BYTES_TOTAL,
        ] {
            metrics::counter!(counter).increment(0);
        }
        Self { store }
    }
}

impl BeforeDrop for EvidenceArchiver {
    fn before_drop<'a>(
        &'a self,
        connection: &'a mut sqlx::PgConnection,
        partition: &'a Partition,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let bounds = ArchiveBounds {
                // The legacy partition starts at MINVALUE; no row predates the epoch, and the
                // anchor's timestamptz cannot hold `OffsetDateTime::MIN`.
                from: partition.lower.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                to: partition.upper,
            };
            export_partition(connection, self.store.as_ref(), &partition.name, bounds).await?;
            Ok(())
        })
    }
}
