//! Typed, layered configuration: built-in defaults, then a TOML file, then `CONNECTOR_*`
//! environment variables (`CONNECTOR_BROKER__URL` overrides `broker.url`).
//!
//! Everything is validated at start-up; an error names the offending key so an operator can
//! fix the file without reading code. `config/ingress.example.toml` documents every option.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use serde::{Deserialize, Serialize};

use connector_schema::corelink::DEFAULT_MAX_BATCH_ORDERS;
pub use connector_schema::seal::SealSettings;
use connector_schema::topology::TopologySettings;

pub use connector_runtime::config::{ConfigError, Mode};
pub use connector_runtime::telemetry::{LogFormat, LogSettings};

mod paysafe;
mod production;
pub(crate) use paysafe::KEY_AS_ID;
pub use paysafe::{
    DEFAULT_PAYSAFE_PATH, KeyEncoding, PaysafeSettings, WebhookKey, WebhookKeyEntry,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `production` (the default) or `development`: what production refuses is in
    /// `config/production.rs`.
    pub mode: Mode,
    pub http: HttpSettings,
    pub tls: TlsSettings,
    /// Behind a TLS-terminating load balancer that forwards the client certificate.
    pub proxy: ProxySettings,
    pub broker: BrokerSettings,
    pub topology: TopologySettings,
    pub corelink: CorelinkSettings,
    /// BNC's account-binding callback (SNAP signatures).
    pub bnc: BncSettings,
    /// Paysafe's webhooks (HMAC-SHA256 signatures).
    pub paysafe: PaysafeSettings,
    pub log: LogSettings,
    /// The key the ingress seals what it accepts with (the first), so that the workers apply
    /// only what an ingress accepted (DESIGN.md §2.7); the same section as the workers'.
    pub seal: SealSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Where banks and providers connect.
    pub listen: SocketAddr,
    /// Where Prometheus and the orchestrator connect (`/metrics`, `/healthz`, `/readyz`); kept
    /// off the public listener so the outside world never sees them.
    pub ops_listen: SocketAddr,
    /// Larger Corelink bodies get 413 before they are read (BNC and Paysafe have their own).
    pub max_body_bytes: usize,
    /// A body not fully received within this gets 408 and its connection closed, so a client
    /// that stalls mid-body cannot hold a connection (and its memory) for ever.
    pub body_timeout_secs: u64,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace_secs: u64,
    /// Request bodies held in memory at once, all routes and connections together; a body
    /// that would go past it is answered 503 at once rather than queued.
    pub max_in_flight_body_bytes: usize,
    /// An HTTP/1 request line and headers not complete within this close the connection; it
    /// also bounds the wait for the next request on a kept-alive connection.
    pub header_read_timeout_secs: u64,
    /// A connection with no request in flight for this long is closed (HTTP/1 and HTTP/2, and
    /// a connection that never sends a first request).
    pub idle_timeout_secs: u64,
    /// A TLS handshake not complete within this closes the connection.
    pub tls_handshake_timeout_secs: u64,
    /// HTTP/2: how often an otherwise silent connection is pinged, and how long a ping may go
    /// unanswered before the connection is closed as dead.
    pub http2_keep_alive_interval_secs: u64,
    pub http2_keep_alive_timeout_secs: u64,
    /// HTTP/2: requests one connection may have open at once.
    pub http2_max_concurrent_streams: u32,
    /// Connections open at once; past it, a new connection is closed at once, unread.
    pub max_connections: usize,
    /// Connections open at once from one IP address (0 = no per-address cap). Addresses in
    /// `proxy.trusted_addresses` are exempt: behind a proxy every connection comes from it.
    pub max_connections_per_address: usize,
    /// TLS handshakes in progress at once; past it, a new connection is closed at once, so a
    /// flood of handshakes cannot take every core from the banks already connected.
    pub max_concurrent_handshakes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 1024 * 1024,
            body_timeout_secs: 30,
            shutdown_grace_secs: 30,
            max_in_flight_body_bytes: 64 * 1024 * 1024,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            http2_keep_alive_interval_secs: 20,
            http2_keep_alive_timeout_secs: 10,
            http2_max_concurrent_streams: 64,
            max_connections: 4096,
            max_connections_per_address: 256,
            max_concurrent_handshakes: 256,
        }
    }
}

