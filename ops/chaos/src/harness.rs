//! The harness's world: its PostgreSQL, its RabbitMQ node (or three), the two proxies the
//! connector reaches them through, the four connector processes, and the bank's client.
//! [`Harness`] starts them, offers the operations the faults, the rounds and the soak perform
//! on them (kill, restart, cut, wait, drain), and stops all of them whatever happened. Other
//! modules act only through its methods, so that what runs, and what must be stopped at the
//! end, is known in one place.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::Connection;
use sqlx::PgPool;

use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{RequestSigner, generate_key_pair};
use connector_schema::topology::{Topology, TopologySettings};

use crate::binaries::run_to_end;
use crate::broker;
use crate::configs::{
    CLIENT_ID, KID, NoncePurge, PREFIX, Timeouts, ingress_config, rabbit_advanced_config,
    workers_application_name, workers_config,
};
use crate::console::out;
use crate::load::Bank;
use crate::proxy::Balancer;
use crate::services::{Postgres, Proc, RabbitNode, free_port};
use connector_chaos::postgres_ha::PgCluster;

/// The two kinds of connector process, two of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingress,
    Workers,
}

/// The two proxied links of the connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Broker,
    Database,
}

/// The harness's PostgreSQL: one server, or a Patroni cluster behind HAProxy.
#[derive(Debug)]
pub enum Database {
    Single(Postgres),
    Ha(Box<PgCluster>),
}

/// Which PostgreSQL to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Single,
    /// Patroni: two members; `synchronous: false` is the negative control.
    Ha {
        synchronous: bool,
    },
}

/// What a started harness hands to the run: the client, a direct pool on the database (not
/// through the proxy) for the checks, and the poison messages the dead-letter check expects.
#[derive(Debug)]
pub struct Started {
    pub bank: Arc<Bank>,
    pub db: PgPool,
    pub poison: HashSet<String>,
}

#[derive(Debug)]
pub struct Harness {
    dir: PathBuf,
    cluster: bool,
    database_kind: DatabaseKind,
    pg: Option<Database>,
    nodes: Vec<RabbitNode>,
    broker_proxy: Option<Balancer>,
    db_proxy: Option<Balancer>,
    ingress: Vec<Proc>,
    workers: Vec<Proc>,
    /// Kept for the teardown: its clients must stop before the processes do.
    bank: Option<Arc<Bank>>,
    http: reqwest::Client,
    unexpected_exits: usize,
    topology: Topology,
    /// `connector-workers` and the first workers' configuration, for admin commands.
    admin: Option<(PathBuf, PathBuf)>,
    /// The harness's own pool on the database (straight, not through the proxy).
    db: Option<PgPool>,
}

impl Harness {
    /// Nothing started yet: everything lives under `dir`.
    pub fn new(dir: PathBuf, cluster: bool, database_kind: DatabaseKind) -> Self {
        Self {
            dir,
            cluster,
            database_kind,
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
            unexpected_exits: 0,
            topology: TopologySettings {
                prefix: PREFIX.into(),
                ..TopologySettings::default()
            }
            .topology(),
            admin: None,
            db: None,
        }
    }

    pub fn work_dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// How long the backlog may take to drain once the load stops. The ingress accepts faster
    /// than the workers apply, and each failover pauses them while the queue grows; with the
    /// Patroni cluster's replication and daemons on the same two cores, the workers are slower
    /// still.
    pub fn drain_within(&self) -> Duration {
        match self.database_kind {
            DatabaseKind::Single => Duration::from_secs(180),
            DatabaseKind::Ha { .. } => Duration::from_secs(900),
        }
    }

