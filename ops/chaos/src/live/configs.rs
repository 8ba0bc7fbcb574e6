//! What the live check's connector processes are told: the private broker and database, the
//! bank's, BNC partner's and Paysafe's keys, and timings short enough for a run of minutes
//! (polls every second or two, a Paysafe deadline of seconds, a lifecycle cycle every 5 s).

use std::path::Path;

/// The bank the Corelink traffic signs as.
pub const CLIENT_ID: &str = "BANK_LIVE";
pub const KID: &str = "live-es256-1";
/// The BNC partner the account-binding callback is signed by.
pub const BNC_CLIENT_KEY: &str = "BNC_LIVE";
/// The simulator's API credentials and webhook key: a throw-away run's, never printed all the
/// same.
pub const SIM_USER: &str = "live-merchant";
pub const SIM_PASSWORD: &str = "live-api-password";
pub const WEBHOOK_KEY: &str = "live-paysafe-webhook-key";
/// A tracked payment goes STALE this long after it was tracked without a final status: the
/// STALE alert's fault is an item that stays PROCESSING past it.
pub const PAYMENT_DEADLINE_SECS: u64 = 25;

/// The seal the run's ingress and workers share (a throw-away run: not a secret).
const SEAL: &str = r#"
[[seal.keys]]
id = "live"
key = "ops-live-seal-key-0123456789abcdef"
"#;

/// Where the ingress's keys are.
#[derive(Debug)]
pub struct IngressKeys<'a> {
    pub bank_jwk: &'a Path,
    pub bnc_public_pem: &'a Path,
}

pub fn ingress(listen: u16, ops: u16, broker_url: &str, keys: &IngressKeys<'_>) -> String {
    format!(
        r#"# Written by ops-live.
mode = "development"
[http]
listen = "127.0.0.1:{listen}"
ops_listen = "127.0.0.1:{ops}"
shutdown_grace_secs = 2

[broker]
url = "{broker_url}"
confirm_timeout_ms = 3000
retry_after_secs = 1
reconnect_initial_ms = 100
reconnect_max_ms = 1000

[corelink]
keys_watch_interval_secs = 0

[[corelink.clients]]
id = "{CLIENT_ID}"
keys = [{{ kid = "{KID}", alg = "ES256", jwk_file = "{}" }}]

[bnc]
partners = [{{ client_key = "{BNC_CLIENT_KEY}", public_key_files = ["{}"] }}]

[paysafe]
webhook_keys = [{{ id = "live-1", key = "{WEBHOOK_KEY}", encoding = "raw" }}]

[log]
format = "json"
filter = "info"
{SEAL}"#,
        keys.bank_jwk.display(),
        keys.bnc_public_pem.display()
    )
}

pub fn workers(ops: u16, broker_url: &str, db_url: &str, sim_url: &str) -> String {
    format!(
        r#"# Written by ops-live.
mode = "development"
[database]
url = "{db_url}"
max_connections = 5
acquire_timeout_ms = 1000

[broker]
url = "{broker_url}"
retry_initial_ms = 100
retry_max_ms = 1000

[relay]
poll_interval_ms = 500

[retention]
maintenance_interval_secs = 5

[paysafe]
base_url = "{sim_url}"
api_username = "{SIM_USER}"
api_password = "{SIM_PASSWORD}"
first_poll_after_secs = 1
max_poll_interval_secs = 2
payment_deadline_secs = {PAYMENT_DEADLINE_SECS}
idle_interval_ms = 300
auth_pause_secs = 2

[ops]
listen = "127.0.0.1:{ops}"

[log]
format = "json"
filter = "info"
{SEAL}"#
    )
}

/// The operator console's one account: signs in to read the per-bank view.
pub const CONSOLE_ACCOUNT: &str = "live-operator";
pub const CONSOLE_PASSWORD: &str = "live-console-password";

/// What the relay + lifecycle process adds: the evidence archive (its counters are then
/// exported, at zero until a partition is archived) and the operator console, reading each
/// bank's refusals from the run's Prometheus.
pub fn relay_extras(
    archive: &Path,
    console_port: u16,
    prometheus_url: &str,
    password_hash: &str,
) -> String {
    format!(
        r#"
[evidence]
directory = "{}"

[console]
listen = "127.0.0.1:{console_port}"
prometheus_url = "{prometheus_url}"

[[console.accounts]]
name = "{CONSOLE_ACCOUNT}"
role = "operator"
password_hash = '{password_hash}'
"#,
        archive.display()
    )
}

/// `advanced.config` of the private RabbitMQ node: its Prometheus plugin on a port of its own
/// (not 15692, which the machine's broker may hold), one series per queue on `/metrics` as
/// ops/compose/rabbitmq.conf sets it (`prometheus.return_per_object_metrics = true`).
pub fn rabbit_advanced(prometheus_port: u16) -> String {
    format!(
        "[{{rabbitmq_prometheus, [{{return_per_object_metrics, true}}, {{tcp_config, [{{port, {prometheus_port}}}, {{ip, \"127.0.0.1\"}}]}}]}}].\n"
    )
}
