//! `fault-harness`: the connector under sustained signed load while, round after round, its
//! processes are SIGKILLed, RabbitMQ and PostgreSQL restarted and connections cut; then every
//! 200 in the client's log is checked against the database, the ledger queue and the
//! dead-letter queues. Everything runs on loopback, on services the harness starts and stops
//! itself. `--soak` replaces the rounds with a long faultless run at a fraction of the measured
//! capacity (`soak.rs`). See ops/chaos/README.md.

mod check;
mod load;
mod proxy;
mod services;
mod soak;

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::PgPool;

use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{RequestSigner, generate_key_pair};
use connector_schema::topology::{Topology, TopologySettings};

use crate::check::{Inputs, LedgerMessage, Report};
use crate::load::{Bank, Snapshot};
use crate::proxy::Balancer;
use crate::services::{Postgres, Proc, RabbitNode, free_port};
use crate::soak::{LedgerCollector, SoakPlan, SoakSummary};

const CLIENT_ID: &str = "BANK_CHAOS";
const KID: &str = "chaos-es256-1";
const PREFIX: &str = "chaos";
/// Messages published straight to the intake exchange that no worker can read: they must end
/// up in the intake dead-letter queue, and nothing else may.
const POISON_MESSAGES: usize = 3;

/// Fault-injection harness for the connector (loopback only, its own RabbitMQ and PostgreSQL).
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Fault rounds; each injects a process fault (SIGKILL an ingress or a workers process)
    /// and an infrastructure fault (cut the broker or the database, restart RabbitMQ or
    /// PostgreSQL, kill a cluster node).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
    /// Length of a round, under load.
    #[arg(long, default_value_t = 8)]
    round_secs: u64,
    /// A three-node RabbitMQ cluster (quorum queues on all three) and node-loss rounds.
    #[arg(long)]
    cluster: bool,
    /// Keep the work directory (logs, data, the client's log of 200s) for inspection.
    #[arg(long)]
    keep: bool,
    /// Client tasks sending at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Do not build connector-ingress and connector-workers first (use what is in the
    /// harness's own target directory).
    #[arg(long)]
    no_build: bool,
    /// Negative control of the checks: purge the intake queue once the load stops, so that
    /// acknowledged requests still queued are really lost. The run must then fail.
    #[arg(long)]
    sabotage_purge_intake: bool,
    /// A soak instead of fault rounds: this many seconds of load paced at `--soak-load` of
    /// the capacity measured first in the same run, no faults, sampling memory, table sizes
    /// and the nonce purge every `--sample-secs`.
    #[arg(long, value_name = "SECS", conflicts_with_all = ["rounds", "cluster", "sabotage_purge_intake"])]
    soak: Option<u64>,
    /// Soak: the fraction of the measured capacity to run at.
    #[arg(long, default_value_t = 0.5)]
    soak_load: f64,
    /// Soak: skip the capacity measurement and start this many orders-or-batches per second.
    #[arg(long)]
    soak_rate: Option<f64>,
    /// Soak: seconds of closed-loop load that measure the capacity.
    #[arg(long, default_value_t = 60)]
    calibrate_secs: u64,
    /// Soak: seconds between samples.
    #[arg(long, default_value_t = 60)]
    sample_secs: u64,
    /// Soak: the workers' nonce retention, short so that the purge reaches its steady state
    /// within the run (it must still exceed the ingress's 300 s timestamp window).
    #[arg(long, default_value_t = 600)]
    nonce_retention_secs: u64,
}

impl Cli {
    fn soak_plan(&self) -> Option<SoakPlan> {
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
        })
    }
}

fn out(line: impl AsRef<str>) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", line.as_ref());
    let _ = stdout.flush();
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    KillIngress(usize),
    KillWorkers(usize),
    CutBroker,
    CutDatabase,
    /// Single node: `rabbitmqctl stop` and start (graceful) or SIGKILL and start (crash).
    /// Cluster: `stop_app` / `start_app` on one node.
    RestartRabbit {
        node: usize,
        crash: bool,
    },
    RestartPostgres,
    /// Cluster only: SIGKILL one node under load, restart it a few seconds later.
    KillNode(usize),
}

