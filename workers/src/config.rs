//! Typed, layered configuration of the workers: defaults, then a TOML file, then
//! `CONNECTOR_*` environment variables (`CONNECTOR_DATABASE__URL` overrides `database.url`).
//! `config/workers.example.toml` documents every option; errors name the key at fault.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::value::magic::RelativePathBuf;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use connector_schema::seal::SealKeys;
pub use connector_schema::seal::SealSettings;
use connector_schema::topology::TopologySettings;

pub use connector_runtime::config::{ConfigError, Mode};
use connector_runtime::config::{check_broker_user, check_https};
pub use connector_runtime::telemetry::{LogFormat, LogSettings};

mod console;
mod paysafe_ca;
mod retention;

pub use console::{ConsoleAccount, ConsoleRole, ConsoleSettings};
pub use retention::RetentionSettings;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `production` (the default) refuses the broker's guest user and a plain-http Paysafe
    /// API; `development` (ops/run-local, the tests) allows them.
    pub mode: Mode,
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub topology: TopologySettings,
    pub apply: ApplySettings,
    pub relay: RelaySettings,
    pub nonces: NonceSettings,
    /// How long each kind of data is kept, and the partition grid (`lifecycle` role).
    pub retention: RetentionSettings,
    /// Paysafe tracking: the API the poller calls, its pace, and the tracking deadlines.
    pub paysafe: PaysafeSettings,
    pub ops: OpsSettings,
    pub log: LogSettings,
    /// The keys whose ingress seal the workers accept (DESIGN.md §2.7); the same section as
    /// the ingress's.
    pub seal: SealSettings,
    /// The evidence archive of raw requests (`[evidence]`); off unless `directory` is set.
    pub evidence: crate::evidence::EvidenceSettings,
    /// The operator console (off unless `console.listen` is set).
    pub console: ConsoleSettings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    pub url: String,
    /// Connections per process; each apply in flight holds one for its transaction.
    pub max_connections: u32,
    /// Waiting longer than this for a connection is a transient failure (retried).
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://postgres@127.0.0.1:5432/connector".into(),
            max_connections: 10,
            acquire_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    pub url: String,
    /// Delays between reconnection attempts and between retries of a transient failure:
    /// exponential with jitter, from the first to the largest.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into(),
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
        }
    }
}

impl BrokerSettings {
    pub fn retry_initial(&self) -> Duration {
        Duration::from_millis(self.retry_initial_ms)
    }

