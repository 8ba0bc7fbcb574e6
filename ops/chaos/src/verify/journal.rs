//! The rows the checks read from tables the workers purge: order history, the outbox, the
//! delivery log and quarantine, copied while the run goes on. With retentions of minutes (a
//! soak with `--retention-secs`) the lifecycle role drops a partition long before the end-of-run
//! checks, so they read this journal, which holds every row that existed at any time during the
//! run, instead of the tables as they are at the end.
//!
//! Each collection reads the rows inserted since the previous one, less an overlap that covers
//! any transaction still open then (a row's time is its transaction's start, not its commit),
//! and merges them by primary key. Rows live at least their retention, so collecting every
//! [`INTERVAL`] with a retention of minutes misses none; the journal checks that it has been
//! collected often enough.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::facts::Quarantined;

/// How often the background task collects.
pub const INTERVAL: Duration = Duration::from_secs(20);

/// Re-read before the previous collection's start: longer than any apply or relay transaction.
const OVERLAP: time::Duration = time::Duration::seconds(120);

/// An `order_history` row: (reference, status, effect, idempotency key).
pub(super) type HistoryRow = (String, String, String, String);

/// A `ledger_outbox` row as last seen.
#[derive(Debug, Clone)]
pub(super) struct OutboxRow {
    pub event_id: Uuid,
    pub event_type: String,
    pub reference: String,
    /// Failed publishes (only grows while unpublished).
    pub attempts: i32,
}

/// A `received_messages` row (one per delivery the workers finished with).
#[derive(Debug, Clone)]
pub(super) struct DeliveryRow {
    pub idempotency_key: Option<String>,
    pub outcome: String,
    pub nonce: Option<String>,
}

#[derive(Debug, Default)]
pub struct Journal {
    /// By `order_history.id`, so a reference's rows come in the order they were written.
    pub(super) history: BTreeMap<i64, HistoryRow>,
    /// By `ledger_outbox.id`.
    pub(super) outbox: HashMap<i64, OutboxRow>,
    /// By (message id, processed_at).
    pub(super) deliveries: HashMap<(Uuid, OffsetDateTime), DeliveryRow>,
    /// By message id (quarantine is small: read whole each time).
    pub(super) quarantined: HashMap<Uuid, Quarantined>,
    /// The database's clock at the start of the last collection.
    since: Option<OffsetDateTime>,
    /// The longest time between two collections, for [`Journal::gaps`].
    longest_gap: time::Duration,
}

impl Journal {
    /// Reads what was written since the last collection (everything, the first time).
    pub async fn collect(&mut self, db: &PgPool) -> anyhow::Result<()> {
        let started: OffsetDateTime = sqlx::query_scalar("SELECT now()").fetch_one(db).await?;
        let from = self
            .since
            .map_or(OffsetDateTime::UNIX_EPOCH, |since| since - OVERLAP);

        for (id, reference, status, effect, key) in
            sqlx::query_as::<_, (i64, String, String, String, String)>(
                "SELECT id, reference, status, effect, idempotency_key FROM order_history
                 WHERE recorded_at >= $1",
            )
            .bind(from)
            .fetch_all(db)
            .await?
        {
            self.history.insert(id, (reference, status, effect, key));
        }

        // Rows published since, too: their attempts may have grown after they were first read.
        for (id, event_id, event_type, reference, attempts) in
            sqlx::query_as::<_, (i64, Uuid, String, String, i32)>(
                "SELECT id, event_id, event_type, reference, attempts FROM ledger_outbox
                 WHERE created_at >= $1 OR published_at IS NULL OR published_at >= $1",
            )
            .bind(from)
            .fetch_all(db)
            .await?
        {
            self.outbox.insert(
                id,
                OutboxRow {
                    event_id,
                    event_type,
                    reference,
                    attempts,
                },
            );
        }

        for (message_id, processed_at, idempotency_key, outcome, nonce) in
            sqlx::query_as::<_, (Uuid, OffsetDateTime, Option<String>, String, Option<String>)>(
                "SELECT message_id, processed_at, idempotency_key, outcome, nonce
                 FROM received_messages WHERE processed_at >= $1",
            )
            .bind(from)
            .fetch_all(db)
            .await?
        {
            self.deliveries.insert(
                (message_id, processed_at),
                DeliveryRow {
                    idempotency_key,
                    outcome,
                    nonce,
                },
            );
        }

        for row in sqlx::query_as::<_, Quarantined>(
            "SELECT message_id, reason, idempotency_key, detail FROM quarantined_messages",
        )
        .fetch_all(db)
        .await?
        {
            self.quarantined.insert(row.0, row);
        }

        if let Some(since) = self.since {
            self.longest_gap = self.longest_gap.max(started - since);
        }
        self.since = Some(started);
        Ok(())
    }

    /// A problem line when two collections were further apart than the overlap allows: rows
    /// written in between could have been missed.
    pub fn gaps(&self) -> Option<String> {
        (self.longest_gap >= OVERLAP).then(|| {
            format!(
                "the journal of purged tables went {:.0} s without a collection (at most {} s are covered): rows may be missing from the checks",
                self.longest_gap.as_seconds_f64(),
                OVERLAP.whole_seconds()
            )
        })
    }
}

/// The journal collected every [`INTERVAL`] in the background until [`Collector::finish`].
pub struct Collector {
    journal: Arc<Mutex<Journal>>,
    db: PgPool,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Collector {
    pub fn start(db: &PgPool) -> Self {
        let journal = Arc::new(Mutex::new(Journal::default()));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn({
            let (journal, db) = (Arc::clone(&journal), db.clone());
            async move {
                loop {
                    tokio::select! {
                        _ = stopped.changed() => return,
                        () = tokio::time::sleep(INTERVAL) => {}
                    }
                    if let Err(e) = journal.lock().await.collect(&db).await {
                        // A fault may have the database away: the next try catches up, and a
                        // gap too long is reported by `gaps`.
                        crate::console::out(format!("journal: collection failed: {e:#}"));
                    }
                }
            }
        });
        Self {
            journal,
            db: db.clone(),
            stop,
            task,
        }
    }

    /// Stops the task and collects once more: call it after the connector has stopped.
    pub async fn finish(self) -> anyhow::Result<Journal> {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let mut journal = std::mem::take(&mut *self.journal.lock().await);
        journal.collect(&self.db).await?;
        Ok(journal)
    }
}
