//! `corelink-load`: measures what the ingress sustains (accepted requests per second and
//! latency percentiles) with pre-signed Corelink requests, and compares it with publishing the
//! same bodies straight to RabbitMQ, so the cost of the HTTP edge is visible as a ratio.

mod baseline;
mod ingress;
mod prepare;
mod stats;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use josekit::jwk::Jwk;

use connector_ingress::signing::RequestSigner;

use crate::prepare::{Plan, Prepared};

/// Signed timestamps are accepted within ±300 s; past this much time since signing, the last
/// requests of a run may have been refused as stale.
const TIMESTAMP_BUDGET: Duration = Duration::from_secs(240);

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load the Corelink ingress with pre-signed requests and compare it with raw RabbitMQ publishing"
)]
struct Cli {
    /// Base URL of the ingress.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Private JWK with `kid` and `alg`, as written by `corelink-sign keygen`.
    #[arg(long)]
    key: PathBuf,
    /// `X-Client-Id` the key is registered under.
    #[arg(long, default_value = "BANK_X")]
    client_id: String,
    /// Requests in flight at once (worker tasks), for the ingress and the baseline alike.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Total requests (each sent once).
    #[arg(long, default_value_t = 5000)]
    requests: usize,
    /// Fraction (0..1) of the requests that are batches.
    #[arg(long, default_value_t = 0.0, value_parser = parse_ratio)]
    batch_ratio: f64,
    /// Orders per batch.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=1000))]
    batch_size: u16,
    /// Approximate size of one order's JSON, padded with an unknown `memo` member (0 = natural
    /// size, about 150 bytes); each order of a batch is padded alike.
    #[arg(long, default_value_t = 0)]
    body_bytes: usize,
    /// Broker for the raw baseline.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Only measure the ingress.
    #[arg(long)]
    skip_baseline: bool,
    /// mTLS: the bank's client certificate (PEM), its key, and the CA of the server's
    /// certificate; use with an https:// --url.
    #[arg(long, requires_all = ["cert_key", "cacert"])]
    cert: Option<std::path::PathBuf>,
    #[arg(long)]
    cert_key: Option<std::path::PathBuf>,
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// A new connection (and TLS handshake) for every request.
    #[arg(long)]
    no_keep_alive: bool,
}

fn parse_ratio(value: &str) -> Result<f64, String> {
    let ratio: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&ratio) {
        Ok(ratio)
    } else {
        Err("must be between 0 and 1".into())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("corelink-load: some requests failed with a transport error");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("corelink-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// The whole run; `Ok(false)` when a request got no answer.
async fn run(cli: Cli) -> anyhow::Result<bool> {
    if cli.requests == 0 {
        bail!("--requests must be at least 1");
    }
    let concurrency = cli.concurrency.max(1);
    let jwk = std::fs::read(&cli.key).with_context(|| format!("reading {}", cli.key.display()))?;
    let jwk = Jwk::from_bytes(&jwk).with_context(|| format!("parsing {}", cli.key.display()))?;
    let signer = RequestSigner::from_private_jwk(&cli.client_id, &jwk)?;
    let plan = Plan {
        requests: cli.requests,
        batch_ratio: cli.batch_ratio,
        batch_size: usize::from(cli.batch_size),
        body_bytes: cli.body_bytes,
    };

    eprintln!("signing {} requests ...", plan.requests);
    let signing_started = Instant::now();
    let prepared: Arc<[Prepared]> = prepare::prepare(&signer, &plan)?.into();
    let signing = signing_started.elapsed();
    let batches = prepared
        .iter()
        .filter(|p| p.path == prepare::BATCH_PATH)
        .count();
    let bytes: usize = prepared.iter().map(|p| p.body.len()).sum();
    let mix = if batches == 0 {
        "all units".to_owned()
    } else {
        format!(
            "{} units, {batches} batches of {}",
            prepared.len() - batches,
            plan.batch_size
        )
    };
    say(&format!(
        "corelink-load: {} requests ({mix}), mean body {} bytes, concurrency {}; signed in {:.2} s (not timed)\n",
        prepared.len(),
        bytes / prepared.len(),
        concurrency,
        signing.as_secs_f64(),
    ))?;

    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let identity_pem = match (&cli.cert, &cli.cert_key) {
        (Some(cert), Some(key)) => Some([read(cert)?, read(key)?].concat()),
        _ => None,
    };
    let connection = ingress::Connection {
        identity_pem,
        ca_pem: cli.cacert.as_deref().map(read).transpose()?,
        no_keep_alive: cli.no_keep_alive,
    };
    let ingress = ingress::run(&cli.url, &prepared, concurrency, &connection).await?;
    say(&ingress.report())?;
    if signing_started.elapsed() > TIMESTAMP_BUDGET {
        eprintln!(
            "warning: the run ended {:.0} s after signing began; requests sent more than 300 s after they were signed are refused as TIMESTAMP_OUT_OF_WINDOW (use fewer --requests)",
            signing_started.elapsed().as_secs_f64()
        );
    }
    let mut complete = ingress.merged.transport_errors == 0;

    if !cli.skip_baseline {
        let raw = baseline::run(&cli.amqp_url, prepared.clone(), concurrency).await?;
        say(&raw.report())?;
        say(&stats::comparison(&ingress, &raw))?;
        complete &= raw.merged.transport_errors == 0;
    }
    Ok(complete)
}

/// Writes a finished block to stdout at once.
fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
