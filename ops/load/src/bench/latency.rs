//! Part 3, end-to-end latency: a real ingress and real workers (apply + relay) in this process,
//! on a fresh database and topology, fed signed unit callbacks over HTTP at a fixed rate (open
//! loop: a slow answer does not slow the sender). For each accepted callback the latency is the
//! time from the client receiving its 200 to the ledger event of that order arriving on the
//! ledger queue: what a bank's "accepted" costs until the ledger knows. That time is split where
//! the callback's group transaction began (its outbox row's `created_at`): before, the wait in
//! the intake queue and for a group; after, the group's transaction, the relay's wake-up,
//! claim and publish, and the delivery.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::bench::env::Env;
use crate::bench::pipeline::{
    self, Answer, Callback, Leftovers, Running, WARMUP_REQUESTS, micros, sign_all, wait_for_events,
};

/// How hard and how long to push: the command line's `--rate` and `--seconds`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rate: u32,
    pub seconds: u64,
}

/// What the measured phase saw, including what the pipeline left behind, so that a figure is
/// never printed without knowing whether every callback made it through.
#[derive(Debug)]
pub struct LatencyRun {
    pub rate: u32,
    pub sent: usize,
    pub accepted: usize,
    /// Answers other than 200, by `"<status> <error.code>"`, and transport errors.
    pub refused: BTreeMap<String, u64>,
    pub send_elapsed: Duration,
    /// Accepted callbacks whose ledger event arrived.
    pub matched: usize,
    /// Events that arrived before the client had read the 200 (latency counted as 0).
    pub before_answer: usize,
    /// Events that arrived more than once, or for no callback of this run.
    pub duplicates: usize,
    pub unexpected: usize,
    /// 200 → ledger event, µs.
    pub end_to_end_us: Histogram<u64>,
    /// 200 → the callback's group transaction began, µs (0 when it began first).
    pub to_group_us: Histogram<u64>,
    /// The group transaction began → ledger event, µs.
    pub group_to_event_us: Histogram<u64>,
    /// Send → 200 (the ingress's own latency), µs.
    pub http_us: Histogram<u64>,
    pub leftovers: Leftovers,
}

impl LatencyRun {
    pub fn complete(&self) -> bool {
        self.matched == self.accepted
            && self.accepted == self.sent
            && self.duplicates == 0
            && self.unexpected == 0
            && self.leftovers.quarantined == 0
            && self.leftovers.intake_dead_lettered == 0
            && self.leftovers.ledger_dead_lettered == 0
    }
}

/// Fresh database and topology, ingress and workers in process, the measured callbacks, then
/// everything stopped and removed whatever happened.
pub async fn run(env: &Env, plan: Plan) -> anyhow::Result<LatencyRun> {
    if plan.rate == 0 || plan.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let (mut run, leftovers) =
        pipeline::with_pipeline(env, async |running| drive(running, plan).await).await?;
    run.leftovers = leftovers;
    Ok(run)
}

