//! The connector as ops/run-local runs it, all of it ours and private: a PostgreSQL instance
//! and a RabbitMQ node (Prometheus plugin on) from the fault harness's services, the Paysafe
//! simulator, one `connector-ingress` and three `connector-workers` processes with the roles
//! and `roles` labels of ops/prometheus/prometheus.yml (apply; relay and lifecycle, labelled
//! `relay+purge`; poller). [`Stack`] starts them, stops and starts each one for the faults, and
//! stops everything at the end, whatever happened. The machine's RabbitMQ and PostgreSQL are
//! never touched.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use tokio::process::{Child, Command};

use connector_chaos::services::{
    Postgres, Proc, RabbitNode, free_port, kill_group, run, spawn_logged,
};
use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{RequestSigner, generate_key_pair};
use connector_schema::topology::{Topology, TopologySettings};

use crate::configs::{self, IngressKeys};
use crate::console::out;

/// The workers processes: their `roles` label (as in prometheus.yml) and `--role` arguments.
pub const WORKERS: [(&str, &[&str]); 3] = [
    ("apply", &["apply"]),
    ("relay+purge", &["relay", "lifecycle"]),
    ("poller", &["poller"]),
];
pub const APPLY: usize = 0;
pub const RELAY: usize = 1;

#[derive(Debug)]
pub struct Stack {
    dir: PathBuf,
    bin: PathBuf,
    pg: Option<Postgres>,
    rabbit: Option<RabbitNode>,
    sim: Option<Child>,
    pub sim_url: String,
    pub ingress: Option<Proc>,
    pub ingress_url: String,
    pub ingress_ops: String,
    pub workers: Vec<Proc>,
    pub workers_ops: Vec<String>,
    workers_configs: Vec<PathBuf>,
    pub rabbit_metrics: String,
    pub db: Option<PgPool>,
    pub topology: Topology,
    pub signer: Option<RequestSigner>,
    pub bnc_private_pem: PathBuf,
    /// Where the run's Prometheus will listen (the console asks it).
    prometheus_port: u16,
    /// The operator console of the relay + lifecycle process, `http://127.0.0.1:PORT`.
    pub console_url: String,
    http: reqwest::Client,
}

