//! Assembly of a workers process: the roles it runs, the database pool, migrations and the
//! operations listener. [`Workers::build`] binds; [`Workers::run_until_stopped`] runs until the
//! injected shutdown future resolves, then lets in-flight messages finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use backoff::backoff::Backoff;
use clap::ValueEnum;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use connector_schema::seal::SealKeys;

use crate::apply::ApplyWorker;
use crate::config::Settings;
use crate::console::{Console, ConsoleState};
use crate::evidence::EvidenceArchiver;
use crate::lifecycle::{BeforeDrop, Lifecycle};
use crate::poller::Poller;
use crate::probes::{self, Readiness};
use crate::relay::Relay;
use crate::{broker, db, gauges, metrics};

/// How often every process reads its database gauges (outbox backlog, quarantine).
const GAUGES_INTERVAL: Duration = Duration::from_secs(10);

/// A job a workers process can do; a process runs any subset, so each scales on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Consume the intake queue and apply messages to PostgreSQL.
    Apply,
    /// Publish the ledger outbox.
    Relay,
    /// Keep the data within its retentions: partitions ahead, drops, batched purges (nonces
    /// included). `purge`, its former name, is still accepted.
    #[value(alias = "purge")]
    Lifecycle,
    /// Poll Paysafe for payments and credits still non-final.
    Poller,
}

#[derive(Debug)]
pub struct Workers {
    settings: Settings,
    roles: Vec<Role>,
    pool: PgPool,
    ops_listener: TcpListener,
    /// The seals the apply role accepts; `None` when this process does not apply.
    seal: Option<SealKeys>,
    /// The operator console, when `console.listen` is set.
    console: Option<Console>,
}

impl Workers {
    pub async fn build(settings: Settings, roles: Vec<Role>) -> anyhow::Result<Self> {
        let seal = roles
            .contains(&Role::Apply)
            .then(|| settings.seal_keys())
            .transpose()?;
        let pool = db::pool(&settings.database)?;
        let ops_listener = TcpListener::bind(settings.ops.listen)
            .await
            .with_context(|| format!("binding ops.listen {}", settings.ops.listen))?;
        let console = match settings.console.listen {
            None => None,
            Some(listen) => {
                // A release from the console re-checks the ingress's seal, as the CLI's does.
                let state = ConsoleState::new(
                    pool.clone(),
                    settings.console.clone(),
                    &settings.broker.url,
                    settings.topology.topology(),
                    settings.seal_keys()?,
                )?;
                Some(Console::bind(listen, state).await?)
            }
        };
        Ok(Self {
            settings,
            roles,
            pool,
            ops_listener,
            seal,
            console,
        })
    }

    /// Where the operator console listens, if it runs.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console
            .as_ref()
            .and_then(|console| console.local_addr().ok())
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: finishing in-flight messages");
            trigger.cancel();
        });

        // The roles, built now so `/readyz` can watch them from the start, each with its
        // counters exported at zero.
        let metrics = metrics::install();
        let topology = self.settings.topology.topology();
        let mut roles: Vec<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>> = Vec::new();
        let mut brokers = Vec::new();
        for role in &self.roles {
            match role {
                Role::Apply => {
                    let worker = ApplyWorker::new(
                        self.pool.clone(),
                        topology.clone(),
                        self.settings.broker.clone(),
                        self.settings.apply.clone(),
                        self.seal
                            .clone()
                            .context("the apply role has its seal keys")?,
                        stop.clone(),
                    )
                    .with_paysafe(self.settings.paysafe.clone());
                    crate::apply::counters::export_at_zero();
                    brokers.push(("apply", worker.connected_flag()));
                    roles.push(Box::pin(worker.run()));
                }
                Role::Relay => {
                    let relay = Relay::new(
                        self.pool.clone(),
                        topology.clone(),
                        self.settings.broker.clone(),
                        self.settings.relay.clone(),
                        stop.clone(),
                    );
                    Relay::export_counters_at_zero();
                    brokers.push(("relay", relay.connected_flag()));
                    roles.push(Box::pin(relay.run()));
                }
                Role::Poller => {
                    let poller = Poller::new(
                        self.pool.clone(),
                        self.settings.paysafe.clone(),
                        stop.clone(),
                    )?;
                    Poller::export_counters_at_zero();
                    roles.push(Box::pin(poller.run()));
                }
                Role::Lifecycle => {
                    // Without an archive, raw-request partitions are kept (never dropped
                    // unarchived).
                    let archiver = self
                        .settings
                        .evidence
                        .store()
                        .context("opening evidence.directory")?
                        .map(|store| {
                            Arc::new(EvidenceArchiver::new(Arc::new(store))) as Arc<dyn BeforeDrop>
                        });
                    let lifecycle = Lifecycle::new(
                        self.pool.clone(),
                        self.settings.retention.clone(),
                        self.settings.nonces.retention_secs,
                        archiver,
                    );
                    Lifecycle::export_counters_at_zero();
                    roles.push(Box::pin(lifecycle.run(stop.clone())));
                }
            }
        }

        // Served from the start: live while the database is still unreachable, not ready.
        let readiness = Readiness {
            pool: self.pool.clone(),
            brokers,
        };
        let ops = tokio::spawn(
            axum::serve(self.ops_listener, probes::router(readiness, metrics))
                .with_graceful_shutdown(stop.clone().cancelled_owned())
                .into_future(),
        );

        // The roles need the schema; wait for the database rather than crash-looping.
        let mut retries = broker::retry_schedule(&self.settings.broker);
        let mut migrated = false;
        while !migrated {
            match db::migrate(&self.pool, &self.settings.retention).await {
                Ok(()) => migrated = true,
                Err(error) => {
                    let delay = retries.next_backoff().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(error = %format!("{error:#}"), ?delay, "cannot migrate the database yet");
                    if !broker::pause(delay, &stop).await {
                        break;
                    }
                }
            }
        }
        if migrated {
            tracing::info!(roles = ?self.roles, "workers running");
            if let Some(console) = self.console {
                let stop = stop.clone();
                roles.push(Box::pin(async move {
                    if let Err(error) = console.run_until_stopped(stop).await {
                        tracing::error!(error = %format!("{error:#}"), "the operator console stopped");
                    }
                }));
            }
            roles.push(Box::pin(gauges::run(
                self.pool.clone(),
                GAUGES_INTERVAL,
                stop.clone(),
            )));
            futures_util::future::join_all(roles).await;
        }
        let served = ops.await.context("the ops listener task")?;
        self.pool.close().await;
        tracing::info!("workers stopped");
        served.context("serving the ops listener")
    }
}
