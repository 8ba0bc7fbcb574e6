//! A highly available PostgreSQL of the harness's own, built the way a bank's operations team
//! would run one: Patroni managing two members (a primary and a synchronous standby), etcd as
//! the DCS that elects the leader, and HAProxy routing every connection to whichever member's
//! Patroni REST API answers `GET /primary` with 200. The connector knows only HAProxy's address.
//!
//! Why HAProxy and not the client: sqlx takes one host per connection string (no libpq-style
//! multi-host list or `target_session_attrs`), so the routing, and the cutting of sessions to a
//! demoted primary (`on-marked-down shutdown-sessions`), belong in front of the database.
//!
//! Everything runs on loopback, on ports and under a directory of its own, from Debian's
//! `patroni`, `etcd-server` and `haproxy` packages (installed when missing).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use crate::services::{
    free_port, is_root, kill_group, kill_group_now, postgres_bin_dir, run, signal_group,
    signal_process, spawn_logged,
};

mod config_files;
use config_files::{etcd_argv, haproxy_config, patroni_config};

/// The Debian packages, and a binary each installs.
const PACKAGES: [(&str, &str); 3] = [
    ("patroni", "/usr/bin/patroni"),
    ("etcd-server", "/usr/bin/etcd"),
    ("haproxy", "/usr/sbin/haproxy"),
];

/// Patroni's timing: the leader key lives `TTL` seconds, each member's loop runs every
/// `LOOP_WAIT`, DCS and PostgreSQL calls are retried for `RETRY_TIMEOUT`. Short, so that a
/// lost primary is replaced within seconds on loopback.
const TTL: u64 = 10;
const LOOP_WAIT: u64 = 1;
const RETRY_TIMEOUT: u64 = 3;

/// Installs Patroni, etcd and HAProxy from Debian when one is missing.
pub async fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, binary)| !Path::new(binary).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "the HA PostgreSQL needs Debian's {} (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        );
    }
    run(
        Command::new("apt-get").args(["update", "-qq"]),
        "apt-get update",
    )
    .await?;
    run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(&missing),
        "apt-get install",
    )
    .await?;
    Ok(())
}

/// One daemon of the cluster, in a process group of its own, restartable as it was started.
#[derive(Debug)]
struct Daemon {
    what: String,
    /// Program first, then its arguments.
    argv: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    fn new(what: &str, argv: Vec<OsString>, log: PathBuf) -> Self {
        Self {
            what: what.to_owned(),
            argv,
            log,
            child: None,
        }
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.argv[0]);
        command.args(&self.argv[1..]);
        self.child = Some(spawn_logged(&mut command, &self.log, &self.what)?);
        Ok(())
    }

    /// SIGKILL to its whole process group.
    async fn kill(&mut self) {
        kill_group(self.child.take()).await;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_group_now(self.child.take());
    }
}

/// A Patroni member: its PostgreSQL port, its REST API, its data directory.
#[derive(Debug)]
struct Member {
    name: String,
    pg_port: u16,
    api_port: u16,
    data: PathBuf,
    patroni: Daemon,
}

impl Member {
    /// The running postmaster's pid, from the data directory; `None` while it is down (a
    /// killed postmaster leaves its file behind: the pid is checked to be a live `postgres`).
    fn postmaster_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()?;
        let command = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (command.trim() == "postgres").then_some(pid)
    }
}

/// What Patroni's `GET /cluster` says of the members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterState {
    pub leader: Option<String>,
    /// A standby that runs, and whether it is the synchronous one.
    pub standby: Option<(String, bool)>,
}

/// The cluster: etcd, the Patroni members, HAProxy.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    etcd: Daemon,
    members: Vec<Member>,
    haproxy: Daemon,
    /// HAProxy's listener: the connector's (and the checks') one address of the database.
    pub port: u16,
    pub synchronous: bool,
    http: reqwest::Client,
}

