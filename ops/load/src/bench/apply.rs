//! Part 1, apply throughput: a preloaded intake queue drained by W real apply workers
//! (`ApplyWorker::run`, each with its own broker connection and database pool) into a fresh
//! database, timed until every message is recorded in `received_messages`. Preloading first
//! means neither the ingress nor the publishing is timed: only consume → apply → ack.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation};
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use connector_schema::Topology;
use connector_workers::apply::ApplyWorker;
use connector_workers::config::{ApplySettings, BrokerSettings, DatabaseSettings};

use crate::bench::env::{BenchDatabase, Env, close_pool, warm};
use crate::bench::workload::{Message, Workload};
use crate::procstat::{self, Breakdown, Group, Selector};

/// How often the bench counts `received_messages`.
const POLL: Duration = Duration::from_millis(20);
/// A run that makes no progress for this long is stopped and reported incomplete.
const STALL: Duration = Duration::from_secs(30);
/// Publishes in flight (awaiting their confirm) while preloading.
const PRELOAD_WINDOW: usize = 256;
/// How long stopped workers get to settle their in-flight messages.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// What one (batch size, W) run measured; kept until every run is done so that part 1 prints
/// as one table and part 2 can be compared with it.
#[derive(Debug, Clone)]
pub struct ApplyRun {
    pub batch_size: usize,
    pub workers: usize,
    pub messages: usize,
    /// From starting the workers until the last message was seen recorded.
    pub elapsed: Duration,
    /// Rows in `received_messages` at the end.
    pub applied: u64,
    pub quarantined: u64,
    pub dead_lettered: u32,
    /// Still on the intake queue at the end (only after a stall).
    pub left_on_queue: u32,
    pub preload: Duration,
    /// CPU of this process (the apply workers), PostgreSQL and RabbitMQ over the timed window.
    pub cpu: Breakdown,
}

impl ApplyRun {
    pub fn complete(&self) -> bool {
        self.applied == self.messages as u64 && self.quarantined == 0 && self.dead_lettered == 0
    }

    pub fn messages_per_second(&self) -> f64 {
        per_second(self.applied as f64, self.elapsed)
    }

    pub fn orders_per_second(&self) -> f64 {
        per_second((self.applied * self.batch_size as u64) as f64, self.elapsed)
    }

    pub fn orders(&self) -> u64 {
        self.applied * self.batch_size as u64
    }
}

/// The processes whose CPU the apply and baseline runs account for.
pub fn cpu_groups() -> [Group; 3] {
    [
        Group::new(BENCH_PROCESS, Selector::Current),
        Group::new(POSTGRES, Selector::Comm("postgres".into())),
        Group::new(RABBITMQ, Selector::Listening("beam.smp".into(), 5672)),
    ]
}

/// Labels of [`cpu_groups`].
pub const BENCH_PROCESS: &str = "pipeline-bench (workers)";
pub const POSTGRES: &str = "PostgreSQL";
pub const RABBITMQ: &str = "RabbitMQ";

/// CPU microseconds per order of the group `label`, formatted.
pub fn micros_per_order(cpu: &Breakdown, label: &str, orders: u64) -> String {
    match cpu.seconds(label) {
        Some(seconds) if orders > 0 => format!("{:.1}", seconds * 1e6 / orders as f64),
        _ => "-".into(),
    }
}

/// Fresh database and topology, preload, then `workers` apply workers until all is applied;
/// the database and topology are removed whatever happened.
pub async fn run(
    env: &Env,
    workload: &Workload,
    workers: usize,
    settings: &ApplySettings,
) -> anyhow::Result<ApplyRun> {
    let database = env.create_database().await?;
    let topology = env.new_topology().topology();
    let result = measure(env, workload, workers, settings, &database, &topology).await;
    let dropped = env.drop_database(&database).await;
    let deleted = env.delete_topology(&topology).await;
    let run = result?;
    dropped?;
    deleted?;
    Ok(run)
}

