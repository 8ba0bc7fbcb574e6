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
use connector_schema::topology::TopologySettings;

pub use connector_runtime::config::ConfigError;
pub use connector_runtime::telemetry::{LogFormat, LogSettings};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub http: HttpSettings,
    pub tls: TlsSettings,
    /// Behind a TLS-terminating load balancer that forwards the client certificate.
    pub proxy: crate::forwarded::ProxySettings,
    pub broker: BrokerSettings,
    pub topology: TopologySettings,
    pub corelink: CorelinkSettings,
    /// BNC's account-binding callback (SNAP signatures).
    pub bnc: crate::snap::BncSettings,
    /// Paysafe's webhooks (HMAC-SHA256 signatures).
    pub paysafe: PaysafeSettings,
    pub log: LogSettings,
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
            path: crate::paysafe::DEFAULT_PATH.into(),
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
    /// read and checked by [`crate::paysafe::WebhookKeys::from_settings`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "paysafe.path",
                "must be an absolute path without query, such as /webhooks/paysafe",
            ));
        }
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
const SECTIONS: [&str; 9] = [
    "http", "tls", "proxy", "broker", "topology", "corelink", "bnc", "paysafe", "log",
];

impl Settings {
    /// Defaults, then the TOML file at `path` (if given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let settings: Settings = connector_runtime::config::load(path, &SECTIONS)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks what the types cannot express. Keys themselves are loaded (and checked) by
    /// [`crate::keys::ClientRegistry::from_settings`].
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
        if crate::corelink::ROUTES
            .iter()
            .any(|(path, _)| *path == self.bnc.path)
        {
            return Err(ConfigError::new("bnc.path", "is a Corelink route"));
        }
        self.paysafe.validate()?;
        if crate::corelink::ROUTES
            .iter()
            .any(|(path, _)| *path == self.paysafe.path)
        {
            return Err(ConfigError::new("paysafe.path", "is a Corelink route"));
        }
        if self.paysafe.path == self.bnc.path {
            return Err(ConfigError::new(
                "paysafe.path",
                "is the BNC route (bnc.path)",
            ));
        }
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
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Settings::default().validate().expect("defaults validate");
    }

    #[test]
    fn errors_name_the_key() {
        let mut settings = Settings::default();
        settings.broker.publish_channels = 0;
        let err = settings.validate().unwrap_err();
        assert_eq!(err.key, "broker.publish_channels");

        let mut settings = Settings::default();
        settings.broker.url = "http://nope".into();
        assert_eq!(settings.validate().unwrap_err().key, "broker.url");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn file_then_environment_with_typed_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ingress.toml",
                r#"
                [http]
                max_body_bytes = 2048
                [[corelink.clients]]
                id = "BANK_X"
                keys = [{ kid = "k1", alg = "ES256", jwk_file = "keys/k1.jwk" }]
                "#,
            )?;
            jail.set_env("CONNECTOR_BROKER__CONFIRM_TIMEOUT_MS", "750");
            let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
            assert_eq!(settings.http.max_body_bytes, 2048);
            assert_eq!(settings.broker.confirm_timeout_ms, 750);
            let key = &settings.corelink.clients[0].keys[0];
            let resolved = key.jwk_file.as_ref().expect("jwk_file").relative();
            assert!(resolved.ends_with("keys/k1.jwk") && resolved.is_absolute());

            jail.set_env("CONNECTOR_HTTP__MAX_BODY_BYTES", "lots");
            let err = Settings::load(Some(Path::new("ingress.toml"))).unwrap_err();
            assert_eq!(err.key, "http.max_body_bytes");

            // A variable for another process's section is not ours to reject.
            jail.clear_env();
            jail.set_env("CONNECTOR_DATABASE__URL", "postgres://elsewhere/db");
            jail.set_env("CONNECTOR_TOPOLOGY__PREFIX", "staging");
            let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
            assert_eq!(settings.topology.prefix, "staging");

            jail.clear_env();
            jail.create_file("typo.toml", "[http]\nlisten_addr = \"127.0.0.1:1\"\n")?;
            let err = Settings::load(Some(Path::new("typo.toml"))).unwrap_err();
            assert!(err.to_string().contains("listen_addr"), "{err}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn paysafe_keys_from_the_file_and_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "ingress.toml",
                "[paysafe]\nwebhook_keys = [\"file-key\"]\nwebhook_key_files = [\"secrets/paysafe\"]\n",
            )?;
            let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
            assert_eq!(settings.paysafe.webhook_keys, ["file-key"]);
            assert_eq!(settings.paysafe.path, "/webhooks/paysafe");
            let file = settings.paysafe.webhook_key_files[0].relative();
            assert!(file.is_absolute() && file.ends_with("secrets/paysafe"));

            // A rotation from the environment: a list, quoted so any character is kept.
            jail.set_env(
                "CONNECTOR_PAYSAFE__WEBHOOK_KEYS",
                r#"["old+key/2025==", "new,key]2026"]"#,
            );
            let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
            assert_eq!(
                settings.paysafe.webhook_keys,
                ["old+key/2025==", "new,key]2026"]
            );

            // One key needs no brackets.
            jail.set_env("CONNECTOR_PAYSAFE__WEBHOOK_KEYS", "only-key");
            let settings = Settings::load(Some(Path::new("ingress.toml"))).expect("loads");
            assert_eq!(settings.paysafe.webhook_keys, ["only-key"]);

            // A key that reads as a number would lose its text: refused, and not echoed.
            jail.set_env("CONNECTOR_PAYSAFE__WEBHOOK_KEYS", "0012345");
            let err = Settings::load(Some(Path::new("ingress.toml"))).unwrap_err();
            assert_eq!(err.key, "paysafe.webhook_keys");
            assert!(!err.to_string().contains("12345"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn paysafe_settings_are_validated_and_never_show_a_key() {
        let mut settings = Settings::default();
        settings.paysafe.webhook_keys = vec!["s3cr3t-hmac-key".into(), "other".into()];
        settings.validate().expect("valid");
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("other"),
            "{shown}"
        );
        assert!(shown.contains("[2 redacted]"), "{shown}");

        let refused = |change: fn(&mut Settings)| {
            let mut settings = Settings::default();
            change(&mut settings);
            let err = settings.validate().unwrap_err();
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
            err.key
        };
        assert_eq!(
            refused(|s| s.paysafe.webhook_keys = vec!["k".into(), String::new()]),
            "paysafe.webhook_keys[1]"
        );
        assert_eq!(
            refused(|s| s.paysafe.webhook_keys = vec![" s3cr3t\n".into()]),
            "paysafe.webhook_keys[0]"
        );
        assert_eq!(
            refused(|s| s.paysafe.path = "webhooks/paysafe".into()),
            "paysafe.path"
        );
        assert_eq!(
            refused(|s| s.paysafe.path = "/callbacks/payment-status".into()),
            "paysafe.path"
        );
        assert_eq!(
            refused(|s| s.paysafe.path = s.bnc.path.clone()),
            "paysafe.path"
        );
    }
}
