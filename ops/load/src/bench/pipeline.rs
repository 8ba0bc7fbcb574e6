//! The pipeline the end-to-end parts (3, latency, and 4, capacity) run against: a real ingress
//! and real workers (apply + relay) in this process, on a fresh database and topology, a
//! consumer recording when each ledger event arrives, and the signed unit callbacks both parts
//! send. Kept here so that the two parts measure exactly the same pipeline.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use time::OffsetDateTime;
use tokio::task::JoinHandle;
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

/// A request without an answer after this long is a transport error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// After the last answer, events still missing are waited for this long without progress.
pub const DRAIN: Duration = Duration::from_secs(30);
/// Callbacks sent before the measured ones and not counted: they open the HTTP, AMQP and
/// database connections.
pub const WARMUP_REQUESTS: usize = 50;
/// Startup (broker connection, readiness) must finish within this.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Thread names of the ingress's and the workers' runtimes: each runs on a runtime of its own,
/// as in production, where they are separate processes, so that the CPU each uses can be read
/// per thread (`procstat::Selector::Threads`) while the bench's clients run on the main one.
pub const INGRESS_THREADS: &str = "ingress";
pub const WORKERS_THREADS: &str = "workers";

/// A multi-threaded runtime for one component, shut down in the background when dropped: a
/// runtime may not be dropped (blocking) inside the bench's own async context.
struct ComponentRuntime(Option<tokio::runtime::Runtime>);

impl ComponentRuntime {
    fn new(thread_name: &'static str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name(thread_name)
            .enable_all()
            .build()
            .with_context(|| format!("building the {thread_name} runtime"))?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `future` on this runtime, so that everything it spawns and every socket it opens
    /// belongs to it.
    fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.0 {
            Some(runtime) => runtime.spawn(future),
            None => unreachable!("taken only when dropped"),
        }
    }
}

impl Drop for ComponentRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// One callback signed before the clock starts, so that signing never competes with the
/// timed path.
#[derive(Debug)]
pub struct Callback {
    pub reference: String,
    pub request: reqwest::Request,
}

/// The answer to one callback: the instant of its 200 is where its end-to-end latency starts.
#[derive(Debug)]
pub struct Answer {
    pub reference: String,
    pub sent: Instant,
    pub answered: Instant,
    /// `None` for a 200, else the outcome label (`"<status> <error.code>"` or transport).
    pub refused: Option<String>,
}

/// Ledger events as they arrive, (reference, arrival), shared between the consumer task that
/// records them and the part that matches them.
pub type Arrivals = Arc<Mutex<Vec<(String, Instant)>>>;

/// What the pipeline left behind, looked at before stopping it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Leftovers {
    pub quarantined: i64,
    pub unpublished: i64,
    /// Messages still on the intake queue.
    pub intake_depth: u32,
    pub intake_dead_lettered: u32,
    pub ledger_dead_lettered: u32,
}

/// A started pipeline, as the part driving it sees it.
#[derive(Debug)]
pub struct Running<'a> {
    pub env: &'a Env,
    /// The run's own database, for reading what the workers recorded.
    pub database: &'a BenchDatabase,
    pub signer: RequestSigner,
    pub base_url: String,
    pub arrivals: Arrivals,
    pub client: reqwest::Client,
}

impl Running<'_> {
    /// A copy of every arrival so far.
    pub fn arrived(&self) -> anyhow::Result<Vec<(String, Instant)>> {
        Ok(self
            .arrivals
            .lock()
            .map_err(|_| anyhow::anyhow!("the ledger consumer panicked"))?
            .clone())
    }
}

