//! `poller-bench`: how many tracked items one Paysafe poller settles per second against the
//! Paysafe simulator, against a baseline measured in the same run.
//!
//! - **Baseline**: the same number of authenticated GETs to the simulator, at the poller's
//!   concurrency, with nothing else: what HTTP and the simulator allow.
//! - **Poller**: `N` items inserted as due into a throw-away database; one poller (then two,
//!   side by side) runs `run_once` until none is left polling. Every item answers COMPLETED at
//!   its first poll, so each is one claim, one GET and one apply with its outbox event. The
//!   poller's rate limit is lifted so its own work is what is measured.
//! - **Group commit**: one poller recording one answer per transaction
//!   (`paysafe.record_group_size` = 1, as before group commit), then up to
//!   `--record-group-size` answers per transaction.
//!
//! The database is created as `bench_<uuid>` and dropped afterwards.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use futures_util::StreamExt as _;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use connector_schema::paysafe::TrackedKind;
use connector_workers::Step;
use connector_workers::config::{DatabaseSettings, PaysafeSettings};
use connector_workers::poller::Poller;
use paysafe_sim::{ItemScript, SimConfig, SimHandle, Step as SimStep};

/// The allocator of the deployed binaries (`connector-ingress`, `connector-workers`), so that
/// the components this bench runs in its process are measured as they run in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Measure Paysafe poller throughput against the simulator"
)]
struct Cli {
    /// Tracked items per run.
    #[arg(long, default_value_t = 3_000)]
    items: usize,
    /// GETs in flight per poller (`paysafe.concurrency`), and for the baseline.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Items claimed per round (`paysafe.claim_batch`).
    #[arg(long, default_value_t = 32)]
    claim_batch: i64,
    /// Answers recorded per transaction at most (`paysafe.record_group_size`).
    #[arg(long, default_value_t = 64)]
    record_group_size: usize,
    /// The PostgreSQL maintenance database the bench creates its database from.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_admin_url: String,
}

const USER: &str = "bench";
const PASSWORD: &str = "bench-password";

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(report) => {
            use std::io::Write as _;
            match std::io::stdout().write_all(report.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(error) => {
            eprintln!("poller-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(cli: &Cli) -> anyhow::Result<String> {
    let sim = paysafe_sim::spawn(SimConfig::new(USER, PASSWORD)).await?;
    let ids: Vec<String> = (0..cli.items).map(|i| format!("bench-{i:06}")).collect();
    for id in &ids {
        sim.set_script(ItemScript::new(
            TrackedKind::Payment,
            id,
            &format!("order-{id}"),
            546,
            "CAD",
            vec![SimStep::new("COMPLETED", None)],
        ))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }

    let baseline = baseline(&sim, &ids, cli.concurrency).await?;
    let admin = PgPool::connect(&cli.database_admin_url)
        .await
        .context("connecting to PostgreSQL")?;
    let mut report = format!(
        "poller-bench: {} items, concurrency {} per poller, claim batch {}, record group size {}\n\n\
         | Run | items/s | ratio to baseline |\n|---|---|---|\n\
         | baseline: GETs to the simulator, nothing else | {:.0} | 1.00 |\n",
        cli.items, cli.concurrency, cli.claim_batch, cli.record_group_size, baseline
    );
    // One answer per transaction first: the figure group commit is measured against.
    for (pollers, group_size) in [
        (1, 1),
        (1, cli.record_group_size),
        (2, cli.record_group_size),
    ] {
        let rate = poll_run(cli, &admin, &sim, &ids, pollers, group_size).await?;
        report.push_str(&format!(
            "| {pollers} poller(s), up to {group_size} answer(s) per transaction: claim, GET, apply with outbox event | {rate:.0} | {:.2} |\n",
            rate / baseline
        ));
    }
    admin.close().await;
    sim.shutdown().await?;
    Ok(report)
}

/// Authenticated GETs for every id at `concurrency`: items per second.
async fn baseline(sim: &SimHandle, ids: &[String], concurrency: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let base = sim.base_url();
    let started = Instant::now();
    let failures = futures_util::stream::iter(ids)
        .map(|id| {
            let request = http
                .get(format!("{base}{}", TrackedKind::Payment.api_path(id)))
                .basic_auth(USER, Some(PASSWORD))
                .send();
            async move {
                match request.await {
                    Ok(response) if response.status().is_success() => {
                        response.bytes().await.is_err()
                    }
                    _ => true,
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    anyhow::ensure!(failures == 0, "{failures} baseline GETs failed");
    Ok(ids.len() as f64 / started.elapsed().as_secs_f64())
}

/// `pollers` pollers, recording up to `record_group_size` answers per transaction, settle every item of a fresh database: items per second.
async fn poll_run(
    cli: &Cli,
    admin: &PgPool,
    sim: &SimHandle,
    ids: &[String],
    pollers: usize,
    record_group_size: usize,
) -> anyhow::Result<f64> {
    let name = format!("bench_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin)
        .await?;
    let result = async {
        let (server, _) = cli
            .database_admin_url
            .rsplit_once('/')
            .context("the database URL has no database name")?;
        let pool = connector_workers::db::pool(&DatabaseSettings {
            url: format!("{server}/{name}"),
            max_connections: 4 * pollers as u32 + 2,
            acquire_timeout_ms: 10_000,
        })?;
        connector_workers::db::migrate(&pool, &Default::default()).await?;
        sqlx::query(
            "INSERT INTO paysafe_items (id, kind, merchant_ref_num, amount, currency_code, status,
                                        tracking, next_poll_at, deadline_at)
             SELECT id, 'payment', 'order-' || id, 546, 'CAD', 'PROCESSING', 'polling', now(),
                    now() + interval '2 days'
             FROM UNNEST($1::text[]) AS u(id)",
        )
        .bind(ids)
        .execute(&pool)
        .await?;
        sqlx::query("ANALYZE paysafe_items").execute(&pool).await?;
        let settings = PaysafeSettings {
            base_url: sim.base_url(),
            api_username: USER.into(),
            api_password: PASSWORD.into(),
            rate_limit_per_second: 1_000_000,
            concurrency: cli.concurrency,
            claim_batch: cli.claim_batch,
            record_group_size,
            ..PaysafeSettings::default()
        };
        let started = Instant::now();
        let runs = (0..pollers).map(|_| {
            let poller = Poller::new(pool.clone(), settings.clone(), CancellationToken::new());
            async move {
                let poller = poller?;
                while poller.run_once().await? == Step::Processed {}
                anyhow::Ok(())
            }
        });
        for result in futures_util::future::join_all(runs).await {
            result?;
        }
        let elapsed = started.elapsed();
        let (settled, events): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM paysafe_items WHERE tracking = 'final'),
                    (SELECT count(*) FROM ledger_outbox)",
        )
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        anyhow::ensure!(
            settled as usize == ids.len() && events as usize == ids.len(),
            "{settled} of {} items settled, {events} events",
            ids.len()
        );
        Ok(ids.len() as f64 / elapsed.max(Duration::from_micros(1)).as_secs_f64())
    }
    .await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(admin)
        .await?;
    result
}
