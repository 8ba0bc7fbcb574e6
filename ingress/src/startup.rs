//! Assembly of the ingress: [`Application::build`] loads what the settings name (keys,
//! partners, TLS), checks the route table, binds the listeners and starts the broker
//! supervisor; [`Application::run_until_stopped`] serves until the injected shutdown future
//! resolves, lets in-flight requests finish, then closes the broker connection.
//! [`public_router`] is the route table.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::routing::post;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use connector_schema::seal::SealKeys;

use crate::auth::forwarded::{self, TrustedProxies};
use crate::auth::hmac::WebhookKeys;
use crate::auth::keys::{ClientRegistry, KeyStore};
use crate::auth::replay::ReplayCache;
use crate::auth::snap::partners::BncPartners;
use crate::auth::tls;
use crate::budget::BodyBudget;
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, HttpSettings, Settings};
use crate::publisher::IntakePublisher;
use crate::rate_limit::ClientRateLimiter;
use crate::routes::{bnc, body, corelink, paysafe};
use crate::state::{AppState, SharedState};
use crate::{metrics, probes, server};

#[derive(Debug)]
pub struct Application {
    public_listener: TcpListener,
    ops_listener: TcpListener,
    state: AppState,
    metrics: PrometheusHandle,
    publisher_task: JoinHandle<()>,
    /// TLS with client certificates on the public listener; `None` serves plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Cancelled only after the HTTP servers have drained, so in-flight requests can still
    /// publish while the process shuts down.
    publisher_shutdown: CancellationToken,
    grace: Duration,
    /// The public listener's limits on connections.
    http: HttpSettings,
    /// The key files as loaded, so an edit made before the watcher first looks still counts.
    key_files_at_start: Option<[u8; 32]>,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        Self::build_with(settings, clock, None).await
    }

    /// `config_path` is the file the settings came from: SIGHUP (or
    /// [`KeyStore::reload`]) reads its banks and keys again.
    pub async fn build_with(
        settings: Settings,
        clock: Arc<dyn Clock>,
        config_path: Option<std::path::PathBuf>,
    ) -> anyhow::Result<Self> {
        check_routes(&settings)?;
        let clients = ClientRegistry::from_settings(&settings.corelink.clients)?;
        let proxies = TrustedProxies::from_settings(&settings.proxy)?;
        let bnc_partners = BncPartners::from_settings(&settings.bnc)?;
        let paysafe_keys = WebhookKeys::from_settings(&settings.paysafe)?;
        let seal = SealKeys::from_settings(&settings.seal.keys)
            .map_err(|error| ConfigError::new(error.at, error.message))?;
        let tls = settings
            .tls
            .enabled()
            .then(|| tls::server_config(&settings.tls))
            .transpose()?;
        let mtls = tls.is_some() || proxies.is_some();
        if mtls {
            for (i, client) in settings.corelink.clients.iter().enumerate() {
                if client.certificate_sha256.is_empty() {
                    return Err(ConfigError::new(
                        format!("corelink.clients[{i}].certificate_sha256"),
                        "is required with client certificates (TLS or a trusted proxy): each bank is bound to its certificate(s)",
                    )
                    .into());
                }
            }
        } else {
            tracing::warn!(
                "TLS is off and no proxy is trusted to forward client certificates: for development only"
            );
        }
        if clients.is_empty() {
            tracing::warn!(
                "no Corelink client is configured: every callback will get 401 UNKNOWN_CLIENT"
            );
        }
        if paysafe_keys.is_empty() {
            tracing::warn!(
                path = %settings.paysafe.path,
                "no Paysafe webhook key is configured: every webhook will get 401 SIGNATURE_INVALID"
            );
        }
        let public_listener = TcpListener::bind(settings.http.listen)
            .await
            .with_context(|| format!("binding http.listen {}", settings.http.listen))?;
        let ops_listener = TcpListener::bind(settings.http.ops_listen)
            .await
            .with_context(|| format!("binding http.ops_listen {}", settings.http.ops_listen))?;

        let publisher_shutdown = CancellationToken::new();
        let (publisher, publisher_task) = IntakePublisher::spawn(
            &settings.broker,
            settings.topology.topology(),
            seal,
            publisher_shutdown.clone(),
        );
        let keys = KeyStore::new(clients, config_path);
        let key_files_at_start = keys.source_digest();
        let state = AppState::new(SharedState {
            keys,
            replay: ReplayCache::new(
                settings.corelink.nonce_cache_capacity,
                settings.corelink.timestamp_tolerance(),
            ),
            rate_limiter: ClientRateLimiter::new(
                settings.corelink.rate_limit_per_second,
                settings.corelink.rate_limit_burst,
            ),
            publisher,
            clock,
            mtls,
            proxies,
            corelink: settings.corelink.clone(),
            bnc: settings.bnc.clone(),
            bnc_partners,
            paysafe_path: settings.paysafe.path.clone(),
            paysafe_keys,
            paysafe_max_body_bytes: settings.paysafe.max_body_bytes,
            max_body_bytes: settings.http.max_body_bytes,
            body_budget: BodyBudget::new(
                settings.http.max_in_flight_body_bytes,
                settings.broker.retry_after_secs,
            ),
            body_timeout: Duration::from_secs(settings.http.body_timeout_secs),
            retry_after_secs: settings.broker.retry_after_secs,
        });
        Ok(Self {
            public_listener,
            ops_listener,
            state,
            metrics: {
                let handle = metrics::install();
                metrics::export_at_zero();
                crate::routes::export_counters_at_zero(&settings);
                handle
            },
            publisher_task,
            tls,
            publisher_shutdown,
            grace: Duration::from_secs(settings.http.shutdown_grace_secs),
            http: settings.http.clone(),
            key_files_at_start,
        })
    }

    pub fn public_addr(&self) -> SocketAddr {
        self.public_listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn ops_addr(&self) -> SocketAddr {
        self.ops_listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    pub fn publisher(&self) -> IntakePublisher {
        self.state.publisher.clone()
    }

    /// The shared state, for operations on a running ingress (a key reload, in tests).
    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = CancellationToken::new();
        tokio::spawn(reload_keys_on_sighup(self.state.clone(), stop.clone()));
        if self.state.corelink.keys_watch_interval_secs > 0 {
            tokio::spawn(reload_keys_on_change(
                self.state.clone(),
                self.key_files_at_start,
                Duration::from_secs(self.state.corelink.keys_watch_interval_secs),
                stop.clone(),
            ));
        }
        let trigger = stop.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested: no new connections; finishing in-flight requests");
            trigger.cancel();
        });

        let public = server::serve(
            self.public_listener,
            server::PublicServer {
                router: public_router(self.state.clone()),
                tls: self.tls,
                http: self.http,
                proxies: self.state.proxies.clone(),
            },
            stop.clone(),
            self.grace,
        );
        let probes = server::serve_plain(
            self.ops_listener,
            probes::router(self.state.publisher.clone(), self.metrics),
            stop.clone(),
        );
        let servers = async { tokio::try_join!(public, probes) };
        tokio::pin!(servers);

        let served = tokio::select! {
            served = &mut servers => served,
            () = stop.cancelled() => match tokio::time::timeout(self.grace, &mut servers).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::warn!(grace = ?self.grace, "in-flight requests still running after the grace period; stopping anyway");
                    Ok(((), ()))
                }
            },
        };
        self.publisher_shutdown.cancel();
        let _ = self.publisher_task.await;
        served.context("serving HTTP")?;
        tracing::info!("ingress stopped");
        Ok(())
    }
}

