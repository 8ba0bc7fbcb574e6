//! The apply role: consumes the intake queue and settles each delivery only after its effects
//! are committed (§2.3).
//!
//! - applied, duplicate or replay → ack;
//! - valid but not applicable → quarantined in its own transaction, then ack;
//! - unreadable → reject without requeue: straight to the dead-letter queue;
//! - forged (a `type` other than its routing key, a missing or wrong ingress seal: see
//!   `intake`) → the same, counted apart: nothing of it is applied;
//! - transient failure (database down, deadlock) → retried with backoff while the message stays
//!   unacknowledged, for at most `apply.max_hold_secs`; then it is given back (requeued) and
//!   the worker stops consuming until the database answers again. Holding it longer would
//!   run into the broker's consumer timeout, whose requeues count towards the delivery limit
//!   again and again: a long outage would dead-letter accepted notifications. This way an
//!   outage of any length costs a held message one delivery attempt;
//! - any other failure → requeued, and the queue's delivery limit dead-letters a message that
//!   keeps failing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use futures_util::{StreamExt, TryStreamExt};
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, BasicRejectOptions,
};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use connector_schema::seal::SealKeys;
use connector_schema::{IntakeEnvelope, IntakeKind, Topology};

use crate::config::{ApplySettings, BrokerSettings, PaysafeSettings};
use crate::intake::{self, Admitted, Refusal};
use crate::outcome::{ApplyError, Outcome};
use crate::{Step, broker, db, metrics, quarantine};

/// While consuming, how often the apply role checks that the database answers; when it does
/// not, the role stops consuming before it takes messages it would only have to give back.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
use crate::{bnc, corelink, paysafe};

/// What to tell the broker about a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done (applied, duplicate, replay or quarantined): the label says which.
    Ack(&'static str),
    /// Unreadable: dead-letter it now.
    DeadLetter(String),
    /// Not what it claims to be: dead-letter it now, counted by `reason`.
    Forged {
        reason: &'static str,
        detail: String,
    },
    /// Failed for an unexpected reason: requeue, counting toward the delivery limit.
    Requeue(String),
    /// The database stayed unreachable: requeue it, and pause consuming until it answers.
    GiveBack(String),
}

/// How a consuming session ended without a broker failure.
enum Session {
    Shutdown,
    /// A message found the database unreachable for too long: consumption paused.
    DatabaseDown,
}

#[derive(Debug, Clone)]
pub struct ApplyWorker {
    pool: PgPool,
    topology: Topology,
    broker: BrokerSettings,
    settings: ApplySettings,
    /// Deadlines and the first poll of Paysafe items that a webhook or track command creates.
    paysafe: PaysafeSettings,
    /// The ingress seals the workers accept.
    seal: SealKeys,
    /// Stops retry loops and consumption; in-flight messages finish or are requeued.
    shutdown: CancellationToken,
    /// Shared with `/readyz`.
    connected: Arc<AtomicBool>,
    /// Cancelled when a message is given back: the others held give back too, and the
    /// session stops consuming. Replaced at each session.
    give_back: Arc<Mutex<CancellationToken>>,
}

