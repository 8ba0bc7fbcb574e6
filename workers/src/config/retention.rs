//! `[retention]`: how long each kind of data is kept and how the partition grid is laid out.
//! Kept apart from `config.rs` because its validation (retentions against the grid) is its own.

use serde::{Deserialize, Serialize};

use super::ConfigError;

const DAY: u64 = 86_400;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// Width of one partition of the time-partitioned tables, in seconds (aligned to the Unix
    /// epoch). At least 60.
    pub partition_interval_secs: u64,
    /// How many partitions exist beyond the current one (never fewer than 2).
    pub partitions_ahead: u32,
    /// How often the `lifecycle` role runs.
    pub maintenance_interval_secs: u64,
    /// How long a partition drop waits for its lock before giving up until the next cycle.
    pub lock_timeout_ms: u64,
    /// Raw requests (`received_messages`): the audit evidence, archived before the drop.
    pub raw_requests_secs: u64,
    /// Order history and Paysafe item history.
    pub order_history_secs: u64,
    /// Published outbox rows (unpublished ones are never dropped).
    pub published_events_secs: u64,
    /// Idempotency keys: far beyond any bank's retry horizon.
    pub idempotency_keys_secs: u64,
    /// Quarantine rows released or discarded (held ones are kept until resolved).
    pub resolved_quarantine_secs: u64,
    /// Rows per batched DELETE.
    pub delete_batch: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            partition_interval_secs: DAY,
            partitions_ahead: 3,
            maintenance_interval_secs: 300,
            lock_timeout_ms: 1_000,
            raw_requests_secs: 90 * DAY,
            order_history_secs: 400 * DAY,
            published_events_secs: 7 * DAY,
            idempotency_keys_secs: 30 * DAY,
            resolved_quarantine_secs: 90 * DAY,
            delete_batch: 5_000,
        }
    }
}

impl RetentionSettings {
    /// Every retention spans at least one partition, the grid is at least a minute, and
    /// idempotency keys outlive nonces: a key is what recognises a bank's retry (a fresh
    /// nonce), so forgetting it before the nonces would be the weaker guarantee going first.
    pub fn validate(&self, nonce_retention_secs: u64) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, reason: String| ConfigError::new(format!("retention.{key}"), reason);
        if self.partition_interval_secs < 60 {
            return Err(invalid(
                "partition_interval_secs",
                "must be at least 60".into(),
            ));
        }
        if self.partitions_ahead < 2 {
            return Err(invalid("partitions_ahead", "must be at least 2".into()));
        }
        for (key, value) in [
            ("maintenance_interval_secs", self.maintenance_interval_secs),
            ("lock_timeout_ms", self.lock_timeout_ms),
            ("delete_batch", u64::from(self.delete_batch)),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        // The cycle must come round while a created partition is still ahead.
        let ahead_secs = self
            .partition_interval_secs
            .saturating_mul(u64::from(self.partitions_ahead - 1));
        if self.maintenance_interval_secs >= ahead_secs {
            return Err(invalid(
                "maintenance_interval_secs",
                format!(
                    "must be less than (partitions_ahead - 1) partition intervals ({ahead_secs} s)"
                ),
            ));
        }
        for (key, value) in [
            ("raw_requests_secs", self.raw_requests_secs),
            ("order_history_secs", self.order_history_secs),
            ("published_events_secs", self.published_events_secs),
            ("idempotency_keys_secs", self.idempotency_keys_secs),
            ("resolved_quarantine_secs", self.resolved_quarantine_secs),
        ] {
            if value < self.partition_interval_secs {
                return Err(invalid(
                    key,
                    format!(
                        "must be at least one partition interval ({} s)",
                        self.partition_interval_secs
                    ),
                ));
            }
        }
        if self.idempotency_keys_secs < nonce_retention_secs {
            return Err(invalid(
                "idempotency_keys_secs",
                format!("must be at least nonces.retention_secs ({nonce_retention_secs} s)"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_against_the_default_nonce_retention() {
        RetentionSettings::default().validate(7 * DAY).unwrap();
    }

    #[test]
    fn errors_name_the_key() {
        type Change = fn(&mut RetentionSettings);
        let cases: [(Change, &str); 5] = [
            (
                |s| s.maintenance_interval_secs = 2 * DAY,
                "retention.maintenance_interval_secs",
            ),
            (
                |s| s.partition_interval_secs = 59,
                "retention.partition_interval_secs",
            ),
            (|s| s.partitions_ahead = 1, "retention.partitions_ahead"),
            (
                |s| s.published_events_secs = 3_600,
                "retention.published_events_secs",
            ),
            (
                |s| s.idempotency_keys_secs = DAY,
                "retention.idempotency_keys_secs",
            ),
        ];
        for (change, key) in cases {
            let mut settings = RetentionSettings::default();
            change(&mut settings);
            let error = settings.validate(7 * DAY).unwrap_err().to_string();
            assert!(error.contains(key), "{error}");
        }
    }
}
