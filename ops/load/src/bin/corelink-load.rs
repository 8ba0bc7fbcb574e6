//! `corelink-load`: measures what the ingress sustains (accepted requests per second and
//! latency percentiles) with pre-signed Corelink requests, and compares it with publishing the
//! same bodies straight to RabbitMQ, so the cost of the HTTP edge is visible as a ratio.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use josekit::jwk::Jwk;

use connector_ingress::auth::signing::RequestSigner;

use connector_load::prepare::{Plan, Prepared};
use connector_load::{broker_baseline, ingress, prepare, procstat, stats};

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
    /// mTLS: the bank's client certificate (PEM); use with an https:// --url.
    #[arg(long, requires_all = ["cert_key", "cacert"])]
    cert: Option<std::path::PathBuf>,
    /// mTLS: the private key of --cert (PEM).
    #[arg(long)]
    cert_key: Option<std::path::PathBuf>,
    /// mTLS: the CA that issued the ingress's server certificate (PEM).
    #[arg(long)]
    cacert: Option<std::path::PathBuf>,
    /// A new connection (and TLS handshake) for every request.
    #[arg(long)]
    no_keep_alive: bool,
    /// The ingress's pid, for its CPU time and resident memory; by default the one process
    /// named `connector-ingress` on this machine, if there is exactly one.
    #[arg(long)]
    ingress_pid: Option<u32>,
    /// The broker's process, for its CPU time: the process with this name listening on port
    /// 5672 (else every process with this name).
    #[arg(long, default_value = "beam.smp")]
    broker_process: String,
    /// Do not run `openssl speed ecdsap256` (the reference for the ingress's CPU per request).
    #[arg(long)]
    skip_openssl_speed: bool,
    /// Empty this queue after the ingress run (and after each soak round), outside the timed
    /// window: the dev ingress publishes into the real intake queue, which nothing consumes.
    #[arg(long)]
    purge: Option<String>,
    /// Soak test: repeat rounds of --requests (each signed just before it is sent) for this
    /// many seconds, printing the ingress's resident memory after each round; no baseline.
    #[arg(long)]
    duration: Option<u64>,
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

    // Measured first, on a machine the load does not occupy yet.
    let verify = if cli.skip_openssl_speed {
        None
    } else {
        eprintln!("openssl speed -seconds 2 ecdsap256 ...");
        match procstat::openssl_ecdsa_p256_verify(2) {
            Ok(verify) => Some(verify),
            Err(error) => {
                eprintln!("warning: {error:#}");
                None
            }
        }
    };
    if let Some((per_second, micros)) = verify {
        say(&format!(
            "openssl speed ecdsap256 (this machine, now): {per_second:.0} verify/s = {micros:.1} µs per ES256 verification\n"
        ))?;
    }
    let ingress_pid = ingress_pid(cli.ingress_pid);

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

    if let Some(duration) = cli.duration {
        return soak(
            &cli,
            &signer,
            &plan,
            &connection,
            ingress_pid,
            Duration::from_secs(duration),
        )
        .await;
    }

    let (prepared, signing_started) = sign(&signer, &plan, concurrency)?;
    let groups = [
        procstat::Group::new(
            "ingress",
            procstat::Selector::Pids(ingress_pid.into_iter().collect()),
        ),
        procstat::Group::new(
            "RabbitMQ",
            procstat::Selector::Listening(cli.broker_process.clone(), 5672),
        ),
        procstat::Group::new("corelink-load (this tool)", procstat::Selector::Current),
    ];
    let memory_before = ingress_pid.and_then(procstat::memory_kib);
    let before = procstat::snapshot(&groups);
    let ingress = ingress::run(&cli.url, &prepared, concurrency, &connection).await?;
    let after = procstat::snapshot(&groups);
    let memory_after = ingress_pid.and_then(procstat::memory_kib);
    let ingress_cpu = procstat::Breakdown::between(&groups, &before, &after);
    purge(&cli).await;
    say(&ingress.report())?;
    say(&format!(
        "  CPU during the ingress run ({:.2} s, {} cores):\n{}",
        ingress_cpu.elapsed.as_secs_f64(),
        ingress_cpu.cores,
        indent(&ingress_cpu.table(ingress.accepted(), "accepted request"))
    ))?;
    if let (Some(pid), Some((rss, hwm))) = (ingress_pid, memory_after) {
        let (rss_before, _) = memory_before.unwrap_or((0, 0));
        say(&format!(
            "  ingress memory (pid {pid}): VmRSS {:.1} MiB at the end (was {:.1} MiB before the run), VmHWM {:.1} MiB\n",
            mib(rss),
            mib(rss_before),
            mib(hwm)
        ))?;
    }
    if signing_started.elapsed() > TIMESTAMP_BUDGET {
        eprintln!(
            "warning: the run ended {:.0} s after signing began; requests sent more than 300 s after they were signed are refused as TIMESTAMP_OUT_OF_WINDOW (use fewer --requests)",
            signing_started.elapsed().as_secs_f64()
        );
    }
    let mut complete = ingress.merged.transport_errors == 0;

    let ingress_cpu_us = ingress_cpu
        .seconds("ingress")
        .filter(|_| ingress.accepted() > 0)
        .map(|seconds| seconds * 1e6 / ingress.accepted() as f64);
    let mut summary = String::new();
    if let (Some(cpu), Some((_, verify))) = (ingress_cpu_us, verify) {
        summary.push_str(&format!(
            "  ingress CPU per accepted request / one ES256 verification: {:.2}  ({cpu:.1} µs vs {verify:.1} µs; target <= 2)\n",
            cpu / verify
        ));
    }
    if let Some((rss, hwm)) = memory_after {
        summary.push_str(&format!(
            "  ingress VmRSS at the end: {:.1} MiB (VmHWM {:.1} MiB; target <= 100 MiB)\n",
            mib(rss),
            mib(hwm)
        ));
    }

    if !cli.skip_baseline {
        let before = procstat::snapshot(&groups);
        let raw = broker_baseline::run(&cli.amqp_url, prepared.clone(), concurrency).await?;
        let after = procstat::snapshot(&groups);
        let raw_cpu = procstat::Breakdown::between(&groups, &before, &after);
        say(&raw.report())?;
        say(&format!(
            "  CPU during the raw run ({:.2} s, {} cores):\n{}",
            raw_cpu.elapsed.as_secs_f64(),
            raw_cpu.cores,
            indent(&raw_cpu.table(raw.accepted(), "confirmed message"))
        ))?;
        say(&stats::comparison(&ingress, &raw))?;
        complete &= raw.merged.transport_errors == 0;
    }
    if !summary.is_empty() {
        say(&format!("== CPU and memory\n{summary}"))?;
    }
    Ok(complete)
}