impl ApplyWorker {
    pub fn new(
        pool: PgPool,
        topology: Topology,
        broker: BrokerSettings,
        settings: ApplySettings,
        seal: SealKeys,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            pool,
            topology,
            broker,
            settings,
            paysafe: PaysafeSettings::default(),
            seal,
            shutdown,
            connected: Arc::new(AtomicBool::new(false)),
            give_back: Arc::default(),
        }
    }

    /// Paysafe items created by this worker follow `settings` (defaults otherwise).
    pub fn with_paysafe(mut self, settings: PaysafeSettings) -> Self {
        self.paysafe = settings;
        self
    }

    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// Decides what `delivery` needs, applying it if it can. Never returns before the outcome
    /// is durable (or the worker is shutting down).
    pub async fn process(&self, delivery: &Delivery) -> Disposition {
        let admitted = match intake::admit(
            delivery.routing_key.as_str(),
            &delivery.properties,
            &delivery.data,
            &self.seal,
        ) {
            Ok(admitted) => admitted,
            Err(Refusal::Unreadable(reason)) => return Disposition::DeadLetter(reason),
            Err(Refusal::Forged { reason, detail }) => {
                return Disposition::Forged { reason, detail };
            }
        };
        let envelope = &admitted.envelope;
        let span = tracing::info_span!(
            "apply",
            message_id = %envelope.message_id,
            kind = envelope.kind.routing_key(),
            client_id = envelope.client_id.as_deref().unwrap_or_default(),
            idempotency_key = envelope.header("x-idempotency-key").unwrap_or_default(),
        );
        self.apply_with_retries(&admitted).instrument(span).await
    }

    async fn apply_with_retries(&self, admitted: &Admitted) -> Disposition {
        let envelope = &admitted.envelope;
        let mut retries = broker::retry_schedule(&self.broker);
        let give_back = self.give_back_signal();
        let max_hold = Duration::from_secs(self.settings.max_hold_secs);
        let mut failing_since = None;
        loop {
            let error = match self.apply(envelope).await {
                Ok(outcome) => {
                    tracing::info!(outcome = outcome.label(), "applied");
                    return Disposition::Ack(outcome.label());
                }
                Err(ApplyError::Invalid(reason)) => return Disposition::DeadLetter(reason),
                Err(ApplyError::Quarantine { reason, detail }) => {
                    let held = quarantine::hold(
                        &self.pool,
                        envelope,
                        admitted.seal.as_deref(),
                        reason,
                        &detail,
                    );
                    match held.await {
                        Ok(()) => {
                            tracing::warn!(reason = reason.as_str(), %detail, "quarantined");
                            metrics::quarantined(reason.as_str());
                            return Disposition::Ack("quarantined");
                        }
                        Err(error) if db::is_transient(&error) => error.to_string(),
                        Err(error) => {
                            return Disposition::Requeue(format!("quarantining: {error}"));
                        }
                    }
                }
                Err(ApplyError::Contention) => "concurrent creation of an order".to_owned(),
                Err(ApplyError::Database(error)) if db::is_transient(&error) => error.to_string(),
                Err(ApplyError::Database(error)) => return Disposition::Requeue(error.to_string()),
            };
            metrics::transient_retry();
            let failing_for = failing_since.get_or_insert_with(Instant::now).elapsed();
            if failing_for >= max_hold {
                return Disposition::GiveBack(format!(
                    "failing for {failing_for:?} (apply.max_hold_secs): {error}"
                ));
            }
            let delay = retries
                .next_backoff()
                .unwrap_or_else(|| self.broker.retry_max());
            tracing::warn!(%error, ?delay, "transient failure; retrying while holding the message");
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    return Disposition::Requeue("shutting down during a retry".into());
                }
                () = give_back.cancelled() => {
                    return Disposition::GiveBack(format!("another message gave up first: {error}"));
                }
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One attempt at applying `envelope`, by its kind.
    async fn apply(&self, envelope: &IntakeEnvelope) -> Result<Outcome, ApplyError> {
        match envelope.kind {
            IntakeKind::CorelinkStatus | IntakeKind::CorelinkStatusBatch => {
                corelink::apply(&self.pool, envelope).await
            }
            IntakeKind::BncAccountBinding => bnc::apply(&self.pool, envelope).await,
            IntakeKind::PaysafeWebhook | IntakeKind::PaysafeTrack => {
                paysafe::apply(&self.pool, envelope, &self.paysafe).await
            }
        }
    }

    /// Processes `delivery` and settles it with the broker.
    pub async fn handle(&self, delivery: Delivery) -> lapin::Result<Disposition> {
        let started = Instant::now();
        let disposition = self.process(&delivery).await;
        let kind = kind_label(&delivery);
        match &disposition {
            Disposition::Ack(outcome) => {
                delivery.ack(BasicAckOptions::default()).await?;
                metrics::message(kind, outcome, started.elapsed());
            }
            Disposition::DeadLetter(reason) => {
                tracing::error!(%reason, delivery_tag = delivery.delivery_tag, "unreadable message dead-lettered");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                metrics::message(kind, "dead_lettered", started.elapsed());
            }
            Disposition::Forged { reason, detail } => {
                tracing::error!(
                    reason,
                    %detail,
                    delivery_tag = delivery.delivery_tag,
                    "forged message dead-lettered: nothing of it applied"
                );
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                metrics::forged(reason);
                metrics::message(kind, "forged", started.elapsed());
            }
            Disposition::Requeue(reason) => {
                tracing::error!(%reason, delivery_tag = delivery.delivery_tag, "message requeued");
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?;
                metrics::message(kind, "requeued", started.elapsed());
            }
            Disposition::GiveBack(reason) => {
                tracing::warn!(%reason, delivery_tag = delivery.delivery_tag, "database unreachable: message given back, consumption pauses");
                self.give_back_signal().cancel();
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?;
                metrics::message(kind, "given_back", started.elapsed());
            }
        }
        Ok(disposition)
    }

    /// Takes one message from the intake queue, if any, and handles it. For tests and tools
    /// that step the worker instead of running it.
    pub async fn run_once(&self, channel: &Channel) -> anyhow::Result<Step> {
        // A step is its own session: an earlier give-back does not cut this one short.
        *self.give_back.lock().unwrap_or_else(|e| e.into_inner()) = CancellationToken::new();
        let message = channel
            .basic_get(
                self.topology.intake_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?;
        match message {
            None => Ok(Step::Idle),
            Some(message) => {
                self.handle(message.delivery).await?;
                Ok(Step::Processed)
            }
        }
    }

    /// Consumes until `shutdown`, reconnecting with backoff whenever the broker goes away.
    pub async fn run(self) {
        let mut reconnects = broker::retry_schedule(&self.broker);
        while !self.shutdown.is_cancelled() {
            let error = match self.consume(&mut reconnects).await {
                Ok(Session::Shutdown) => break,
                Ok(Session::DatabaseDown) => {
                    metrics::apply_paused(true);
                    let back = self.wait_for_database().await;
                    metrics::apply_paused(false);
                    if !back {
                        break;
                    }
                    tracing::info!("the database answers again: consuming again");
                    continue;
                }
                Err(error) => error,
            };
            self.set_connected(false);
            if !broker::back_off(
                "apply",
                &error,
                &mut reconnects,
                &self.broker,
                &self.shutdown,
            )
            .await
            {
                break;
            }
        }
        self.set_connected(false);
        tracing::info!("apply worker stopped");
    }

    /// Waits, not consuming, until the database answers (`true`) or shutdown (`false`).
    async fn wait_for_database(&self) -> bool {
        let mut retries = broker::retry_schedule(&self.broker);
        loop {
            let delay = retries
                .next_backoff()
                .unwrap_or_else(|| self.broker.retry_max());
            if !broker::pause(delay, &self.shutdown).await {
                return false;
            }
            match sqlx::query("SELECT 1").execute(&self.pool).await {
                Ok(_) => return true,
                Err(error) => {
                    tracing::warn!(%error, ?delay, "database still unreachable; not consuming")
                }
            }
        }
    }

    fn give_back_signal(&self) -> CancellationToken {
        self.give_back
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// One broker session: `Ok` on shutdown or when the database is found down (consumption
    /// paused), `Err` when the connection is lost.
    async fn consume(
        &self,
        reconnects: &mut backoff::ExponentialBackoff,
    ) -> anyhow::Result<Session> {
        let give_back = CancellationToken::new();
        *self.give_back.lock().unwrap_or_else(|e| e.into_inner()) = give_back.clone();
        let connection = broker::connect(&self.broker.url, "apply").await?;
        let channel = connection.create_channel().await?;
        self.topology.declare_intake(&channel).await?;
        channel
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                self.topology.intake_queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.set_connected(true);
        reconnects.reset();
        tracing::info!(queue = %self.topology.intake_queue, "consuming");

        let consumer_tag = consumer.tag();
        // Stops taking deliveries at shutdown, or once a message was given back; those in
        // flight still finish and are settled.
        let stop = {
            let (shutdown, give_back) = (self.shutdown.clone(), give_back.clone());
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = give_back.cancelled() => {}
                }
            }
        };
        let watcher = tokio::spawn(watch_database(
            self.pool.clone(),
            give_back.clone(),
            self.shutdown.clone(),
        ));
        let result = consumer
            .take_until(stop)
            .try_for_each_concurrent(self.settings.concurrency, |delivery| async move {
                self.handle(delivery).await.map(drop)
            })
            .await;
        watcher.abort();
        self.set_connected(false);
        if self.shutdown.is_cancelled() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                connection.close(200, "shutdown".into()),
            )
            .await;
            return Ok(Session::Shutdown);
        }
        result?;
        if give_back.is_cancelled() {
            // Cancel the consumer, then close: what the broker had sent ahead goes back to the
            // queue, and nothing is held while the database is away.
            let _ = channel
                .basic_cancel(consumer_tag, BasicCancelOptions::default())
                .await;
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                connection.close(200, "database unreachable".into()),
            )
            .await;
            tracing::warn!(queue = %self.topology.intake_queue, "consumer cancelled until the database answers again");
            return Ok(Session::DatabaseDown);
        }
        anyhow::bail!("the broker ended the consumer")
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::broker_connected("apply", connected);
    }
}

/// Cancels `give_back` once the database does not answer (ends with the session).
async fn watch_database(pool: PgPool, give_back: CancellationToken, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = give_back.cancelled() => return,
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DATABASE_CHECK_INTERVAL) => {}
        }
        if let Err(error) = sqlx::query("SELECT 1").execute(&pool).await
            && db::is_unreachable(&error)
        {
            tracing::warn!(%error, "the database does not answer: consumption pauses");
            give_back.cancel();
            return;
        }
    }
}

/// The message's kind for metrics: its routing key, which is what decides its kind.
fn kind_label(delivery: &Delivery) -> &'static str {
    IntakeKind::from_routing_key(delivery.routing_key.as_str())
        .map_or("unknown", IntakeKind::routing_key)
}
