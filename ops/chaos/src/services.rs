//! The services the harness owns, all on loopback, on ports of their own, under its work
//! directory: a PostgreSQL instance, one or three RabbitMQ nodes, and the connector's processes.
//! Nothing here touches the machine's shared RabbitMQ or PostgreSQL.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

/// A free loopback port below the kernel's ephemeral range (32768..), so an outgoing
/// connection elsewhere on the machine cannot take it between our check and the bind.
pub fn free_port() -> anyhow::Result<u16> {
    for _ in 0..1000 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port found in 20000..32000")
}

/// Runs a command to completion; its output is returned, a failure carries it.
pub async fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !output.status.success() {
        bail!("{what} failed ({}): {}", output.status, text.trim());
    }
    Ok(text)
}

pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Sends `signal` to a whole process group.
pub fn signal_group(pgid: u32, signal: &str) {
    let _ = signal_process(&format!("-{pgid}"), signal);
}

/// Sends `signal` to `target` (a pid, or `-pgid` for a group); whether `kill` succeeded.
pub fn signal_process(target: &str, signal: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("kill -s {signal} {target}: {status}");
    }
    Ok(())
}

/// Starts `command` in a process group of its own (so that a kill reaches its helpers too),
/// stdout and stderr appended to `log`.
pub fn spawn_logged(command: &mut Command, log: &Path, what: &str) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}"))
}

/// SIGKILL to the process group `child` leads, then waits for it.
pub async fn kill_group(child: Option<Child>) {
    if let Some(mut child) = child {
        if let Some(pid) = child.id() {
            signal_group(pid, "KILL");
        }
        let _ = child.wait().await;
    }
}