/// Builds and signs every request of `plan` (not timed); returns them and when signing began.
fn sign(
    signer: &RequestSigner,
    plan: &Plan,
    concurrency: usize,
) -> anyhow::Result<(Arc<[Prepared]>, Instant)> {
    eprintln!("signing {} requests ...", plan.requests);
    let signing_started = Instant::now();
    let prepared: Arc<[Prepared]> = prepare::prepare(signer, plan)?.into();
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
        bytes / prepared.len().max(1),
        concurrency,
        signing.as_secs_f64(),
    ))?;
    Ok((prepared, signing_started))
}

/// `--duration`: rounds of `--requests`, each signed just before it is sent (so every request
/// is well within the timestamp window however long the soak lasts), with the ingress's
/// resident memory after each round.
async fn soak(
    cli: &Cli,
    signer: &RequestSigner,
    plan: &Plan,
    connection: &ingress::Connection,
    ingress_pid: Option<u32>,
    duration: Duration,
) -> anyhow::Result<bool> {
    let concurrency = cli.concurrency.max(1);
    let started = Instant::now();
    let mut complete = true;
    let mut rows = Vec::new();
    let mut memory = Vec::new();
    let (mut accepted, mut total, mut sending) = (0u64, 0u64, Duration::ZERO);
    let mut round = 0;
    while started.elapsed() < duration {
        round += 1;
        let (prepared, _) = sign(signer, plan, concurrency)?;
        let run = ingress::run(&cli.url, &prepared, concurrency, connection).await?;
        purge(cli).await;
        complete &= run.merged.transport_errors == 0;
        accepted += run.accepted();
        total += run.total();
        sending += run.elapsed;
        let rss = ingress_pid.and_then(procstat::memory_kib);
        if let Some((rss, _)) = rss {
            memory.push(rss);
        }
        let errors = run.total() - run.accepted();
        rows.push(vec![
            round.to_string(),
            format!("{:.0}", started.elapsed().as_secs_f64()),
            format!("{:.0}", run.throughput()),
            format!("{:.2}", run.latency_ms(0.99)),
            errors.to_string(),
            rss.map_or("-".into(), |(rss, _)| format!("{:.1}", mib(rss))),
            rss.map_or("-".into(), |(_, hwm)| format!("{:.1}", mib(hwm))),
        ]);
        eprintln!(
            "round {round}: {:.0}/s, p99 {:.2} ms, {errors} errors, VmRSS {}",
            run.throughput(),
            run.latency_ms(0.99),
            rss.map_or("-".into(), |(rss, _)| format!("{:.1} MiB", mib(rss)))
        );
    }
    let mut out = format!(
        "== soak: {round} rounds of {} requests over {:.0} s (concurrency {concurrency}); {accepted} of {total} accepted, {:.0}/s while sending\n",
        plan.requests,
        started.elapsed().as_secs_f64(),
        accepted as f64 / sending.as_secs_f64().max(1e-9)
    );
    out.push_str(&procstat::table(
        &[
            "round",
            "at s",
            "accepted/s",
            "p99 ms",
            "errors",
            "VmRSS MiB",
            "VmHWM MiB",
        ],
        rows,
    ));
    if let (Some(first), Some(last), Some(max)) =
        (memory.first(), memory.last(), memory.iter().max())
    {
        let half = memory.len() / 2;
        let second_half_min = memory[half..].iter().min().copied().unwrap_or(*last);
        out.push_str(&format!(
            "  ingress VmRSS: {:.1} MiB after round 1, {:.1} MiB at the end, {:.1} MiB at most; growth over the second half {:+.1} MiB (target: <= 100 MiB, no growth)\n",
            mib(*first),
            mib(*last),
            mib(*max),
            mib(*last) - mib(second_half_min)
        ));
    } else {
        out.push_str("  ingress memory unknown: pass --ingress-pid\n");
    }
    say(&out)?;
    Ok(complete)
}

/// `--purge`: a failure is reported, not fatal.
async fn purge(cli: &Cli) {
    if let Some(queue) = &cli.purge
        && let Err(error) = broker_baseline::purge_queue(&cli.amqp_url, queue).await
    {
        eprintln!("warning: {error:#}");
    }
}

/// `--ingress-pid`, else the one process named `connector-ingress` (comm is cut to 15 bytes).
fn ingress_pid(given: Option<u32>) -> Option<u32> {
    if given.is_some() {
        return given;
    }
    match procstat::pids_by_comm("connector-ingre").as_slice() {
        [pid] => Some(*pid),
        [] => {
            eprintln!(
                "warning: no connector-ingress process found: no ingress CPU or memory figures (pass --ingress-pid)"
            );
            None
        }
        many => {
            eprintln!(
                "warning: several connector-ingress processes ({many:?}): pass --ingress-pid for CPU and memory figures"
            );
            None
        }
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("  {line}\n")).collect()
}

/// Writes a finished block to stdout at once.
fn say(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
