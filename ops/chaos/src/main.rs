//! `fault-harness`: the connector under sustained signed load while, round after round, its
//! processes are SIGKILLed, RabbitMQ and PostgreSQL restarted and connections cut; then every
//! 200 in the client's log is checked against the database, the ledger queue and the
//! dead-letter queues. Everything runs on loopback, on services the harness starts and stops
//! itself. `--soak` replaces the rounds with a long faultless run at a fraction of the measured
//! capacity (`soak.rs`). See ops/chaos/README.md.
//!
//! This file only parses the command line, runs ([`run::run`], the steps in order) until done
//! or interrupted, stops everything, and maps the outcome to the exit status: 0 every check
//! passed, 1 a check failed, 2 the harness itself could not run.

mod binaries;
mod broker;
mod cli;
mod configs;
mod console;
mod failover;
mod failover_watch;
mod faults;
mod harness;
mod ledger_collector;
mod load;
mod mid_group;
mod proxy;
mod quarantine_review;
mod rounds;
mod run;
mod soak;
mod summary;
mod table_sizes;
mod verify;

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
// The services live in the library, shared with the end-to-end tests.
use connector_chaos::services;

use crate::cli::Cli;
use crate::console::out;
use crate::harness::Harness;

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
    let mut harness = Harness::new(dir.clone(), cli.cluster, cli.database_kind());
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
            result = run::run(&mut harness, &cli) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
            () = terminated => Err(anyhow::anyhow!("terminated")),
        }
    };
    // Whatever happened (a failed check, an error, a signal), nothing we started survives.
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
