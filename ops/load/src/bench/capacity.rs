//! Part 4, end-to-end capacity: the same pipeline as part 3 (a real ingress and real workers,
//! apply + relay, in this process), fed signed unit callbacks by `concurrency` clients in a
//! closed loop (each sends its next callback when the previous one is answered) for a fixed
//! time, then left to drain until every accepted callback's ledger event has arrived. What the
//! whole pipeline sustains is the accepted callbacks over the load and the drain together:
//! the ingress alone accepts faster than the workers apply, and a backlog is not capacity.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;

use crate::bench::apply::{POSTGRES, RABBITMQ};
use crate::bench::env::Env;
use crate::bench::pipeline::{
    self, Answer, Callback, INGRESS_THREADS, Leftovers, Running, WARMUP_REQUESTS, WORKERS_THREADS,
    micros, sign_all, wait_for_events,
};
use crate::procstat::{self, Breakdown, Group, Selector};

/// The name of the thread lapin runs for each AMQP connection (its I/O loop), whichever
/// runtime opened it: the ingress's, the workers' and the ledger consumer's share this row.
const AMQP_IO_THREADS: &str = "lapin-io-loop";

/// The CPU breakdown's groups: the ingress's and the workers' runtimes, the AMQP connections'
/// I/O threads and the bench's own threads (its HTTP clients and the ledger consumer) apart,
/// then PostgreSQL and RabbitMQ.
fn cpu_groups() -> [Group; 6] {
    [
        Group::new("ingress", Selector::Threads(INGRESS_THREADS)),
        Group::new(
            "workers (apply + relay)",
            Selector::Threads(WORKERS_THREADS),
        ),
        Group::new(
            "AMQP I/O threads (ingress, workers, ledger consumer)",
            Selector::Threads(AMQP_IO_THREADS),
        ),
        Group::new(
            "bench clients and ledger consumer",
            Selector::OtherThreads(&[INGRESS_THREADS, WORKERS_THREADS, AMQP_IO_THREADS]),
        ),
        Group::new(POSTGRES, Selector::Comm("postgres".into())),
        Group::new(RABBITMQ, Selector::Listening("beam.smp".into(), 5672)),
    ]
}

/// The command line's `--concurrency`, `--capacity-seconds` and `--capacity-requests`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub concurrency: usize,
    pub seconds: u64,
    /// Callbacks signed up front: the load stops early if the clients use them all.
    pub requests: usize,
}

/// What the run saw, including what the pipeline left behind, so that a capacity is never
/// printed without knowing whether every callback made it through.
#[derive(Debug)]
pub struct CapacityRun {
    pub plan: Plan,
    pub sent: usize,
    pub accepted: usize,
    /// Answers other than 200, by `"<status> <error.code>"`, and transport errors.
    pub refused: BTreeMap<String, u64>,
    /// From the first send to the last answer.
    pub load: Duration,
    /// From the last answer to the last ledger event.
    pub drain: Duration,
    /// The clients used every signed callback before the time was up.
    pub exhausted: bool,
    /// Accepted callbacks whose ledger event arrived.
    pub matched: usize,
    pub duplicates: usize,
    pub unexpected: usize,
    /// Send → 200 under this load, µs.
    pub http_us: Histogram<u64>,
    pub leftovers: Leftovers,
    /// Where the machine's CPU went from the first send to the last ledger event.
    pub cpu: Option<Breakdown>,
}

impl CapacityRun {
    /// Accepted callbacks per second over the load and the drain: the sustained end-to-end
    /// capacity.
    pub fn capacity(&self) -> f64 {
        per_second(self.matched, self.load + self.drain)
    }

    /// Accepted callbacks per second while the clients were sending (the ingress's rate with
    /// everything else running beside it).
    pub fn accepted_per_second(&self) -> f64 {
        per_second(self.accepted, self.load)
    }

    pub fn complete(&self) -> bool {
        self.matched == self.accepted
            && self.accepted == self.sent
            && self.duplicates == 0
            && self.unexpected == 0
            && self.leftovers.quarantined == 0
            && self.leftovers.unpublished == 0
            && self.leftovers.intake_depth == 0
            && self.leftovers.intake_dead_lettered == 0
            && self.leftovers.ledger_dead_lettered == 0
    }
}