    /// The broker's and the workers' timeouts for this harness's database.
    fn timeouts(&self) -> Timeouts {
        match self.database_kind {
            DatabaseKind::Single => Timeouts::SCALED,
            DatabaseKind::Ha { .. } => Timeouts::FAILOVER,
        }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The harness's own pool on its database (not through the proxy), once started.
    pub fn db(&self) -> anyhow::Result<&PgPool> {
        self.db.as_ref().context("the database is not started yet")
    }

    /// Connector processes that exited on their own and were restarted.
    pub fn unexpected_exits(&self) -> usize {
        self.unexpected_exits
    }

    /// Connections each proxy accepted since the start: (broker, database).
    pub fn proxy_connections(&self) -> (usize, usize) {
        (
            self.broker_proxy.as_ref().map_or(0, Balancer::accepted),
            self.db_proxy.as_ref().map_or(0, Balancer::accepted),
        )
    }

    /// Starts PostgreSQL, RabbitMQ, the proxies and the connector (its binaries in `bin_dir`),
    /// and readies the bank's client; every line it prints says what runs where.
    pub async fn start(
        &mut self,
        bin_dir: &Path,
        nonces: Option<NoncePurge>,
    ) -> anyhow::Result<Started> {
        // PostgreSQL and RabbitMQ of our own.
        let (pg, pg_addr) = match self.database_kind {
            DatabaseKind::Single => {
                let pg = Postgres::init(&self.dir.join("postgres")).await?;
                out(format!("postgresql: 127.0.0.1:{}", pg.port));
                let addr = pg.addr();
                (Database::Single(pg), addr)
            }
            DatabaseKind::Ha { synchronous } => {
                let cluster = PgCluster::start(&self.dir.join("postgres-ha"), synchronous).await?;
                out(format!(
                    "postgresql: Patroni cluster of two ({}), etcd, HAProxy on {}",
                    if synchronous {
                        "synchronous_mode on"
                    } else {
                        "asynchronous replication: the negative control"
                    },
                    cluster.addr()
                ));
                let addr = cluster.addr();
                (Database::Ha(Box::new(cluster)), addr)
            }
        };
        self.pg = Some(pg);
        let node_count = if self.cluster { 3 } else { 1 };
        for index in 1..=node_count {
            let mut node = RabbitNode::new(&self.dir.join("rabbitmq"), index)?;
            node.set_advanced_config(&rabbit_advanced_config(self.timeouts()))?;
            node.start().await?;
            out(format!(
                "rabbitmq: {} on 127.0.0.1:{}",
                node.name, node.port
            ));
            self.nodes.push(node);
        }
        if self.cluster {
            broker::form_cluster(&self.nodes).await?;
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
        let poison = broker::prepare(&self.nodes, &self.topology, self.cluster).await?;

        // The bank's key, the configuration files, the database.
        let (private, public) = generate_key_pair(JwsAlgorithm::Es256, KID)?;
        let key_file = self.dir.join("bank.public.jwk");
        std::fs::write(&key_file, public.to_string())?;
        let signer = RequestSigner::from_private_jwk(CLIENT_ID, &private)?;
        let targets = self.configure_ingress(bin_dir, &broker_url, &key_file)?;
        self.configure_workers(bin_dir, &broker_url, &db_url, nonces)?;
        let db = PgPool::connect(&format!("postgres://postgres@{pg_addr}/connector"))
            .await
            .context("connecting to our PostgreSQL")?;
        self.db = Some(db.clone());
        for process in self.ingress.iter_mut().chain(self.workers.iter_mut()) {
            process.spawn()?;
        }
        for process in self.ingress.iter_mut().chain(self.workers.iter_mut()) {
            process
                .wait_ready(&self.http, Duration::from_secs(60))
                .await?;
        }
        out("connector: 2 ingress (plain HTTP), 2 workers (apply, relay, lifecycle): ready");

        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let bank = Bank::new(signer, targets, run_id, &self.dir.join("client-200s.jsonl"))?;
        self.bank = Some(Arc::clone(&bank));
        Ok(Started { bank, db, poison })
    }

    /// Two ingress processes (not started yet); returns their base URLs, the load's targets.
    fn configure_ingress(
        &mut self,
        bin_dir: &Path,
        broker_url: &str,
        key_file: &Path,
    ) -> anyhow::Result<Vec<String>> {
        let mut targets = Vec::new();
        for i in 0..2 {
            let (listen, ops) = (free_port()?, free_port()?);
            let config = self.dir.join(format!("ingress-{}.toml", i + 1));
            std::fs::write(&config, ingress_config(listen, ops, broker_url, key_file))?;
            targets.push(format!("http://127.0.0.1:{listen}"));
            self.ingress.push(Proc::new(
                format!("ingress-{}", i + 1),
                bin_dir.join("connector-ingress"),
                vec!["--config".into(), config.display().to_string()],
                self.dir.join(format!("ingress-{}.log", i + 1)),
                ([127, 0, 0, 1], ops).into(),
            ));
        }
        Ok(targets)
    }

    /// Two workers processes (not started yet), the database migrated by the first's config.
    fn configure_workers(
        &mut self,
        bin_dir: &Path,
        broker_url: &str,
        db_url: &str,
        nonces: Option<NoncePurge>,
    ) -> anyhow::Result<()> {
        for i in 0..2 {
            let ops = free_port()?;
            let config = self.dir.join(format!("workers-{}.toml", i + 1));
            // Its own application_name, so that its backends can be told apart in
            // pg_stat_activity (the mid-group kill must find those of the process it kills).
            let db_url = format!("{db_url}?application_name={}", workers_application_name(i));
            std::fs::write(
                &config,
                workers_config(
                    ops,
                    broker_url,
                    &db_url,
                    nonces,
                    &self.dir.join("evidence"),
                    self.timeouts(),
                ),
            )?;
            if i == 0 {
                self.admin = Some((bin_dir.join("connector-workers"), config.clone()));
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
                    "lifecycle".into(),
                ],
                self.dir.join(format!("workers-{}.log", i + 1)),
                ([127, 0, 0, 1], ops).into(),
            ));
        }
        Ok(())
    }