/// Refuses configured paths that the router could not serve: `bnc.path` or `paysafe.path`
/// equal to a Corelink route, or to each other. The error names the key at fault.
pub fn check_routes(settings: &Settings) -> Result<(), ConfigError> {
    let is_corelink = |path: &str| corelink::ROUTES.iter().any(|(route, _)| *route == path);
    if is_corelink(&settings.bnc.path) {
        return Err(ConfigError::new("bnc.path", "is a Corelink route"));
    }
    if is_corelink(&settings.paysafe.path) {
        return Err(ConfigError::new("paysafe.path", "is a Corelink route"));
    }
    if settings.paysafe.path == settings.bnc.path {
        return Err(ConfigError::new(
            "paysafe.path",
            "is the BNC route (bnc.path)",
        ));
    }
    Ok(())
}

/// The public routes, built from the settings [`check_routes`] accepted. Exposed for tests that
/// drive it with `tower::ServiceExt::oneshot`.
pub fn public_router(state: AppState) -> Router {
    let proxies = state.proxies.clone();
    let router = corelink::ROUTES
        .into_iter()
        .fold(Router::new(), |router, (path, callback)| {
            router.route(
                path,
                post(move |State(state): State<AppState>, request: Request| {
                    corelink::handle(state, callback, request)
                }),
            )
        })
        .route(
            &state.bnc.path,
            post(|State(state): State<AppState>, request: Request| bnc::handle(state, request)),
        )
        // Like BNC's: TLS without a client certificate; the HMAC proves Paysafe.
        .route(
            &state.paysafe_path,
            post(|State(state): State<AppState>, request: Request| paysafe::handle(state, request)),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn(body::close_if_body_unread));
    match proxies {
        Some(proxies) => router.layer(axum::middleware::from_fn_with_state(
            proxies,
            forwarded::forwarded_certificate,
        )),
        None => router,
    }
}

