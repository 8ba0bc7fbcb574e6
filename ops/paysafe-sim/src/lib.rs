//! A Paysafe API simulator (DESIGN.md §5), for the poller's and the webhook route's tests and for
//! local runs: the GET API of payments and standalone credits behind HTTP Basic auth, with
//! scripted status progressions and injected faults (429, 5xx, 401, delays) in Paysafe's error
//! format; counters that prove how the connector polled (poll counts, concurrent GETs per id);
//! and signed webhook delivery to the ingress.
//!
//! Tests drive it in process ([`spawn`] and [`SimHandle`]); other processes drive it over the
//! JSON control API under `/__sim/` (see the README). The control API is unauthenticated: the
//! simulator is a test tool and must never face a network others can reach.

pub mod script;
pub mod state;
pub mod webhook;

mod server;
mod tls;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::script::{Fault, ItemScript, ScriptError, ScriptFile, Step};
pub use crate::state::{GlobalStats, ItemStats};
pub use crate::tls::TlsIdentity;
pub use crate::webhook::{EventNameSpelling, SignatureMode, WebhookOutcome, WebhookRequest};

use crate::server::Shared;

/// How long [`SimHandle::shutdown`] lets in-flight requests (a long injected delay) finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the simulator starts with. The API credentials and the webhook key are secrets:
/// `Debug` redacts them and nothing logs them.
#[derive(Clone)]
pub struct SimConfig {
    /// HTTP Basic user name of the API key (Paysafe's API key is `user:password`).
    pub username: String,
    pub password: String,
    /// Where `send_webhook` POSTs by default (`https://…/webhooks/paysafe`, or plain http).
    pub webhook_url: Option<String>,
    /// The HMAC-SHA256 key webhooks are signed with.
    pub webhook_key: Option<Vec<u8>>,
    /// PEM certificate(s) to trust for the webhook URL, beside the built-in roots (the
    /// ingress's development CA).
    pub webhook_ca_pem: Option<Vec<u8>>,
    /// Items known from the start.
    pub items: Vec<ItemScript>,
    /// Faults applied to every GET from the start.
    pub global_faults: Vec<Fault>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP.
    pub tls: Option<TlsIdentity>,
}

impl SimConfig {
    pub fn new(username: &str, password: &str) -> Self {
        Self {
            username: username.to_owned(),
            password: password.to_owned(),
            webhook_url: None,
            webhook_key: None,
            webhook_ca_pem: None,
            items: Vec::new(),
            global_faults: Vec::new(),
            tls: None,
        }
    }

    /// Serves HTTPS with `cert_pem` (the chain) and `key_pem` instead of plain HTTP.
    pub fn with_tls(mut self, cert_pem: &[u8], key_pem: &[u8]) -> Self {
        self.tls = Some(TlsIdentity {
            cert_pem: cert_pem.to_vec(),
            key_pem: key_pem.to_vec(),
        });
        self
    }

    pub fn with_webhook(mut self, url: &str, key: &[u8]) -> Self {
        self.webhook_url = Some(url.to_owned());
        self.webhook_key = Some(key.to_vec());
        self
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("webhook_url", &self.webhook_url)
            .field(
                "webhook_key",
                &self.webhook_key.as_ref().map(|_| "<redacted>"),
            )
            .field("webhook_ca_pem", &self.webhook_ca_pem.is_some())
            .field("items", &self.items.len())
            .field("global_faults", &self.global_faults)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Starts the simulator on `127.0.0.1` at a free port (for tests).
pub async fn spawn(config: SimConfig) -> anyhow::Result<SimHandle> {
    spawn_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
}

/// Starts the simulator on `addr` (port 0: any free port). It serves until
/// [`SimHandle::shutdown`], or until the handle is dropped.
pub async fn spawn_at(addr: SocketAddr, config: SimConfig) -> anyhow::Result<SimHandle> {
    // Checked before binding: a wrong certificate or key is a start-up error.
    let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
    let shared = Arc::new(Shared::new(config)?);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    // A dropped handle (Err) stops the server too.
    let stopped = async {
        let _ = stopped.await;
    };
    let app = server::router(shared.clone());
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let task = match acceptor {
        Some(acceptor) => tokio::spawn(tls::serve(listener, acceptor, app, stopped)),
        None => tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
        }),
    };
    tracing::info!(%addr, scheme, "paysafe simulator listening");
    Ok(SimHandle {
        addr,
        scheme,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running simulator. Every method acts at once on the shared state the HTTP API serves.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    /// `https` when serving with a [`TlsIdentity`], else `http`.
    scheme: &'static str,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://` when serving TLS): the Paysafe API base URL the
    /// poller is configured with.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// Creates or replaces the script of `script.id`: its progression restarts at the first
    /// step with the script's faults; the id's counters are kept.
    pub fn set_script(&self, script: ItemScript) -> Result<(), ScriptError> {
        self.shared.state.set_script(script)
    }

    /// Forgets an item: its GETs answer 404 from now on.
    pub fn remove_script(&self, id: &str) -> bool {
        self.shared.state.remove_script(id)
    }

    /// Appends faults to an item's queue without restarting its progression.
    pub fn add_faults(&self, id: &str, faults: Vec<Fault>) -> Result<(), ScriptError> {
        self.shared.state.add_faults(id, faults)
    }

    /// Replaces the faults that apply to every GET, before any item's own.
    pub fn set_global_faults(&self, faults: Vec<Fault>) -> Result<(), ScriptError> {
        self.shared.state.set_global_faults(faults)
    }

    /// Authenticated GETs of `id` so far, whatever they were answered.
    pub fn poll_count(&self, id: &str) -> u64 {
        self.shared.state.stats(id).polls
    }

    /// The most GETs of `id` that were ever in flight at once.
    pub fn max_concurrent(&self, id: &str) -> u64 {
        self.shared.state.stats(id).max_concurrent
    }

    pub fn stats(&self, id: &str) -> ItemStats {
        self.shared.state.stats(id)
    }

    pub fn global_stats(&self) -> GlobalStats {
        self.shared.state.global_stats()
    }

    /// Forgets every script, fault and counter.
    pub fn reset(&self) {
        self.shared.state.reset();
    }

    /// Changes where webhooks go by default (the ingress may start after the simulator).
    pub fn set_webhook_url(&self, url: Option<String>) {
        self.shared.set_webhook_url(url);
    }

    /// Builds, signs and POSTs a webhook; the receiver's answer. An error means no answer at
    /// all (connection refused, TLS failure) or a request that cannot be built.
    pub async fn send_webhook(&self, request: WebhookRequest) -> anyhow::Result<WebhookOutcome> {
        self.shared.send_webhook(request).await
    }

    /// Stops accepting, lets in-flight requests finish (at most a few seconds), and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(joined) => {
                joined
                    .context("the simulator task panicked")?
                    .context("serving the simulator")?;
                Ok(())
            }
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