/// Fresh database and topology, ingress and workers in process, `drive` against them, then
/// everything stopped and removed whatever happened.
pub async fn with_pipeline<T>(
    env: &Env,
    drive: impl AsyncFnOnce(&Running<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Leftovers)> {
    let database = env.create_database().await?;
    let topology = env.new_topology();
    let result = in_pipeline(env, &database, &topology, drive).await;
    let dropped = env.drop_database(&database).await;
    let deleted = env.delete_topology(&topology.topology()).await;
    let run = result?;
    dropped?;
    deleted?;
    Ok(run)
}

async fn in_pipeline<T>(
    env: &Env,
    database: &BenchDatabase,
    topology_settings: &TopologySettings,
    drive: impl AsyncFnOnce(&Running<'_>) -> anyhow::Result<T>,
) -> anyhow::Result<(T, Leftovers)> {
    let topology = topology_settings.topology();
    let (private, public) = generate_key_pair(JwsAlgorithm::Es256, "bench-es256")?;
    let signer = RequestSigner::from_private_jwk(CLIENT_ID, &private)?;
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("building the HTTP client")?;

    // The ledger queue exists (and is consumed) before the first event can be relayed.
    let stop_consumer = CancellationToken::new();
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::new()));
    let consumer = consume_ledger(env, &topology, arrivals.clone(), stop_consumer.clone()).await?;

    let stop = env.stop.child_token();
    let ingress_runtime = ComponentRuntime::new(INGRESS_THREADS)?;
    let workers_runtime = ComponentRuntime::new(WORKERS_THREADS)?;
    let ingress = start_ingress(
        &ingress_runtime,
        env,
        topology_settings,
        &public,
        stop.clone(),
    )
    .await;
    let workers = match &ingress {
        Ok(_) => {
            start_workers(
                &workers_runtime,
                env,
                database,
                topology_settings,
                stop.clone(),
            )
            .await
        }
        Err(_) => Err(anyhow::anyhow!("not started")),
    };
    let result = match (&ingress, &workers) {
        (Ok((base_url, _)), Ok(_)) => {
            let running = Running {
                env,
                database,
                signer,
                base_url: base_url.clone(),
                arrivals,
                client,
            };
            drive(&running).await
        }
        (Err(error), _) | (_, Err(error)) => {
            Err(anyhow::anyhow!("starting the pipeline: {error:#}"))
        }
    };

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
    Ok((result?, leftovers?))
}

/// `count` unit SUCCESS callbacks with references `<prefix>-<n>`, signed now, fresh nonces.
pub fn sign_all(
    running: &Running<'_>,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Vec<Callback>> {
    let now = OffsetDateTime::now_utc();
    let processed_at = rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let mut callbacks = Vec::with_capacity(count);
    for n in 0..count {
        let reference = format!("{prefix}-{n:06}");
        let body = serde_json::to_vec(&order(&reference, &processed_at))?;
        let signed = running.signer.sign(
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
        let request = running
            .client
            .post(format!("{}{UNIT_PATH}", running.base_url))
            .headers(headers)
            .body(body)
            .build()?;
        callbacks.push(Callback { reference, request });
    }
    Ok(callbacks)
}

/// A short tag that keeps one run's references apart from another's.
pub fn run_tag() -> String {
    let tag = Uuid::new_v4().simple().to_string();
    tag.get(..12).unwrap_or(&tag).to_owned()
}

/// Sends one callback and reads its answer.
pub async fn send(client: &reqwest::Client, callback: Callback) -> Answer {
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
        // reqwest's message names only the URL; the cause (refused, reset, timed out) is below.
        Err(error) => {
            let cause = std::iter::successors(std::error::Error::source(&error), |e| e.source())
                .last()
                .map_or(String::new(), |cause| format!(": {cause}"));
            Some(format!("transport: {error}{cause}"))
        }
    };
    Answer {
        reference: callback.reference,
        sent,
        answered,
        refused,
    }
}