    fn processes(&mut self, role: Role) -> &mut Vec<Proc> {
        match role {
            Role::Ingress => &mut self.ingress,
            Role::Workers => &mut self.workers,
        }
    }

    pub fn process_count(&self, role: Role) -> usize {
        match role {
            Role::Ingress => self.ingress.len(),
            Role::Workers => self.workers.len(),
        }
    }

    /// SIGKILL connector process `index` of `role`; it stays down until [`Self::start_process`].
    pub async fn kill_process(&mut self, role: Role, index: usize) {
        self.processes(role)[index].kill().await;
    }

    pub fn start_process(&mut self, role: Role, index: usize) -> anyhow::Result<()> {
        self.processes(role)[index].spawn()
    }

    /// Process names and ids, ingress then workers, for sampling their memory.
    /// Every workers process's `/readyz`.
    pub fn workers_ready_urls(&self) -> Vec<String> {
        self.workers
            .iter()
            .map(|w| w.ready_url().to_owned())
            .collect()
    }

    pub fn process_pids(&self) -> Vec<(String, Option<u32>)> {
        self.ingress
            .iter()
            .chain(self.workers.iter())
            .map(|p| (p.name.clone(), p.pid()))
            .collect()
    }

    /// The first RabbitMQ node's Erlang VM, for sampling its memory.
    pub fn broker_pid(&self) -> Option<u32> {
        self.nodes.first().and_then(RabbitNode::beam_pid)
    }

