//! `pipeline-bench`: measures the pipeline behind the ingress in one run, on throw-away
//! databases and topologies it removes afterwards:
//!
//! 1. apply throughput of W real apply workers draining a preloaded intake queue, for batches
//!    of 1, 10 and 100 orders;
//! 2. the same orders written through sqlx with the same statements and parallelism but no
//!    broker, as the ceiling PostgreSQL sets;
//! 3. end-to-end latency from an accepted callback's 200 to its ledger event, with a real
//!    ingress and real workers in process;
//! 4. end-to-end capacity of that same pipeline: closed-loop load for a fixed time, then until
//!    drained, accepted callbacks over the whole time.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;

use connector_workers::config::ApplySettings;

use connector_load::bench::apply::ApplyRun;
use connector_load::bench::env::Env;
use connector_load::bench::report::{self, MachineFacts};
use connector_load::bench::sql_baseline::BaselineRun;
use connector_load::bench::{apply, capacity, latency, pipeline, sql_baseline, workload};

/// The allocator of the deployed binaries (`connector-ingress`, `connector-workers`), so that
/// the components this bench runs in its process are measured as they run in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line options: which parts to run and how hard; the defaults are the measurement
/// the README reports.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Measure apply throughput (against a plain SQL baseline), end-to-end latency and end-to-end capacity of the connector pipeline"
)]
struct Cli {
    /// Skip part 1 (apply throughput).
    #[arg(long)]
    skip_apply: bool,
    /// Skip part 2 (SQL baseline).
    #[arg(long)]
    skip_baseline: bool,
    /// Part 2 with the workers' session setting `plan_cache_mode = force_custom_plan` (every
    /// statement planned with its arguments), to show what that setting costs PostgreSQL.
    #[arg(long)]
    baseline_custom_plans: bool,
    /// Skip part 3 (end-to-end latency).
    #[arg(long)]
    skip_latency: bool,
    /// Part 3: callbacks per second.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=20_000))]
    rate: u32,
    /// Part 3: seconds of load (at most 240: callbacks are signed up front and their
    /// timestamps must still be within the ingress's 300 s window when sent).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=240))]
    seconds: u64,
    /// Skip part 4 (end-to-end capacity).
    #[arg(long)]
    skip_capacity: bool,
    /// Part 4: clients in the closed loop.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    concurrency: u64,
    /// Part 4: seconds of closed-loop load before the drain (at most 240, as for part 3).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=240))]
    capacity_seconds: u64,
    /// Part 4: callbacks signed up front; the load ends early (and says so) if the clients use
    /// them all. Each holds about 2 KiB until sent.
    #[arg(long, default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=500_000))]
    capacity_requests: u64,
    /// Parts 1 and 2: orders per run (messages = orders / batch size, at most 5000). The
    /// default makes each run last a few seconds on a 2-core machine.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=5_000_000))]
    orders: u64,
    /// Parts 1 and 2: orders per message, comma-separated (1 = unit callbacks).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10, 100], value_parser = clap::value_parser!(u64).range(1..=1000))]
    batch_sizes: Vec<u64>,
    /// Parts 1 and 2: numbers of apply workers, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4], value_parser = clap::value_parser!(u64).range(1..=64))]
    workers: Vec<u64>,
    /// Settled orders each bench database starts with (then ANALYZE), so that the planner
    /// sees a production-sized `orders` table; 0 runs on empty tables, where the apply's lock
    /// query can fall into sequential scans (see the README).
    #[arg(long, default_value_t = 100_000)]
    seed_orders: u64,
    /// The broker.
    #[arg(
        long,
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10"
    )]
    amqp_url: String,
    /// The PostgreSQL maintenance database; bench databases are created beside it.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let env = match Env::connect(&cli.amqp_url, &cli.database_url, cli.seed_orders).await {
        Ok(env) => env,
        Err(error) => {
            eprintln!("pipeline-bench: {error:#}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::select! {
        result = run(&cli, &env) => result,
        _ = tokio::signal::ctrl_c() => {
            env.stop.cancel();
            Err(anyhow::anyhow!("interrupted"))
        }
    };
    // Whatever a failed or interrupted run left behind.
    env.stop.cancel();
    let removed = env.sweep().await;
    if !removed.is_empty() {
        eprintln!("pipeline-bench: cleaned up {}", removed.join(", "));
    }
    env.close().await;
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!(
                "pipeline-bench: some runs were incomplete (see errors, quarantines, dead letters above)"
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("pipeline-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Every part asked for; `Ok(false)` when a run did not account for all its messages.
async fn run(cli: &Cli, env: &Env) -> anyhow::Result<bool> {
    let facts = MachineFacts::gather(env.server_facts().await?, env.seed_orders()).await;
    say(&facts.report())?;
    let mut complete = true;

    let settings = ApplySettings::default();
    if !(cli.skip_apply && cli.skip_baseline) {
        let mut applied: Vec<ApplyRun> = Vec::new();
        let mut baselines: Vec<BaselineRun> = Vec::new();
        for &batch_size in &cli.batch_sizes {
            let batch_size = usize::try_from(batch_size)?;
            let count = workload::message_count(usize::try_from(cli.orders)?, batch_size);
            let work = workload::build(batch_size, count)?;
            for &workers in &cli.workers {
                let workers = usize::try_from(workers)?;
                if !cli.skip_apply {
                    eprintln!(
                        "pipeline-bench: apply: {count} messages of {batch_size} order(s), {} orders, {workers} worker(s) ...",
                        work.orders()
                    );
                    let run = apply::run(env, &work, workers, &settings).await?;
                    complete &= run.complete();
                    applied.push(run);
                }
                if !cli.skip_baseline {
                    eprintln!(
                        "pipeline-bench: baseline: {count} transactions x {batch_size} orders, {} at once ...",
                        workers * settings.concurrency
                    );
                    let run = sql_baseline::run(
                        env,
                        &work,
                        workers,
                        settings.concurrency,
                        cli.baseline_custom_plans,
                    )
                    .await?;
                    complete &= run.complete();
                    baselines.push(run);
                }
            }
        }
        if !cli.skip_apply {
            say(&report::apply_table(
                &applied,
                settings.concurrency,
                settings.prefetch,
            ))?;
        }
        if !cli.skip_baseline {
            say(&report::baseline_table(
                &baselines,
                &applied,
                settings.concurrency,
            ))?;
        }
    }

    if !cli.skip_latency {
        let run = latency::run(
            env,
            latency::Plan {
                rate: cli.rate,
                seconds: cli.seconds,
            },
        )
        .await?;
        complete &= run.complete();
        say(&report::latency_report(&run, pipeline::WARMUP_REQUESTS))?;
    }

    if !cli.skip_capacity {
        let run = capacity::run(
            env,
            capacity::Plan {
                concurrency: usize::try_from(cli.concurrency)?,
                seconds: cli.capacity_seconds,
                requests: usize::try_from(cli.capacity_requests)?,
            },
        )
        .await?;
        complete &= run.complete();
        say(&report::capacity_report(&run, pipeline::WARMUP_REQUESTS))?;
    }
    Ok(complete)
}

/// Writes a finished block to stdout at once.
fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}
