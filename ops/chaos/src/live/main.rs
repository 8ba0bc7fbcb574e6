//! `ops-live`: the dashboards and alerts on the connector's real metrics. A real Prometheus
//! (Debian's package) scrapes the real ingress, workers and a RabbitMQ node of our own while
//! traffic of every kind flows; every dashboard panel query must return data, and every alert
//! the run can cause must fire on its fault and clear once it is removed. See
//! ops/chaos/README.md, "ops-live".
//!
//! Exit status: 0 every check passed, 1 a check failed, 2 the check itself could not run.

mod configs;
#[path = "../console.rs"]
mod console;
mod faults;
mod operator_console;
mod overlay;
mod panels;
mod prometheus;
mod report;
mod stack;
mod traffic;
mod watch;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;

use crate::console::out;
use crate::faults::{Driver, Fault, NOT_DRIVEN};
use crate::prometheus::{Prometheus, Targets};
use crate::stack::Stack;
use crate::traffic::Traffic;
use crate::watch::Watch;

/// The dashboards and alerts, live: a real Prometheus on the real connector, every panel query
/// answered with data, every alert fired by its fault and cleared after it.
#[derive(Debug, Parser)]
#[command(name = "ops-live")]
struct Cli {
    /// The rules' durations (`for:`, `[range]`, `offset`) are divided by this in the test
    /// overlay: at 60, a minute of the shipped rules is a second of the run.
    #[arg(long, default_value_t = 60)]
    time_scale: u32,
    /// Keep the work directory (every process's log, the generated configuration and rules).
    #[arg(long)]
    keep: bool,
    /// Do not build the connector's binaries first.
    #[arg(long)]
    no_build: bool,
    /// Negative control: this alert's expression is replaced by one that never fires in the
    /// overlay; the run must fail naming it.
    #[arg(long, value_name = "ALERT")]
    sabotage_alert: Option<String>,
    /// Negative control: the first panel query's metric name is misspelt; the run must fail
    /// naming that panel.
    #[arg(long)]
    sabotage_panel: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let dir = std::env::temp_dir().join(format!(
        "ops-live-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    if let Err(error) = std::fs::create_dir_all(&dir) {
        out(format!(
            "ops-live: cannot create {}: {error}",
            dir.display()
        ));
        return ExitCode::from(2);
    }
    let started = Instant::now();
    let mut world = World::default();
    let outcome = tokio::select! {
        result = run(&cli, &dir, &mut world) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    world.teardown().await;
    let code = match &outcome {
        Ok(failures) if failures.is_empty() => ExitCode::SUCCESS,
        Ok(failures) => {
            out("");
            for failure in failures {
                out(format!("FAILED  {failure}"));
            }
            ExitCode::from(1)
        }
        Err(error) => {
            out(format!("ops-live: {error:#}"));
            ExitCode::from(2)
        }
    };
    let failed = !matches!(&outcome, Ok(f) if f.is_empty());
    if cli.keep || failed {
        out(format!("work directory kept: {}", dir.display()));
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    out(format!(
        "ops-live: {} in {:.0?}",
        if failed { "FAILED" } else { "passed" },
        started.elapsed()
    ));
    code
}

/// What must be stopped at the end, whatever happened.
#[derive(Debug, Default)]
struct World {
    stack: Option<Stack>,
    prometheus: Option<Prometheus>,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl World {
    async fn teardown(&mut self) {
        if let Some(task) = self.watcher.take() {
            task.abort();
        }
        if let Some(prometheus) = self.prometheus.as_mut() {
            prometheus.stop().await;
        }
        if let Some(stack) = self.stack.as_mut() {
            stack.teardown().await;
        }
    }
}

/// The run; `Ok` holds the failed checks (none: passed).
async fn run(cli: &Cli, dir: &Path, world: &mut World) -> anyhow::Result<Vec<String>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |path: &str| {
        std::fs::read_to_string(root.join(path)).with_context(|| format!("reading {path}"))
    };
    // The shipped files, read only.
    let (rules, alert_names) = overlay::overlay(
        &read(overlay::SHIPPED_RULES)?,
        cli.time_scale,
        cli.sabotage_alert.as_deref(),
    )?;
    let mut failures = coverage(&alert_names);
    prometheus::check_shipped_jobs(&read(prometheus::SHIPPED_CONFIG)?)?;
    let mut queries = panels::load(&root.join(panels::DASHBOARDS))?;
    let listed = panels::read_list(&root.join(panels::WITHOUT_DATA))?;
    if cli.sabotage_panel {
        let first = queries.first_mut().context("no panel query")?;
        first.expr = first.expr.replacen("connector_", "connectr_", 1);
        out(format!(
            "negative control: {} now asks {}",
            first.key, first.expr
        ));
    }
    let rules_file = dir.join("alerts.overlay.yml");
    std::fs::write(&rules_file, &rules)?;

    let bin = binaries(cli.no_build)?;
    let prometheus_bin = prometheus::ensure_installed().await?;
    let prometheus_port = connector_chaos::services::free_port()?;
    world.stack = Some(Stack::new(dir.to_owned(), bin, prometheus_port));
    let stack = world.stack.as_mut().context("stack")?;
    stack.start().await?;

    let targets = Targets {
        ingress: vec![stack.ingress_ops.clone()],
        workers: stack::WORKERS
            .iter()
            .zip(&stack.workers_ops)
            .map(|((label, _), addr)| (*label, addr.clone()))
            .collect(),
        rabbitmq: stack.rabbit_metrics.clone(),
    };
    let expected_targets = 2 + targets.workers.len();
    world.prometheus = Some(
        Prometheus::start(
            &prometheus_bin,
            dir,
            &prometheus::config(&targets, &rules_file),
            prometheus_port,
        )
        .await?,
    );
    let api = world.prometheus.as_ref().context("prometheus")?.api.clone();
    api.wait_targets_up(expected_targets, Duration::from_secs(60))
        .await?;
    let loaded: BTreeSet<String> = api.alert_rule_names().await?.into_iter().collect();
    if loaded != alert_names.iter().cloned().collect() {
        bail!("Prometheus loaded the rules {loaded:?}, not the overlay's {alert_names:?}");
    }
    out(format!(
        "prometheus: {} scraping {expected_targets} targets every second, {} alert rules (durations / {})",
        api.base,
        loaded.len(),
        cli.time_scale
    ));
    let (watch, task) = Watch::start(api.clone());
    world.watcher = Some(task);

    let stack = world.stack.as_mut().context("stack")?;
    let signer = stack.signer.take().context("the bank's key")?;
    let bnc_key = std::fs::read(&stack.bnc_private_pem)?;
    let traffic = Arc::new(Traffic::new(stack.ingress_url.clone(), signer, bnc_key)?);
    baseline(stack, &traffic).await?;
    if let Some(noisy) = quiet(&watch).await {
        failures.push(format!(
            "alerts firing with no fault, after the accepted traffic: {noisy:?}"
        ));
    }

    let mut driver = Driver::new(Arc::clone(&traffic), watch, api.clone(), queries.clone());
    driver.start_background(stack).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut passes = vec![(
        "with the traffic".to_owned(),
        panels::ask(&api, &queries).await,
    )];

    let mut outcomes = Vec::new();
    for fault in Fault::FOREGROUND {
        let results = driver.foreground(stack, fault).await?;
        for o in &results {
            out(format!(
                "  {}: firing {}, clear {}",
                o.alert,
                o.fired
                    .map_or("TIMEOUT".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                o.cleared
                    .map_or("-".into(), |d| format!("{:.1} s", d.as_secs_f64()))
            ));
        }
        outcomes.extend(results);
    }
    outcomes.extend(driver.background_outcomes().await);
    passes.append(&mut driver.passes);
    passes.push((
        "after the faults".to_owned(),
        panels::ask(&api, &queries).await,
    ));
    out(format!(
        "panels: {} queries asked in {} passes (with the traffic, during each fault, after)",
        queries.len(),
        passes.len()
    ));

    failures.append(&mut driver.problems);
    failures.extend(operator_console::check_banks_page(&stack.console_url).await?);
    failures.extend(report::alerts(&outcomes));
    let verdict = panels::verdict(&queries, &listed, &passes);
    failures.extend(report::panels(queries.len(), &verdict));
    Ok(failures)
}

/// Every alert of the rules is driven by a fault or listed as not driven, and nothing else.
fn coverage(alert_names: &[String]) -> Vec<String> {
    let driven: BTreeSet<&str> = Fault::FOREGROUND
        .iter()
        .chain(Fault::BACKGROUND.iter())
        .flat_map(|f| f.alerts().iter().copied())
        .collect();
    let not_driven: BTreeSet<&str> = NOT_DRIVEN.iter().map(|(a, _)| *a).collect();
    let mut failures = Vec::new();
    for name in alert_names {
        if !driven.contains(name.as_str()) && !not_driven.contains(name.as_str()) {
            failures.push(format!("{name} (alerts.yml) is neither driven by a fault of ops-live nor listed as not driven"));
        }
    }
    for name in driven.iter().chain(not_driven.iter()) {
        if !alert_names.iter().any(|a| a == name) {
            failures.push(format!("{name}: no such alert in alerts.yml"));
        }
    }
    failures
}

/// Accepted traffic of every kind: Corelink units (one PENDING first, one FAILED) and
/// batches, a BNC binding, a tracked payment polled to COMPLETED and its webhook.
async fn baseline(stack: &mut Stack, traffic: &Traffic) -> anyhow::Result<()> {
    let pending = traffic.reference("U");
    traffic.unit(&pending, "PENDING").await?;
    traffic.unit(&pending, "SUCCESS").await?;
    for status in ["SUCCESS", "SUCCESS", "FAILED"] {
        traffic.unit(&traffic.reference("U"), status).await?;
    }
    traffic.batch(3).await?;
    traffic.batch(5).await?;
    let status = traffic.bnc(true).await?;
    if !status.is_success() {
        bail!("the BNC callback was answered {status}");
    }
    let id = traffic.reference("pay-done-");
    faults::sim_item(
        stack,
        &id,
        546,
        json!([{"status": "PROCESSING", "polls": 1}, {"status": "COMPLETED"}]),
    )
    .await?;
    faults::track(stack, &id, 546).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = stack
            .admin(&["paysafe", "show", &id])
            .await
            .unwrap_or_default();
        if shown
            .lines()
            .any(|l| l.contains("paysafe.payment.completed") && l.contains("published"))
        {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the tracked payment {id} was not polled to COMPLETED and published within 30 s:\n{shown}"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let webhook = stack
        .sim(
            "/__sim/webhooks",
            json!({"id": id, "eventName": "PAYMENT_COMPLETED"}),
        )
        .await?;
    if webhook["status"] != 200 {
        bail!(
            "the ingress did not accept the simulator's webhook: {}",
            webhook["status"]
        );
    }
    out(
        "traffic: Corelink units and batches, a BNC binding, a payment polled to COMPLETED and its webhook: accepted",
    );
    Ok(())
}

/// Waits until no alert has fired for 5 s in a row (60 s at most); the ones still firing if not.
async fn quiet(watch: &Watch) -> Option<BTreeSet<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut quiet_since = Instant::now();
    loop {
        let now = watch.now();
        if !now.is_empty() {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_secs(5) {
            return None;
        }
        if Instant::now() > deadline {
            return Some(now);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The directory of the connector's binaries (beside ours), built first unless told not.
fn binaries(no_build: bool) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("our directory")?.to_owned();
    let packages = ["connector-ingress", "connector-workers", "paysafe-sim"];
    if !no_build {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        command
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .args(["build", "--quiet", "--bins"]);
        for package in packages {
            command.args(["-p", package]);
        }
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let status = command.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build of {packages:?} failed ({status})");
        }
    }
    for binary in [
        "connector-ingress",
        "connector-workers",
        "paysafe-sim",
        "snap-sign",
    ] {
        if !dir.join(binary).exists() {
            bail!(
                "{} is missing (cargo build --bins -p ...)",
                dir.join(binary).display()
            );
        }
    }
    Ok(dir)
}
