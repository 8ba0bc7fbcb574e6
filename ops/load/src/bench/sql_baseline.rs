//! Part 2, the SQL baseline: the same orders written with the same statements a worker runs
//! for a new message (the workers' own: `corelink::statements`, `audit::RECORD_RECEIVED`,
//! `outbox::write_columns`), one transaction per message, at the same parallelism
//! (W × apply concurrency), but with no broker and no worker logic (decoding, state machine,
//! retries, acks). Worker throughput over this baseline shows how
//! much of the apply cost is PostgreSQL itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use connector_workers::audit::RECORD_RECEIVED;
use connector_workers::corelink::statements::{
    CLAIM_NONCE_AND_KEY, INSERT_HISTORY, INSERT_ORDERS, LOCK_ORDERS,
};
use connector_workers::outbox::{self, EventColumns};

use crate::bench::apply::{cpu_groups, per_second};
use crate::bench::env::{BenchDatabase, Env, close_pool, warm};
use crate::bench::workload::{Message, Rows, Workload};
use crate::procstat::{self, Breakdown};

/// What one baseline run measured; kept so that it prints as one table beside part 1's runs.
#[derive(Debug, Clone)]
pub struct BaselineRun {
    pub batch_size: usize,
    pub workers: usize,
    /// Transactions in flight at once.
    pub parallel: usize,
    pub transactions: usize,
    pub elapsed: Duration,
    /// Rows in `received_messages` at the end.
    pub recorded: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// CPU of this process (the sqlx client), PostgreSQL and RabbitMQ over the timed window.
    pub cpu: Breakdown,
    /// Run with `plan_cache_mode = force_custom_plan`, as the workers' connections are.
    pub custom_plans: bool,
}

impl BaselineRun {
    pub fn complete(&self) -> bool {
        self.errors == 0 && self.recorded == self.transactions as u64
    }

    pub fn transactions_per_second(&self) -> f64 {
        per_second(self.recorded as f64, self.elapsed)
    }

    pub fn orders(&self) -> u64 {
        self.recorded * self.batch_size as u64
    }

    pub fn orders_per_second(&self) -> f64 {
        per_second(
            (self.recorded * self.batch_size as u64) as f64,
            self.elapsed,
        )
    }
}

/// Fresh database, then every message of `workload` as one transaction, `workers × concurrency`
/// at once; the database is dropped whatever happened.
pub async fn run(
    env: &Env,
    workload: &Workload,
    workers: usize,
    concurrency: usize,
    custom_plans: bool,
) -> anyhow::Result<BaselineRun> {
    let database = env.create_database().await?;
    let result = measure(workload, workers, concurrency, &database, custom_plans).await;
    let dropped = env.drop_database(&database).await;
    let run = result?;
    dropped?;
    Ok(run)
}

async fn measure(
    workload: &Workload,
    workers: usize,
    concurrency: usize,
    database: &BenchDatabase,
    custom_plans: bool,
) -> anyhow::Result<BaselineRun> {
    let parallel = (workers * concurrency).max(1);
    let mut options: PgConnectOptions = database.url.parse().context("the bench database URL")?;
    if custom_plans {
        // As the workers' connections run (workers/src/db.rs): every execution planned.
        options = options.options([("plan_cache_mode", "force_custom_plan")]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(parallel).unwrap_or(u32::MAX))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .context("connecting the baseline pool")?;
    warm(&pool, parallel).await?;

    let messages: Arc<[Message]> = workload.messages.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let groups = cpu_groups();
    let cpu_before = procstat::snapshot(&groups);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(parallel);
    for _ in 0..parallel {
        let pool = pool.clone();
        let messages = messages.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            let mut first_error = None;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(message) = messages.get(index) else {
                    break;
                };
                if let Err(error) = apply(&pool, &message.rows).await {
                    errors += 1;
                    first_error.get_or_insert_with(|| error.to_string());
                }
            }
            (errors, first_error)
        }));
    }
    let mut errors = 0;
    let mut first_error = None;
    for task in tasks {
        let (count, first) = task.await.context("a baseline task failed")?;
        errors += count;
        if first_error.is_none() {
            first_error = first;
        }
    }
    let elapsed = started.elapsed();
    let cpu = Breakdown::between(&groups, &cpu_before, &procstat::snapshot(&groups));
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM received_messages")
        .fetch_one(&pool)
        .await?;
    close_pool(&pool).await;
    Ok(BaselineRun {
        batch_size: workload.batch_size,
        workers,
        parallel,
        transactions: workload.messages.len(),
        elapsed,
        recorded: recorded.max(0).unsigned_abs(),
        errors,
        first_error,
        cpu,
        custom_plans,
    })
}

/// One message's transaction: the statements a worker runs for a first-seen message.
async fn apply(pool: &PgPool, r: &Rows) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    let _claimed: (bool, bool) = sqlx::query_as(CLAIM_NONCE_AND_KEY)
        .bind(&r.client_id)
        .bind(&r.nonce)
        .bind(&r.fingerprint)
        .bind(r.message_id)
        .bind(r.request_timestamp)
        .bind(&r.idempotency_key)
        .bind(r.scope)
        .bind(r.unit_reference.as_deref())
        .bind(r.content_digest.as_deref())
        .fetch_one(&mut *tx)
        .await?;
    let _locked: Vec<(String, String, String)> = sqlx::query_as(LOCK_ORDERS)
        .bind(&r.references)
        .fetch_all(&mut *tx)
        .await?;
    sqlx::query(INSERT_ORDERS)
        .bind(&r.client_id)
        .bind(&r.references)
        .bind(&r.statuses)
        .bind(&r.bank_references)
        .bind(&r.reason_codes)
        .bind(&r.reason_messages)
        .bind(&r.processed_at)
        .execute(&mut *tx)
        .await?;
    sqlx::query(INSERT_HISTORY)
        .bind(&r.references)
        .bind(&r.statuses)
        .bind(&r.bank_references)
        .bind(&r.reason_codes)
        .bind(&r.reason_messages)
        .bind(&r.processed_at)
        .bind(&r.previous_statuses)
        .bind(&r.effects)
        .bind(r.message_id)
        .bind(&r.client_id)
        .bind(&r.idempotency_key)
        .bind(r.batch_id.as_deref())
        .bind(r.received_at)
        .execute(&mut *tx)
        .await?;
    let events = EventColumns {
        event_ids: &r.event_ids,
        event_types: &r.event_types,
        references: &r.references,
        bodies: &r.event_bodies,
        message_id: Some(r.message_id),
    };
    outbox::write_columns(&mut tx, events).await?;
    sqlx::query(RECORD_RECEIVED)
        .bind(r.message_id)
        .bind(r.kind)
        .bind(&r.client_id)
        .bind(&r.idempotency_key)
        .bind(&r.nonce)
        .bind(&r.body_sha256)
        .bind("applied")
        .bind(r.received_at)
        .bind(r.request_path.as_deref())
        .bind(&r.headers)
        .bind(r.body.as_ref())
        .bind(None::<serde_json::Value>)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
