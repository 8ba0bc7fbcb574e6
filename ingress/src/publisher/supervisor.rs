//! The task that keeps a broker connection up and tells the handlers what they may do with it.
//!
//! `connection.blocked` is seen two ways: lapin's event stream, and its connection status
//! (polled every `HEALTH_CHECK_INTERVAL`), because a notice that arrives right after the
//! handshake can come before our listener exists. A connection opened during an alarm is
//! blocked at once; its setup (declarations) waits, without a deadline, until it is unblocked.
//!
//! RabbitMQ blocks a connection, and sends it `connection.blocked`, only once it publishes
//! during an alarm; the broker has then already taken that publish's method frame and will
//! complete it when the alarm clears, whatever happens to the connection meanwhile. So the
//! first request of an alarm must not be the one to find out: the supervisor publishes a
//! probe (to a reserved, unroutable name, without `mandatory`: it goes nowhere) every
//! `broker.alarm_probe_interval_ms`, followed by a `basic.qos` round trip. The broker answers
//! the round trip only if it did not block on the probe; otherwise the notice arrives and the
//! link is withdrawn before any request publishes there.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use backoff::ExponentialBackoffBuilder;
use backoff::backoff::Backoff;
use futures_util::StreamExt;
use lapin::options::{
    BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Event, ExchangeKind};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::BrokerSettings;
use crate::metrics;

use super::abortable::{self, Abort};
use super::{Inner, Link, LiveConnection};

/// How often the supervisor double-checks connection and channel state, in case a failure
/// produced no connection event (a channel closed by the broker, for instance).
const HEALTH_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Bound on the TCP + AMQP handshake and on the setup of an unblocked connection, so a
/// black-holed broker address does not stall reconnection forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where alarm probes go: `amq.` names are reserved, so no queue of that name can exist and the
/// default exchange drops the probe.
const PROBE_ROUTING_KEY: &str = "amq.connector-alarm-probe";

pub(super) struct Supervisor {
    inner: Arc<Inner>,
    url: String,
    channel_count: usize,
    initial_delay: Duration,
    max_delay: Duration,
    probe_interval: Duration,
    /// `broker.declare_topology`.
    declare_topology: bool,
    link: watch::Sender<Link>,
}

/// How a session ended.
enum End {
    Shutdown,
    /// The connection never became usable.
    SetupFailed(anyhow::Error),
    /// It was usable, and no longer is.
    Lost(String),
}

