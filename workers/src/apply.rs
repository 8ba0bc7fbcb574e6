//! The apply role: consumes the intake queue in groups and settles each delivery only after
//! its effects are committed (§2.3).
//!
//! Group commit: up to `apply.group_size` deliveries (those ready, plus those arriving within
//! `apply.group_linger_ms`) are applied in one transaction, one savepoint per message (see
//! [`group`]), then settled one by one. Each message keeps the disposition it would have had
//! alone:
//!
//! - applied, duplicate or replay → ack;
//! - valid but not applicable → quarantined (in the group's transaction), then ack;
//! - unreadable → reject without requeue: straight to the dead-letter queue;
//! - forged (a `type` other than its routing key, a missing or wrong ingress seal: see
//!   `intake`) → the same, counted apart: nothing of it is applied, and it never enters the
//!   group's transaction;
//! - transient failure (database down, deadlock) → the whole group is retried with backoff
//!   while its messages stay unacknowledged, for at most `apply.max_hold_secs`; then they are
//!   given back (requeued) and the worker stops consuming until the database answers again.
//!   Holding them longer would run into the broker's consumer timeout, whose requeues count
//!   towards the delivery limit again and again: a long outage would dead-letter accepted
//!   notifications. This way an outage of any length costs a held message one delivery
//!   attempt. A group failing [`GROUP_ATTEMPTS`] times in a row, or failing for a reason of
//!   its own (its commit refused), is applied one message at a time, so that one message
//!   cannot hold the others back;
//! - any other failure → that message alone is requeued, and the queue's delivery limit
//!   dead-letters a message that keeps failing.

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

use connector_schema::seal::SealKeys;
use connector_schema::{IntakeKind, Topology};

use crate::config::{ApplySettings, BrokerSettings, PaysafeSettings};
use crate::group_transaction::GroupFailure;
use crate::intake::{self, Admitted, Refusal};
use crate::{Step, broker, db, metrics};

pub mod counters;
mod group;
mod grouping;

use grouping::{GroupLimits, groups};

/// While consuming, how often the apply role checks that the database answers; when it does
/// not, the role stops consuming before it takes messages it would only have to give back.
const DATABASE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Transient failures in a row after which a group is applied one message at a time.
const GROUP_ATTEMPTS: usize = 3;