fn per_second(count: usize, over: Duration) -> f64 {
    let seconds = over.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Fresh database and topology, ingress and workers in process, the closed loop and the
/// drain, then everything stopped and removed whatever happened.
pub async fn run(env: &Env, plan: Plan) -> anyhow::Result<CapacityRun> {
    if plan.concurrency == 0 || plan.seconds == 0 || plan.requests == 0 {
        bail!("--concurrency, --capacity-seconds and --capacity-requests must be at least 1");
    }
    let (mut run, leftovers) =
        pipeline::with_pipeline(env, async |running| drive(running, plan).await).await?;
    run.leftovers = leftovers;
    Ok(run)
}

/// Warm-up, then the closed loop, then waiting for the events and matching them.
async fn drive(running: &Running<'_>, plan: Plan) -> anyhow::Result<CapacityRun> {
    let env = running.env;
    let run_tag = pipeline::run_tag();
    eprintln!(
        "pipeline-bench: capacity: signing {} callbacks ...",
        plan.requests
    );
    // Signed up front so signing never competes with the timed path.
    let warmup = sign_all(running, &format!("CAP-WARM-{run_tag}"), WARMUP_REQUESTS)?;
    let measured = sign_all(running, &format!("CAP-{run_tag}"), plan.requests)?;
    let warm_refs: HashSet<String> = warmup.iter().map(|c| c.reference.clone()).collect();
    let (warm_answers, _) = closed_loop(running, warmup, plan.concurrency, None).await?;
    pipeline::check_warm_up(running, &warm_answers, &warm_refs).await?;

    eprintln!(
        "pipeline-bench: capacity: {} clients, closed loop for {} s, then until drained ...",
        plan.concurrency, plan.seconds
    );
    let groups = cpu_groups();
    let cpu_before = procstat::snapshot(&groups);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(plan.seconds);
    let (answers, exhausted) =
        closed_loop(running, measured, plan.concurrency, Some(deadline)).await?;
    let load_end = Instant::now();
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|a| a.refused.is_none())
        .map(|a| a.reference.clone())
        .collect();
    let last_event = wait_for_events(&running.arrivals, &accepted, env).await?;
    // Up to one poll (20 ms) after the last event: nothing but idling happens in it.
    let cpu = Breakdown::between(&groups, &cpu_before, &procstat::snapshot(&groups));

    let mut first_arrival: HashMap<String, Instant> = HashMap::with_capacity(accepted.len());
    let mut duplicates = 0;
    let mut unexpected = 0;
    for (reference, at) in running.arrived()? {
        if warm_refs.contains(&reference) {
            continue;
        }
        if !accepted.contains(&reference) {
            unexpected += 1;
        } else if first_arrival.insert(reference, at).is_some() {
            duplicates += 1;
        }
    }
    let mut http_us = pipeline::latency_histogram()?;
    let mut refused = BTreeMap::new();
    for answer in &answers {
        http_us.saturating_record(micros(answer.answered - answer.sent));
        if let Some(outcome) = &answer.refused {
            *refused.entry(outcome.clone()).or_default() += 1;
        }
    }
    Ok(CapacityRun {
        plan,
        sent: answers.len(),
        accepted: accepted.len(),
        refused,
        load: load_end - started,
        drain: last_event.map_or(Duration::ZERO, |at| at.saturating_duration_since(load_end)),
        exhausted,
        matched: first_arrival.len(),
        duplicates,
        unexpected,
        http_us,
        leftovers: Leftovers::default(),
        cpu: Some(cpu),
    })
}

/// `concurrency` clients, each sending the next unsent callback as soon as its previous one
/// is answered, until the callbacks run out or (when given) the deadline passes. Returns
/// every answer and whether the callbacks ran out.
async fn closed_loop(
    running: &Running<'_>,
    callbacks: Vec<Callback>,
    concurrency: usize,
    deadline: Option<Instant>,
) -> anyhow::Result<(Vec<Answer>, bool)> {
    let total = callbacks.len();
    let queue = Arc::new(Mutex::new(VecDeque::from(callbacks)));
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let client = running.client.clone();
        let stop = running.env.stop.clone();
        clients.spawn(async move {
            let mut answers = Vec::new();
            loop {
                if stop.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                let Some(callback) = next else { break };
                answers.push(pipeline::send(&client, callback).await);
            }
            answers
        });
    }
    let mut answers = Vec::with_capacity(total);
    while let Some(sent) = clients.join_next().await {
        answers.extend(sent.context("a client task failed")?);
    }
    if running.env.stop.is_cancelled() {
        bail!("interrupted");
    }
    let exhausted = queue.lock().map(|q| q.is_empty()).unwrap_or(false);
    Ok((answers, exhausted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(accepted: usize, matched: usize, load_s: u64, drain_s: u64) -> CapacityRun {
        CapacityRun {
            plan: Plan {
                concurrency: 64,
                seconds: load_s,
                requests: accepted,
            },
            sent: accepted,
            accepted,
            refused: BTreeMap::new(),
            load: Duration::from_secs(load_s),
            drain: Duration::from_secs(drain_s),
            exhausted: false,
            matched,
            duplicates: 0,
            unexpected: 0,
            http_us: Histogram::new(3).expect("histogram"),
            leftovers: Leftovers::default(),
            cpu: None,
        }
    }

    #[test]
    fn capacity_counts_the_drain_and_only_what_came_through() {
        let drained = run(30_000, 30_000, 20, 10);
        assert!((drained.capacity() - 1_000.0).abs() < 1e-9);
        assert!((drained.accepted_per_second() - 1_500.0).abs() < 1e-9);
        assert!(drained.complete());

        // Events that never arrived are not capacity, and the run says it is incomplete.
        let lost = run(30_000, 27_000, 20, 10);
        assert!((lost.capacity() - 900.0).abs() < 1e-9);
        assert!(!lost.complete());
    }

    #[test]
    fn a_run_that_left_work_behind_is_incomplete() {
        let mut left = run(1_000, 1_000, 1, 0);
        left.leftovers.intake_depth = 1;
        assert!(!left.complete());
        let mut unpublished = run(1_000, 1_000, 1, 0);
        unpublished.leftovers.unpublished = 1;
        assert!(!unpublished.complete());
        assert_eq!(run(0, 0, 0, 0).capacity(), 0.0);
    }
}
