//! The relay role: publishes the ledger outbox to the `connector.ledger` exchange (persistent,
//! mandatory, confirmed) in order of creation, and marks a row published only once the broker
//! has confirmed it. Rows are claimed with `FOR UPDATE SKIP LOCKED`, so any number of relays
//! share the outbox. It wakes on `LISTEN ledger_outbox` and polls as a fallback.
//!
//! A row whose publish is nacked, returned (unroutable) or unconfirmed stays unpublished, has
//! its attempt counted and its error recorded, and is retried after a backoff. If marking rows
//! published fails after the broker confirmed them, they go out again later: consumers dedupe
//! by the deterministic `event_id` (§6).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use connector_schema::Topology;
use connector_schema::events::LedgerEvent;

use crate::config::{BrokerSettings, RelaySettings};
use crate::{Step, broker, metrics};

/// The NOTIFY channel the outbox trigger signals.
pub const OUTBOX_CHANNEL: &str = "ledger_outbox";

#[derive(Debug, Clone)]
pub struct Relay {
    pool: PgPool,
    topology: Topology,
    broker: BrokerSettings,
    settings: RelaySettings,
    shutdown: CancellationToken,
    /// Shared with `/readyz`.
    connected: Arc<AtomicBool>,
}

/// Why one event was not confirmed.
#[derive(Debug)]
struct Failure {
    id: i64,
    reason: &'static str,
    detail: String,
}

impl Relay {
    pub fn new(
        pool: PgPool,
        topology: Topology,
        broker: BrokerSettings,
        settings: RelaySettings,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            topology,
            broker,
            settings,
            shutdown,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// A channel ready for [`Relay::run_once`]: ledger topology declared, confirms on.
    pub async fn prepare(&self, channel: &Channel) -> lapin::Result<()> {
        self.topology.declare_ledger(channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
    }

    /// Claims up to `batch_size` unpublished rows, publishes them and records the outcome.
    /// `Err` when any row was not confirmed (after recording it), so the caller backs off.
    pub async fn run_once(&self, channel: &Channel) -> anyhow::Result<Step> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, Uuid, String, String)> = sqlx::query_as(
            "SELECT id, event_id, event_type, body FROM ledger_outbox
             WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(self.settings.batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(Step::Idle);
        }

        let started = Instant::now();
        // Publish them all first (in id order, pipelined), then collect the confirms.
        let mut pending = Vec::with_capacity(rows.len());
        for (id, event_id, event_type, body) in &rows {
            let publish = channel
                .basic_publish(
                    self.topology.ledger_exchange.as_str().into(),
                    event_type.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    body.as_bytes(),
                    LedgerEvent::amqp_properties(*event_id, event_type),
                )
                .await;
            pending.push((*id, event_type, publish));
        }
        let timeout = Duration::from_millis(self.settings.confirm_timeout_ms);
        let mut published = Vec::with_capacity(rows.len());
        let mut failures = Vec::new();
        for (id, event_type, publish) in pending {
            let failure = |reason, detail: String| Failure { id, reason, detail };
            let confirm = match publish {
                Ok(confirm) => confirm,
                Err(error) => {
                    failures.push(failure("channel", error.to_string()));
                    continue;
                }
            };
            match tokio::time::timeout(timeout, confirm).await {
                Ok(Ok(Confirmation::Ack(None))) => {
                    published.push(id);
                    metrics::relay_published(event_type.clone());
                }
                Ok(Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)))) => {
                    failures.push(failure(
                        "unroutable",
                        format!("returned {} {}", returned.reply_code, returned.reply_text),
                    ))
                }
                Ok(Ok(Confirmation::Nack(None) | Confirmation::NotRequested)) => {
                    failures.push(failure("nack", "the broker refused the event".into()));
                }
                Ok(Err(error)) => failures.push(failure("channel", error.to_string())),
                Err(_) => {
                    failures.push(failure("timeout", format!("no confirm within {timeout:?}")))
                }
            }
        }
        metrics::relay_batch(started.elapsed());

        sqlx::query("UPDATE ledger_outbox SET published_at = now() WHERE id = ANY($1)")
            .bind(&published)
            .execute(&mut *tx)
            .await?;
        if !failures.is_empty() {
            let ids: Vec<i64> = failures.iter().map(|f| f.id).collect();
            let errors: Vec<String> = failures
                .iter()
                .map(|f| format!("{}: {}", f.reason, f.detail))
                .collect();
            sqlx::query(
                "UPDATE ledger_outbox o SET attempts = o.attempts + 1, last_error = u.error
                 FROM UNNEST($1::bigint[], $2::text[]) AS u(id, error) WHERE o.id = u.id",
            )
            .bind(&ids)
            .bind(&errors)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;

        if let Some(first) = failures.first() {
            for failure in &failures {
                metrics::relay_failure(failure.reason);
            }
            anyhow::bail!(
                "{} of {} ledger events not confirmed (first: {} {})",
                failures.len(),
                rows.len(),
                first.reason,
                first.detail
            );
        }
        Ok(Step::Processed)
    }

    /// Relays until `shutdown`, reconnecting and backing off on failures.
    pub async fn run(self) {
        let mut retries = broker::retry_schedule(&self.broker);
        while !self.shutdown.is_cancelled() {
            let Err(error) = self.session(&mut retries).await else {
                break;
            };
            self.set_connected(false);
            if !broker::back_off("relay", &error, &mut retries, &self.broker, &self.shutdown).await
            {
                break;
            }
        }
        self.set_connected(false);
        tracing::info!("relay stopped");
    }

    /// One broker session: `Ok` on shutdown, `Err` on any failure (the caller backs off).
    async fn session(&self, retries: &mut backoff::ExponentialBackoff) -> anyhow::Result<()> {
        let connection = broker::connect(&self.broker.url, "relay").await?;
        let channel = connection.create_channel().await?;
        self.prepare(&channel).await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(OUTBOX_CHANNEL).await?;
        self.set_connected(true);
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        loop {
            match self.run_once(&channel).await? {
                Step::Processed => retries.reset(),
                Step::Idle => {
                    tokio::select! {
                        () = self.shutdown.cancelled() => {
                            let _ = tokio::time::timeout(Duration::from_secs(5), connection.close(200, "shutdown".into())).await;
                            return Ok(());
                        }
                        notification = listener.recv() => { notification?; }
                        () = tokio::time::sleep(poll) => {}
                    }
                }
            }
        }
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::broker_connected("relay", connected);
    }
}