/// SIGHUP reloads the banks and their keys; a reload that fails keeps those in force.
async fn reload_keys_on_sighup(state: AppState, stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: keys reload only with a restart");
            return;
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match state.keys.reload() {
                Ok(clients) => tracing::info!(clients, "SIGHUP: banks and keys reloaded"),
                Err(error) => {
                    tracing::error!(%error, "SIGHUP: reload refused; the previous banks and keys stay in force")
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (state, stop);
    }
}

/// Reloads the banks and keys when the configuration file or a key file changes. A change that
/// fails validation keeps those in force and is reported once, not at every check.
async fn reload_keys_on_change(
    state: AppState,
    mut seen: Option<[u8; 32]>,
    every: Duration,
    stop: CancellationToken,
) {
    if seen.is_none() {
        return;
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let now = state.keys.source_digest();
        if now == seen {
            continue;
        }
        seen = now;
        match state.keys.reload() {
            Ok(clients) => tracing::info!(clients, "key files changed: banks and keys reloaded"),
            Err(error) => tracing::error!(
                %error,
                "key files changed but the reload was refused; the previous banks and keys stay in force"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_paths_must_not_clash_with_another_route() {
        check_routes(&Settings::default()).expect("the defaults do not clash");
        let refused = |change: fn(&mut Settings)| {
            let mut settings = Settings {
                mode: crate::config::Mode::Development,
                ..Settings::default()
            };
            change(&mut settings);
            settings.validate().expect("valid on its own");
            check_routes(&settings).unwrap_err().key
        };
        assert_eq!(
            refused(|s| s.paysafe.path = "/callbacks/payment-status".into()),
            "paysafe.path"
        );
        assert_eq!(
            refused(|s| s.paysafe.path = s.bnc.path.clone()),
            "paysafe.path"
        );
        assert_eq!(
            refused(|s| s.bnc.path = "/callbacks/orders/status/batch".into()),
            "bnc.path"
        );
    }

    #[tokio::test]
    async fn start_up_refuses_a_clash_before_binding_anything() {
        let mut settings = Settings::default();
        settings.paysafe.path = "/callbacks/batch-status".into();
        let error = Application::build(settings).await.unwrap_err();
        let error = error.downcast_ref::<ConfigError>().expect("a ConfigError");
        assert_eq!(error.key, "paysafe.path");
    }
}