impl Stack {
    pub fn new(dir: PathBuf, bin: PathBuf, prometheus_port: u16) -> Self {
        Self {
            prometheus_port,
            console_url: String::new(),
            bnc_private_pem: dir.join("bnc.private.pem"),
            dir,
            bin,
            pg: None,
            rabbit: None,
            sim: None,
            sim_url: String::new(),
            ingress: None,
            ingress_url: String::new(),
            ingress_ops: String::new(),
            workers: Vec::new(),
            workers_ops: Vec::new(),
            workers_configs: Vec::new(),
            rabbit_metrics: String::new(),
            db: None,
            // The default prefix: the rules and dashboards name `connector.intake` and the
            // others. The broker is ours alone, so nothing collides.
            topology: TopologySettings::default().topology(),
            signer: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
        }
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        let pg = Postgres::init(&self.dir.join("postgres")).await?;
        let db_url = format!("postgres://postgres@{}/connector", pg.addr());
        out(format!("postgresql: 127.0.0.1:{} (ours)", pg.port));
        self.pg = Some(pg);

        let root = self.dir.join("rabbitmq");
        std::fs::create_dir_all(&root)?;
        // Written before the node is prepared, which writes an empty list only when none is.
        std::fs::write(root.join("enabled_plugins"), "[rabbitmq_prometheus].\n")?;
        let mut node = RabbitNode::named(&root, &format!("live{}", std::process::id()))?;
        let metrics_port = free_port()?;
        node.set_advanced_config(&configs::rabbit_advanced(metrics_port))?;
        node.start().await?;
        self.rabbit_metrics = format!("127.0.0.1:{metrics_port}");
        let broker_url = format!("amqp://guest:guest@{}/%2f?heartbeat=5", node.addr());
        out(format!(
            "rabbitmq: {} on {} (ours), Prometheus plugin on {}",
            node.name,
            node.addr(),
            self.rabbit_metrics
        ));
        self.rabbit = Some(node);

        self.start_sim()?;
        self.wait_http_ok(&format!("{}/healthz", self.sim_url), "paysafe-sim")
            .await?;

        // The bank's ES256 key and the BNC partner's RSA key, as ops/run-local makes them.
        let (private, public) = generate_key_pair(JwsAlgorithm::Es256, configs::KID)?;
        let bank_jwk = self.dir.join("bank.public.jwk");
        std::fs::write(&bank_jwk, public.to_string())?;
        self.signer = Some(RequestSigner::from_private_jwk(
            configs::CLIENT_ID,
            &private,
        )?);
        let bnc_public = self.dir.join("bnc.public.pem");
        run(
            Command::new(self.bin.join("snap-sign"))
                .arg("keygen")
                .arg("--private-out")
                .arg(&self.bnc_private_pem)
                .arg("--public-out")
                .arg(&bnc_public),
            "snap-sign keygen",
        )
        .await?;

        let console_port = free_port()?;
        self.console_url = format!("http://127.0.0.1:{console_port}");
        let password_hash = run(
            Command::new("sh")
                .arg("-c")
                .arg(r#"printf %s "$1" | "$2" console hash-password"#)
                .arg("sh")
                .arg(configs::CONSOLE_PASSWORD)
                .arg(self.bin.join("connector-workers")),
            "connector-workers console hash-password",
        )
        .await?;
        for (index, (label, roles)) in WORKERS.iter().enumerate() {
            let ops = free_port()?;
            let file = self.dir.join(format!("workers-{index}.toml"));
            let mut config = configs::workers(ops, &broker_url, &db_url, &self.sim_url);
            if index == RELAY {
                let archive = self.dir.join("evidence");
                std::fs::create_dir_all(&archive)?;
                config.push_str(&configs::relay_extras(
                    &archive,
                    console_port,
                    &format!("http://127.0.0.1:{}", self.prometheus_port),
                    password_hash.trim(),
                ));
            }
            std::fs::write(&file, config)?;
            let mut args = vec![
                "--config".to_owned(),
                file.display().to_string(),
                "run".into(),
            ];
            for role in *roles {
                args.extend(["--role".to_owned(), (*role).to_owned()]);
            }
            self.workers.push(Proc::new(
                format!("workers ({label})"),
                self.bin.join("connector-workers"),
                args,
                self.dir.join(format!("workers-{index}.log")),
                ([127, 0, 0, 1], ops).into(),
            ));
            self.workers_ops.push(format!("127.0.0.1:{ops}"));
            self.workers_configs.push(file);
        }
        self.admin(&["migrate"]).await?;
        self.db = Some(
            PgPool::connect(&db_url)
                .await
                .context("connecting to our PostgreSQL")?,
        );

        let (listen, ops) = (free_port()?, free_port()?);
        let file = self.dir.join("ingress.toml");
        std::fs::write(
            &file,
            configs::ingress(
                listen,
                ops,
                &broker_url,
                &IngressKeys {
                    bank_jwk: &bank_jwk,
                    bnc_public_pem: &bnc_public,
                },
            ),
        )?;
        self.ingress_url = format!("http://127.0.0.1:{listen}");
        self.ingress_ops = format!("127.0.0.1:{ops}");
        self.ingress = Some(Proc::new(
            "ingress".into(),
            self.bin.join("connector-ingress"),
            vec!["--config".into(), file.display().to_string()],
            self.dir.join("ingress.log"),
            ([127, 0, 0, 1], ops).into(),
        ));
        // The workers first: they declare the topology the ingress waits for.
        for index in 0..self.workers.len() {
            self.start_workers(index).await?;
        }
        let ingress = self.ingress.as_mut().context("ingress")?;
        ingress.spawn()?;
        ingress
            .wait_ready(&self.http, Duration::from_secs(60))
            .await?;
        // Webhooks from the simulator go to this ingress.
        self.http
            .put(format!("{}/__sim/webhook-url", self.sim_url))
            .json(&serde_json::json!({"url": format!("{}/webhooks/paysafe", self.ingress_url)}))
            .send()
            .await?
            .error_for_status()?;
        out(format!(
            "connector: ingress {} (ops {}), workers {} (ops {}), paysafe-sim {}: ready",
            self.ingress_url,
            self.ingress_ops,
            WORKERS.map(|(label, _)| label).join(", "),
            self.workers_ops.join(", "),
            self.sim_url
        ));
        Ok(())
    }

    /// The simulator, its secrets in its environment rather than on its command line.
    fn start_sim(&mut self) -> anyhow::Result<()> {
        let port = free_port()?;
        let mut command = Command::new(self.bin.join("paysafe-sim"));
        command
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("PAYSAFE_SIM_USERNAME", configs::SIM_USER)
            .env("PAYSAFE_SIM_PASSWORD", configs::SIM_PASSWORD)
            .env("PAYSAFE_SIM_WEBHOOK_KEY", configs::WEBHOOK_KEY);
        self.sim = Some(spawn_logged(
            &mut command,
            &self.dir.join("paysafe-sim.log"),
            "paysafe-sim",
        )?);
        self.sim_url = format!("http://127.0.0.1:{port}");
        Ok(())
    }

    async fn wait_http_ok(&self, url: &str, what: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .http
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("{what} did not answer {url} within 30 s")
    }

    /// `connector-workers --config <the apply process's file> args...`, as an operator runs
    /// it; returns its output.
    pub async fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let config = self.workers_configs.first().context("no workers config")?;
        let mut command = Command::new(self.bin.join("connector-workers"));
        for (name, _) in std::env::vars() {
            if name.starts_with("CONNECTOR_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.arg("--config").arg(config).args(args);
        run(
            &mut command,
            &format!("connector-workers {}", args.join(" ")),
        )
        .await
    }

    pub fn db(&self) -> anyhow::Result<&PgPool> {
        self.db.as_ref().context("the database is not started")
    }

    pub async fn stop_workers(&mut self, index: usize) {
        self.workers[index].terminate(Duration::from_secs(5)).await;
    }

    pub async fn start_workers(&mut self, index: usize) -> anyhow::Result<()> {
        let process = &mut self.workers[index];
        process.spawn()?;
        process
            .wait_ready(&self.http, Duration::from_secs(60))
            .await
    }

    fn node(&mut self) -> anyhow::Result<&mut RabbitNode> {
        self.rabbit.as_mut().context("no RabbitMQ node")
    }

    pub async fn stop_broker(&mut self) -> anyhow::Result<()> {
        self.node()?.stop().await;
        Ok(())
    }

    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        self.node()?.start().await
    }

    pub fn stop_postgres(&mut self) -> anyhow::Result<()> {
        self.pg.as_mut().context("no PostgreSQL")?.stop();
        Ok(())
    }

    pub async fn start_postgres(&mut self) -> anyhow::Result<()> {
        self.pg.as_mut().context("no PostgreSQL")?.start().await
    }

    /// `rabbitmqctl` on our node.
    pub async fn rabbitmqctl(&mut self, args: &[&str]) -> anyhow::Result<String> {
        self.node()?.ctl_run(args).await
    }

    /// A connection straight to our node, as a publisher that should not be there would open.
    pub async fn broker_connection(&mut self) -> anyhow::Result<Connection> {
        let url = format!("amqp://guest:guest@{}/%2f", self.node()?.addr());
        Ok(Connection::connect(&url, ConnectionProperties::default()).await?)
    }

    /// The simulator's control API.
    pub async fn sim(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let answer = self
            .http
            .post(format!("{}{path}", self.sim_url))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("paysafe-sim {path}"))?;
        let status = answer.status();
        let text = answer.text().await?;
        if !status.is_success() {
            bail!("paysafe-sim {path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    /// Stops everything, connector first, whatever state it is in.
    pub async fn teardown(&mut self) {
        if let Some(ingress) = self.ingress.as_mut() {
            ingress.terminate(Duration::from_secs(3)).await;
        }
        for process in &mut self.workers {
            process.terminate(Duration::from_secs(3)).await;
        }
        kill_group(self.sim.take()).await;
        if let Some(db) = self.db.take() {
            db.close().await;
        }
        if let Some(mut node) = self.rabbit.take() {
            node.stop().await;
        }
        if let Some(mut pg) = self.pg.take() {
            pg.stop();
        }
    }
}