impl Fault {
    fn label(self, cluster: bool) -> String {
        match self {
            Self::KillIngress(i) => format!("SIGKILL ingress-{}", i + 1),
            Self::KillWorkers(i) => format!("SIGKILL workers-{} (apply+relay)", i + 1),
            Self::CutBroker => "cut broker connections 2s".into(),
            Self::CutDatabase => "cut database connections 2s".into(),
            Self::RestartRabbit { node, crash: _ } if cluster => {
                format!(
                    "restart RabbitMQ node chaos{} (stop_app/start_app)",
                    node + 1
                )
            }
            Self::RestartRabbit { crash: false, .. } => "restart RabbitMQ (stop, start)".into(),
            Self::RestartRabbit { crash: true, .. } => "crash RabbitMQ (SIGKILL, start)".into(),
            Self::RestartPostgres => "restart PostgreSQL (pg_ctl restart -m fast)".into(),
            Self::KillNode(node) => format!("SIGKILL RabbitMQ node chaos{} under load", node + 1),
        }
    }

    /// The two faults of round `round` (0-based).
    fn schedule(round: usize, cluster: bool) -> [Fault; 2] {
        let process = if round.is_multiple_of(2) {
            Fault::KillIngress((round / 2) % 2)
        } else {
            Fault::KillWorkers((round / 2) % 2)
        };
        let cycle = round / 5;
        let infra = if cluster {
            match round % 5 {
                0 => Fault::CutBroker,
                1 => Fault::CutDatabase,
                2 => Fault::KillNode(cycle % 3),
                3 => Fault::RestartPostgres,
                _ => Fault::RestartRabbit {
                    node: (cycle + 1) % 3,
                    crash: false,
                },
            }
        } else {
            match round % 5 {
                0 => Fault::CutBroker,
                1 => Fault::CutDatabase,
                2 => Fault::RestartRabbit {
                    node: 0,
                    crash: false,
                },
                3 => Fault::RestartPostgres,
                _ => Fault::RestartRabbit {
                    node: 0,
                    crash: true,
                },
            }
        };
        [process, infra]
    }
}

#[derive(Debug)]
struct Harness {
    dir: PathBuf,
    cluster: bool,
    pg: Option<Postgres>,
    nodes: Vec<RabbitNode>,
    broker_proxy: Option<Balancer>,
    db_proxy: Option<Balancer>,
    ingress: Vec<Proc>,
    workers: Vec<Proc>,
    bank: Option<Arc<Bank>>,
    http: reqwest::Client,
    faults: usize,
    unexpected_exits: usize,
    topology: Topology,
    /// What happened while a cluster node was down, one line per node loss.
    node_losses: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!(
        "fault-harness-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        out(format!(
            "fault-harness: cannot create {}: {error}",
            dir.display()
        ));
        return ExitCode::from(2);
    }
    let mut harness = Harness {
        dir: dir.clone(),
        cluster: cli.cluster,
        pg: None,
        nodes: Vec::new(),
        broker_proxy: None,
        db_proxy: None,
        ingress: Vec::new(),
        workers: Vec::new(),
        bank: None,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default(),
        faults: 0,
        unexpected_exits: 0,
        topology: TopologySettings {
            prefix: PREFIX.into(),
            ..TopologySettings::default()
        }
        .topology(),
        node_losses: Vec::new(),
    };
    let started = Instant::now();
    let outcome = {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match terminate.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            result = harness.run(&cli) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            () = terminated => Err(anyhow::anyhow!("terminated")),
        }
    };
    harness.teardown().await;
    let code = match &outcome {
        Ok(report) if !report.failed() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(error) => {
            out(format!("fault-harness: {error:#}"));
            ExitCode::from(2)
        }
    };
    let failed = !matches!(&outcome, Ok(report) if !report.failed());
    if cli.keep || failed {
        out(format!(
            "work directory kept: {} (logs, data, client-200s.jsonl)",
            dir.display()
        ));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    out(format!(
        "fault-harness: {} in {:.0?}",
        if failed { "FAILED" } else { "passed" },
        started.elapsed()
    ));
    code
}

