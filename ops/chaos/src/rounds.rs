//! The fault rounds: closed-loop load from the bank while each round injects its process fault
//! at its start and its infrastructure fault a third of the way in, one output line per round;
//! then, with `--sabotage-purge-intake`, the negative control that the checks must catch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::cli::Cli;
use crate::console::out;
use crate::faults::{Fault, FaultLog, inject};
use crate::harness::{Harness, Role};
use crate::load::Bank;

/// The load's side of the rounds, for the caller to stop and report.
#[derive(Debug)]
pub struct RoundsRun {
    /// The client tasks, still running.
    pub clients: Vec<JoinHandle<()>>,
    /// Seconds of load, from the first round's start.
    pub load_secs: f64,
    pub faults: FaultLog,
}

/// The fault rounds under closed-loop load.
pub async fn run(harness: &mut Harness, cli: &Cli, bank: &Arc<Bank>) -> anyhow::Result<RoundsRun> {
    let clients = bank.start(cli.concurrency, None);
    harness.tick(Duration::from_secs(2)).await;
    let load_started = Instant::now();
    out(format!(
        "{:<6} {:<75} {:>6} {:>6} {:>5} {:>5} {:>6}",
        "round", "faults", "sent", "200", "503", "t/o", "conn"
    ));
    let mut faults = FaultLog::default();
    let mut before = bank.counters.snapshot();
    for round in 0..cli.rounds {
        let round_started = Instant::now();
        let length = Duration::from_secs(cli.round_secs);
        let plan = Fault::schedule(round, cli.cluster, cli.postgres_ha, &cli.infra);
        let mut proved = Vec::new();
        proved.extend(inject(harness, bank, plan.process, &mut faults).await?);
        harness.tick_until(round_started + length / 3).await;
        proved.extend(inject(harness, bank, plan.infra, &mut faults).await?);
        if let Some(late) = plan.late {
            harness.tick_until(round_started + length * 2 / 3).await;
            proved.extend(inject(harness, bank, late, &mut faults).await?);
        }
        harness.tick_until(round_started + length).await;
        let now = bank.counters.snapshot();
        let delta = now.minus(before);
        before = now;
        out(format!(
            "{:<6} {:<75} {:>6} {:>6} {:>5} {:>5} {:>6}   ({:.1} s){}",
            format!("{}/{}", round + 1, cli.rounds),
            plan.all()
                .map(|fault| fault.label(harness.is_cluster()))
                .collect::<Vec<_>>()
                .join(" + "),
            delta.sent,
            delta.ok,
            delta.unavailable,
            delta.timeouts,
            delta.transport,
            round_started.elapsed().as_secs_f64(),
            proved
                .iter()
                .map(|line| format!("   {line}"))
                .collect::<String>()
        ));
    }
    let load_secs = load_started.elapsed().as_secs_f64();

    if cli.sabotage_purge_intake {
        purge_intake_under_load(harness).await?;
    }
    Ok(RoundsRun {
        clients,
        load_secs,
        faults,
    })
}

/// The negative control: workers stopped, 2 s of acknowledged requests pile up on the intake
/// queue, and are purged: the checks must count them as lost.
async fn purge_intake_under_load(harness: &mut Harness) -> anyhow::Result<()> {
    let workers = harness.process_count(Role::Workers);
    for index in 0..workers {
        harness.kill_process(Role::Workers, index).await;
    }
    harness.tick(Duration::from_secs(2)).await;
    let purged = harness.purge_intake().await?;
    out(format!("sabotage: {}", purged.trim()));
    for index in 0..workers {
        harness.start_process(Role::Workers, index)?;
    }
    Ok(())
}