impl PgCluster {
    /// Starts etcd, two Patroni members (`synchronous`: `synchronous_mode` on) and HAProxy,
    /// and waits until a leader answers through HAProxy and, when synchronous, a synchronous
    /// standby streams.
    pub async fn start(dir: &Path, synchronous: bool) -> anyhow::Result<Self> {
        ensure_packages().await?;
        std::fs::create_dir_all(dir)?;
        let (etcd_client, etcd_peer) = (free_port()?, free_port()?);
        let etcd = Daemon::new(
            "etcd",
            etcd_argv(dir, etcd_client, etcd_peer),
            dir.join("etcd.log"),
        );
        let bin = postgres_bin_dir()?;
        let mut members = Vec::new();
        for index in 1..=2 {
            let name = format!("pg{index}");
            let (pg_port, api_port) = (free_port()?, free_port()?);
            let config = dir.join(format!("{name}.yml"));
            let data = dir.join(format!("{name}-data"));
            std::fs::write(
                &config,
                patroni_config(
                    &name,
                    pg_port,
                    api_port,
                    etcd_client,
                    dir,
                    &bin,
                    synchronous,
                ),
            )?;
            let mut argv = as_postgres("/usr/bin/patroni");
            argv.push(config.into());
            members.push(Member {
                patroni: Daemon::new(
                    &format!("patroni {name}"),
                    argv,
                    dir.join(format!("{name}.log")),
                ),
                name,
                pg_port,
                api_port,
                data,
            });
        }
        let port = free_port()?;
        let haproxy_cfg = dir.join("haproxy.cfg");
        std::fs::write(&haproxy_cfg, haproxy_config(port, &members))?;
        let haproxy = Daemon::new(
            "haproxy",
            vec![
                "/usr/sbin/haproxy".into(),
                "-db".into(),
                "-f".into(),
                haproxy_cfg.into(),
            ],
            dir.join("haproxy.log"),
        );
        if is_root() {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir),
                "chown",
            )
            .await?;
        }
        let mut cluster = Self {
            dir: dir.to_owned(),
            etcd,
            members,
            haproxy,
            port,
            synchronous,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        cluster.etcd.spawn()?;
        wait_port(etcd_client, Duration::from_secs(30), "etcd").await?;
        // The first member bootstraps the cluster alone (initdb), the second clones it.
        cluster.members[0].patroni.spawn()?;
        cluster.wait_leader(Duration::from_secs(90)).await?;
        cluster.members[1].patroni.spawn()?;
        cluster.haproxy.spawn()?;
        cluster.wait_healthy(Duration::from_secs(120)).await?;
        Ok(cluster)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The members' view of the cluster, from the first REST API that answers.
    pub async fn state(&self) -> Option<ClusterState> {
        for member in &self.members {
            let url = format!("http://127.0.0.1:{}/cluster", member.api_port);
            let Ok(answer) = self.http.get(&url).send().await else {
                continue;
            };
            let Ok(body) = answer.json::<serde_json::Value>().await else {
                continue;
            };
            let members = body["members"].as_array().cloned().unwrap_or_default();
            let running =
                |m: &&serde_json::Value| m["state"] == "running" || m["state"] == "streaming";
            let name = |m: &serde_json::Value| m["name"].as_str().map(str::to_owned);
            let leader = members
                .iter()
                .filter(running)
                .find(|m| m["role"] == "leader")
                .and_then(name);
            let standby = members
                .iter()
                .filter(running)
                .find(|m| m["role"] == "sync_standby" || m["role"] == "replica")
                .and_then(|m| Some((name(m)?, m["role"] == "sync_standby")));
            return Some(ClusterState { leader, standby });
        }
        None
    }

    async fn wait_leader(&self, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(ClusterState {
                leader: Some(leader),
                ..
            }) = self.state().await
            {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!(
                    "no Patroni leader within {within:?}; see {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the cluster is whole again: a leader that takes writes through HAProxy and
    /// a running standby, the synchronous one in synchronous mode. Returns the leader.
    pub async fn wait_healthy(&mut self, within: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let state = self.state().await;
            if let Some(ClusterState {
                leader: Some(leader),
                standby: Some((_, synchronous)),
            }) = &state
                && (*synchronous || !self.synchronous)
                && self.writable().await
            {
                return Ok(leader.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "the PostgreSQL cluster is not whole within {within:?} ({state:?}); see {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Whether a connection through HAProxy reaches a server out of recovery.
    async fn writable(&self) -> bool {
        use sqlx::Connection as _;
        let url = format!("postgres://postgres@{}/postgres", self.addr());
        let Ok(Ok(mut connection)) =
            tokio::time::timeout(Duration::from_secs(2), sqlx::PgConnection::connect(&url)).await
        else {
            return false;
        };
        let primary = sqlx::query_scalar::<_, bool>("SELECT NOT pg_is_in_recovery()")
            .fetch_one(&mut connection)
            .await
            .unwrap_or(false);
        let _ = connection.close().await;
        primary
    }

    fn member(&self, name: &str) -> anyhow::Result<usize> {
        self.members
            .iter()
            .position(|m| m.name == name)
            .with_context(|| format!("no member {name}"))
    }

    async fn leader_index(&self) -> anyhow::Result<usize> {
        let leader = self.wait_leader(Duration::from_secs(30)).await?;
        self.member(&leader)
    }

    /// SIGKILL the primary's postmaster. Patroni sees its PostgreSQL gone and, with
    /// `primary_start_timeout: 0`, hands the leadership to the synchronous standby instead of
    /// restarting it in place; the old primary rejoins as a standby (pg_rewind). Returns the
    /// member killed.
    pub async fn kill_primary_postgres(&mut self) -> anyhow::Result<String> {
        let leader = self.leader_index().await?;
        let member = &self.members[leader];
        let pid = member
            .postmaster_pid()
            .with_context(|| format!("{} has no running postmaster", member.name))?;
        signal_process(&pid.to_string(), "KILL")?;
        Ok(member.name.clone())
    }

    /// The primary's WAL sender stopped (SIGSTOP), then after `behind` the primary's
    /// PostgreSQL SIGKILLed (the stopped sender too, which cannot see its postmaster die): the
    /// standby is promoted without the WAL the primary wrote meanwhile. Synchronous, no commit
    /// returned in that time (each waits for the standby's flush), so nothing acknowledged is
    /// missing; asynchronous, the commits of that time are gone. (Stopping the standby's
    /// receiver instead loses nothing: the sender fills the receiver's socket buffer, read
    /// when it resumes, or a new receiver starts at once.) Returns the member killed.
    pub async fn kill_primary_ahead_of_standby(
        &mut self,
        behind: Duration,
    ) -> anyhow::Result<String> {
        let leader = self.leader_index().await?;
        let url = format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            self.members[leader].pg_port
        );
        let senders: Vec<i32> = {
            use sqlx::Connection as _;
            let mut connection = sqlx::PgConnection::connect(&url).await?;
            sqlx::query_scalar("SELECT pid FROM pg_stat_replication")
                .fetch_all(&mut connection)
                .await?
        };
        anyhow::ensure!(!senders.is_empty(), "the primary has no WAL sender");
        for sender in &senders {
            signal_process(&sender.to_string(), "STOP")?;
        }
        tokio::time::sleep(behind).await;
        let killed = self.kill_primary_postgres().await;
        for sender in &senders {
            let _ = signal_process(&sender.to_string(), "KILL");
        }
        killed
    }

    /// SIGKILL the primary's Patroni (its PostgreSQL keeps running, still a primary): the
    /// leader key expires after the TTL, the standby is promoted, and HAProxy, whose checks
    /// of the dead REST API fail, cuts every session to the old primary. Returns the member.
    pub async fn kill_primary_patroni(&mut self) -> anyhow::Result<String> {
        let leader = self.leader_index().await?;
        self.members[leader].patroni.kill().await;
        Ok(self.members[leader].name.clone())
    }

    /// Starts every member whose Patroni is not running: it finds its PostgreSQL behind the
    /// new leader's timeline, demotes and rewinds it, and follows.
    pub fn start_stopped_patroni(&mut self) -> anyhow::Result<()> {
        for member in &mut self.members {
            if member.patroni.child.is_none() {
                member.patroni.spawn()?;
            }
        }
        Ok(())
    }

    /// A planned switchover through the leader's REST API, to the other member.
    pub async fn switchover(&mut self) -> anyhow::Result<String> {
        let leader = self.leader_index().await?;
        let candidate = &self.members[1 - leader];
        let url = format!(
            "http://127.0.0.1:{}/switchover",
            self.members[leader].api_port
        );
        let answer = self
            .http
            .post(&url)
            .timeout(Duration::from_secs(60))
            .json(&serde_json::json!({
                "leader": self.members[leader].name,
                "candidate": candidate.name,
            }))
            .send()
            .await
            .context("POST /switchover")?;
        let status = answer.status();
        if !status.is_success() {
            bail!(
                "switchover refused ({status}): {}",
                answer.text().await.unwrap_or_default()
            );
        }
        Ok(self.members[leader].name.clone())
    }

    /// etcd gone (SIGKILL): no member can renew the leader key, so the primary demotes
    /// itself after `retry_timeout` and writes stop until the DCS is back.
    pub async fn stop_dcs(&mut self) {
        self.etcd.kill().await;
    }

    /// etcd started again on its data: a leader is elected again.
    pub fn start_dcs(&mut self) -> anyhow::Result<()> {
        self.etcd.spawn()
    }

    /// Stops HAProxy, the members (Patroni stops its PostgreSQL) and etcd.
    pub async fn stop(&mut self) {
        self.haproxy.kill().await;
        for member in &mut self.members {
            if let Some(child) = member.patroni.child.as_ref()
                && let Some(pid) = child.id()
            {
                signal_group(pid, "TERM");
            }
        }
        for member in &mut self.members {
            if let Some(mut child) = member.patroni.child.take()
                && tokio::time::timeout(Duration::from_secs(30), child.wait())
                    .await
                    .is_err()
            {
                if let Some(pid) = child.id() {
                    signal_group(pid, "KILL");
                }
                let _ = child.wait().await;
            }
            // A postmaster orphaned by a killed Patroni.
            if let Some(pid) = member.postmaster_pid() {
                let _ = signal_process(&pid.to_string(), "KILL");
            }
        }
        self.etcd.kill().await;
    }
}

/// `program` run as `postgres` when we are root (PostgreSQL refuses to run as root).
fn as_postgres(program: &str) -> Vec<OsString> {
    let mut argv: Vec<OsString> = Vec::new();
    if is_root() {
        argv.extend(["runuser", "-u", "postgres", "--"].map(OsString::from));
    }
    argv.push(program.into());
    argv
}

async fn wait_port(port: u16, within: Duration, what: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{what} did not listen on {port} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
