//! Part 3, end-to-end latency: a real ingress and real workers (apply + relay) in this process,
//! on a fresh database and topology, fed signed unit callbacks over HTTP at a fixed rate (open
//! loop: a slow answer does not slow the sender). For each accepted callback the latency is the
//! time from the client receiving its 200 to the ledger event of that order arriving on the
//! ledger queue: what a bank's "accepted" costs until the ledger knows.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sqlx::postgres::PgPoolOptions;
use time::OffsetDateTime;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{RequestSigner, generate_key_pair, random_nonce};
use connector_ingress::config::{ClientSettings, KeySettings, Settings as IngressSettings};
use connector_ingress::startup::Application;
use connector_schema::Topology;
use connector_schema::envelope::rfc3339;
use connector_schema::events::LedgerEvent;
use connector_schema::topology::TopologySettings;
use connector_workers::config::Settings as WorkerSettings;
use connector_workers::outbox;
use connector_workers::startup::{Role, Workers};

use crate::bench::env::{BenchDatabase, Env, close_pool};
use crate::bench::workload::{CLIENT_ID, UNIT_PATH, order};

/// Largest latency tracked exactly (one hour in µs); larger values saturate.
const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;
/// A request without an answer after this long is a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last answer, events still missing are waited for this long without progress.
const DRAIN: Duration = Duration::from_secs(30);
/// Startup (broker connection, readiness) must finish within this.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Callbacks sent (at the same rate) before the measured ones and not counted: they open the
/// HTTP, AMQP and database connections.
pub const WARMUP_REQUESTS: usize = 50;

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
    /// Send → 200 (the ingress's own latency), µs.
    pub http_us: Histogram<u64>,
    pub quarantined: i64,
    pub unpublished: i64,
    pub intake_dead_lettered: u32,
    pub ledger_dead_lettered: u32,
}

impl LatencyRun {
    pub fn complete(&self) -> bool {
        self.matched == self.accepted
            && self.accepted == self.sent
            && self.duplicates == 0
            && self.unexpected == 0
            && self.quarantined == 0
            && self.intake_dead_lettered == 0
            && self.ledger_dead_lettered == 0
    }
}

/// One callback signed before the clock starts, so that signing never competes with the
/// timed path.
#[derive(Debug)]
struct Callback {
    reference: String,
    request: reqwest::Request,
}

/// The answer to one callback: the instant of its 200 is where its end-to-end latency starts.
#[derive(Debug)]
struct Answer {
    reference: String,
    sent: Instant,
    answered: Instant,
    /// `None` for a 200, else the outcome label.
    refused: Option<String>,
}

/// Ledger events as they arrive, (reference, arrival), shared between the consumer task that
/// records them and the phase that matches them.
type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// Fresh database and topology, ingress and workers in process, the measured callbacks, then
/// everything stopped and removed whatever happened.
pub async fn run(env: &Env, plan: Plan) -> anyhow::Result<LatencyRun> {
    if plan.rate == 0 || plan.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let database = env.create_database().await?;
    let topology = env.new_topology();
    let result = measure(env, plan, &database, &topology).await;
    let dropped = env.drop_database(&database).await;
    let deleted = env.delete_topology(&topology.topology()).await;
    let run = result?;
    dropped?;
    deleted?;
    Ok(run)
}