/// SIGKILL to the process group `child` leads, from a `Drop`, which cannot wait.
pub fn kill_group_now(child: Option<Child>) {
    if let Some(pid) = child.as_ref().and_then(Child::id) {
        signal_group(pid, "KILL");
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/// A PostgreSQL instance of our own (initdb in the work directory, trust authentication).
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    as_postgres: bool,
    running: bool,
}

impl Postgres {
    pub async fn init(dir: &Path) -> anyhow::Result<Self> {
        let mut pg = Self::prepare(dir).await?;
        let data = pg.data();
        run(
            pg.command("initdb").arg("-D").arg(&data).args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ]),
            "initdb",
        )
        .await?;
        pg.start().await?;
        Ok(pg)
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started: a server in recovery,
    /// as a primary demoted in a failover is.
    pub async fn standby_of(primary: &Postgres, dir: &Path) -> anyhow::Result<Self> {
        let mut pg = Self::prepare(dir).await?;
        let data = pg.data();
        run(
            pg.command("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-R",
                    "-X",
                    "stream",
                    "-p",
                ])
                .arg(primary.port.to_string())
                .arg("-D")
                .arg(&data),
            "pg_basebackup",
        )
        .await?;
        pg.start().await?;
        Ok(pg)
    }

    /// A directory the server's user owns, and a port; nothing started.
    async fn prepare(dir: &Path) -> anyhow::Result<Self> {
        let bin = postgres_bin_dir()?;
        std::fs::create_dir_all(dir)?;
        let as_postgres = is_root();
        if as_postgres {
            // PostgreSQL refuses to run as root: the data belong to the `postgres` user.
            run(
                Command::new("chown").arg("postgres:postgres").arg(dir),
                "chown",
            )
            .await?;
        }
        Ok(Self {
            bin,
            dir: dir.to_owned(),
            port: free_port()?,
            as_postgres,
            running: false,
        })
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.current_dir(&self.dir);
        command
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
                self.port,
                self.dir.display()
            ))
            .args(["-w", "-t", "60", "-m", "fast", action]);
        command
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub async fn start(&mut self) -> anyhow::Result<()> {
        run(&mut self.pg_ctl("start"), "pg_ctl start").await?;
        self.running = true;
        Ok(())
    }

    /// `pg_ctl restart -m fast`: every connection is closed, the server comes back.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        run(&mut self.pg_ctl("restart"), "pg_ctl restart").await?;
        self.running = true;
        Ok(())
    }

    pub fn stop(&mut self) {
        if self.running {
            let pg_ctl = self.bin.join("pg_ctl");
            let mut command = if self.as_postgres {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
                c
            } else {
                std::process::Command::new(&pg_ctl)
            };
            let _ = command
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "30", "-m", "fast", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("CHAOS_PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .context(
            "PostgreSQL server binaries (/usr/lib/postgresql/<version>/bin; or set CHAOS_PG_BIN)",
        )?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let version = versions
        .last()
        .context("no /usr/lib/postgresql/<version>")?;
    Ok(PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")))
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

const RABBITMQ_SBIN: &str = "/usr/lib/rabbitmq/bin";

/// One RabbitMQ node of ours: `chaosN@localhost`, its own AMQP and distribution ports, its own
/// data and log directories, no plugins (so no management port), and the Erlang cookie of the
/// work directory (shared by our nodes and our `rabbitmqctl`, not by the machine's node).
#[derive(Debug)]
pub struct RabbitNode {
    pub name: String,
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    home: PathBuf,
    child: Option<Child>,
}

impl RabbitNode {
    /// Prepares node `index` (1-based) under `root` (which holds the shared cookie).
    pub fn new(root: &Path, index: usize) -> anyhow::Result<Self> {
        Self::named(root, &format!("chaos{index}"))
    }

    /// Prepares node `<short>@localhost` under `root`. Two nodes of one name cannot run at
    /// once on a machine, so a test names its node uniquely.
    pub fn named(root: &Path, short: &str) -> anyhow::Result<Self> {
        let home = root.join("home");
        std::fs::create_dir_all(&home)?;
        let cookie = home.join(".erlang.cookie");
        if !cookie.exists() {
            let value: String = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .map(|c| c.to_ascii_uppercase())
                .collect();
            std::fs::write(&cookie, value)?;
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400))?;
        }
        let plugins = root.join("enabled_plugins");
        if !plugins.exists() {
            std::fs::write(&plugins, "[].\n")?;
        }
        let env_file = root.join("rabbitmq-env.conf");
        if !env_file.exists() {
            std::fs::write(
                &env_file,
                "ERL_EPMD_ADDRESS=127.0.0.1\nexport ERL_FLAGS=\"-kernel inet_dist_use_interface {127,0,0,1}\"\n",
            )?;
        }
        let dir = root.join(short);
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        let port = free_port()?;
        let mut dist_port = free_port()?;
        while dist_port == port {
            dist_port = free_port()?;
        }
        Ok(Self {
            name: format!("{short}@localhost"),
            port,
            dist_port,
            dir,
            home,
            child: None,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The Erlang VM's process id, from the pid file RabbitMQ writes once booted.
    pub fn beam_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn env(&self, command: &mut Command) {
        let root = self.home.parent().unwrap_or(&self.home);
        command
            .env("HOME", &self.home)
            .env("RABBITMQ_CONF_ENV_FILE", root.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                root.join("enabled_plugins"),
            )
            .env("RABBITMQ_NODENAME", &self.name)
            .current_dir(&self.dir);
    }

    /// `rabbitmqctl -n <this node> args...`.
    pub fn ctl(&self, args: &[&str]) -> Command {
        let mut command = Command::new(format!("{RABBITMQ_SBIN}/rabbitmqctl"));
        self.env(&mut command);
        command.arg("-n").arg(&self.name).args(args);
        command
    }

    pub async fn ctl_run(&self, args: &[&str]) -> anyhow::Result<String> {
        run(
            &mut self.ctl(args),
            &format!("rabbitmqctl -n {} {}", self.name, args.join(" ")),
        )
        .await
    }

    /// Sets the node's `advanced.config` (Erlang terms, read at start), e.g. a short
    /// `consumer_timeout`.
    pub fn set_advanced_config(&self, terms: &str) -> anyhow::Result<()> {
        Ok(std::fs::write(self.dir.join("advanced.config"), terms)?)
    }

    /// A memory alarm: the node blocks every publishing connection until it is cleared.
    pub async fn raise_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl_run(&["set_vm_memory_high_watermark", "absolute", "1"])
            .await
            .map(drop)
    }

    /// Back to the default watermark (0.4 of the machine's memory): the alarm clears.
    pub async fn clear_memory_alarm(&self) -> anyhow::Result<()> {
        self.ctl_run(&["set_vm_memory_high_watermark", "0.4"])
            .await
            .map(drop)
    }

    /// Starts the node (in its own process group) and waits until it has booted.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(format!("{RABBITMQ_SBIN}/rabbitmq-server"));
        self.env(&mut command);
        command
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.dir.join("log"))
            .env("RABBITMQ_PID_FILE", self.dir.join("pid"))
            // No configuration file: the machine's /etc/rabbitmq/rabbitmq.conf names port 5672.
            .env("RABBITMQ_CONFIG_FILE", self.dir.join("rabbitmq"))
            .env(
                "RABBITMQ_ADVANCED_CONFIG_FILE",
                self.dir.join("advanced.config"),
            );
        let log = self.dir.join("stdout.log");
        self.child = Some(spawn_logged(&mut command, &log, "rabbitmq-server")?);
        self.await_startup(Duration::from_secs(120)).await
    }

    async fn await_startup(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "RabbitMQ node {} exited while booting ({status}); see {}",
                    self.name,
                    self.dir.join("log").display()
                );
            }
            let waited = self.ctl_run(&["await_startup", "--timeout", "30"]).await;
            if waited.is_ok() && tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("RabbitMQ node {} did not boot: {waited:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// SIGKILL to the node's whole process group (the start script, beam and its helpers).
    pub async fn kill(&mut self) {
        kill_group(self.child.take()).await;
    }

    /// A clean stop (`rabbitmqctl stop`), falling back to SIGKILL.
    pub async fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        let stopped = tokio::time::timeout(Duration::from_secs(60), self.ctl_run(&["stop"])).await;
        if let Some(child) = self.child.as_mut()
            && matches!(stopped, Ok(Ok(_)))
        {
            let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;
        }
        self.kill().await;
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        kill_group_now(self.child.take());
    }
}

