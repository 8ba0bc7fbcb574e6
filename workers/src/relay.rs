//! The relay role: publishes the ledger outbox to the `connector.ledger` exchange (persistent,
//! mandatory, confirmed) in order of creation, and marks a row published only once the broker
//! has confirmed it. It wakes on `LISTEN ledger_outbox` and polls as a fallback.
//!
//! Rows are claimed for `claim_lease_secs` by one statement (`FOR UPDATE SKIP LOCKED` inside),
//! committed before anything is published: no transaction stays open across the broker, and a
//! claim outlives a lost database connection. That is what keeps a publish from being repeated
//! needlessly: confirmed rows are marked as their confirms arrive (each time the relay would
//! otherwise wait), and a mark that fails because the database is away is retried for as long
//! as the claim holds, while no other relay may take the rows.
//!
//! A row whose publish is nacked, returned (unroutable) or unconfirmed is released, with its
//! attempt counted and its error recorded, and retried after a backoff. What remains
//! at-least-once is what no relay can know: a confirm lost with the connection, or a process
//! killed between a confirm and its mark. Those rows go out again once their claim lapses, with
//! the same deterministic `event_id`, which consumers dedupe (§2.4, §6).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use futures_util::FutureExt as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use connector_schema::Topology;
use connector_schema::events::{EventType, LedgerEvent};

use crate::config::{BrokerSettings, RelaySettings};
use crate::{Step, broker, metrics, outbox};

/// Recording stops this long before a claim lapses, so that it never races a relay that
/// takes the rows over (clocks: the lease is the database's, the deadline ours).
const CLAIM_MARGIN: Duration = Duration::from_secs(2);

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
        let lease = Duration::from_secs(self.settings.claim_lease_secs);
        let claimed_at = Instant::now();
        let rows = outbox::claim(&self.pool, self.settings.batch_size, lease).await?;
        if rows.is_empty() {
            return Ok(Step::Idle);
        }
        // Past this, another relay may have taken the rows: stop trying to record anything.
        let claim_ends = claimed_at + lease.saturating_sub(CLAIM_MARGIN);

        let started = Instant::now();
        // Publish them all first, in id order, every one queued before any write is waited for
        // (`broker::queued_in_order`); then collect the confirms in the same order.
        let publishes = broker::queued_in_order(rows.iter().map(|row| {
            channel.basic_publish(
                self.topology.ledger_exchange.as_str().into(),
                row.event_type.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                row.body.as_bytes(),
                LedgerEvent::amqp_properties(row.event_id, &row.event_type),
            )
        }))
        .await;
        let timeout = Duration::from_millis(self.settings.confirm_timeout_ms);
        // One deadline for the whole batch: a stalled broker costs one timeout, not one each.
        let confirms_due = tokio::time::Instant::now() + timeout;
        // Confirmed, not yet marked: what a crash now would publish a second time.
        let mut unmarked = Vec::with_capacity(rows.len());
        // Off after a failed mark: the database is away, and each attempt would wait for it.
        let mut marking = true;
        let mut failures = Vec::new();
        for (row, publish) in rows.iter().zip(publishes) {
            let (id, event_type) = (row.id, &row.event_type);
            let failure = |reason, detail: String| Failure { id, reason, detail };
            let confirm = match publish {
                Ok(confirm) => tokio::time::timeout_at(confirms_due, confirm),
                Err(error) => {
                    failures.push(failure("channel", error.to_string()));
                    continue;
                }
            };
            tokio::pin!(confirm);
            let outcome = match (&mut confirm).now_or_never() {
                Some(outcome) => outcome,
                None => {
                    // Waiting anyway: mark what is confirmed so far meanwhile (group commit).
                    if marking && !unmarked.is_empty() {
                        match outbox::mark_published(&self.pool, &unmarked).await {
                            Ok(()) => unmarked.clear(),
                            Err(_) => marking = false,
                        }
                    }
                    confirm.await
                }
            };
            match outcome {
                Ok(Ok(Confirmation::Ack(None))) => {
                    unmarked.push(id);
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
        self.record(&unmarked, &failures, claim_ends).await?;

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

    /// Marks the confirmed rows published and releases the failed ones with their error, in
    /// one transaction, retried while the claim holds (the database may be restarting).
    async fn record(
        &self,
        published: &[i64],
        failures: &[Failure],
        claim_ends: Instant,
    ) -> anyhow::Result<()> {
        if published.is_empty() && failures.is_empty() {
            return Ok(());
        }
        let released: Vec<(i64, String)> = failures
            .iter()
            .map(|f| (f.id, format!("{}: {}", f.reason, f.detail)))
            .collect();
        let mut retries = broker::retry_schedule(&self.broker);
        loop {
            let error = match outbox::settle(&self.pool, published, &released).await {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            let wait = retries.next_backoff().unwrap_or(Duration::from_secs(1));
            if Instant::now() + wait >= claim_ends || self.shutdown.is_cancelled() {
                return Err(anyhow::Error::new(error).context(format!(
                    "recording {} published and {} failed ledger events; they go out again once their claim lapses",
                    published.len(),
                    failures.len()
                )));
            }
            tracing::warn!(%error, "recording relayed events failed; retrying while the claim holds");
            metrics::relay_record_retry();
            tokio::time::sleep(wait).await;
        }
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
        let mut listener = outbox::listen(&self.pool).await?;
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

    /// The relay's counters, at zero (`metrics::at_zero` says why): events published by type,
    /// failures by reason, retried marks.
    pub fn export_counters_at_zero() {
        for event_type in EventType::ALL {
            let labels = [("event_type", event_type.as_str())];
            metrics::at_zero(metrics::RELAY_PUBLISHED_TOTAL, &labels);
        }
        for reason in metrics::RELAY_FAILURE_REASONS {
            metrics::at_zero(metrics::RELAY_FAILURES_TOTAL, &[("reason", reason)]);
        }
        metrics::at_zero(metrics::RELAY_RECORD_RETRIES_TOTAL, &[]);
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        metrics::broker_connected("relay", connected);
    }
}