    /// SIGTERM to every connector process (workers first), SIGKILL after `grace`.
    /// Runs `connector-workers <args>` with the first workers' configuration, as an operator
    /// would; returns what it printed.
    pub async fn workers_admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let Some((program, config)) = self.admin.clone() else {
            anyhow::bail!("the workers are not configured yet");
        };
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let what = format!("connector-workers {}", args.join(" "));
        tokio::task::spawn_blocking(move || {
            run_to_end(
                std::process::Command::new(program)
                    .arg("--config")
                    .arg(config)
                    .args(&args),
                &what,
            )
        })
        .await?
    }

    pub async fn stop_connector(&mut self, grace: Duration) {
        for process in self.workers.iter_mut().chain(self.ingress.iter_mut()) {
            process.terminate(grace).await;
        }
    }

    pub fn proxy(&self, link: Link) -> anyhow::Result<&Balancer> {
        match link {
            Link::Broker => self.broker_proxy.as_ref(),
            Link::Database => self.db_proxy.as_ref(),
        }
        .context("proxy")
    }

    /// Connector connections the broker proxy holds open to node `index` right now.
    pub fn connections_to_node(&self, index: usize) -> usize {
        self.broker_proxy
            .as_ref()
            .map_or(0, |proxy| proxy.open_to(index))
    }

    /// `stop_app` / `start_app` on node `index`: the node's process stays up.
    pub async fn restart_node_app(&self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        node.ctl_run(&["stop_app"]).await?;
        node.ctl_run(&["start_app"]).await?;
        Ok(())
    }

    /// SIGKILL to node `index`'s whole process group.
    pub async fn kill_node(&mut self, index: usize) {
        self.nodes[index].kill().await;
    }

    /// `rabbitmqctl stop` of node `index`, SIGKILL if that fails.
    pub async fn stop_node(&mut self, index: usize) {
        self.nodes[index].stop().await;
    }

    /// Starts node `index` again and waits until it has booted.
    pub async fn start_node(&mut self, index: usize) -> anyhow::Result<()> {
        self.nodes[index].start().await
    }

    /// Raises (or clears) a memory alarm on the first node: publishers are blocked cluster-wide.
    pub async fn memory_alarm(&self, raise: bool) -> anyhow::Result<()> {
        let node = self.nodes.first().context("no RabbitMQ node")?;
        if raise {
            node.raise_memory_alarm().await
        } else {
            node.clear_memory_alarm().await
        }
    }

    /// `pg_ctl restart -m fast`.
    pub async fn restart_postgres(&mut self) -> anyhow::Result<()> {
        match self.pg.as_mut().context("postgres")? {
            Database::Single(pg) => pg.restart().await,
            Database::Ha(_) => anyhow::bail!("restart-postgres is a fault of the single server"),
        }
    }

    /// The Patroni cluster, when the harness runs one.
    pub fn pg_cluster(&mut self) -> anyhow::Result<&mut PgCluster> {
        match self.pg.as_mut() {
            Some(Database::Ha(cluster)) => Ok(cluster),
            _ => anyhow::bail!("this fault needs --postgres-ha"),
        }
    }

    /// Purges the intake queue on a running node; returns what `rabbitmqctl` said.
    pub async fn purge_intake(&self) -> anyhow::Result<String> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .context("a node")?;
        node.ctl_run(&["purge_queue", &self.topology.intake_queue])
            .await
    }

    /// A connection straight to a running node (not through the proxy).
    pub async fn inspect_connection(&self) -> anyhow::Result<Connection> {
        broker::connect(&self.nodes).await
    }

    /// The AMQP URL of the first node, straight (the soak's ledger consumer).
    pub fn first_node_url(&self) -> anyhow::Result<String> {
        let node = self.nodes.first().context("a node")?;
        Ok(format!("amqp://guest:guest@{}/%2f", node.addr()))
    }

    /// The node leading the intake quorum queue, asked of a running node.
    pub async fn intake_leader(&self) -> Option<String> {
        broker::queue_info(&self.nodes, &self.topology.intake_queue, "leader").await
    }

    /// The intake queue's members that are online.
    pub async fn intake_online(&self) -> Option<String> {
        broker::queue_info(&self.nodes, &self.topology.intake_queue, "online").await
    }

    /// Messages on the intake queue, ready and unacknowledged.
    pub async fn intake_messages(&self) -> Option<u64> {
        broker::queue_messages(&self.nodes, &self.topology.intake_queue).await
    }

    pub async fn tick_until(&mut self, until: Instant) {
        let now = Instant::now();
        if until > now {
            self.tick(until - now).await;
        }
    }

    /// Waits `length`, restarting (as an orchestrator would) any connector process that
    /// exited on its own meanwhile.
    pub async fn tick(&mut self, length: Duration) {
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
    pub async fn drain(&mut self, db: &PgPool, within: Duration) -> anyhow::Result<()> {
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

    /// Stops everything the harness started, whatever happened.
    pub async fn teardown(&mut self) {
        if let Some(bank) = &self.bank {
            bank.stop_new();
            bank.stop_retrying();
        }
        self.stop_connector(Duration::from_secs(5)).await;
        self.broker_proxy = None;
        self.db_proxy = None;
        for node in self.nodes.iter_mut().rev() {
            node.stop().await;
        }
        match self.pg.take() {
            Some(Database::Single(mut pg)) => pg.stop(),
            Some(Database::Ha(mut cluster)) => cluster.stop().await,
            None => {}
        }
    }
}
