//! The command line: every option of the harness, its default and its `--help` text, in one
//! place; the rest of the harness reads the parsed [`Cli`].

use clap::Parser;

use crate::harness::DatabaseKind;
use crate::soak::SoakPlan;

/// Fault-injection harness for the connector (loopback only, its own RabbitMQ and PostgreSQL).
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    /// Fault rounds; each injects a process fault (SIGKILL an ingress or a workers process)
    /// and an infrastructure fault (cut the broker or the database, restart RabbitMQ or
    /// PostgreSQL, kill a cluster node).
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Length of a round, under load.
    #[arg(long, default_value_t = 8)]
    pub round_secs: u64,
    /// Only these infrastructure faults, in rotation (comma-separated): cut-broker,
    /// cut-database, restart-rabbitmq, crash-rabbitmq, kill-node, restart-postgres,
    /// memory-alarm, long-db-outage; with --postgres-ha kill-primary, kill-primary-ahead, kill-patroni,
    /// switchover, cut-dcs. Default: all of the mode.
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::faults::INFRA_NAMES))]
    pub infra: Vec<String>,
    /// A three-node RabbitMQ cluster (quorum queues on all three) and node-loss rounds.
    #[arg(long)]
    pub cluster: bool,
    /// PostgreSQL highly available: Patroni managing a primary and a synchronous standby,
    /// etcd, HAProxy in front; the database faults become primary losses (SIGKILL of the
    /// primary's PostgreSQL or of its Patroni, a switchover) and DCS cuts.
    #[arg(long)]
    pub postgres_ha: bool,
    /// Negative control of the HA rounds: replication asynchronous (`synchronous_mode` off),
    /// so that a primary loss may take acknowledged commits with it. The run may then fail.
    #[arg(long, requires = "postgres_ha")]
    pub postgres_async: bool,
    /// Keep the work directory (logs, data, the client's log of 200s) for inspection.
    #[arg(long)]
    pub keep: bool,
    /// Client tasks sending at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Do not build connector-ingress and connector-workers first (use what is in the
    /// harness's own target directory).
    #[arg(long)]
    pub no_build: bool,
    /// Negative control of the checks: purge the intake queue once the load stops, so that
    /// acknowledged requests still queued are really lost. The run must then fail.
    #[arg(long)]
    pub sabotage_purge_intake: bool,
    /// A soak instead of fault rounds: this many seconds of load paced at `--soak-load` of
    /// the capacity measured first in the same run, no faults, sampling memory, table sizes
    /// and the nonce purge every `--sample-secs`.
    #[arg(long, value_name = "SECS", conflicts_with_all = ["rounds", "cluster", "sabotage_purge_intake"])]
    pub soak: Option<u64>,
    /// Soak: the fraction of the measured capacity to run at.
    #[arg(long, default_value_t = 0.5)]
    pub soak_load: f64,
    /// Soak: skip the capacity measurement and start this many orders-or-batches per second.
    #[arg(long)]
    pub soak_rate: Option<f64>,
    /// Soak: seconds of closed-loop load that measure the capacity.
    #[arg(long, default_value_t = 60)]
    pub calibrate_secs: u64,
    /// Soak: seconds between samples.
    #[arg(long, default_value_t = 60)]
    pub sample_secs: u64,
    /// Soak: the workers' nonce retention, short so that the purge reaches its steady state
    /// within the run. It must exceed the ingress's 300 s timestamp window: a replay inside the
    /// window whose nonce was already purged would be applied again.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(301..))]
    pub nonce_retention_secs: u64,
    /// Soak: the retention of every kind of data (raw requests, history, published events,
    /// idempotency keys, resolved quarantine), on minute partitions, so that the drops reach
    /// their steady state within the run (at least 60). Default: the workers' defaults.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(60..))]
    pub retention_secs: Option<u64>,
}

impl Cli {
    pub fn database_kind(&self) -> DatabaseKind {
        match self.postgres_ha {
            false => DatabaseKind::Single,
            true => DatabaseKind::Ha {
                synchronous: !self.postgres_async,
            },
        }
    }

    /// The soak asked for, if any (`None`: fault rounds).
    pub fn soak_plan(&self) -> Option<SoakPlan> {
        Some(SoakPlan {
            seconds: self.soak?,
            load: self.soak_load,
            rate: self.soak_rate,
            calibrate_secs: self.calibrate_secs,
            sample_secs: self.sample_secs,
            // Enough open requests for the paced schedule to hold through slow answers.
            concurrency: self.concurrency.max(16),
            nonce_retention_secs: self.nonce_retention_secs,
            purge_interval_secs: 60,
            retention_secs: self.retention_secs,
        })
    }
}
