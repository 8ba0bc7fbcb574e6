//! Durable publishing to the intake exchange: the mechanism behind "200 means durable" (§2.1).
//!
//! A supervisor task (`supervisor.rs`) owns the broker connection. It connects with
//! exponential backoff, declares the intake topology, opens a few channels in confirm mode,
//! and publishes the connection's state through a `watch` channel. Request handlers read the
//! current state without locking anything held across an await, pick a channel round-robin,
//! publish persistent + mandatory, and await that one message's confirm. Concurrent requests
//! therefore pipeline on the channels instead of queueing behind one another.
//!
//! A 503 must mean "not enqueued" whenever we can know it (§2.8, the seed: a 4xx/5xx is a
//! total rejection):
//! - while the connection is down or the broker blocks publishers (a resource alarm), the
//!   state is withdrawn: handlers answer 503 at once without publishing, `/readyz` is 503;
//! - a publish not confirmed in time aborts the whole connection's socket before the 503
//!   goes out (`abortable.rs`), so a publish lapin still held (it holds every frame while
//!   blocked) can never reach the broker later;
//! - a returned (unroutable) publish makes the supervisor reconnect, which declares the
//!   intake queue and its bindings again; readiness is false meanwhile.
//!
//! What stays ambiguous is inherent to AMQP: a publish the broker took whose confirm was lost
//! (the connection died, or the timeout fired after the broker had it). The sender's retry
//! with the same `X-Idempotency-Key` is then a no-op at the workers.

mod abortable;
mod supervisor;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::{Channel, Confirmation, Connection};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use connector_schema::seal::SealKeys;
use connector_schema::{IntakeEnvelope, Topology};

use crate::config::BrokerSettings;
use crate::metrics;

use self::abortable::Abort;
use self::supervisor::Supervisor;

/// Why a request could not be durably enqueued. All of them answer 503: the sender retries.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("the broker is blocking publishers (resource alarm); nothing was published")]
    Blocked,
    #[error("broker channel error: {0}")]
    Channel(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker could not route the message ({code} {text})")]
    Returned { code: u16, text: String },
    #[error("the broker did not confirm within {0:?}; the connection was aborted")]
    ConfirmTimeout(Duration),
}

/// The publisher's view of the broker, as `/readyz` reports it.
#[derive(Debug, Clone)]
enum Link {
    Down,
    /// Connected, but the broker blocks publishing: nothing is published.
    Blocked,
    Up(Arc<LiveConnection>),
}

/// What `/readyz` says about the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerState {
    Connected,
    Blocked,
    Disconnected,
}

impl BrokerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::Blocked => "blocked",
            Self::Disconnected => "disconnected",
        }
    }
}

/// A cheap-to-clone handle on the supervised connection.
#[derive(Debug, Clone)]
pub struct IntakePublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    link: watch::Receiver<Link>,
    topology: Topology,
    /// Seals every envelope, so the workers know an ingress accepted it.
    seal: SealKeys,
    confirm_timeout: Duration,
    /// Round-robin cursor over the confirm channels.
    next_channel: AtomicUsize,
    /// How many times the connection has been (re)established, for logs and tests.
    generation: AtomicU64,
}

/// One established connection and its confirm-mode channels.
#[derive(Debug)]
struct LiveConnection {
    connection: Connection,
    channels: Vec<Channel>,
    abort: Abort,
    /// Cancelled when a handler found the connection unfit; `trouble_reason` says why.
    trouble: CancellationToken,
    trouble_reason: Mutex<Option<&'static str>>,
}

impl LiveConnection {
    /// Asks the supervisor for a fresh connection.
    fn report(&self, why: &'static str) {
        self.trouble_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why);
        self.trouble.cancel();
    }

    /// Ends the connection now, so nothing still queued on it goes out, then reports it.
    fn discard(&self, why: &'static str) {
        self.abort.abort();
        self.report(why);
    }

    fn trouble_reason(&self) -> &'static str {
        self.trouble_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or("unknown")
    }
}

impl IntakePublisher {
    /// Starts the supervisor. It runs until `shutdown` is cancelled, then closes the
    /// connection cleanly; await the handle to know it has.
    pub fn spawn(
        settings: &BrokerSettings,
        topology: Topology,
        seal: SealKeys,
        shutdown: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (link_tx, link_rx) = watch::channel(Link::Down);
        let inner = Arc::new(Inner {
            link: link_rx,
            topology,
            seal,
            confirm_timeout: settings.confirm_timeout(),
            next_channel: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        });
        let supervisor = Supervisor::new(inner.clone(), settings, link_tx);
        let handle = tokio::spawn(supervisor.run(shutdown));
        (Self { inner }, handle)
    }

    pub fn is_connected(&self) -> bool {
        self.state() == BrokerState::Connected
    }

    pub fn state(&self) -> BrokerState {
        match &*self.inner.link.borrow() {
            Link::Down => BrokerState::Disconnected,
            Link::Blocked => BrokerState::Blocked,
            Link::Up(_) => BrokerState::Connected,
        }
    }

    /// Resolves once connected (or immediately if already). For start-up and tests.
    pub async fn wait_until_connected(&self) {
        let mut link = self.inner.link.clone();
        // Only errors when the supervisor is gone, in which case there is nothing to wait for.
        let _ = link.wait_for(|l| matches!(l, Link::Up(_))).await;
    }

    /// Publishes `envelope` persistent and mandatory, and returns once the broker has
    /// confirmed it: only then is it safe to answer 200. A failure is logged here, with its
    /// cause, in the caller's span; the sender is only told to retry.
    pub async fn publish(&self, envelope: &IntakeEnvelope) -> Result<(), PublishError> {
        let published = self.publish_confirmed(envelope).await;
        if let Err(error) = &published {
            tracing::warn!(%error, "durable enqueue failed");
        }
        published
    }

    async fn publish_confirmed(&self, envelope: &IntakeEnvelope) -> Result<(), PublishError> {
        let live = match &*self.inner.link.borrow() {
            Link::Up(live) => live.clone(),
            Link::Blocked => return Err(PublishError::Blocked),
            Link::Down => return Err(PublishError::NotConnected),
        };
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let channel = &live.channels[index];

        let started = Instant::now();
        // Writing the frames and the confirm share one deadline: lapin's publish future itself
        // waits while the broker blocks the connection.
        let confirmed = async {
            let confirm = channel
                .basic_publish(
                    self.inner.topology.intake_exchange.as_str().into(),
                    envelope.kind.routing_key().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &envelope.body,
                    self.inner.seal.sealed_properties(envelope),
                )
                .await?;
            confirm.await
        };
        let Ok(confirmation) = tokio::time::timeout(self.inner.confirm_timeout, confirmed).await
        else {
            // Before answering 503: what lapin still holds of this publish must never go out.
            live.discard("a publish was not confirmed in time");
            return Err(PublishError::ConfirmTimeout(self.inner.confirm_timeout));
        };
        let confirmation = confirmation?;
        metrics::record_confirm_latency(started.elapsed());

        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                // The intake queue or a binding is gone: a new session declares them again.
                live.report("a publish was unroutable");
                Err(PublishError::Returned {
                    code: returned.reply_code,
                    text: returned.reply_text.to_string(),
                })
            }
            // Confirm mode is always on for these channels; treat its absence as a refusal.
            Confirmation::Nack(None) | Confirmation::NotRequested => Err(PublishError::Nacked),
        }
    }
}