impl Harness {
    async fn run(&mut self, cli: &Cli) -> anyhow::Result<Report> {
        let bin_dir = binaries(cli.no_build)?;
        let soak = cli.soak_plan();
        out(format!(
            "fault-harness: {}, {}; work directory {}",
            match soak {
                Some(plan) => format!("soak of {} s, no faults", plan.seconds),
                None => format!("{} rounds of {} s", cli.rounds, cli.round_secs),
            },
            if cli.cluster {
                "three-node RabbitMQ cluster"
            } else {
                "single RabbitMQ node"
            },
            self.dir.display()
        ));

        // PostgreSQL and RabbitMQ of our own.
        let pg = Postgres::init(&self.dir.join("postgres")).await?;
        out(format!("postgresql: 127.0.0.1:{}", pg.port));
        let pg_addr = pg.addr();
        self.pg = Some(pg);
        let node_count = if cli.cluster { 3 } else { 1 };
        for index in 1..=node_count {
            let mut node = RabbitNode::new(&self.dir.join("rabbitmq"), index)?;
            node.start().await?;
            out(format!(
                "rabbitmq: {} on 127.0.0.1:{}",
                node.name, node.port
            ));
            self.nodes.push(node);
        }
        if cli.cluster {
            let first = self.nodes[0].name.clone();
            for node in &self.nodes[1..] {
                node.ctl_run(&["stop_app"]).await?;
                node.ctl_run(&["join_cluster", &first]).await?;
                node.ctl_run(&["start_app"]).await?;
            }
            let status = self.nodes[0]
                .ctl_run(&["cluster_status", "--formatter", "json"])
                .await?;
            let running = serde_json::from_str::<serde_json::Value>(
                status.lines().last().unwrap_or_default(),
            )
            .ok()
            .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
            .unwrap_or(0);
            if running != 3 {
                bail!("the cluster did not form: {status}");
            }
            out(format!("rabbitmq: cluster of {running} running nodes"));
        }

        // The connector reaches the broker and the database through proxies: to cut
        // connections, and (cluster) to reach whichever nodes are alive.
        let broker_proxy = Balancer::start(
            "broker",
            free_port()?,
            self.nodes.iter().map(RabbitNode::addr).collect(),
        )
        .await?;
        let db_proxy = Balancer::start("database", free_port()?, vec![pg_addr]).await?;
        let broker_url = format!(
            "amqp://guest:guest@{}/%2f?heartbeat=10",
            broker_proxy.addr()
        );
        let db_url = format!("postgres://postgres@{}/connector", db_proxy.addr());
        out(format!(
            "proxies: broker {} -> {:?}; database {} -> {pg_addr}",
            broker_proxy.addr(),
            self.nodes.iter().map(RabbitNode::addr).collect::<Vec<_>>(),
            db_proxy.addr()
        ));
        self.broker_proxy = Some(broker_proxy);
        self.db_proxy = Some(db_proxy);

        // Topology declared once the cluster is formed (quorum queues get a member on every
        // node), then the poison messages.
        let poison = self.prepare_broker().await?;

        // The bank's key, the configuration files, the database.
        let (private, public) = generate_key_pair(JwsAlgorithm::Es256, KID)?;
        let key_file = self.dir.join("bank.public.jwk");
        std::fs::write(&key_file, public.to_string())?;
        let signer = RequestSigner::from_private_jwk(CLIENT_ID, &private)?;
        let mut targets = Vec::new();
        for i in 0..2 {
            let (listen, ops) = (free_port()?, free_port()?);
            let config = self.dir.join(format!("ingress-{}.toml", i + 1));
            std::fs::write(&config, ingress_config(listen, ops, &broker_url, &key_file))?;
            targets.push(format!("http://127.0.0.1:{listen}"));
            self.ingress.push(Proc::new(
                format!("ingress-{}", i + 1),
                bin_dir.join("connector-ingress"),
                vec!["--config".into(), config.display().to_string()],
                self.dir.join(format!("ingress-{}.log", i + 1)),
                ([127, 0, 0, 1], ops).into(),
            ));
        }
        for i in 0..2 {
            let ops = free_port()?;
            let config = self.dir.join(format!("workers-{}.toml", i + 1));
            std::fs::write(
                &config,
                workers_config(ops, &broker_url, &db_url, soak.as_ref()),
            )?;
            if i == 0 {
                run_to_end(
                    std::process::Command::new(bin_dir.join("connector-workers"))
                        .args(["--config"])
                        .arg(&config)
                        .arg("migrate"),
                    "connector-workers migrate",
                )?;
            }
            self.workers.push(Proc::new(
                format!("workers-{}", i + 1),
                bin_dir.join("connector-workers"),
                vec![
                    "--config".into(),
                    config.display().to_string(),
                    "run".into(),
                    "--role".into(),
                    "apply".into(),
                    "--role".into(),
                    "relay".into(),
                    "--role".into(),
                    "purge".into(),
                ],
                self.dir.join(format!("workers-{}.log", i + 1)),
                ([127, 0, 0, 1], ops).into(),
            ));
        }
        let db = PgPool::connect(&format!("postgres://postgres@{pg_addr}/connector"))
            .await
            .context("connecting to our PostgreSQL")?;
        for process in self.ingress.iter_mut().chain(self.workers.iter_mut()) {
            process.spawn()?;
        }
        for process in self.ingress.iter_mut().chain(self.workers.iter_mut()) {
            process
                .wait_ready(&self.http, Duration::from_secs(60))
                .await?;
        }
        out("connector: 2 ingress (plain HTTP), 2 workers (apply, relay, purge): ready");

        // Load, then the rounds (or the soak).
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let bank = Bank::new(signer, targets, run_id, &self.dir.join("client-200s.jsonl"))?;
        self.bank = Some(Arc::clone(&bank));
        let mut collector = None;
        let mut soak_summary = None;
        let (clients, load_secs) = match soak {
            Some(plan) => {
                let node = self.nodes.first().context("a node")?;
                let ledger = LedgerCollector::start(
                    &format!("amqp://guest:guest@{}/%2f", node.addr()),
                    &self.topology.ledger_queue,
                )
                .await?;
                let started = Instant::now();
                let (clients, summary) = self.soak(plan, &bank, &db, &ledger).await?;
                collector = Some(ledger);
                soak_summary = Some(summary);
                (clients, started.elapsed().as_secs_f64())
            }
            None => self.rounds(cli, &bank).await?,
        };

        // Stop the load: no new requests; those under way retry for a while, then give up.
        bank.stop_new();
        let grace = Instant::now() + Duration::from_secs(30);
        while clients.iter().any(|c| !c.is_finished()) && Instant::now() < grace {
            self.tick(Duration::from_millis(500)).await;
        }
        bank.stop_retrying();
        for client in clients {
            let _ = client.await;
        }
        let totals = bank.counters.snapshot();
        out(format!(
            "load stopped: {} requests sent, {} answered 200, {} abandoned at the end",
            totals.sent, totals.ok, totals.abandoned
        ));

        // Drain: the intake queue empty and every outbox event published.
        self.drain(&db, Duration::from_secs(180)).await?;
        for process in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            process.terminate(Duration::from_secs(15)).await;
        }