async fn measure(
    env: &Env,
    plan: Plan,
    database: &BenchDatabase,
    topology_settings: &TopologySettings,
) -> anyhow::Result<LatencyRun> {
    let topology = topology_settings.topology();
    let (private, public) = generate_key_pair(JwsAlgorithm::Es256, "bench-es256")?;
    let signer = RequestSigner::from_private_jwk(CLIENT_ID, &private)?;

    // The ledger queue exists (and is consumed) before the first event can be relayed.
    let stop_consumer = CancellationToken::new();
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::new()));
    let consumer = consume_ledger(env, &topology, arrivals.clone(), stop_consumer.clone()).await?;

    let stop = env.stop.child_token();
    let ingress = start_ingress(env, topology_settings, &public, stop.clone()).await;
    let workers = match &ingress {
        Ok(_) => start_workers(env, database, topology_settings, stop.clone()).await,
        Err(_) => Err(anyhow::anyhow!("not started")),
    };
    let result = match (&ingress, &workers) {
        (Ok((base_url, _)), Ok(_)) => drive(env, plan, &signer, base_url, &arrivals).await,
        (Err(error), _) | (_, Err(error)) => {
            Err(anyhow::anyhow!("starting the pipeline: {error:#}"))
        }
    };

    // What the pipeline left behind, looked at before stopping it.
    let leftovers = leftovers(env, database, &topology).await;
    stop.cancel();
    for task in [ingress.ok().map(|(_, t)| t), workers.ok()]
        .into_iter()
        .flatten()
    {
        match tokio::time::timeout(READY_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("pipeline-bench: stopping: {error:#}"),
            Ok(Err(error)) => eprintln!("pipeline-bench: stopping: {error}"),
            Err(_) => {
                eprintln!("pipeline-bench: a component did not stop within {READY_TIMEOUT:?}")
            }
        }
    }
    stop_consumer.cancel();
    let _ = consumer.await;

    let mut run = result?;
    let (quarantined, unpublished, intake_dead_lettered, ledger_dead_lettered) = leftovers?;
    run.quarantined = quarantined;
    run.unpublished = unpublished;
    run.intake_dead_lettered = intake_dead_lettered;
    run.ledger_dead_lettered = ledger_dead_lettered;
    Ok(run)
}

/// Warm-up, then the measured phase, then waiting for the events and matching them.
async fn drive(
    env: &Env,
    plan: Plan,
    signer: &RequestSigner,
    base_url: &str,
    arrivals: &Arrivals,
) -> anyhow::Result<LatencyRun> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;
    let count = usize::try_from(u64::from(plan.rate) * plan.seconds).unwrap_or(usize::MAX);
    let run_tag = Uuid::new_v4().simple().to_string();
    let run_tag = run_tag.get(..12).unwrap_or(&run_tag);
    // Signed up front so signing never competes with the timed path.
    let warmup = sign_all(
        &client,
        signer,
        base_url,
        &format!("E2E-WARM-{run_tag}"),
        WARMUP_REQUESTS,
    )?;
    let measured = sign_all(&client, signer, base_url, &format!("E2E-{run_tag}"), count)?;
    let warm_refs: HashSet<String> = warmup.iter().map(|c| c.reference.clone()).collect();

    let (warm_answers, _) = send_at_rate(&client, warmup, plan.rate, env).await?;
    let warm_accepted: Vec<&Answer> = warm_answers
        .iter()
        .filter(|a| a.refused.is_none())
        .collect();
    if warm_accepted.len() != warm_answers.len() {
        let first = warm_answers
            .iter()
            .find_map(|a| a.refused.clone())
            .unwrap_or_default();
        bail!("the ingress refused warm-up callbacks (first: {first})");
    }
    wait_for_events(arrivals, &warm_refs, env).await?;

    eprintln!(
        "pipeline-bench: latency: {count} callbacks at {} /s ({} s) ...",
        plan.rate, plan.seconds
    );
    let (answers, send_elapsed) = send_at_rate(&client, measured, plan.rate, env).await?;
    let accepted: HashSet<String> = answers
        .iter()
        .filter(|a| a.refused.is_none())
        .map(|a| a.reference.clone())
        .collect();
    wait_for_events(arrivals, &accepted, env).await?;

    let arrived: Vec<(String, Instant)> = arrivals
        .lock()
        .map_err(|_| anyhow::anyhow!("the ledger consumer panicked"))?
        .clone();
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

    let mut end_to_end_us = Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, 3)?;
    let mut http_us = Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_US, 3)?;
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
        http_us,
        quarantined: 0,
        unpublished: 0,
        intake_dead_lettered: 0,
        ledger_dead_lettered: 0,
    })
}