/// TLS on `http.listen`, with bank client certificates. Unset (the default) serves plain HTTP:
/// for development and tests only, or behind a proxy that terminates mTLS itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The server's certificate chain, PEM.
    pub cert_file: Option<RelativePathBuf>,
    /// The server's private key, PEM.
    pub key_file: Option<RelativePathBuf>,
    /// CA bundles (PEM) that issue bank client certificates; a certificate from any other
    /// issuer fails the handshake.
    pub client_ca_files: Vec<RelativePathBuf>,
}

impl TlsSettings {
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// AMQP URI; `heartbeat=10` makes a silently dead broker noticed within ~20 s.
    pub url: String,
    /// Channels in confirm mode that requests publish on, round-robin.
    pub publish_channels: usize,
    /// A confirm slower than this is answered 503 (the sender retries).
    pub confirm_timeout_ms: u64,
    /// The `Retry-After` given with 503.
    pub retry_after_secs: u64,
    /// First and largest delay between reconnection attempts (exponential, with jitter).
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Declare the intake topology at every connection (so the ingress can start before any
    /// worker), which needs the broker's `configure` permission on it. `false`: only check
    /// that the intake exchange exists (a passive declare, which needs no permission), for a
    /// broker user that may publish and nothing else; the workers declare the topology.
    pub declare_topology: bool,
    /// How often the publisher sends an unroutable probe message to learn of a broker alarm:
    /// RabbitMQ tells a connection it is blocked only once it publishes, so without probes the
    /// first request of an alarm would be the one to find out (and be left in doubt).
    pub alarm_probe_interval_ms: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into(),
            publish_channels: 4,
            confirm_timeout_ms: 5_000,
            retry_after_secs: 5,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 10_000,
            declare_topology: true,
            alarm_probe_interval_ms: 200,
        }
    }
}

impl BrokerSettings {
    pub fn confirm_timeout(&self) -> Duration {
        Duration::from_millis(self.confirm_timeout_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorelinkSettings {
    /// Accepted distance between `X-Timestamp` and our clock, either way.
    pub timestamp_tolerance_secs: u64,
    /// Nonces remembered by this instance to answer 409 to a replay (bounded memory; the
    /// workers neutralise any replay this cache misses).
    pub nonce_cache_capacity: u64,
    pub max_batch_orders: usize,
    /// Prepended to the received path before comparing it with the signed `path`, for a
    /// reverse proxy that strips a prefix (e.g. `/connector`).
    pub external_path_prefix: String,
    /// Sustained requests per second accepted from one bank by this instance (0 = no limit);
    /// beyond it, 429 `RATE_LIMITED` with `Retry-After`. Counted per authenticated client,
    /// so nobody can use up a bank's allowance by sending its client id.
    pub rate_limit_per_second: u32,
    /// Requests a bank may send at once above the sustained rate.
    pub rate_limit_burst: u32,
    /// How often the configuration file and the key files it names are checked for a change,
    /// which reloads the banks and keys as SIGHUP does (0 = only on SIGHUP).
    pub keys_watch_interval_secs: u64,
    pub clients: Vec<ClientSettings>,
}

impl Default for CorelinkSettings {
    fn default() -> Self {
        Self {
            timestamp_tolerance_secs: 300,
            nonce_cache_capacity: 1_000_000,
            max_batch_orders: DEFAULT_MAX_BATCH_ORDERS,
            external_path_prefix: String::new(),
            rate_limit_per_second: 100,
            rate_limit_burst: 200,
            keys_watch_interval_secs: 5,
            clients: Vec::new(),
        }
    }
}

impl CorelinkSettings {
    pub fn timestamp_tolerance(&self) -> Duration {
        Duration::from_secs(self.timestamp_tolerance_secs)
    }
}

/// One bank allowed to push callbacks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// The `X-Client-Id` the bank sends.
    pub id: String,
    /// Its signature keys; several at once while a bank rotates.
    pub keys: Vec<KeySettings>,
    /// SHA-256 fingerprints (hex, colons allowed) of its client certificates; with TLS on, a
    /// request must come on a connection with one of them (several during a renewal).
    #[serde(default)]
    pub certificate_sha256: Vec<String>,
}

/// One public key of a bank: exactly one of `jwk_file`, `jwks_file` or `pem_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub kid: String,
    /// The only algorithm this key may sign with: ES256, PS256, RS256 or EdDSA.
    pub alg: String,
    /// Relative paths are resolved against the configuration file's directory.
    pub jwk_file: Option<RelativePathBuf>,
    /// A JWK set (`{"keys": [...]}`), as banks publish them; the key with `kid` is used.
    pub jwks_file: Option<RelativePathBuf>,
    pub pem_file: Option<RelativePathBuf>,
}

/// Behind a TLS-terminating load balancer (off by default): the proxy verifies the bank's client
/// certificate and forwards it in a header, which is believed only from these addresses.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Addresses (`10.0.0.7`) or CIDR blocks (`10.0.0.0/24`) of the proxies whose forwarded
    /// certificate is believed. Empty (the default): the mode is off and the header ignored.
    pub trusted_addresses: Vec<String>,
    /// The header carrying the verified client certificate as URL-encoded PEM.
    pub client_cert_header: String,
    /// In production, the widest block `trusted_addresses` may name (a prefix length): a
    /// wider one would let anyone in it forward a bank's certificate. `0.0.0.0/0` and `::/0`
    /// are always refused (the bound is at least 1).
    pub widest_ipv4_prefix: u8,
    pub widest_ipv6_prefix: u8,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            trusted_addresses: Vec::new(),
            client_cert_header: "x-client-cert".into(),
            widest_ipv4_prefix: 16,
            widest_ipv6_prefix: 48,
        }
    }
}