// ---------------------------------------------------------------------------------------------
// The connector's processes

/// One `connector-ingress` or `connector-workers` process, restartable with the same arguments.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    /// `/readyz` of its ops listener.
    ready_url: String,
    child: Option<Child>,
    pub starts: usize,
}

impl Proc {
    pub fn new(
        name: String,
        program: PathBuf,
        args: Vec<String>,
        log: PathBuf,
        ops: SocketAddr,
    ) -> Self {
        Self {
            name,
            program,
            args,
            log,
            ready_url: format!("http://{ops}/readyz"),
            child: None,
            starts: 0,
        }
    }

    pub fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.program);
        // Only the configuration file counts: a CONNECTOR_* variable of the caller's
        // environment (say, the shared broker's URL) must not reach the processes under test.
        for (name, _) in std::env::vars() {
            if name.starts_with("CONNECTOR_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.args(&self.args);
        let what = self.program.display().to_string();
        self.child = Some(spawn_logged(&mut command, &self.log, &what)?);
        self.starts += 1;
        Ok(())
    }

    /// Waits until `/readyz` answers 200 (broker connected; workers: database too).
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "{} exited at start-up ({status}); see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Ok(answer) = http.get(&self.ready_url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {within:?}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Its `/readyz`.
    pub fn ready_url(&self) -> &str {
        &self.ready_url
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// The exit status, if it exited on its own since the last look.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// SIGTERM (graceful shutdown), SIGKILL after `grace`.
    pub async fn terminate(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "TERM", &pid.to_string()])
                    .status();
            }
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

/// Resident memory of a process in MiB (`VmRSS`), if it is alive.
pub fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