/// `count` unit SUCCESS callbacks with references `<prefix>-<n>`, signed now, fresh nonces.
fn sign_all(
    client: &reqwest::Client,
    signer: &RequestSigner,
    base_url: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Callback>> {
    let now = OffsetDateTime::now_utc();
    let processed_at = rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let mut callbacks = Vec::with_capacity(count);
    for n in 0..count {
        let reference = format!("{prefix}-{n:06}");
        let body = serde_json::to_vec(&order(&reference, &processed_at))?;
        let signed = signer.sign(
            UNIT_PATH,
            &body,
            &reference,
            OffsetDateTime::now_utc(),
            &random_nonce(),
        )?;
        let mut headers = HeaderMap::with_capacity(6);
        for (name, value) in signed.pairs() {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        let request = client
            .post(format!("{base_url}{UNIT_PATH}"))
            .headers(headers)
            .body(body)
            .build()?;
        callbacks.push(Callback { reference, request });
    }
    Ok(callbacks)
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
        tasks.spawn(async move {
            let sent = Instant::now();
            let response = client.execute(callback.request).await;
            let answered = Instant::now();
            let refused = match response {
                Ok(response) if response.status() == reqwest::StatusCode::OK => {
                    let _ = response.bytes().await;
                    None
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let code = response
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "(no error.code)".into());
                    Some(format!("{status} {code}"))
                }
                Err(error) => Some(format!("transport: {error}")),
            };
            Answer {
                reference: callback.reference,
                sent,
                answered,
                refused,
            }
        });
    }
    let send_elapsed = started.elapsed();
    let mut answers = Vec::with_capacity(tasks.len());
    while let Some(answer) = tasks.join_next().await {
        answers.push(answer.context("a sending task failed")?);
    }
    Ok((answers, send_elapsed))
}