impl ProxySettings {
    pub fn enabled(&self) -> bool {
        !self.trusted_addresses.is_empty()
    }
}

/// The route BNC calls unless `bnc.path` says otherwise.
pub const DEFAULT_BNC_PATH: &str = "/callbacks/bnc/account-binding";

/// The BNC account-binding route (DESIGN.md §4), the `[bnc]` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BncSettings {
    /// The route's path. It is also what partners sign, so it must be the path they call; a
    /// reverse proxy that rewrites the path breaks every signature.
    pub path: String,
    /// Accepted distance between `X-TIMESTAMP` and our clock, either way.
    pub timestamp_tolerance_secs: u64,
    /// Larger bodies are refused (`4000001 requestBody`); a binding is a few hundred bytes.
    pub max_body_bytes: usize,
    /// The partners allowed to call, by `X-CLIENT-KEY`. None: the route answers 401 to all.
    pub partners: Vec<BncPartner>,
}

impl Default for BncSettings {
    fn default() -> Self {
        Self {
            path: DEFAULT_BNC_PATH.into(),
            timestamp_tolerance_secs: 300,
            max_body_bytes: 32 * 1024,
            partners: Vec::new(),
        }
    }
}

impl BncSettings {
    pub fn timestamp_tolerance(&self) -> Duration {
        Duration::from_secs(self.timestamp_tolerance_secs)
    }

