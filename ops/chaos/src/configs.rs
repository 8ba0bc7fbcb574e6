//! The connector's configuration files for a run, written into the work directory: what the
//! ingress and workers processes under test are told (the harness's own broker and database,
//! through its proxies; the bank's key; short retry and relay intervals), and the names both
//! sides of the run share.

use std::path::Path;

/// The bank the load signs as.
pub const CLIENT_ID: &str = "BANK_CHAOS";
pub const KID: &str = "chaos-es256-1";
/// The topology's prefix: exchanges and queues of the run, apart from anything else.
pub const PREFIX: &str = "chaos";

/// The seal the run's ingresses and workers share (a throw-away run: not a secret).
const SEAL: &str = r#"
[[seal.keys]]
id = "chaos"
key = "fault-harness-seal-key-0123456789abcdef"
"#;

/// The `application_name` workers process `index` (0-based) connects to PostgreSQL with.
pub fn workers_application_name(index: usize) -> String {
    format!("chaos-workers-{}", index + 1)
}

/// The workers' nonce retention and purge interval, when a run sets them (the soak does, so
/// that the purge reaches its steady state within the run).
#[derive(Debug, Clone, Copy)]
pub struct NoncePurge {
    pub retention_secs: u64,
    pub interval_secs: u64,
    /// Every `[retention]` kind's retention (`--retention-secs`); None: the defaults.
    pub data_retention_secs: Option<u64>,
}

/// How long the broker waits for an ack, and how long the workers hold messages through
/// database failures before giving them back, scaled from production's 30 min and minutes.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub consumer_ms: u64,
    pub max_hold_secs: u64,
}

impl Timeouts {
    /// 2 s instead of 30 min, so that the long-database-outage round outlasts the consumer
    /// timeout many times (checked on a 250 ms channel tick); messages given back after 1 s.
    pub const SCALED: Self = Self {
        consumer_ms: 2_000,
        max_hold_secs: 1,
    };
    /// With a Patroni cluster: a failover takes seconds (the leader key's 10 s TTL), which no
    /// scaling shortens. As in production, the consumer timeout is far longer than a failover
    /// and the workers hold their messages through one instead of giving them back.
    pub const FAILOVER: Self = Self {
        consumer_ms: 120_000,
        max_hold_secs: 45,
    };
}

/// `advanced.config` of every RabbitMQ node of the harness.
pub fn rabbit_advanced_config(timeouts: Timeouts) -> String {
    format!(
        "[{{rabbit, [{{consumer_timeout, {}}}, {{channel_tick_interval, 250}}]}}].\n",
        timeouts.consumer_ms
    )
}

pub fn ingress_config(listen: u16, ops: u16, broker_url: &str, key_file: &Path) -> String {
    format!(
        r#"# Written by fault-harness.
mode = "development"
[http]
listen = "127.0.0.1:{listen}"
ops_listen = "127.0.0.1:{ops}"
shutdown_grace_secs = 5

[broker]
url = "{broker_url}"
confirm_timeout_ms = 5000
retry_after_secs = 1
reconnect_initial_ms = 100
reconnect_max_ms = 2000

[topology]
prefix = "{PREFIX}"

[corelink]
rate_limit_per_second = 0
keys_watch_interval_secs = 0

[[corelink.clients]]
id = "{CLIENT_ID}"
keys = [{{ kid = "{KID}", alg = "ES256", jwk_file = "{}" }}]

[log]
format = "json"
filter = "info"
{SEAL}"#,
        key_file.display()
    )
}

pub fn workers_config(
    ops: u16,
    broker_url: &str,
    db_url: &str,
    nonces: Option<NoncePurge>,
    evidence_dir: &std::path::Path,
    timeouts: Timeouts,
) -> String {
    // Short retentions drop raw-request partitions, which needs the evidence archive.
    let evidence = nonces
        .and_then(|purge| purge.data_retention_secs)
        .map_or_else(String::new, |_| {
            format!("\n[evidence]\ndirectory = \"{}\"\n", evidence_dir.display())
        });
    let retentions = nonces
        .and_then(|purge| Some((purge.data_retention_secs?, purge.retention_secs)))
        .map_or_else(String::new, |(secs, nonce_secs)| {
            format!(
                "raw_requests_secs = {secs}\norder_history_secs = {secs}\npublished_events_secs = {secs}\nidempotency_keys_secs = {}\nresolved_quarantine_secs = {secs}\n",
                secs.max(nonce_secs)
            )
        });
    let max_hold_secs = timeouts.max_hold_secs;
    // Minute partitions, so that they roll (are created, and with short retentions dropped)
    // during a run; the cycle well inside one partition, which also paces the nonce purge.
    let maintenance_secs = nonces.map_or(20, |purge| purge.interval_secs.min(20));
    let nonces = nonces.map_or_else(String::new, |purge| {
        format!(
            "\n[nonces]\nretention_secs = {}\npurge_interval_secs = {}\n",
            purge.retention_secs, purge.interval_secs
        )
    });
    let nonces = format!(
        "{nonces}\n[retention]\npartition_interval_secs = 60\nmaintenance_interval_secs = {maintenance_secs}\n{retentions}"
    );
    format!(
        r#"# Written by fault-harness.
mode = "development"
[database]
url = "{db_url}"
max_connections = 10
acquire_timeout_ms = 2000

[broker]
url = "{broker_url}"
retry_initial_ms = 100
retry_max_ms = 2000

[topology]
prefix = "{PREFIX}"

[apply]
# Well under the harness's broker consumer timeout.
max_hold_secs = {max_hold_secs}

[relay]
poll_interval_ms = 500

[ops]
listen = "127.0.0.1:{ops}"
{nonces}{evidence}
[log]
format = "json"
filter = "info"
{SEAL}"#
    )
}