        // Consume the ledger queue and the dead-letter queues, then check.
        let connection = self.inspect_connection().await?;
        let channel = connection.create_channel().await?;
        let mut ledger = match collector {
            Some(collector) => collector.finish().await?,
            None => Vec::new(),
        };
        for (properties, body) in take_all(&channel, &self.topology.ledger_queue).await? {
            ledger.push(LedgerMessage::parse(&properties, &body));
        }
        let message_ids = |messages: Vec<(BasicProperties, Vec<u8>)>| -> Vec<String> {
            messages
                .into_iter()
                .map(|(p, _)| {
                    p.message_id()
                        .as_ref()
                        .map_or_else(|| "<no message_id>".into(), |s| s.to_string())
                })
                .collect()
        };
        let intake_dlq =
            message_ids(take_all(&channel, &self.topology.intake_dead_letter_queue).await?);
        let ledger_dlq =
            message_ids(take_all(&channel, &self.topology.ledger_dead_letter_queue).await?);
        let _ = connection.close(200, "done".into()).await;

        let mut report = check::check(Inputs {
            bank: &bank,
            db: &db,
            ledger: &ledger,
            intake_dlq: &intake_dlq,
            ledger_dlq: &ledger_dlq,
            poison: &poison,
        })
        .await?;
        db.close().await;
        if let Some(summary) = &soak_summary {
            report.problems.extend(summary.problems.iter().cloned());
        }
        if self.unexpected_exits > 0 {
            report.notes.push(format!(
                "{} connector processes exited on their own and were restarted (see their logs)",
                self.unexpected_exits
            ));
        }
        self.print(cli, &report, totals, load_secs, soak_summary.as_ref());
        Ok(report)
    }

    /// The fault rounds under closed-loop load; returns the client tasks, still running, and
    /// the seconds of load.
    async fn rounds(
        &mut self,
        cli: &Cli,
        bank: &Arc<Bank>,
    ) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, f64)> {
        let clients = bank.start(cli.concurrency, None);
        self.tick(Duration::from_secs(2)).await;
        let load_started = Instant::now();
        out(format!(
            "{:<6} {:<75} {:>6} {:>6} {:>5} {:>5} {:>6}",
            "round", "faults", "sent", "200", "503", "t/o", "conn"
        ));
        let mut before = bank.counters.snapshot();
        for round in 0..cli.rounds {
            let round_started = Instant::now();
            let length = Duration::from_secs(cli.round_secs);
            let [process_fault, infra_fault] = Fault::schedule(round, cli.cluster);
            self.inject(process_fault).await?;
            self.tick_until(round_started + length / 3).await;
            self.inject(infra_fault).await?;
            self.tick_until(round_started + length).await;
            let now = bank.counters.snapshot();
            let delta = now.minus(before);
            before = now;
            out(format!(
                "{:<6} {:<75} {:>6} {:>6} {:>5} {:>5} {:>6}   ({:.1} s)",
                format!("{}/{}", round + 1, cli.rounds),
                format!(
                    "{} + {}",
                    process_fault.label(self.cluster),
                    infra_fault.label(self.cluster)
                ),
                delta.sent,
                delta.ok,
                delta.unavailable,
                delta.timeouts,
                delta.transport,
                round_started.elapsed().as_secs_f64()
            ));
        }
        let load_secs = load_started.elapsed().as_secs_f64();

        if cli.sabotage_purge_intake {
            // Workers stopped, 2 s of acknowledged requests pile up on the intake queue, and
            // are purged: the checks must count them as lost.
            for process in &mut self.workers {
                process.kill().await;
            }
            self.tick(Duration::from_secs(2)).await;
            let node = self
                .nodes
                .iter()
                .find(|n| n.is_running())
                .context("a node")?;
            let purged = node
                .ctl_run(&["purge_queue", &self.topology.intake_queue])
                .await?;
            out(format!("sabotage: {}", purged.trim()));
            for process in &mut self.workers {
                process.spawn()?;
            }
        }
        Ok((clients, load_secs))
    }

    /// Declares the topology on the (formed) cluster and publishes the poison messages.
    async fn prepare_broker(&mut self) -> anyhow::Result<HashSet<String>> {
        let connection = self.inspect_connection().await?;
        let channel = connection.create_channel().await?;
        self.topology.declare_intake(&channel).await?;
        self.topology.declare_ledger(&channel).await?;
        if self.cluster {
            let queues = self.nodes[0]
                .ctl_run(&["list_queues", "-q", "name", "type", "members"])
                .await?;
            for line in queues.lines().filter(|l| l.contains(PREFIX)) {
                out(format!("  queue {line}"));
            }
            let members = self.nodes[0]
                .ctl_run(&["list_queues", "-q", "name", "members"])
                .await?;
            let intake_line = members
                .lines()
                .find(|l| l.split_whitespace().next() == Some(self.topology.intake_queue.as_str()))
                .unwrap_or_default();
            if self.nodes.iter().any(|n| !intake_line.contains(&n.name)) {
                bail!("the intake queue is not replicated on every node: {intake_line}");
            }
        }
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let mut poison = HashSet::new();
        for i in 0..POISON_MESSAGES {
            let id = format!("chaos-poison-{i}");
            let confirm = channel
                .basic_publish(
                    self.topology.intake_exchange.as_str().into(),
                    "corelink.status".into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    b"not an intake envelope",
                    BasicProperties::default()
                        .with_message_id(id.as_str().into())
                        .with_delivery_mode(2),
                )
                .await?
                .await?;
            if !confirm.is_ack() {
                bail!("poison message {id} not confirmed");
            }
            poison.insert(id);
        }
        let _ = connection.close(200, "prepared".into()).await;
        Ok(poison)
    }

    /// A connection straight to a running node (not through the proxy).
    async fn inspect_connection(&self) -> anyhow::Result<Connection> {
        let mut last = None;
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let url = format!("amqp://guest:guest@{}/%2f", node.addr());
            match Connection::connect(&url, ConnectionProperties::default()).await {
                Ok(connection) => return Ok(connection),
                Err(error) => last = Some(error),
            }
        }
        bail!("no RabbitMQ node of ours answers: {last:?}")
    }

    async fn inject(&mut self, fault: Fault) -> anyhow::Result<()> {
        self.faults += 1;
        match fault {
            Fault::KillIngress(i) => {
                self.ingress[i].kill().await;
                self.ingress[i].spawn()?;
            }
            Fault::KillWorkers(i) => {
                self.workers[i].kill().await;
                self.tick(Duration::from_secs(1)).await;
                self.workers[i].spawn()?;
            }
            Fault::CutBroker | Fault::CutDatabase => {
                let proxy = if fault == Fault::CutBroker {
                    self.broker_proxy.as_ref()
                } else {
                    self.db_proxy.as_ref()
                }
                .context("proxy")?;
                proxy.cut();
                self.tick(Duration::from_secs(2)).await;
                let proxy = if fault == Fault::CutBroker {
                    self.broker_proxy.as_ref()
                } else {
                    self.db_proxy.as_ref()
                }
                .context("proxy")?;
                proxy.restore();
            }
            Fault::RestartRabbit { node, crash } => {
                if self.cluster {
                    let node = &self.nodes[node];
                    node.ctl_run(&["stop_app"]).await?;
                    node.ctl_run(&["start_app"]).await?;
                } else {
                    let node = &mut self.nodes[node];
                    if crash {
                        node.kill().await;
                    } else {
                        node.stop().await;
                    }
                    node.start().await?;
                }
            }
            Fault::RestartPostgres => {
                self.pg.as_mut().context("postgres")?.restart().await?;
            }
            Fault::KillNode(node) => {
                let bank = self.bank.clone().context("load")?;
                let before = bank.counters.snapshot();
                let on_node = self
                    .broker_proxy
                    .as_ref()
                    .map_or(0, |proxy| proxy.open_to(node));
                let killed = Instant::now();
                self.nodes[node].kill().await;
                self.tick(Duration::from_secs(1)).await;
                let leader = self.intake_leader().await.unwrap_or_else(|| "?".into());
                self.tick(Duration::from_secs(3)).await;
                let down = bank.counters.snapshot().minus(before);
                let down_secs = killed.elapsed().as_secs_f64();
                self.nodes[node].start().await?;
                let online = self.intake_online().await.unwrap_or_else(|| "?".into());
                let line = format!(
                    "chaos{} SIGKILLed with {on_node} connector connections on it: in the {down_secs:.1} s it was down, {} requests, {} × 200, {} × 503, {} connection errors; intake leader then {leader}; after its restart ({:.1} s later) intake members online: {online}",
                    node + 1,
                    down.sent,
                    down.ok,
                    down.unavailable,
                    down.transport,
                    killed.elapsed().as_secs_f64(),
                );
                out(format!("  {line}"));
                self.node_losses.push(line);
            }
        }
        Ok(())
    }

    async fn tick_until(&mut self, until: Instant) {
        let now = Instant::now();
        if until > now {
            self.tick(until - now).await;
        }
    }

    /// Waits `length`, restarting (as an orchestrator would) any connector process that
    /// exited on its own meanwhile.
    async fn tick(&mut self, length: Duration) {
        let end = Instant::now() + length;
        loop {
            for process in self.ingress.iter_mut().chain(self.workers.iter_mut()) {
                if let Some(status) = process.exited() {
                    self.unexpected_exits += 1;
                    out(format!(
                        "  {} exited on its own ({status}); restarting it",
                        process.name
                    ));
                    if let Err(error) = process.spawn() {
                        out(format!("  cannot restart {}: {error:#}", process.name));
                    }
                }
            }
            let now = Instant::now();
            if now >= end {
                return;
            }
            tokio::time::sleep((end - now).min(Duration::from_millis(250))).await;
        }
    }

    /// Waits until the intake queue is empty (ready and unacknowledged) and every outbox
    /// event is published, twice in a row.
    async fn drain(&mut self, db: &PgPool, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + within;
        let mut quiet = 0;
        loop {
            let intake = self.intake_messages().await;
            let unpublished: i64 =
                sqlx::query_scalar("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                    .fetch_one(db)
                    .await
                    .unwrap_or(-1);
            if intake == Some(0) && unpublished == 0 {
                quiet += 1;
                if quiet >= 2 {
                    out(format!(
                        "drained in {:.0?}: intake queue empty, outbox all published",
                        started.elapsed()
                    ));
                    return Ok(());
                }
            } else {
                quiet = 0;
            }
            if Instant::now() > deadline {
                out(format!(
                    "drain: still {intake:?} intake messages and {unpublished} unpublished events after {within:?}; checking anyway"
                ));
                return Ok(());
            }
            self.tick(Duration::from_secs(1)).await;
        }
    }

    /// The node leading the intake quorum queue, asked of a running node.
    async fn intake_leader(&self) -> Option<String> {
        self.queue_info("leader").await
    }

    /// The intake queue's members that are online.
    async fn intake_online(&self) -> Option<String> {
        self.queue_info("online").await
    }

    async fn queue_info(&self, item: &str) -> Option<String> {
        let node = self.nodes.iter().find(|n| n.is_running())?;
        let listing = node
            .ctl_run(&["list_queues", "-q", "name", item])
            .await
            .ok()?;
        listing.lines().find_map(|line| {
            let (name, value) = line.split_once(char::is_whitespace)?;
            (name == self.topology.intake_queue).then(|| value.trim().to_owned())
        })
    }

    /// Messages on the intake queue, ready and unacknowledged.
    async fn intake_messages(&self) -> Option<u64> {
        let node = self.nodes.iter().find(|n| n.is_running())?;
        let listing = node
            .ctl_run(&["list_queues", "-q", "name", "messages"])
            .await
            .ok()?;
        listing.lines().find_map(|line| {
            let mut fields = line.split_whitespace();
            (fields.next() == Some(self.topology.intake_queue.as_str()))
                .then(|| fields.next()?.parse().ok())
                .flatten()
        })
    }

    fn print(
        &self,
        cli: &Cli,
        report: &Report,
        totals: Snapshot,
        load_secs: f64,
        soak: Option<&SoakSummary>,
    ) {
        let mode = match (cli.soak, cli.cluster) {
            (Some(_), _) => "soak, single node",
            (None, true) => "3-node cluster",
            (None, false) => "single node",
        };
        out("");
        if let Some(soak) = soak {
            for line in &soak.lines {
                out(format!("  {line}"));
            }
            out("");
        }
        out(
            "| rounds | faults injected | requests sent | 200s | applied | lost | duplicated | ledger events republished (same event_id) |",
        );
        out("|---:|---:|---:|---:|---:|---:|---:|---:|");
        out(format!(
            "| {} | {} | {} | {} | {} / {} | {} | {} | {} |",
            if cli.soak.is_some() { 0 } else { cli.rounds },
            self.faults,
            totals.sent,
            totals.ok,
            report.applied,
            report.acked_orders,
            report.lost,
            report.duplicated,
            report.ledger_republished
        ));
        out("");
        let rows: Vec<(String, String)> = vec![
            (
                "mode".into(),
                match cli.soak_plan() {
                    Some(plan) => format!(
                        "{mode}, {load_secs:.0} s of load (capacity measurement included), {} client tasks",
                        plan.concurrency
                    ),
                    None => format!(
                        "{mode}, {} s rounds, {load_secs:.0} s of load, {} client tasks",
                        cli.round_secs, cli.concurrency
                    ),
                },
            ),
            (
                "requests sent (HTTP)".into(),
                format!(
                    "{} ({} deliberate duplicate sends; {} logical requests)",
                    totals.sent, totals.duplicate_sends, totals.logical
                ),
            ),
            (
                "answers".into(),
                format!(
                    "{} × 200, {} × 503/5xx, {} timeouts, {} connection errors, {} other (unexpected)",
                    totals.ok,
                    totals.unavailable,
                    totals.timeouts,
                    totals.transport,
                    totals.rejected
                ),
            ),
            (
                "proxy connections accepted".into(),
                format!(
                    "broker {}, database {} (reconnections included)",
                    self.broker_proxy.as_ref().map_or(0, Balancer::accepted),
                    self.db_proxy.as_ref().map_or(0, Balancer::accepted)
                ),
            ),
            (
                "abandoned at the end".into(),
                format!(
                    "{} requests without a 200 when the run ended",
                    totals.abandoned
                ),
            ),
            (
                "acknowledged orders".into(),
                format!(
                    "{} (incl. {} conflict pairs)",
                    report.acked_orders, report.conflict_pairs
                ),
            ),
            ("applied exactly once".into(), report.applied.to_string()),
            (
                "lost / duplicated".into(),
                format!("{} / {}", report.lost, report.duplicated),
            ),
            (
                "acknowledged batches applied by one message".into(),
                format!("{} / {}", report.batches_applied_once, report.acked_batches),
            ),
            (
                "orders applied without a 200".into(),
                report.applied_without_200.to_string(),
            ),
            (
                "ledger queue".into(),
                format!(
                    "{} messages, {} distinct events",
                    report.ledger_messages, report.ledger_events
                ),
            ),
            (
                "ledger: same event_id twice (relay republish)".into(),
                format!(
                    "{} ({} after a lost confirm, {} confirmed but never marked published)",
                    report.ledger_republished,
                    report.republished_after_unconfirmed,
                    report.republished_after_lost_mark
                ),
            ),
            (
                "ledger: two events for one reference and type".into(),
                report.ledger_duplicated.to_string(),
            ),
            (
                "outbox unpublished".into(),
                report.outbox_unpublished.to_string(),
            ),
            (
                "final statuses without their notification".into(),
                report.unbacked_final.to_string(),
            ),
            (
                "quarantined: expected (conflict losers) / unexpected".into(),
                format!(
                    "{} / {}",
                    report.quarantined_expected, report.quarantined_unexpected
                ),
            ),
            (
                "intake DLQ: expected (poison) / unexpected".into(),
                format!(
                    "{} / {}",
                    report.intake_dlq_expected, report.intake_dlq_unexpected
                ),
            ),
            ("ledger DLQ".into(), report.ledger_dlq.to_string()),
            (
                "rows or events nobody sent".into(),
                report.unknown_rows.to_string(),
            ),
            (
                "unexpected answers".into(),
                report.unexpected_answers.to_string(),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in rows {
            out(format!("  {key:<width$}  {value}"));
        }
        for line in &self.node_losses {
            out(format!("  node loss: {line}"));
        }
        for note in &report.notes {
            out(format!("  note: {note}"));
        }
        if !report.problems.is_empty() {
            out(format!("problems ({}; first 40):", report.problems.len()));
            for problem in report.problems.iter().take(40) {
                out(format!("  - {problem}"));
            }
        }
    }

    /// Stops everything the harness started, whatever happened.
    async fn teardown(&mut self) {
        if let Some(bank) = &self.bank {
            bank.stop_new();
            bank.stop_retrying();
        }
        for process in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            process.terminate(Duration::from_secs(5)).await;
        }
        self.broker_proxy = None;
        self.db_proxy = None;
        for node in self.nodes.iter_mut().rev() {
            node.stop().await;
        }
        if let Some(mut pg) = self.pg.take() {
            pg.stop();
        }
    }
}

/// Every message on `queue`, taken (acknowledged) until it is empty: a consumer with a large
/// prefetch for the bulk (one `basic.get` per message would take minutes for 150 000 events),
/// then `basic.get` until the queue answers empty.
async fn take_all(
    channel: &lapin::Channel,
    queue: &str,
) -> anyhow::Result<Vec<(BasicProperties, Vec<u8>)>> {
    let expected = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count() as usize;
    let mut messages = Vec::with_capacity(expected);
    if expected > 0 {
        channel.basic_qos(1000, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "fault-harness-check".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        while messages.len() < expected {
            match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
                Ok(Some(Ok(delivery))) => messages.push((delivery.properties, delivery.data)),
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(None) | Err(_) => break,
            }
        }
        channel
            .basic_cancel("fault-harness-check".into(), BasicCancelOptions::default())
            .await?;
    }
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let delivery = message.delivery;
        messages.push((delivery.properties, delivery.data));
    }
    Ok(messages)
}

