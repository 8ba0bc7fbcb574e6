//! Typed, layered configuration of the workers: defaults, then a TOML file, then
//! `CONNECTOR_*` environment variables (`CONNECTOR_DATABASE__URL` overrides `database.url`).
//! `config/workers.example.toml` documents every option; errors name the key at fault.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use connector_schema::corelink::DEFAULT_MAX_BATCH_ORDERS;
use connector_schema::topology::TopologySettings;

pub use connector_runtime::config::ConfigError;
pub use connector_runtime::telemetry::{LogFormat, LogSettings};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub broker: BrokerSettings,
    pub topology: TopologySettings,
    pub apply: ApplySettings,
    pub relay: RelaySettings,
    pub nonces: NonceSettings,
    pub ops: OpsSettings,
    pub log: LogSettings,
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
    /// Messages applied at once by one process (each in its own transaction).
    pub concurrency: usize,
    /// Unacknowledged deliveries the broker sends ahead (basic.qos); at least `concurrency`.
    pub prefetch: u16,
    /// Must match the ingress's `corelink.max_batch_orders`.
    pub max_batch_orders: usize,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            concurrency: 4,
            prefetch: 16,
            max_batch_orders: DEFAULT_MAX_BATCH_ORDERS,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelaySettings {
    /// Outbox rows claimed and published per transaction.
    pub batch_size: i64,
    /// Polling fallback when no NOTIFY arrives.
    pub poll_interval_ms: u64,
    /// A publish not confirmed within this is a failure (the row stays unpublished).
    pub confirm_timeout_ms: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval_ms: 1_000,
            confirm_timeout_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NonceSettings {
    /// How long a seen nonce is remembered. It must exceed the longest time a message can
    /// wait in the intake queue plus the ingress's timestamp window, or a late replay would
    /// be applied as new (it would still be idempotent per order, only not recognised).
    pub retention_hours: u64,
    /// How often the purge runs.
    pub purge_interval_secs: u64,
}

impl Default for NonceSettings {
    fn default() -> Self {
        Self {
            retention_hours: 7 * 24,
            purge_interval_secs: 3_600,
        }
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
const SECTIONS: [&str; 8] = [
    "database", "broker", "topology", "apply", "relay", "nonces", "ops", "log",
];

impl Settings {
    /// Defaults, then the TOML file at `path` (if given), then the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let settings: Settings = connector_runtime::config::load(path, &SECTIONS)?;
        settings.validate()?;
        Ok(settings)
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
            ("apply.max_batch_orders", self.apply.max_batch_orders as u64),
            ("relay.batch_size", self.relay.batch_size.max(0) as u64),
            ("relay.poll_interval_ms", self.relay.poll_interval_ms),
            ("relay.confirm_timeout_ms", self.relay.confirm_timeout_ms),
            ("nonces.retention_hours", self.nonces.retention_hours),
            (
                "nonces.purge_interval_secs",
                self.nonces.purge_interval_secs,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::new(key, "must be greater than 0"));
            }
        }
        if usize::from(self.apply.prefetch) < self.apply.concurrency {
            return Err(ConfigError::new(
                "apply.prefetch",
                "must be at least apply.concurrency",
            ));
        }
        if self.broker.retry_max_ms < self.broker.retry_initial_ms {
            return Err(ConfigError::new(
                "broker.retry_max_ms",
                "must be at least broker.retry_initial_ms",
            ));
        }
        self.topology
            .validate()
            .map_err(|(key, message)| ConfigError::new(format!("topology.{key}"), message))?;
        self.broker
            .url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| ConfigError::new("broker.url", format!("not an AMQP URI: {e}")))?;
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

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        Settings::default().validate().expect("defaults validate");
        let mut settings = Settings::default();
        settings.apply.prefetch = 1;
        assert_eq!(settings.validate().unwrap_err().key, "apply.prefetch");
        let mut settings = Settings::default();
        settings.database.url = "mysql://x".into();
        assert_eq!(settings.validate().unwrap_err().key, "database.url");
    }

    #[test]
    fn the_example_configuration_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/workers.example.toml");
        let example = Settings::load(Some(&path)).expect("loads");
        assert_eq!(
            serde_json::to_value(&example).unwrap(),
            serde_json::to_value(Settings::default()).unwrap()
        );
    }
}