/// Waits until an event has arrived for every reference in `expected`, or none arrived for
/// [`DRAIN`].
async fn wait_for_events(
    arrivals: &Arrivals,
    expected: &HashSet<String>,
    env: &Env,
) -> anyhow::Result<()> {
    let mut seen = HashSet::with_capacity(expected.len());
    let mut scanned = 0;
    let mut progress_at = Instant::now();
    loop {
        {
            let arrived = arrivals
                .lock()
                .map_err(|_| anyhow::anyhow!("the ledger consumer panicked"))?;
            for (reference, _) in arrived.iter().skip(scanned) {
                if expected.contains(reference) && seen.insert(reference.clone()) {
                    progress_at = Instant::now();
                }
            }
            scanned = arrived.len();
        }
        if seen.len() == expected.len() {
            return Ok(());
        }
        if progress_at.elapsed() > DRAIN {
            eprintln!(
                "pipeline-bench: {} of {} ledger events still missing after {DRAIN:?} without progress",
                expected.len() - seen.len(),
                expected.len()
            );
            return Ok(());
        }
        tokio::select! {
            () = env.stop.cancelled() => bail!("interrupted"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Consumes the ledger queue (auto-ack), recording each event's arrival by reference.
async fn consume_ledger(
    env: &Env,
    topology: &Topology,
    arrivals: Arrivals,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let channel = env.channel().await?;
    topology
        .declare_ledger(&channel)
        .await
        .context("declaring the ledger topology")?;
    channel
        .basic_qos(1000, BasicQosOptions::default())
        .await
        .context("basic.qos")?;
    let consumer = channel
        .basic_consume(
            topology.ledger_queue.as_str().into(),
            "pipeline-bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .context("consuming the ledger queue")?;
    Ok(tokio::spawn(async move {
        let deliveries = consumer.take_until(stop.cancelled_owned());
        tokio::pin!(deliveries);
        while let Some(delivery) = deliveries.next().await {
            let at = Instant::now();
            let Ok(delivery) = delivery else { break };
            let reference = serde_json::from_slice::<LedgerEvent>(&delivery.data)
                .map(|event| event.reference)
                .unwrap_or_else(|_| "(unreadable event)".into());
            if let Ok(mut arrived) = arrivals.lock() {
                arrived.push((reference, at));
            }
        }
        channel.close(200, "done".into()).await.ok();
    }))
}

/// The ingress on ephemeral loopback ports, the bench bank registered with a fresh key.
/// Returns its base URL and its task.
async fn start_ingress(
    env: &Env,
    topology: &TopologySettings,
    public_key: &josekit::jwk::Jwk,
    stop: CancellationToken,
) -> anyhow::Result<(String, JoinHandle<anyhow::Result<()>>)> {
    let key_file =
        std::env::temp_dir().join(format!("pipeline-bench-{}.public.jwk", Uuid::new_v4()));
    std::fs::write(&key_file, public_key.to_string()).context("writing the bench public key")?;
    let mut settings = IngressSettings::default();
    settings.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.http.ops_listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.broker.url = env.amqp_url.clone();
    settings.topology = topology.clone();
    // The bench measures the pipeline, not the per-bank rate limit.
    settings.corelink.rate_limit_per_second = 0;
    settings.seal = crate::bench::env::seal_settings();
    settings.corelink.clients = vec![ClientSettings {
        id: CLIENT_ID.into(),
        keys: vec![KeySettings {
            kid: "bench-es256".into(),
            alg: "ES256".into(),
            jwk_file: Some(key_file.clone().into()),
            jwks_file: None,
            pem_file: None,
        }],
        certificate_sha256: Vec::new(),
    }];
    // The keys are read while building; the file is not needed afterwards.
    let built = Application::build(settings).await;
    let _ = std::fs::remove_file(&key_file);
    let application = built.context("building the ingress")?;
    let base_url = format!("http://{}", application.public_addr());
    let publisher = application.publisher();
    let task = tokio::spawn(application.run_until_stopped(stop.cancelled_owned()));
    if tokio::time::timeout(READY_TIMEOUT, publisher.wait_until_connected())
        .await
        .is_err()
    {
        bail!("the ingress did not connect to the broker within {READY_TIMEOUT:?}");
    }
    Ok((base_url, task))
}

/// The apply and relay roles on `database`, waited for until `/readyz` says ready.
async fn start_workers(
    env: &Env,
    database: &BenchDatabase,
    topology: &TopologySettings,
    stop: CancellationToken,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let mut settings = WorkerSettings {
        mode: connector_workers::config::Mode::Development,
        ..WorkerSettings::default()
    };
    settings.database.url = database.url.clone();
    settings.broker.url = env.amqp_url.clone();
    settings.topology = topology.clone();
    settings.ops.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.seal = crate::bench::env::seal_settings();
    settings.validate()?;
    let workers = Workers::build(settings, vec![Role::Apply, Role::Relay]).await?;
    let readyz = format!("http://{}/readyz", workers.ops_addr());
    let task = tokio::spawn(workers.run_until_stopped(stop.cancelled_owned()));
    let client = reqwest::Client::new();
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(response) = client.get(&readyz).send().await
            && response.status().is_success()
        {
            return Ok(task);
        }
        if Instant::now() > deadline {
            bail!("the workers were not ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (quarantined messages, unpublished outbox rows, intake dead letters, ledger dead letters).
async fn leftovers(
    env: &Env,
    database: &BenchDatabase,
    topology: &Topology,
) -> anyhow::Result<(i64, i64, u32, u32)> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&database.url)
        .await?;
    // The relay marks rows published just after the broker confirmed them, so the last
    // events can arrive a moment before their rows say so.
    let deadline = Instant::now() + Duration::from_secs(5);
    let unpublished = loop {
        let unpublished = outbox::backlog(&pool).await?.unpublished;
        if unpublished == 0 || Instant::now() > deadline {
            break unpublished;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantined_messages")
        .fetch_one(&pool)
        .await?;
    close_pool(&pool).await;
    let intake = env
        .queue_depth(&topology.intake_dead_letter_queue)
        .await?
        .unwrap_or(0);
    let ledger = env
        .queue_depth(&topology.ledger_dead_letter_queue)
        .await?
        .unwrap_or(0);
    Ok((quarantined, unpublished, intake, ledger))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}
