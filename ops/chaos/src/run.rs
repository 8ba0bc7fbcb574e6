//! One run, start to end, in the order it happens: build the connector, start the harness,
//! the load (fault rounds or soak), stop the load, drain, stop the connector, take what is on
//! the ledger and dead-letter queues, check, print. Each step lives in its own module; this
//! one only says which comes when.

use std::time::{Duration, Instant};

use lapin::BasicProperties;

use crate::binaries::binaries;
use crate::broker::take_all;
use crate::cli::Cli;
use crate::console::out;
use crate::faults::FaultLog;
use crate::harness::{Harness, Started};
use crate::ledger_collector::LedgerCollector;
use crate::rounds;
use crate::soak;
use crate::summary::Summary;
use crate::verify::{self, Inputs, Journal, JournalCollector, LedgerMessage, Report};

pub async fn run(harness: &mut Harness, cli: &Cli) -> anyhow::Result<Report> {
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
        harness.work_dir().display()
    ));
    let Started { bank, db, poison } = harness
        .start(&bin_dir, soak.map(|plan| plan.nonce_purge()))
        .await?;
    // With retentions shorter than the run, the rows the checks read are dropped before the
    // end: copy them while the run goes on. Otherwise one copy at the end holds them all.
    let purging = soak.is_some_and(|plan| plan.retention_secs.is_some());
    let journal = purging.then(|| JournalCollector::start(&db));

    // Load, then the rounds (or the soak).
    let mut collector = None;
    let mut soak_summary = None;
    let (clients, load_secs, faults) = match soak {
        Some(plan) => {
            let ledger = LedgerCollector::start(
                &harness.first_node_url()?,
                &harness.topology().ledger_queue,
            )
            .await?;
            let started = Instant::now();
            let (clients, summary) = soak::run(harness, plan, &bank, &db, &ledger).await?;
            collector = Some(ledger);
            soak_summary = Some(summary);
            (
                clients,
                started.elapsed().as_secs_f64(),
                FaultLog::default(),
            )
        }
        None => {
            let rounds = rounds::run(harness, cli, &bank).await?;
            (rounds.clients, rounds.load_secs, rounds.faults)
        }
    };

    // Stop the load: no new requests; those under way retry for a while, then give up.
    bank.stop_new();
    let grace = Instant::now() + Duration::from_secs(30);
    while clients.iter().any(|c| !c.is_finished()) && Instant::now() < grace {
        harness.tick(Duration::from_millis(500)).await;
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
    harness.drain(&db, harness.drain_within()).await?;
    harness.stop_connector(Duration::from_secs(15)).await;

    // Consume the ledger queue and the dead-letter queues, then check.
    let connection = harness.inspect_connection().await?;
    let channel = connection.create_channel().await?;
    let mut ledger = match collector {
        Some(collector) => collector.finish().await?,
        None => Vec::new(),
    };
    let topology = harness.topology();
    for (properties, body) in take_all(&channel, &topology.ledger_queue).await? {
        ledger.push(LedgerMessage::parse(&properties, &body));
    }
    let intake_dlq = message_ids(take_all(&channel, &topology.intake_dead_letter_queue).await?);
    let ledger_dlq = message_ids(take_all(&channel, &topology.ledger_dead_letter_queue).await?);
    let _ = connection.close(200, "done".into()).await;

    let journal = match journal {
        Some(collector) => collector.finish().await?,
        None => {
            let mut journal = Journal::default();
            journal.collect(&db).await?;
            journal
        }
    };
    let mut report = verify::check(Inputs {
        bank: &bank,
        db: &db,
        journal: &journal,
        ledger: &ledger,
        intake_dlq: &intake_dlq,
        ledger_dlq: &ledger_dlq,
        poison: &poison,
    })
    .await?;
    db.close().await;
    if let Some(summary) = &soak_summary {
        for problem in &summary.problems {
            report.run_failure(problem.clone());
        }
    }
    for problem in &faults.unproven {
        report.run_failure(problem.clone());
    }
    if let Some(gap) = journal.gaps() {
        report.run_failure(gap);
    }
    if harness.unexpected_exits() > 0 {
        report.notes.push(format!(
            "{} connector processes exited on their own and were restarted (see their logs)",
            harness.unexpected_exits()
        ));
    }
    Summary {
        cli,
        report: &report,
        totals,
        load_secs,
        soak: soak_summary.as_ref(),
        faults: &faults,
        proxy_connections: harness.proxy_connections(),
    }
    .print();
    Ok(report)
}

/// The message ids of dead-lettered messages, as the checks name them.
fn message_ids(messages: Vec<(BasicProperties, Vec<u8>)>) -> Vec<String> {
    messages
        .into_iter()
        .map(|(p, _)| {
            p.message_id()
                .as_ref()
                .map_or_else(|| "<no message_id>".into(), |s| s.to_string())
        })
        .collect()
}