/// The directory holding connector-ingress and connector-workers, built first unless told not.
fn binaries(no_build: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the harness's directory")?.to_owned();
    if !no_build {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command.current_dir(&workspace).args([
            "build",
            "--quiet",
            "--bins",
            "-p",
            "connector-ingress",
            "-p",
            "connector-workers",
        ]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        run_to_end(
            &mut command,
            "cargo build (connector-ingress, connector-workers)",
        )?;
    }
    for binary in ["connector-ingress", "connector-workers"] {
        if !dir.join(binary).exists() {
            bail!(
                "{} is missing: build it (cargo build --bins -p {binary})",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}

fn run_to_end(command: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    for (name, _) in std::env::vars() {
        if name.starts_with("CONNECTOR_") {
            command.env_remove(name);
        }
    }
    let output = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn ingress_config(listen: u16, ops: u16, broker_url: &str, key_file: &Path) -> String {
    format!(
        r#"# Written by fault-harness.
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
"#,
        key_file.display()
    )
}

fn workers_config(ops: u16, broker_url: &str, db_url: &str, soak: Option<&SoakPlan>) -> String {
    let nonces = soak.map_or_else(String::new, |plan| {
        format!(
            "\n[nonces]\nretention_secs = {}\npurge_interval_secs = {}\n",
            plan.nonce_retention_secs, plan.purge_interval_secs
        )
    });
    format!(
        r#"# Written by fault-harness.
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

[relay]
poll_interval_ms = 500

[ops]
listen = "127.0.0.1:{ops}"
{nonces}
[log]
format = "json"
filter = "info"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::Fault;

    #[test]
    fn the_short_form_injects_every_kind_of_fault() {
        let faults: Vec<Fault> = (0..4).flat_map(|r| Fault::schedule(r, false)).collect();
        for wanted in [
            Fault::KillIngress(0),
            Fault::KillIngress(1),
            Fault::KillWorkers(0),
            Fault::KillWorkers(1),
            Fault::CutBroker,
            Fault::CutDatabase,
            Fault::RestartPostgres,
        ] {
            assert!(
                faults.contains(&wanted),
                "{wanted:?} missing from {faults:?}"
            );
        }
        assert!(
            faults
                .iter()
                .any(|f| matches!(f, Fault::RestartRabbit { .. }))
        );
    }

    #[test]
    fn the_cluster_form_loses_every_node_in_turn() {
        let faults: Vec<Fault> = (0..24).flat_map(|r| Fault::schedule(r, true)).collect();
        for node in 0..3 {
            assert!(
                faults.contains(&Fault::KillNode(node)),
                "node {node} never killed"
            );
        }
    }
}
