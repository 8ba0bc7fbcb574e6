//! Durable publishing to the intake exchange: the mechanism behind "200 means durable" (§2.1).
//!
//! A supervisor task owns the broker connection. It connects with exponential backoff
//! (delays from the `backoff` crate), declares the intake topology, opens a few channels in
//! confirm mode, and publishes them through a `watch` channel. Request handlers read the
//! current set without locking anything held across an await, pick a channel round-robin,
//! publish persistent + mandatory, and await that one message's confirm. Concurrent requests
//! therefore pipeline on the channels instead of queueing behind one another.
//!
//! Whenever the connection or a channel dies, the supervisor withdraws the set (handlers
//! answer 503 at once, `/readyz` turns not-ready) and reconnects.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures_util::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties, Event, ExchangeKind};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use connector_schema::seal::SealKeys;
use connector_schema::{IntakeEnvelope, Topology};

use crate::config::BrokerSettings;
use crate::metrics;

/// How often the supervisor double-checks connection and channel state, in case a failure
/// produced no connection event (a channel closed by the broker, for instance).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on the TCP + AMQP handshake, so a black-holed broker address does not stall
/// reconnection forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request could not be durably enqueued. All of them answer 503: the sender retries.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    NotConnected,
    #[error("broker channel error: {0}")]
    Channel(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("the broker could not route the message ({code} {text})")]
    Returned { code: u16, text: String },
    #[error("the broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
}

/// A cheap-to-clone handle on the supervised connection.
#[derive(Debug, Clone)]
pub struct IntakePublisher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    live: watch::Receiver<Option<Arc<LiveConnection>>>,
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
        let (live_tx, live_rx) = watch::channel(None);
        let inner = Arc::new(Inner {
            live: live_rx,
            topology,
            seal,
            confirm_timeout: settings.confirm_timeout(),
            next_channel: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        });
        let supervisor = Supervisor {
            inner: inner.clone(),
            url: settings.url.clone(),
            channel_count: settings.publish_channels.max(1),
            initial_delay: Duration::from_millis(settings.reconnect_initial_ms),
            max_delay: Duration::from_millis(settings.reconnect_max_ms),
            declare_topology: settings.declare_topology,
            live_tx,
        };
        let handle = tokio::spawn(supervisor.run(shutdown));
        (Self { inner }, handle)
    }

    pub fn is_connected(&self) -> bool {
        self.inner.live.borrow().is_some()
    }

    /// Resolves once connected (or immediately if already). For start-up and tests.
    pub async fn wait_until_connected(&self) {
        let mut live = self.inner.live.clone();
        // Only errors when the supervisor is gone, in which case there is nothing to wait for.
        let _ = live.wait_for(Option::is_some).await;
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
        let live = self
            .inner
            .live
            .borrow()
            .clone()
            .ok_or(PublishError::NotConnected)?;
        let index = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let channel = &live.channels[index];

        let started = Instant::now();
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
        let confirmation = tokio::time::timeout(self.inner.confirm_timeout, confirm)
            .await
            .map_err(|_| PublishError::ConfirmTimeout(self.inner.confirm_timeout))??;
        metrics::record_confirm_latency(started.elapsed());

        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
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

/// The task that keeps a connection up.
struct Supervisor {
    inner: Arc<Inner>,
    url: String,
    channel_count: usize,
    initial_delay: Duration,
    max_delay: Duration,
    /// `broker.declare_topology`.
    declare_topology: bool,
    live_tx: watch::Sender<Option<Arc<LiveConnection>>>,
}

impl Supervisor {
    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_delay)
            .with_max_interval(self.max_delay)
            .with_max_elapsed_time(None)
            .build();
        metrics::set_broker_connected(false);
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = tokio::time::timeout(CONNECT_TIMEOUT, self.connect()) => attempt,
            };
            match attempt {
                Ok(Ok(live)) => {
                    backoff.reset();
                    let live = Arc::new(live);
                    let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    self.live_tx.send_replace(Some(live.clone()));
                    metrics::set_broker_connected(true);
                    tracing::info!(
                        generation,
                        "connected to the broker; intake topology in place"
                    );

                    let lost = tokio::select! {
                        () = shutdown.cancelled() => None,
                        reason = watch_for_failure(&live) => Some(reason),
                    };
                    self.live_tx.send_replace(None);
                    metrics::set_broker_connected(false);
                    match lost {
                        None => {
                            close(&live, "shutdown").await;
                            break;
                        }
                        Some(reason) => {
                            metrics::count_broker_reconnect();
                            tracing::warn!(generation, %reason, "broker connection lost; answering 503 until it is back");
                            close(&live, "reconnecting").await;
                        }
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(error = %format!("{error:#}"), "cannot connect to the broker")
                }
                Err(_) => {
                    tracing::warn!(timeout = ?CONNECT_TIMEOUT, "broker connection attempt timed out")
                }
            }
            let delay = backoff.next_backoff().unwrap_or(self.max_delay);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        tracing::info!("broker publisher stopped");
    }

    async fn connect(&self) -> anyhow::Result<LiveConnection> {
        use anyhow::Context as _;
        let properties =
            ConnectionProperties::default().with_connection_name("connector-ingress".into());
        let connection = Connection::connect(&self.url, properties)
            .await
            .context("opening the AMQP connection")?;
        let setup = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        if self.declare_topology {
            self.inner
                .topology
                .declare_intake(&setup)
                .await
                .context("declaring the intake topology")?;
        } else {
            // A user without `configure` may still check: until the workers have declared
            // the exchange, this fails and the ingress stays unready and retries.
            let passive = ExchangeDeclareOptions {
                passive: true,
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            setup
                .exchange_declare(
                    self.inner.topology.intake_exchange.as_str().into(),
                    ExchangeKind::Topic,
                    passive,
                    FieldTable::default(),
                )
                .await
                .context("checking that the intake exchange exists (broker.declare_topology = false: the workers declare it)")?;
        }
        setup.close(200, "topology declared".into()).await.ok();
        let mut channels = Vec::with_capacity(self.channel_count);
        for _ in 0..self.channel_count {
            let channel = connection
                .create_channel()
                .await
                .context("opening a channel")?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .context("enabling publisher confirms")?;
            channels.push(channel);
        }
        Ok(LiveConnection {
            connection,
            channels,
        })
    }
}

/// Resolves with a reason once the connection or any channel is no longer usable.
async fn watch_for_failure(live: &LiveConnection) -> String {
    let mut events = live.connection.events_listener();
    let mut ticker = tokio::time::interval(HEALTH_CHECK_INTERVAL);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Event::Error(error)) => return format!("connection error: {error}"),
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(%reason, "the broker blocked publishing (resource alarm); confirms will time out");
                }
                Some(Event::ConnectionUnblocked) => tracing::info!("the broker unblocked publishing"),
                Some(_) => {}
                None => return "connection event stream ended".into(),
            },
            _ = ticker.tick() => {
                if !live.connection.status().connected() {
                    return "connection is no longer open".into();
                }
                if let Some(channel) = live.channels.iter().find(|c| !c.status().connected()) {
                    return format!("channel {} was closed", channel.id());
                }
            }
        }
    }
}

async fn close(live: &LiveConnection, why: &str) {
    let closing = live.connection.close(200, why.into());
    if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(5), closing).await {
        tracing::debug!(%error, "closing the broker connection");
    }
}