    pub fn retry_max(&self) -> Duration {
        Duration::from_millis(self.retry_max_ms)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApplySettings {
    /// Groups applied at once by one process (each in its own transaction, on its own
    /// database connection).
    pub concurrency: usize,
    /// Messages applied in one transaction at most (group commit: one commit for the group,
    /// one savepoint per message).
    pub group_size: usize,
    /// Body bytes in one group at most (a group has at least one message): a few batch
    /// callbacks already fill a transaction, and more in one group would only serialise what
    /// `concurrency` groups apply side by side.
    pub group_max_bytes: usize,
    /// Once a group has its first message, how long it waits for more before it is applied.
    pub group_linger_ms: u64,
    /// Unacknowledged deliveries the broker sends ahead (basic.qos); at least
    /// `group_size × concurrency`, so that every group in flight can fill up.
    pub prefetch: u16,
    /// How long a message is held through transient database failures before it is given back
    /// and consumption pauses until the database answers again. Must stay well under the
    /// broker's `consumer_timeout` (30 min by default): a message held past it is requeued by
    /// the broker, and every such requeue counts towards `x-delivery-limit`.
    pub max_hold_secs: u64,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            group_size: 64,
            group_max_bytes: 65_536,
            group_linger_ms: 2,
            prefetch: 256,
            max_hold_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Outbox rows claimed and published at a time. A relay's cycle (claim, publish, wait for
    /// the confirms, mark) takes a few round trips and a broker fsync whatever its size, so this
    /// bounds one relay's rate; but an event committed during a cycle waits for it to end, so a
    /// larger batch also lengthens the wait near saturation (ops/BENCHMARKS.md, the seventh
    /// step: 500 instead of 100 raised both the capacity and the latency). More relays, not
    /// larger batches, when the outbox grows.
    pub batch_size: i64,
    /// Polling fallback when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    /// A publish not confirmed within this is a failure (the row stays unpublished).
    pub confirm_timeout_ms: u64,
    /// How long claimed rows belong to one relay: long enough for the confirms and for
    /// recording them through a database restart; a relay that dies leaves its rows
    /// unpublished this long before another takes them.
    pub claim_lease_secs: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval_ms: 1_000,
            confirm_timeout_ms: 5_000,
            claim_lease_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NonceSettings {
    /// How long a seen nonce is remembered. It must exceed the longest time a message can
    /// wait in the intake queue plus the ingress's timestamp window, or a late replay would
    /// be applied as new (it would still be idempotent per order, only not recognised).
    pub retention_secs: u64,
    /// Ignored: accepted so that existing configurations still load. Seen nonces are purged by
    /// the `lifecycle` role with the other retention deletes, every
    /// `retention.maintenance_interval_secs`.
    pub purge_interval_secs: u64,
}

impl Default for NonceSettings {
    fn default() -> Self {
        Self {
            retention_secs: 7 * 24 * 3_600,
            purge_interval_secs: 3_600,
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaysafeSettings {
    /// `https://api.test.paysafe.com` (test) or `https://api.paysafe.com` (live); the simulator's
    /// URL in development.
    pub base_url: String,
    /// A PEM file of CA certificates to trust for `base_url`, beside the built-in (webpki)
    /// roots: a private CA in front of Paysafe, or the development CA of the compose stack's
    /// simulator. None (the default): the built-in roots only. Relative to the file's folder.
    pub ca_file: Option<RelativePathBuf>,
    /// The API key's user name and password (HTTP Basic). Secrets: set them from the
    /// environment (`CONNECTOR_PAYSAFE__API_USERNAME`, `CONNECTOR_PAYSAFE__API_PASSWORD`).
    pub api_username: String,
    pub api_password: String,
    /// A Paysafe answer slower than this is a timeout: the item is polled again later.
    pub request_timeout_ms: u64,
    /// Calls per second to Paysafe by this process, all items together.
    pub rate_limit_per_second: u32,
    /// Delay before the first poll of a new item, and the first step of the backoff (which
    /// doubles, with jitter, up to `max_poll_interval_secs`).
    pub first_poll_after_secs: u64,
    pub max_poll_interval_secs: u64,
    pub backoff_multiplier: f64,
    /// Each delay is drawn from ±this fraction around its step, so items spread out.
    pub backoff_jitter: f64,
    /// Tracking stops at these ages; a still non-final item becomes STALE for review.
    pub payment_deadline_secs: u64,
    pub credit_deadline_secs: u64,
    /// Items claimed at once by one poller, and polled concurrently.
    pub claim_batch: i64,
    pub concurrency: usize,
    /// Answers recorded at most in one transaction: those in hand when the previous group
    /// committed, so a group costs one commit however many items it holds.
    pub record_group_size: usize,
    /// A claimed item is not due again for this long, so another poller never polls it at the
    /// same time, and a poller that dies mid-poll only delays it.
    pub claim_lease_secs: u64,
    /// With nothing due, how long the poller waits before looking again.
    pub idle_interval_ms: u64,
    /// After a 401/403 the poller stops calling Paysafe for this long (and alerts).
    pub auth_pause_secs: u64,
}

impl std::fmt::Debug for PaysafeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaysafeSettings")
            .field("base_url", &self.base_url)
            .field(
                "ca_file",
                &self.ca_file.as_ref().map(|file| file.relative()),
            )
            .field("api_username", &"<redacted>")
            .field("api_password", &"<redacted>")
            .field("rate_limit_per_second", &self.rate_limit_per_second)
            .finish_non_exhaustive()
    }
}

impl Default for PaysafeSettings {
    fn default() -> Self {
        Self {
            base_url: "https://api.test.paysafe.com".into(),
            ca_file: None,
            api_username: String::new(),
            api_password: String::new(),
            request_timeout_ms: 10_000,
            rate_limit_per_second: 20,
            first_poll_after_secs: 60,
            max_poll_interval_secs: 3_600,
            backoff_multiplier: 2.0,
            backoff_jitter: 0.3,
            payment_deadline_secs: 2 * 24 * 3_600,
            credit_deadline_secs: 30 * 24 * 3_600,
            claim_batch: 32,
            concurrency: 8,
            record_group_size: 64,
            claim_lease_secs: 120,
            idle_interval_ms: 1_000,
            auth_pause_secs: 300,
        }
    }
}

impl PaysafeSettings {
    /// The certificates of `ca_file`, read and checked (none without one); errors name
    /// `paysafe.ca_file`.
    pub fn ca_certificates(&self) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        match &self.ca_file {
            Some(file) => paysafe_ca::load(&file.relative()),
            None => Ok(Vec::new()),
        }
    }

    pub fn first_poll_after(&self) -> Duration {
        Duration::from_secs(self.first_poll_after_secs)
    }

    pub fn deadline(&self, kind: connector_schema::paysafe::TrackedKind) -> Duration {
        Duration::from_secs(match kind {
            connector_schema::paysafe::TrackedKind::Payment => self.payment_deadline_secs,
            connector_schema::paysafe::TrackedKind::StandaloneCredit => self.credit_deadline_secs,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpsSettings {
    /// `/metrics`, `/healthz`, `/readyz` (broker and database reachable).
    pub listen: SocketAddr,
}

impl Default for OpsSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

/// The top-level sections of this process's configuration.
const SECTIONS: [&str; 14] = [
    "mode",
    "database",
    "broker",
    "topology",
    "apply",
    "relay",
    "nonces",
    "retention",
    "paysafe",
    "ops",
    "log",
    "seal",
    "evidence",
    "console",
];

impl Settings {
    /// The seal keys, loaded and checked: required wherever a seal is checked (the apply role,
    /// `quarantine release`, `dead-letters replay`).
    pub fn seal_keys(&self) -> Result<SealKeys, ConfigError> {
        SealKeys::from_settings(&self.seal.keys)
            .map_err(|error| ConfigError::new(error.at, error.message))
    }

    /// Defaults, then the TOML file at `path` (if given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let settings = Self::read(path)?;
        settings.validate()?;
        Ok(settings)
    }

    /// The layers, typed but not validated: for tests that check a file's contents apart from
    /// whether a process could start with it.
    pub fn read(path: Option<&Path>) -> Result<Self, ConfigError> {
        connector_runtime::config::load(path, &SECTIONS)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            (
                "database.max_connections",
                u64::from(self.database.max_connections),
            ),
            (
                "database.acquire_timeout_ms",
                self.database.acquire_timeout_ms,
            ),
            ("broker.retry_initial_ms", self.broker.retry_initial_ms),
            ("apply.concurrency", self.apply.concurrency as u64),
            ("apply.group_size", self.apply.group_size as u64),
            ("apply.group_max_bytes", self.apply.group_max_bytes as u64),
            ("apply.max_hold_secs", self.apply.max_hold_secs),
            ("relay.batch_size", self.relay.batch_size.max(0) as u64),
            ("relay.poll_interval_ms", self.relay.poll_interval_ms),
            ("relay.confirm_timeout_ms", self.relay.confirm_timeout_ms),
            ("nonces.retention_secs", self.nonces.retention_secs),
            (
                "nonces.purge_interval_secs",
                self.nonces.purge_interval_secs,
            ),
            (
                "paysafe.request_timeout_ms",
                self.paysafe.request_timeout_ms,
            ),
            (
                "paysafe.rate_limit_per_second",
                u64::from(self.paysafe.rate_limit_per_second),
            ),
            (
                "paysafe.max_poll_interval_secs",
                self.paysafe.max_poll_interval_secs,
            ),
            (
                "paysafe.claim_batch",
                self.paysafe.claim_batch.max(0) as u64,
            ),
            ("paysafe.concurrency", self.paysafe.concurrency as u64),
            (
                "paysafe.record_group_size",
                self.paysafe.record_group_size as u64,
            ),
            ("paysafe.claim_lease_secs", self.paysafe.claim_lease_secs),
            ("paysafe.idle_interval_ms", self.paysafe.idle_interval_ms),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        let in_flight = self.apply.group_size.saturating_mul(self.apply.concurrency);
        if usize::from(self.apply.prefetch) < in_flight {
            return Err(ConfigError::new(
                "apply.prefetch",
                format!(
                    "must be at least apply.group_size × apply.concurrency ({} × {} = {in_flight}), or groups in flight cannot fill up",
                    self.apply.group_size, self.apply.concurrency
                ),
            ));
        }
        // The confirms, then at least a few seconds to record them before the claim lapses.
        if self.relay.claim_lease_secs.saturating_mul(1000) < self.relay.confirm_timeout_ms + 5_000
        {
            return Err(ConfigError::new(
                "relay.claim_lease_secs",
                "must exceed relay.confirm_timeout_ms by at least 5 s, or confirmed events could not be recorded before another relay takes them",
            ));
        }
        if self.broker.retry_max_ms < self.broker.retry_initial_ms {
            return Err(ConfigError::new(
                "broker.retry_max_ms",
                "must be at least broker.retry_initial_ms",
            ));
        }
        self.retention.validate(self.nonces.retention_secs)?;
        self.console.validate()?;
        self.topology
            .validate()
            .map_err(|(key, message)| ConfigError::new(format!("topology.{key}"), message))?;
        let broker = self
            .broker
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new("broker.url", format!("not an AMQP URI: {e}")))?;
        check_broker_user(self.mode, &broker.authority.userinfo.username)?;
        check_https(self.mode, "paysafe.base_url", &self.paysafe.base_url)?;
        let paysafe = &self.paysafe;
        if !(paysafe.base_url.starts_with("https://") || paysafe.base_url.starts_with("http://")) {
            return Err(ConfigError::new(
                "paysafe.base_url",
                "must be an http(s) URL",
            ));
        }
        paysafe.ca_certificates()?;
        if paysafe.claim_lease_secs.saturating_mul(1000) <= paysafe.request_timeout_ms {
            return Err(ConfigError::new(
                "paysafe.claim_lease_secs",
                "must exceed paysafe.request_timeout_ms, or a slow poll could be claimed again",
            ));
        }
        if paysafe.backoff_multiplier < 1.0 {
            return Err(ConfigError::new(
                "paysafe.backoff_multiplier",
                "must be at least 1",
            ));
        }
        if !(0.0..1.0).contains(&paysafe.backoff_jitter) {
            return Err(ConfigError::new(
                "paysafe.backoff_jitter",
                "must be in [0, 1)",
            ));
        }
        let url = &self.database.url;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::new(
                "database.url",
                "must be a postgres:// URL",
            ));
        }
        url.parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| ConfigError::new("database.url", format!("not a PostgreSQL URL: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn development() -> Settings {
        Settings {
            mode: Mode::Development,
            ..Settings::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        development().validate().expect("defaults validate");
        let mut settings = development();
        settings.apply.prefetch = 1;
        assert_eq!(settings.validate().unwrap_err().key, "apply.prefetch");
        let mut settings = development();
        settings.apply.group_size = 100;
        settings.apply.concurrency = 3;
        settings.apply.prefetch = 299;
        let error = settings.validate().unwrap_err();
        assert_eq!(error.key, "apply.prefetch");
        assert!(
            error
                .message
                .contains("apply.group_size × apply.concurrency (100 × 3 = 300)"),
            "{error}"
        );
        settings.apply.prefetch = 300;
        settings
            .validate()
            .expect("prefetch covers the groups in flight");
        let mut settings = development();
        settings.apply.group_size = 0;
        assert_eq!(settings.validate().unwrap_err().key, "apply.group_size");
        let mut settings = development();
        settings.apply.max_hold_secs = 0;
        assert_eq!(settings.validate().unwrap_err().key, "apply.max_hold_secs");
        let mut settings = development();
        settings.paysafe.record_group_size = 0;
        let error = settings.validate().unwrap_err();
        assert_eq!(
            (error.key.as_str(), error.message.as_str()),
            ("paysafe.record_group_size", "must be greater than 0")
        );
        let mut settings = development();
        settings.database.url = "mysql://x".into();
        assert_eq!(settings.validate().unwrap_err().key, "database.url");
        let mut settings = development();
        settings.relay.claim_lease_secs = settings.relay.confirm_timeout_ms / 1000;
        assert_eq!(
            settings.validate().unwrap_err().key,
            "relay.claim_lease_secs"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn the_example_configuration_shows_the_defaults() {
        // In a jail: another test sets CONNECTOR_* variables inside one, and the jail's lock
        // keeps them from leaking into this load.
        figment::Jail::expect_with(|_| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/workers.example.toml");
            let example = Settings::read(Some(&path)).expect("loads");
            assert_eq!(
                serde_json::to_value(&example).unwrap(),
                serde_json::to_value(Settings::default()).unwrap()
            );
            // Production, whose broker user is still to fill in: refused for that alone.
            assert_eq!(example.mode, Mode::Production);
            assert_eq!(example.validate().unwrap_err().key, "broker.url");
            Settings {
                mode: Mode::Development,
                ..example
            }
            .validate()
            .expect("otherwise valid");
            Ok(())
        });
    }
}

#[cfg(test)]
mod production_tests {
    use super::*;

    #[test]
    fn production_refuses_guest_and_a_plain_http_paysafe_api() {
        let mut settings = Settings::default();
        settings.broker.url = "amqp://connector-workers:s3cr3t@rabbit:5672/connector".into();
        settings
            .validate()
            .expect("production with its own user and https");
        for guest in [
            "amqp://guest:guest@rabbit:5672/%2f",
            "amqp://rabbit:5672/%2f",
        ] {
            let mut settings = settings.clone();
            settings.broker.url = guest.into();
            assert_eq!(
                settings.validate().unwrap_err().key,
                "broker.url",
                "{guest}"
            );
        }
        let mut http = settings.clone();
        http.paysafe.base_url = "http://api.test.paysafe.com".into();
        let err = http.validate().unwrap_err();
        assert_eq!(err.key, "paysafe.base_url");
        assert!(err.message.contains("https"), "{err}");
        http.mode = Mode::Development;
        http.broker.url = "amqp://guest:guest@127.0.0.1:5672/%2f".into();
        http.validate().expect("development allows both");
    }
}

#[cfg(test)]
mod seal_tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn seal_keys_come_from_the_file_or_the_environment_and_are_required() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CONNECTOR_MODE", "development");
            assert_eq!(
                Settings::load(None).unwrap().seal_keys().unwrap_err().key,
                "seal.keys"
            );
            jail.create_file("seal.key", "0123456789abcdef0123456789abcdef\n")?;
            jail.create_file(
                "workers.toml",
                "[[seal.keys]]\nid = \"2026-11\"\nkey_file = \"seal.key\"\n",
            )?;
            let settings = Settings::load(Some(Path::new("workers.toml"))).expect("loads");
            assert!(settings.seal_keys().is_ok());
            jail.set_env(
                "CONNECTOR_SEAL__KEYS",
                r#"[{id="env-1", key="fedcba9876543210fedcba9876543210"}]"#,
            );
            let settings = Settings::load(None).expect("loads");
            assert_eq!(settings.seal.keys[0].id, "env-1");
            assert!(settings.seal_keys().is_ok());
            Ok(())
        });
    }
}
