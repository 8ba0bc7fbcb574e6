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

pub use connector_runtime::config::ConfigError;
pub use connector_runtime::telemetry::{LogFormat, LogSettings};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
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
    /// Larger bodies get 413 before they are read.
    pub max_body_bytes: usize,
    /// A body not fully received within this gets 408 and its connection closed, so a client
    /// that stalls mid-body cannot hold a connection (and its memory) for ever.
    pub body_timeout_secs: u64,
    /// How long in-flight requests may take to finish once shutdown starts.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            max_body_bytes: 1024 * 1024,
            body_timeout_secs: 30,
            shutdown_grace_secs: 30,
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
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            trusted_addresses: Vec::new(),
            client_cert_header: "x-client-cert".into(),
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
    /// The partners allowed to call, by `X-CLIENT-KEY`. None: the route answers 401 to all.
    pub partners: Vec<BncPartner>,
}

impl Default for BncSettings {
    fn default() -> Self {
        Self {
            path: DEFAULT_BNC_PATH.into(),
            timestamp_tolerance_secs: 300,
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

/// The Paysafe webhook route's path unless `paysafe.path` says otherwise.
pub const DEFAULT_PAYSAFE_PATH: &str = "/webhooks/paysafe";

/// The Paysafe webhook route (DESIGN.md §5).
///
/// The keys are the HMAC keys Paysafe shows for the webhook configuration; the signature is
/// computed over their UTF-8 bytes as written. They come inline (`webhook_keys`, also from
/// `CONNECTOR_PAYSAFE__WEBHOOK_KEYS`, as a list `["k1","k2"]` or a single key) and/or from files
/// (`webhook_key_files`, one key per file, surrounding whitespace ignored: Docker or Kubernetes
/// secrets). Every key listed is accepted, so a rotation lists the old and the new key side by
/// side. `Debug` never shows a key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaysafeSettings {
    /// The route's path.
    pub path: String,
    /// HMAC keys, inline.
    #[serde(deserialize_with = "one_or_many")]
    pub webhook_keys: Vec<String>,
    /// Files each holding one HMAC key; relative paths resolve against the configuration
    /// file's folder. Read at start-up.
    pub webhook_key_files: Vec<RelativePathBuf>,
}

impl Default for PaysafeSettings {
    fn default() -> Self {
        Self {
            path: DEFAULT_PAYSAFE_PATH.into(),
            webhook_keys: Vec::new(),
            webhook_key_files: Vec::new(),
        }
    }
}

impl std::fmt::Debug for PaysafeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<_> = self
            .webhook_key_files
            .iter()
            .map(|file| file.relative())
            .collect();
        f.debug_struct("PaysafeSettings")
            .field("path", &self.path)
            .field(
                "webhook_keys",
                &format_args!("[{} redacted]", self.webhook_keys.len()),
            )
            .field("webhook_key_files", &files)
            .finish()
    }
}

impl PaysafeSettings {
    /// Checks what the types cannot express (errors name `paysafe.<key>`). The key files are
    /// read and checked when the keys are loaded at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_route_path("paysafe.path", &self.path, DEFAULT_PAYSAFE_PATH)?;
        for (i, key) in self.webhook_keys.iter().enumerate() {
            // The message never quotes the key.
            if key.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("paysafe.webhook_keys[{i}]"),
                    "must not be empty",
                ));
            }
            if key.trim() != key {
                return Err(ConfigError::new(
                    format!("paysafe.webhook_keys[{i}]"),
                    "has leading or trailing whitespace (a copy-paste slip?); Paysafe's keys have none",
                ));
            }
        }
        Ok(())
    }
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

/// A single string is a list of one: `CONNECTOR_PAYSAFE__WEBHOOK_KEYS=key` works as well as
/// `CONNECTOR_PAYSAFE__WEBHOOK_KEYS='["old","new"]'`.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    // Not `untagged`'s generic message: say what is expected, without echoing a key.
    match OneOrMany::deserialize(deserializer) {
        Ok(OneOrMany::One(key)) => Ok(vec![key]),
        Ok(OneOrMany::Many(keys)) => Ok(keys),
        Err(_) => Err(serde::de::Error::custom(
            "expected a key or a list of keys, each a string (quote a key that looks like a number)",
        )),
    }
}

/// The top-level sections of this process's configuration.
const SECTIONS: [&str; 10] = [
    "http", "tls", "proxy", "broker", "topology", "corelink", "bnc", "paysafe", "log", "seal",
];

impl Settings {
    /// Defaults, then the TOML file at `path` (if given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let settings: Settings = connector_runtime::config::load(path, &SECTIONS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types cannot express. Keys themselves are loaded (and checked) at
    /// start-up, and so is the route table (a path configured here must not clash with a
    /// Corelink route or with another configured path).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("http.max_body_bytes", self.http.max_body_bytes as u64),
            ("http.body_timeout_secs", self.http.body_timeout_secs),
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
        let prefix = &self.corelink.external_path_prefix;
        if !prefix.is_empty() && (!prefix.starts_with('/') || prefix.ends_with('/')) {
            return Err(ConfigError::new(
                "corelink.external_path_prefix",
                "must start with `/` and not end with one (e.g. `/connector`), or be empty",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