    /// Checks what the types cannot express (errors name `bnc.<key>`). The key files are read
    /// and checked when the partners are loaded at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_route_path("bnc.path", &self.path, DEFAULT_BNC_PATH)?;
        if self.timestamp_tolerance_secs == 0 {
            return Err(ConfigError::new(
                "bnc.timestamp_tolerance_secs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// One partner allowed to call the BNC callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BncPartner {
    /// The `X-CLIENT-KEY` it sends (1..32 visible ASCII characters).
    pub client_key: String,
    /// Its RSA public keys, PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`), one per file; several at
    /// once while it rotates. Relative paths resolve against the configuration file's folder,
    /// like every other key file.
    pub public_key_files: Vec<RelativePathBuf>,
}

/// A route's path must be what a sender can call and sign: absolute, without query or fragment.
fn check_route_path(key: &str, path: &str, example: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(ConfigError::new(
            key,
            format!("must be an absolute path without query, such as {example}"),
        ));
    }
    Ok(())
}

/// The top-level sections of this process's configuration.
const SECTIONS: [&str; 11] = [
    "mode", "http", "tls", "proxy", "broker", "topology", "corelink", "bnc", "paysafe", "log",
    "seal",
];

impl Settings {
    /// Defaults, then the TOML file at `path` (if given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::read(path)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The layers, typed but not validated: for tools and tests that check a file's contents
    /// apart from whether this process could start with it.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        connector_runtime::config::load(path, &SECTIONS)
    }

    /// Checks what the types cannot express. Keys themselves are loaded (and checked) at
    /// start-up, and so is the route table (a path configured here must not clash with a
    /// Corelink route or with another configured path).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let http = &self.http;
        let positive = [
            ("http.max_body_bytes", http.max_body_bytes as u64),
            ("http.body_timeout_secs", http.body_timeout_secs),
            (
                "http.max_in_flight_body_bytes",
                http.max_in_flight_body_bytes as u64,
            ),
            (
                "http.header_read_timeout_secs",
                http.header_read_timeout_secs,
            ),
            ("http.idle_timeout_secs", http.idle_timeout_secs),
            (
                "http.tls_handshake_timeout_secs",
                http.tls_handshake_timeout_secs,
            ),
            (
                "http.http2_keep_alive_interval_secs",
                http.http2_keep_alive_interval_secs,
            ),
            (
                "http.http2_keep_alive_timeout_secs",
                http.http2_keep_alive_timeout_secs,
            ),
            (
                "http.http2_max_concurrent_streams",
                u64::from(http.http2_max_concurrent_streams),
            ),
            ("http.max_connections", http.max_connections as u64),
            (
                "http.max_concurrent_handshakes",
                http.max_concurrent_handshakes as u64,
            ),
            ("bnc.max_body_bytes", self.bnc.max_body_bytes as u64),
            ("paysafe.max_body_bytes", self.paysafe.max_body_bytes as u64),
            (
                "broker.publish_channels",
                self.broker.publish_channels as u64,
            ),
            ("broker.confirm_timeout_ms", self.broker.confirm_timeout_ms),
            ("broker.retry_after_secs", self.broker.retry_after_secs),
            (
                "broker.alarm_probe_interval_ms",
                self.broker.alarm_probe_interval_ms,
            ),
            (
                "broker.reconnect_initial_ms",
                self.broker.reconnect_initial_ms,
            ),
            (
                "corelink.timestamp_tolerance_secs",
                self.corelink.timestamp_tolerance_secs,
            ),
            (
                "corelink.nonce_cache_capacity",
                self.corelink.nonce_cache_capacity,
            ),
            (
                "corelink.max_batch_orders",
                self.corelink.max_batch_orders as u64,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if self.broker.publish_channels > 64 {
            return Err(ConfigError::new(
                "broker.publish_channels",
                "must be at most 64",
            ));
        }
        if self.broker.reconnect_max_ms < self.broker.reconnect_initial_ms {
            return Err(ConfigError::new(
                "broker.reconnect_max_ms",
                "must be at least broker.reconnect_initial_ms",
            ));
        }
        // Else a body within its route's limit could never be accepted.
        let largest_body = http
            .max_body_bytes
            .max(self.bnc.max_body_bytes)
            .max(self.paysafe.max_body_bytes);
        if http.max_in_flight_body_bytes < largest_body {
            return Err(ConfigError::new(
                "http.max_in_flight_body_bytes",
                format!(
                    "must be at least the largest body limit ({largest_body} bytes, from http.max_body_bytes, bnc.max_body_bytes or paysafe.max_body_bytes)"
                ),
            ));
        }
        // The semaphore counting those bytes holds at most this many permits.
        if http.max_in_flight_body_bytes > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                "http.max_in_flight_body_bytes",
                format!("must be at most {}", tokio::sync::Semaphore::MAX_PERMITS),
            ));
        }
        if self.http.listen == self.http.ops_listen && self.http.listen.port() != 0 {
            return Err(ConfigError::new(
                "http.ops_listen",
                "must differ from http.listen",
            ));
        }
        self.topology
            .validate()
            .map_err(|(key, message)| ConfigError::new(format!("topology.{key}"), message))?;
        self.bnc.validate()?;
        self.paysafe.validate()?;
        self.broker
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new("broker.url", format!("not an AMQP URI: {e}")))?;
        if !(1..=32).contains(&self.proxy.widest_ipv4_prefix) {
            return Err(ConfigError::new(
                "proxy.widest_ipv4_prefix",
                "must be 1..32 (0.0.0.0/0 is never a proxy's range)",
            ));
        }
        if !(1..=128).contains(&self.proxy.widest_ipv6_prefix) {
            return Err(ConfigError::new(
                "proxy.widest_ipv6_prefix",
                "must be 1..128 (::/0 is never a proxy's range)",
            ));
        }
        let prefix = &self.corelink.external_path_prefix;
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
            return Err(ConfigError::new(
                "corelink.external_path_prefix",
                "must start with `/` and not end with one (e.g. `/connector`), or be empty",
            ));
        }
        self.check_production()
    }
}

#[cfg(test)]
mod tests;