impl Supervisor {
    pub(super) fn new(
        inner: Arc<Inner>,
        settings: &BrokerSettings,
        link: watch::Sender<Link>,
    ) -> Self {
        Self {
            inner,
            url: settings.url.clone(),
            channel_count: settings.publish_channels.max(1),
            initial_delay: Duration::from_millis(settings.reconnect_initial_ms),
            max_delay: Duration::from_millis(settings.reconnect_max_ms),
            probe_interval: Duration::from_millis(settings.alarm_probe_interval_ms),
            declare_topology: settings.declare_topology,
            link,
        }
    }

    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(self.initial_delay)
            .with_max_interval(self.max_delay)
            .with_max_elapsed_time(None)
            .build();
        self.set_link(Link::Down);
        loop {
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                attempt = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    abortable::connect(&self.url, "connector-ingress"),
                ) => attempt,
            };
            match attempt {
                Ok(Ok((connection, abort))) => {
                    match self.session(connection, abort, &shutdown).await {
                        End::Shutdown => break,
                        End::SetupFailed(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "cannot set up the broker connection")
                        }
                        End::Lost(reason) => {
                            backoff.reset();
                            metrics::count_broker_reconnect();
                            tracing::warn!(%reason, "broker connection lost; answering 503 until it is back");
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
        self.set_link(Link::Down);
        tracing::info!("broker publisher stopped");
    }

    /// Sets up `connection`, hands it to the handlers, and watches it until it fails or the
    /// process stops. The link is `Down` again when this returns.
    async fn session(
        &self,
        connection: Connection,
        abort: Abort,
        shutdown: &CancellationToken,
    ) -> End {
        let mut events = connection.events_listener();
        let mut ticker = tokio::time::interval(HEALTH_CHECK_INTERVAL);

        let mut deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut setup = Box::pin(self.setup(&connection));
        let setup_done = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    abort.abort();
                    return End::Shutdown;
                }
                done = &mut setup => break done,
                _ = ticker.tick() => {
                    if !connection.status().connected() {
                        self.set_link(Link::Down);
                        abort.abort();
                        return End::SetupFailed(anyhow::anyhow!("the connection closed during setup"));
                    }
                    if connection.status().blocked() {
                        // Waiting out an alarm is not a broken broker: no deadline meanwhile.
                        self.set_link(Link::Blocked);
                        deadline = Instant::now() + CONNECT_TIMEOUT;
                    } else if Instant::now() > deadline {
                        self.set_link(Link::Down);
                        abort.abort();
                        return End::SetupFailed(anyhow::anyhow!("setup took longer than {CONNECT_TIMEOUT:?}"));
                    }
                }
            }
        };

        drop(setup);
        let (channels, probe) = match setup_done {
            Ok(opened) => opened,
            Err(error) => {
                self.set_link(Link::Down);
                abort.abort();
                return End::SetupFailed(error);
            }
        };
        let live = Arc::new(LiveConnection {
            connection,
            channels,
            abort,
            trouble: CancellationToken::new(),
            trouble_reason: Default::default(),
        });
        let generation = self.inner.generation.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            generation,
            "connected to the broker; intake topology in place"
        );
        self.show(&live);

        let mut probing = Box::pin(probe_forever(&probe, self.probe_interval));
        let lost = loop {
            tokio::select! {
                () = shutdown.cancelled() => break None,
                failed = &mut probing => break Some(format!("alarm probe: {failed:#}")),
                () = live.trouble.cancelled() => break Some(live.trouble_reason().to_owned()),
                event = events.next() => match event {
                    Some(Event::Error(error)) => break Some(format!("connection error: {error}")),
                    Some(Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(%reason, "the broker blocks publishing (resource alarm): answering 503 until it unblocks");
                        self.show(&live);
                    }
                    Some(Event::ConnectionUnblocked) => {
                        tracing::info!("the broker unblocked publishing");
                        self.show(&live);
                    }
                    Some(_) => {}
                    None => break Some("connection event stream ended".into()),
                },
                _ = ticker.tick() => {
                    if !live.connection.status().connected() {
                        break Some("connection is no longer open".into());
                    }
                    if let Some(channel) = live.channels.iter().find(|c| !c.status().connected()) {
                        break Some(format!("channel {} was closed", channel.id()));
                    }
                    self.show(&live);
                }
            }
        };
        self.set_link(Link::Down);
        close(
            &live,
            if lost.is_some() {
                "reconnecting"
            } else {
                "shutdown"
            },
        )
        .await;
        match lost {
            None => End::Shutdown,
            Some(reason) => End::Lost(format!("generation {generation}: {reason}")),
        }
    }

    /// Declares the intake topology, opens the confirm channels and the probe channel, and
    /// probes once: during an alarm this waits until it clears.
    async fn setup(&self, connection: &Connection) -> anyhow::Result<(Vec<Channel>, Channel)> {
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
        let probe = connection
            .create_channel()
            .await
            .context("opening the probe channel")?;
        probe_once(&probe).await?;
        Ok((channels, probe))
    }

    /// Offers `live` to the handlers, or withdraws it while the broker blocks it.
    fn show(&self, live: &Arc<LiveConnection>) {
        if live.connection.status().blocked() {
            self.set_link(Link::Blocked);
        } else {
            self.set_link(Link::Up(live.clone()));
        }
    }

    fn set_link(&self, link: Link) {
        let (connected, blocked) = match &link {
            Link::Down => (false, false),
            Link::Blocked => (false, true),
            Link::Up(_) => (true, false),
        };
        metrics::set_broker_connected(connected);
        metrics::set_broker_blocked(blocked);
        self.link.send_if_modified(|current| {
            let changed = !matches!(
                (&*current, &link),
                (Link::Down, Link::Down) | (Link::Blocked, Link::Blocked)
            ) && !matches!((&*current, &link), (Link::Up(a), Link::Up(b)) if Arc::ptr_eq(a, b));
            if changed {
                *current = link;
            }
            changed
        });
    }
}

/// One alarm probe: resolves once the broker has read past it, i.e. did not block on it.
async fn probe_once(channel: &Channel) -> anyhow::Result<()> {
    channel
        .basic_publish(
            "".into(),
            PROBE_ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            b"",
            BasicProperties::default(),
        )
        .await
        .context("publishing an alarm probe")?;
    channel
        .basic_qos(0, BasicQosOptions::default())
        .await
        .context("the round trip after an alarm probe")
}

/// Probes every `interval` until a probe fails. While the broker blocks us, a probe simply
/// waits (lapin writes nothing); the events and status say blocked meanwhile.
async fn probe_forever(channel: &Channel, interval: Duration) -> anyhow::Error {
    loop {
        tokio::time::sleep(interval).await;
        if let Err(error) = probe_once(channel).await {
            return error;
        }
    }
}

/// Closes cleanly when the broker reads us, then aborts the socket in any case: a blocked
/// connection never answers `connection.close`, and nothing queued on it may go out later.
async fn close(live: &LiveConnection, why: &str) {
    if !live.connection.status().blocked() {
        let closing = live.connection.close(200, why.into());
        if let Ok(Err(error)) = tokio::time::timeout(Duration::from_secs(5), closing).await {
            tracing::debug!(%error, "closing the broker connection");
        }
    }
    live.abort.abort();
}
