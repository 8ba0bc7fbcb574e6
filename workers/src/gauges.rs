//! Gauges read from the database on a timer, by every workers process whatever its roles: the
//! outbox backlog and the messages held in quarantine. Read from the tables, they stay true
//! under continuous load, while the broker is down (when the relay cannot run) and across
//! restarts (a counter in memory starts again from zero). Several processes report the same
//! values; dashboards and alerts take the `max`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::quarantine::QuarantineReason;
use crate::{metrics, outbox};

/// Reads the gauges once.
pub async fn refresh(pool: &PgPool) -> sqlx::Result<()> {
    let backlog = outbox::backlog(pool).await?;
    metrics::outbox(backlog.unpublished, backlog.oldest_age_secs.unwrap_or(0.0));

    // Every reason, zeros included, so a released or discarded message clears its gauge.
    let reasons: Vec<&str> = QuarantineReason::ALL.iter().map(|r| r.as_str()).collect();
    let held: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.reason, count(q.message_id)
         FROM UNNEST($1::text[]) AS r(reason)
         LEFT JOIN quarantined_messages q ON q.reason = r.reason AND q.state = 'held'
         GROUP BY r.reason",
    )
    .bind(&reasons)
    .fetch_all(pool)
    .await?;
    for (reason, count) in held {
        metrics::quarantine_held(reason, count);
    }
    Ok(())
}

/// Refreshes every `every` until `stop`.
pub async fn run(pool: PgPool, every: Duration, stop: CancellationToken) {
    loop {
        if let Err(error) = refresh(&pool).await {
            tracing::debug!(%error, "database gauges not refreshed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}
