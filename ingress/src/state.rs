//! What every request handler shares. Immutable after start-up except the replay cache and
//! the publisher, which are concurrent by construction.

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::forwarded::TrustedProxies;
use crate::auth::hmac::WebhookKeys;
use crate::auth::keys::KeyStore;
use crate::auth::replay::ReplayCache;
use crate::auth::snap::partners::BncPartners;
use crate::budget::BodyBudget;
use crate::clock::Clock;
use crate::config::{BncSettings, CorelinkSettings};
use crate::publisher::IntakePublisher;
use crate::rate_limit::ClientRateLimiter;

#[derive(Debug, Clone)]
pub struct AppState(Arc<SharedState>);

#[derive(Debug)]
pub struct SharedState {
    /// The banks and their keys, reloadable.
    pub keys: KeyStore,
    pub replay: ReplayCache,
    pub rate_limiter: ClientRateLimiter,
    pub publisher: IntakePublisher,
    pub clock: Arc<dyn Clock>,
    /// TLS with client certificates is on, here or at a trusted proxy: the Corelink routes
    /// require a certificate.
    pub mtls: bool,
    /// The proxies whose forwarded client certificate is believed (load-balancer mode).
    pub proxies: Option<Arc<TrustedProxies>>,
    /// Tolerance, path prefix and batch size (the banks themselves live in `keys`).
    pub corelink: CorelinkSettings,
    /// The BNC route's settings and its partners' RSA keys.
    pub bnc: BncSettings,
    pub bnc_partners: BncPartners,
    /// The Paysafe webhook route's path (`paysafe.path`).
    pub paysafe_path: String,
    /// The HMAC keys Paysafe signs webhooks with (several during a rotation).
    pub paysafe_keys: WebhookKeys,
    /// Paysafe's body limit (`paysafe.max_body_bytes`); BNC's is in `bnc`.
    pub paysafe_max_body_bytes: usize,
    /// Corelink's body limit (`http.max_body_bytes`).
    pub max_body_bytes: usize,
    /// The bytes of all bodies in memory at once (`http.max_in_flight_body_bytes`).
    pub body_budget: BodyBudget,
    pub body_timeout: std::time::Duration,
    /// `Retry-After` on 503.
    pub retry_after_secs: u64,
}

impl AppState {
    pub fn new(shared: SharedState) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}