/// Fails unless every warm-up callback was accepted; then waits for their ledger events, so
/// the measured phase starts on open connections and an idle pipeline.
pub async fn check_warm_up(
    running: &Running<'_>,
    answers: &[Answer],
    references: &HashSet<String>,
) -> anyhow::Result<()> {
    if let Some(first) = answers.iter().find_map(|a| a.refused.clone()) {
        bail!("the ingress refused warm-up callbacks (first: {first})");
    }
    wait_for_events(&running.arrivals, references, running.env).await?;
    Ok(())
}

/// Waits until an event has arrived for every reference in `expected`, or none arrived for
/// [`DRAIN`]. Returns the arrival of the last expected event seen.
pub async fn wait_for_events(
    arrivals: &Arrivals,
    expected: &HashSet<String>,
    env: &Env,
) -> anyhow::Result<Option<Instant>> {
    let mut seen = HashSet::with_capacity(expected.len());
    let mut scanned = 0;
    let mut progress_at = Instant::now();
    let mut last = None;
    loop {
        {
            let arrived = arrivals
                .lock()
                .map_err(|_| anyhow::anyhow!("the ledger consumer panicked"))?;
            for (reference, at) in arrived.iter().skip(scanned) {
                if expected.contains(reference) && seen.insert(reference.clone()) {
                    progress_at = Instant::now();
                    last = Some(last.map_or(*at, |l: Instant| l.max(*at)));
                }
            }
            scanned = arrived.len();
        }
        if seen.len() == expected.len() {
            return Ok(last);
        }
        if progress_at.elapsed() > DRAIN {
            eprintln!(
                "pipeline-bench: {} of {} ledger events still missing after {DRAIN:?} without progress",
                expected.len() - seen.len(),
                expected.len()
            );
            return Ok(last);
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
    runtime: &ComponentRuntime,
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
    // The bench measures the pipeline, not the per-bank rate limit; and its clients, all on
    // 127.0.0.1, stand for many banks: the open loop of part 3 may hold more connections than
    // one bank's address is allowed while the machine stalls, and a refused one is lost.
    settings.corelink.rate_limit_per_second = 0;
    settings.http.max_connections_per_address = settings.http.max_connections;
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
    let built = runtime.spawn(Application::build(settings)).await;
    let _ = std::fs::remove_file(&key_file);
    let application = built
        .context("the ingress's runtime")?
        .context("building the ingress")?;
    let base_url = format!("http://{}", application.public_addr());
    let publisher = application.publisher();
    let task = runtime.spawn(application.run_until_stopped(stop.cancelled_owned()));
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
    runtime: &ComponentRuntime,
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
    let workers = runtime
        .spawn(Workers::build(settings, vec![Role::Apply, Role::Relay]))
        .await
        .context("the workers' runtime")??;
    let readyz = format!("http://{}/readyz", workers.ops_addr());
    let task = runtime.spawn(workers.run_until_stopped(stop.cancelled_owned()));
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

/// What the pipeline left behind: quarantines, unpublished outbox rows, the intake queue and
/// both dead-letter queues.
async fn leftovers(
    env: &Env,
    database: &BenchDatabase,
    topology: &Topology,
) -> anyhow::Result<Leftovers> {
    let pool = database.connection().await?;
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
    let depth = async |queue: &str| -> anyhow::Result<u32> {
        Ok(env.queue_depth(queue).await?.unwrap_or(0))
    };
    Ok(Leftovers {
        quarantined,
        unpublished,
        intake_depth: depth(&topology.intake_queue).await?,
        intake_dead_lettered: depth(&topology.intake_dead_letter_queue).await?,
        ledger_dead_lettered: depth(&topology.ledger_dead_letter_queue).await?,
    })
}

pub fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Largest latency tracked exactly (one hour in µs); larger values saturate.
const HIGHEST_TRACKABLE_US: u64 = 3_600_000_000;

/// A histogram of latencies in µs, as every pipeline step records them.
pub fn latency_histogram() -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    Ok(hdrhistogram::Histogram::new_with_bounds(
        1,
        HIGHEST_TRACKABLE_US,
        3,
    )?)
}
