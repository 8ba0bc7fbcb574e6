//! Retention of the tables that are not partitioned (idempotency keys, seen nonces, resolved
//! quarantine rows): small index-driven DELETE batches, each its own short statement, so no
//! long lock is ever held and the table's autovacuum keeps up.

use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use crate::config::RetentionSettings;
use crate::metrics;

/// Rows purged by one pass, by table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    pub idempotency_keys: u64,
    pub seen_nonces: u64,
    pub quarantined_messages: u64,
}

impl PurgeReport {
    pub fn total(&self) -> u64 {
        self.idempotency_keys + self.seen_nonces + self.quarantined_messages
    }
}

const IDEMPOTENCY_KEYS: &str = "DELETE FROM idempotency_keys
     WHERE (client_id, idempotency_key) IN (
         SELECT client_id, idempotency_key FROM idempotency_keys
         WHERE created_at < $1 ORDER BY created_at LIMIT $2)";

const SEEN_NONCES: &str = "DELETE FROM seen_nonces
     WHERE (client_id, nonce) IN (
         SELECT client_id, nonce FROM seen_nonces
         WHERE seen_at < $1 ORDER BY seen_at LIMIT $2)";

/// Resolved rows with their secret body (held rows never match: the index covers only the
/// resolved states).
const RESOLVED_QUARANTINE: &str = "WITH doomed AS (
         SELECT message_id FROM quarantined_messages
         WHERE state IN ('released', 'discarded') AND resolved_at < $1
         ORDER BY resolved_at LIMIT $2),
     secrets AS (
         DELETE FROM quarantined_secret_bodies WHERE message_id IN (SELECT message_id FROM doomed))
     DELETE FROM quarantined_messages WHERE message_id IN (SELECT message_id FROM doomed)";

/// Purges every row past its retention, `delete_batch` rows per statement.
pub async fn purge_expired(
    pool: &PgPool,
    settings: &RetentionSettings,
    nonce_retention_secs: u64,
    now: OffsetDateTime,
) -> anyhow::Result<PurgeReport> {
    let secs = |value: u64| Duration::seconds(i64::try_from(value).unwrap_or(i64::MAX));
    let idempotency_keys = in_batches(
        pool,
        IDEMPOTENCY_KEYS,
        now - secs(settings.idempotency_keys_secs),
        settings.delete_batch,
    )
    .await?;
    metrics::rows_purged("idempotency_keys", idempotency_keys);
    let seen_nonces = in_batches(
        pool,
        SEEN_NONCES,
        now - secs(nonce_retention_secs),
        settings.delete_batch,
    )
    .await?;
    metrics::rows_purged("seen_nonces", seen_nonces);
    metrics::nonces_purged(seen_nonces);
    let quarantined_messages = in_batches(
        pool,
        RESOLVED_QUARANTINE,
        now - secs(settings.resolved_quarantine_secs),
        settings.delete_batch,
    )
    .await?;
    metrics::rows_purged("quarantined_messages", quarantined_messages);
    Ok(PurgeReport {
        idempotency_keys,
        seen_nonces,
        quarantined_messages,
    })
}

async fn in_batches(
    pool: &PgPool,
    statement: &str,
    cutoff: OffsetDateTime,
    batch: u32,
) -> sqlx::Result<u64> {
    let mut purged = 0;
    loop {
        let deleted = sqlx::query(statement)
            .bind(cutoff)
            .bind(i64::from(batch))
            .execute(pool)
            .await?
            .rows_affected();
        purged += deleted;
        if deleted < u64::from(batch) {
            return Ok(purged);
        }
    }
}