async fn measure(
    env: &Env,
    workload: &Workload,
    workers: usize,
    settings: &ApplySettings,
    database: &BenchDatabase,
    topology: &Topology,
) -> anyhow::Result<ApplyRun> {
    let expected = workload.messages.len();
    let channel = env.channel().await?;
    topology
        .declare_intake(&channel)
        .await
        .context("declaring the intake topology")?;
    let preload_started = Instant::now();
    preload(&channel, topology, &workload.messages).await?;
    let preload = preload_started.elapsed();
    channel.close(200, "preloaded".into()).await.ok();
    let depth = env.queue_depth(&topology.intake_queue).await?.unwrap_or(0);
    ensure!(
        depth as usize == expected,
        "preloaded {expected} messages but the intake queue holds {depth}"
    );

    let monitor = database
        .connection()
        .await
        .context("connecting the monitor")?;
    let concurrency = settings.concurrency.max(1);
    let defaults = DatabaseSettings::default();
    let max_connections = defaults
        .max_connections
        .max(u32::try_from(concurrency).unwrap_or(u32::MAX));
    let mut pools = Vec::with_capacity(workers);
    for _ in 0..workers {
        let pool = connector_workers::db::pool(&Env::database_settings(database, max_connections))?;
        warm(&pool, concurrency).await?;
        pools.push(pool);
    }
    let broker = BrokerSettings {
        url: env.amqp_url.clone(),
        ..BrokerSettings::default()
    };

    let stop = env.stop.child_token();
    let groups = cpu_groups();
    let cpu_before = procstat::snapshot(&groups);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for pool in &pools {
        let worker = ApplyWorker::new(
            pool.clone(),
            topology.clone(),
            broker.clone(),
            settings.clone(),
            crate::bench::env::seal_keys(),
            stop.clone(),
        );
        tasks.spawn(worker.run());
    }
    let settled = wait_until_settled(&monitor, expected as u64, started, env).await;
    let cpu = Breakdown::between(&groups, &cpu_before, &procstat::snapshot(&groups));
    stop.cancel();
    if tokio::time::timeout(STOP_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        eprintln!(
            "pipeline-bench: apply workers still busy {STOP_GRACE:?} after stop; aborting them"
        );
        tasks.abort_all();
    }
    for pool in &pools {
        close_pool(pool).await;
    }
    let (applied, quarantined, elapsed) = settled?;
    // Counted again after the workers stopped: the final word on this run.
    let (applied_final, quarantined_final) = counts(&monitor).await?;
    close_pool(&monitor).await;
    let dead_lettered = env
        .queue_depth(&topology.intake_dead_letter_queue)
        .await?
        .unwrap_or(0);
    let left_on_queue = env.queue_depth(&topology.intake_queue).await?.unwrap_or(0);
    Ok(ApplyRun {
        batch_size: workload.batch_size,
        workers,
        messages: expected,
        elapsed,
        applied: applied.max(applied_final),
        quarantined: quarantined.max(quarantined_final),
        dead_lettered,
        left_on_queue,
        preload,
        cpu,
    })
}

/// Publishes every message persistent and mandatory on a confirm channel, as the ingress does,
/// keeping [`PRELOAD_WINDOW`] confirms outstanding.
async fn preload(
    channel: &Channel,
    topology: &Topology,
    messages: &[Message],
) -> anyhow::Result<()> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .context("enabling publisher confirms")?;
    for window in messages.chunks(PRELOAD_WINDOW) {
        let mut confirms = Vec::with_capacity(window.len());
        for message in window {
            let envelope = &message.envelope;
            confirms.push(
                channel
                    .basic_publish(
                        topology.intake_exchange.as_str().into(),
                        envelope.kind.routing_key().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..BasicPublishOptions::default()
                        },
                        &envelope.body,
                        crate::bench::env::seal_keys().sealed_properties(envelope),
                    )
                    .await
                    .context("publishing a preload message")?,
            );
        }
        for confirm in confirms {
            match confirm.await.context("awaiting a preload confirm")? {
                Confirmation::Ack(None) => {}
                Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => {
                    bail!("a preload message was returned as unroutable")
                }
                Confirmation::Nack(None) => bail!("the broker nacked a preload message"),
                Confirmation::NotRequested => bail!("no confirm for a preload message"),
            }
        }
    }
    Ok(())
}

/// Polls until `expected` messages are recorded (applied or quarantined), or no progress for
/// [`STALL`]. Returns (applied, quarantined, elapsed since `started` when last counted).
async fn wait_until_settled(
    monitor: &PgPool,
    expected: u64,
    started: Instant,
    env: &Env,
) -> anyhow::Result<(u64, u64, Duration)> {
    let mut ticker = tokio::time::interval(POLL);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = (0, 0);
    let mut progress_at = Instant::now();
    loop {
        tokio::select! {
            () = env.stop.cancelled() => bail!("interrupted"),
            _ = ticker.tick() => {}
        }
        let (applied, quarantined) = counts(monitor).await?;
        let now = Instant::now();
        if applied + quarantined >= expected {
            return Ok((applied, quarantined, now - started));
        }
        if (applied, quarantined) != last {
            last = (applied, quarantined);
            progress_at = now;
        } else if now - progress_at > STALL {
            eprintln!(
                "pipeline-bench: no progress for {STALL:?} ({applied} applied, {quarantined} quarantined of {expected}); stopping this run"
            );
            return Ok((applied, quarantined, progress_at - started));
        }
    }
}

/// (`received_messages`, `quarantined_messages`) row counts.
async fn counts(monitor: &PgPool) -> anyhow::Result<(u64, u64)> {
    let (applied, quarantined): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM received_messages), (SELECT count(*) FROM quarantined_messages)",
    )
    .fetch_one(monitor)
    .await
    .context("counting applied messages")?;
    Ok((
        applied.max(0).unsigned_abs(),
        quarantined.max(0).unsigned_abs(),
    ))
}

pub fn per_second(count: f64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { count / secs } else { 0.0 }
}