/// The settings of a group's transaction. The workers' sessions plan every statement at every
/// execution (`force_custom_plan`, see `db::pool`); inside a group PostgreSQL's plan cache is
/// used instead, because re-planning the apply's statements was about a quarter of
/// PostgreSQL's CPU per message (ops/BENCHMARKS.md, "Where the apply's time goes"). What
/// `force_custom_plan` guards against, a generic plan first built while `orders` was small that
/// keeps scanning the whole table as it grows, cannot happen here: with sequential scans off,
/// and every statement of the apply path looking rows up by key in a form that cannot be
/// hashed or materialized (`statements::UNITS_SEEN` says how), a generic plan reads `orders`,
/// `seen_nonces` and `idempotency_keys` through their primary keys whatever their size when it
/// was built (e2e `apply_plans`).
pub const GROUP_SETTINGS: &str = "SET LOCAL plan_cache_mode = auto; SET LOCAL enable_seqscan = off";

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

    /// Decides what each of `deliveries` needs, applying those it can as one group (see
    /// [`group`]). Never returns before the outcomes are durable (or the worker is shutting
    /// down); refused deliveries are decided at once, outside any transaction.
    pub async fn process(&self, deliveries: &[Delivery]) -> Vec<Disposition> {
        let mut dispositions: Vec<Option<Disposition>> = Vec::with_capacity(deliveries.len());
        let mut admitted = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let admission = intake::admit(
                delivery.routing_key.as_str(),
                &delivery.properties,
                &delivery.data,
                &self.seal,
            );
            dispositions.push(match admission {
                Ok(message) => {
                    admitted.push(message);
                    None
                }
                Err(Refusal::Unreadable(reason)) => Some(Disposition::DeadLetter(reason)),
                Err(Refusal::Forged { reason, detail }) => {
                    Some(Disposition::Forged { reason, detail })
                }
            });
        }
        let members: Vec<&Admitted> = admitted.iter().collect();
        let mut applied = self.apply_with_retries(&members).await.into_iter();
        dispositions
            .into_iter()
            .map(|refused| {
                refused
                    .or_else(|| applied.next())
                    .unwrap_or_else(|| Disposition::Requeue("no outcome".into()))
            })
            .collect()
    }

    /// Applies `members` as one group, retrying it through transient failures. A group that
    /// keeps failing, or fails for a reason of its own, is applied one message at a time, so
    /// that one message cannot hold the others back.
    async fn apply_with_retries(&self, members: &[&Admitted]) -> Vec<Disposition> {
        if members.is_empty() {
            return Vec::new();
        }
        let mut hold = Hold::new(self);
        match self.attempt(members, &mut hold).await {
            Ok(dispositions) => dispositions,
            Err(failure) => {
                tracing::warn!(
                    error = %failure.error,
                    messages = members.len(),
                    "group failed: applying its messages one at a time"
                );
                metrics::group_split();
                let mut dispositions = Vec::with_capacity(members.len());
                for member in members {
                    // Given back (or shutting down): the rest follow without trying again.
                    if let Some(verdict) = hold.verdict.clone() {
                        dispositions.push(verdict);
                        continue;
                    }
                    match self.attempt(std::slice::from_ref(member), &mut hold).await {
                        Ok(mut one) => dispositions.append(&mut one),
                        Err(failure) => {
                            dispositions.push(Disposition::Requeue(failure.error));
                        }
                    }
                }
                dispositions
            }
        }
    }

    /// Applies `members` in one transaction, retried with backoff through transient failures
    /// while `hold` allows. `Err` (several members only) when the group should be split: it
    /// failed for a reason of its own, or transiently [`GROUP_ATTEMPTS`] times in a row.
    async fn attempt(
        &self,
        members: &[&Admitted],
        hold: &mut Hold,
    ) -> Result<Vec<Disposition>, GroupFailure> {
        let mut failures = 0;
        loop {
            let failure = match group::apply(&self.pool, &self.paysafe, members).await {
                Ok(dispositions) => {
                    hold.succeeded();
                    return Ok(dispositions);
                }
                Err(failure) => failure,
            };
            failures += 1;
            if members.len() > 1 && (!failure.transient || failures >= GROUP_ATTEMPTS) {
                return Err(failure);
            }
            if !failure.transient {
                let requeue = Disposition::Requeue(failure.error);
                return Ok(vec![requeue; members.len()]);
            }
            if let Err(disposition) = hold.wait(&failure.error).await {
                return Ok(vec![disposition; members.len()]);
            }
        }
    }

    /// Processes `deliveries` as one group and settles each with the broker, after the commit.
    pub async fn handle(&self, deliveries: Vec<Delivery>) -> lapin::Result<Vec<Disposition>> {
        let started = Instant::now();
        metrics::group(deliveries.len());
        let dispositions = self.process(&deliveries).await;
        // One ack per delivery: several groups are in flight on the channel, so a `multiple`
        // ack could settle another group's deliveries before their commit. All of them are
        // queued before any is waited for (`queued_in_order`).
        let settled = broker::queued_in_order(
            deliveries
                .iter()
                .zip(&dispositions)
                .map(|(delivery, disposition)| self.settle(delivery, disposition, started)),
        )
        .await;
        settled.into_iter().collect::<lapin::Result<()>>()?;
        Ok(dispositions)
    }

    async fn settle(
        &self,
        delivery: &Delivery,
        disposition: &Disposition,
        started: Instant,
    ) -> lapin::Result<()> {
        let kind = kind_label(delivery);
        let tag = delivery.delivery_tag;
        match disposition {
            Disposition::Ack(outcome) => {
                delivery.ack(BasicAckOptions::default()).await?;
                metrics::message(kind, outcome, started.elapsed());
            }
            Disposition::DeadLetter(reason) => {
                tracing::error!(%reason, delivery_tag = tag, "unreadable message dead-lettered");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                metrics::message(kind, "dead_lettered", started.elapsed());
            }
            Disposition::Forged { reason, detail } => {
                tracing::error!(
                    reason,
                    %detail,
                    delivery_tag = tag,
                    "forged message dead-lettered: nothing of it applied"
                );
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                metrics::forged(reason);
                metrics::message(kind, "forged", started.elapsed());
            }
            Disposition::Requeue(reason) => {
                tracing::error!(%reason, delivery_tag = tag, "message requeued");
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await?;
                metrics::message(kind, "requeued", started.elapsed());
            }
            Disposition::GiveBack(reason) => {
                tracing::warn!(%reason, delivery_tag = tag, "database unreachable: message given back, consumption pauses");
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
        Ok(())
    }

    /// Takes one message from the intake queue, if any, and handles it (a group of one). For
    /// tests and tools that step the worker instead of running it.
    pub async fn run_once(&self, channel: &Channel) -> anyhow::Result<Step> {
        Ok(match self.run_group_once(channel, 1).await?.is_empty() {
            true => Step::Idle,
            false => Step::Processed,
        })
    }

    /// Takes up to `size` messages from the intake queue and handles them as one group;
    /// returns their dispositions, in delivery order (none when the queue was empty).
    pub async fn run_group_once(
        &self,
        channel: &Channel,
        size: usize,
    ) -> anyhow::Result<Vec<Disposition>> {
        // A step is its own session: an earlier give-back does not cut this one short.
        *self.give_back.lock().unwrap_or_else(|e| e.into_inner()) = CancellationToken::new();
        let mut deliveries = Vec::with_capacity(size);
        while deliveries.len() < size {
            let message = channel
                .basic_get(
                    self.topology.intake_queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?;
            match message {
                Some(message) => deliveries.push(message.delivery),
                None => break,
            }
        }
        if deliveries.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.handle(deliveries).await?)
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
        let linger = Duration::from_millis(self.settings.group_linger_ms);
        let limits = GroupLimits {
            messages: self.settings.group_size,
            bytes: self.settings.group_max_bytes,
            linger,
        };
        let result = groups(Box::pin(consumer.take_until(stop)), limits)
            .try_for_each_concurrent(self.settings.concurrency, |deliveries| async move {
                self.handle(deliveries).await.map(drop)
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

/// The retry state of messages held through transient failures: the backoff, and since when
/// they have been failing (shared by a group and, once split, by its messages).
struct Hold {
    retries: backoff::ExponentialBackoff,
    failing_since: Option<Instant>,
    max_hold: Duration,
    retry_max: Duration,
    give_back: CancellationToken,
    shutdown: CancellationToken,
    /// What [`Hold::wait`] decided instead of another attempt, once it did.
    verdict: Option<Disposition>,
}

impl Hold {
    fn new(worker: &ApplyWorker) -> Self {
        Self {
            retries: broker::retry_schedule(&worker.broker),
            failing_since: None,
            max_hold: Duration::from_secs(worker.settings.max_hold_secs),
            retry_max: worker.broker.retry_max(),
            give_back: worker.give_back_signal(),
            shutdown: worker.shutdown.clone(),
            verdict: None,
        }
    }

    /// A commit went through: the database answers, so the backoff starts small again.
    fn succeeded(&mut self) {
        self.retries.reset();
    }

    /// Waits before the next attempt after `error`; `Err` is what to do with the held messages
    /// instead (give them back, or requeue them at shutdown).
    async fn wait(&mut self, error: &str) -> Result<(), Disposition> {
        let verdict = self.delay(error).await;
        if let Err(disposition) = &verdict {
            self.verdict = Some(disposition.clone());
        }
        verdict
    }

    async fn delay(&mut self, error: &str) -> Result<(), Disposition> {
        metrics::transient_retry();
        let failing_for = self
            .failing_since
            .get_or_insert_with(Instant::now)
            .elapsed();
        if failing_for >= self.max_hold {
            return Err(Disposition::GiveBack(format!(
                "failing for {failing_for:?} (apply.max_hold_secs): {error}"
            )));
        }
        let delay = self.retries.next_backoff().unwrap_or(self.retry_max);
        tracing::warn!(%error, ?delay, "transient failure; retrying while holding the messages");
        tokio::select! {
            () = self.shutdown.cancelled() => {
                Err(Disposition::Requeue("shutting down during a retry".into()))
            }
            () = self.give_back.cancelled() => {
                Err(Disposition::GiveBack(format!("another message gave up first: {error}")))
            }
            () = tokio::time::sleep(delay) => Ok(()),
        }
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
        if let Err(error) = db::probe(&pool).await
            && db::is_unreachable(&error)
        {
            tracing::warn!(%error, "the database does not answer: consumption pauses");
            give_back.cancel();
            return;
        }
    }
}

/// The `kind` label of a message whose routing key is no known kind.
const UNKNOWN_KIND: &str = "unknown";

/// The message's kind for metrics: its routing key, which is what decides its kind.
fn kind_label(delivery: &Delivery) -> &'static str {
    IntakeKind::from_routing_key(delivery.routing_key.as_str())
        .map_or(UNKNOWN_KIND, IntakeKind::routing_key)
}
