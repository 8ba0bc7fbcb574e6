//! Retention of seen nonces: old enough rows can no longer match a replay (the ingress rejects
//! a request whose timestamp is out of its window, and the retention exceeds any queue delay),
//! so they are purged to keep the table flat.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics;

/// Deletes nonces seen longer than `retention` ago; returns how many.
pub async fn purge_once(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let seconds = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    let purged =
        sqlx::query("DELETE FROM seen_nonces WHERE seen_at < now() - make_interval(secs => $1)")
            .bind(seconds as f64)
            .execute(pool)
            .await?
            .rows_affected();
    metrics::nonces_purged(purged);
    Ok(purged)
}

/// Purges every `interval` until `shutdown`.
pub async fn run(
    pool: PgPool,
    retention: Duration,
    interval: Duration,
    shutdown: CancellationToken,
) {
    loop {
        match purge_once(&pool, retention).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged expired nonces"),
            Err(error) => tracing::warn!(%error, "nonce purge failed; will try again"),
        }
        if !crate::broker::pause(interval, &shutdown).await {
            return;
        }
    }
}
