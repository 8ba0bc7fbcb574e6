//! Drives the ingress over HTTP with the prepared requests: `concurrency` tasks on one
//! keep-alive client, each taking the next request from a shared index.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::prepare::Prepared;
use crate::stats::{ACCEPTED, RunStats, WorkerStats};

/// A request gets no answer within this long: counted as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A fully built HTTP request (URL parsed, headers encoded) waiting to be sent exactly once.
#[derive(Debug)]
struct Slot {
    request: Mutex<Option<reqwest::Request>>,
    orders: u64,
}

/// How the tool connects: mTLS material, and whether connections are reused.
#[derive(Debug, Default)]
pub struct Connection {
    /// The bank's certificate and key (PEM, concatenated), presented at each TLS handshake.
    pub identity_pem: Option<Vec<u8>>,
    /// The CA that issued the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// One connection (and TLS handshake) per request, to measure what keep-alive saves.
    pub no_keep_alive: bool,
}

/// Sends every prepared request once and measures each from send to the end of its answer.
pub async fn run(
    base_url: &str,
    prepared: &[Prepared],
    concurrency: usize,
    connection: &Connection,
) -> anyhow::Result<RunStats> {
    let concurrency = concurrency.max(1);
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .pool_max_idle_per_host(if connection.no_keep_alive {
            0
        } else {
            concurrency
        })
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT);
    if let Some(pem) = &connection.identity_pem {
        builder =
            builder.identity(reqwest::Identity::from_pem(pem).context("the client certificate")?);
    }
    if let Some(pem) = &connection.ca_pem {
        builder = builder.add_root_certificate(
            reqwest::Certificate::from_pem(pem).context("the CA certificate")?,
        );
    }
    let client = builder.build().context("building the HTTP client")?;
    let base_url = base_url.trim_end_matches('/');

    // Everything but the network happens here, before the clock starts.
    let mut slots = Vec::with_capacity(prepared.len());
    for p in prepared {
        let mut headers = HeaderMap::with_capacity(6);
        for (name, value) in p.headers.pairs() {
            headers.insert(
                HeaderName::from_bytes(name.as_bytes())
                    .with_context(|| format!("header name {name}"))?,
                HeaderValue::from_str(value).with_context(|| format!("header {name}"))?,
            );
        }
        let request = client
            .post(format!("{base_url}{}", p.path))
            .headers(headers)
            .body(p.body.clone())
            .build()
            .context("building a request")?;
        slots.push(Slot {
            request: Mutex::new(Some(request)),
            orders: p.orders,
        });
    }
    let slots = Arc::new(slots);
    let next = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let client = client.clone();
        let slots = slots.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = WorkerStats::new()?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(slot) = slots.get(index) else { break };
                let request = slot
                    .request
                    .lock()
                    .map_err(|_| anyhow::anyhow!("a worker panicked"))?
                    .take()
                    .context("request taken twice")?;
                let sent = Instant::now();
                match send(&client, request).await {
                    Ok(outcome) => stats.record(sent.elapsed(), outcome, slot.orders),
                    Err(error) => stats.record_transport_error(
                        sent.elapsed(),
                        transport_kind(&error),
                        with_sources(&error),
                    ),
                }
            }
            anyhow::Ok(stats)
        }));
    }
    let mut workers = Vec::with_capacity(concurrency);
    for task in tasks {
        workers.push(task.await.context("an HTTP worker task failed")??);
    }
    let elapsed = started.elapsed();
    RunStats::from_workers(
        "ingress: HTTP -> ingress -> broker confirm",
        concurrency,
        elapsed,
        workers,
    )
}

/// Sends one request and reads the whole answer; the outcome is `200 ACCEPTED` or
/// `"<status> <error.code>"`.
async fn send(client: &reqwest::Client, request: reqwest::Request) -> reqwest::Result<String> {
    let response = client.execute(request).await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status == reqwest::StatusCode::OK {
        return Ok(ACCEPTED.to_owned());
    }
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(no error.code)".to_owned());
    Ok(format!("{} {code}", status.as_u16()))
}

fn transport_kind(error: &reqwest::Error) -> &'static str {
    if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "connect"
    } else if error.is_body() || error.is_decode() {
        "body"
    } else {
        "request"
    }
}

/// The error and its causes, `: `-separated (reqwest's own message omits the cause).
fn with_sources(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