/// Warm-up, then the measured phase, then waiting for the events and matching them.
async fn drive(running: &Running<'_>, plan: Plan) -> anyhow::Result<LatencyRun> {
    let env = running.env;
    let client = &running.client;
    let count = usize::try_from(u64::from(plan.rate) * plan.seconds).unwrap_or(usize::MAX);
    let run_tag = pipeline::run_tag();
    // Signed up front so signing never competes with the timed path.
    let warmup = sign_all(running, &format!("E2E-WARM-{run_tag}"), WARMUP_REQUESTS)?;
    let measured = sign_all(running, &format!("E2E-{run_tag}"), count)?;
    let warm_refs: HashSet<String> = warmup.iter().map(|c| c.reference.clone()).collect();
    let clock = Clock::now();

    let (warm_answers, _) = send_at_rate(client, warmup, plan.rate, env).await?;
    pipeline::check_warm_up(running, &warm_answers, &warm_refs).await?;

    eprintln!(
        "pipeline-bench: latency: {count} callbacks at {} /s ({} s) ...",
        plan.rate, plan.seconds
    );
    let (answers, send_elapsed) = send_at_rate(client, measured, plan.rate, env).await?;
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|a| a.refused.is_none())
        .map(|a| a.reference.clone())
        .collect();
    wait_for_events(&running.arrivals, &accepted, env).await?;
    let group_began = group_transactions_began(running, &format!("E2E-{run_tag}-")).await?;

    let arrived = running.arrived()?;
    let mut first_arrival: HashMap<&str, Instant> = HashMap::with_capacity(arrived.len());
    let mut duplicates = 0;
    let mut unexpected = 0;
    for (reference, at) in &arrived {
        if !accepted.contains(reference) && !warm_refs.contains(reference) {
            unexpected += 1;
        } else if first_arrival.insert(reference, *at).is_some() {
            duplicates += 1;
        }
    }

    let mut end_to_end_us = pipeline::latency_histogram()?;
    let mut to_group_us = pipeline::latency_histogram()?;
    let mut group_to_event_us = pipeline::latency_histogram()?;
    let mut http_us = pipeline::latency_histogram()?;
    let mut refused = BTreeMap::new();
    let mut matched = 0;
    let mut before_answer = 0;
    for answer in &answers {
        http_us.saturating_record(micros(answer.answered - answer.sent));
        if let Some(outcome) = &answer.refused {
            *refused.entry(outcome.clone()).or_default() += 1;
            continue;
        }
        if let Some(at) = first_arrival.get(answer.reference.as_str()) {
            matched += 1;
            if *at < answer.answered {
                before_answer += 1;
            }
            end_to_end_us.saturating_record(micros(at.saturating_duration_since(answer.answered)));
            if let Some(began) = group_began.get(answer.reference.as_str()) {
                let began = clock.instant_of(*began);
                to_group_us
                    .saturating_record(micros(began.saturating_duration_since(answer.answered)));
                group_to_event_us.saturating_record(micros(at.saturating_duration_since(began)));
            }
        }
    }
    Ok(LatencyRun {
        rate: plan.rate,
        sent: answers.len(),
        accepted: accepted.len(),
        refused,
        send_elapsed,
        matched,
        before_answer,
        duplicates,
        unexpected,
        end_to_end_us,
        to_group_us,
        group_to_event_us,
        http_us,
        leftovers: Leftovers::default(),
    })
}

/// When each measured callback's group transaction began (its outbox row's `created_at`, the
/// database's clock), by reference, in seconds since the epoch.
async fn group_transactions_began(
    running: &Running<'_>,
    prefix: &str,
) -> anyhow::Result<HashMap<String, f64>> {
    let pool = running
        .database
        .connection()
        .await
        .context("connecting to the bench database")?;
    let rows: Vec<(String, f64)> = sqlx::query_as(
        "SELECT reference, extract(epoch FROM created_at)::float8 FROM ledger_outbox
         WHERE starts_with(reference, $1)",
    )
    .bind(prefix)
    .fetch_all(&pool)
    .await
    .context("reading when the outbox rows were written")?;
    pool.close().await;
    Ok(rows.into_iter().collect())
}

/// This process's monotonic clock against the wall clock the database stamps rows with (one
/// machine: the same clock, read twice).
struct Clock {
    instant: Instant,
    since_epoch: f64,
}

impl Clock {
    fn now() -> Self {
        Self {
            instant: Instant::now(),
            since_epoch: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        }
    }

    /// The instant at `since_epoch` seconds (the clock's own instant when before it).
    fn instant_of(&self, since_epoch: f64) -> Instant {
        let after = (since_epoch - self.since_epoch).max(0.0);
        self.instant + Duration::from_secs_f64(after)
    }
}

/// Sends one callback every 1/`rate` s (catching up after a late tick, so the average rate
/// holds), each on its own task; returns every answer and how long sending took.
async fn send_at_rate(
    client: &reqwest::Client,
    callbacks: Vec<Callback>,
    rate: u32,
    env: &Env,
) -> anyhow::Result<(Vec<Answer>, Duration)> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut tasks = JoinSet::new();
    let started = Instant::now();
    for callback in callbacks {
        tokio::select! {
            () = env.stop.cancelled() => bail!("interrupted"),
            _ = ticker.tick() => {}
        }
        let client = client.clone();
        tasks.spawn(async move { pipeline::send(&client, callback).await });
    }
    let send_elapsed = started.elapsed();
    let mut answers = Vec::with_capacity(tasks.len());
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.context("a sending task failed")?);
    }
    Ok((answers, send_elapsed))
}
