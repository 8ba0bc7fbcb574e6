//! `connector-ingress --config ingress.toml`: serves the callback routes until SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use connector_ingress::clock::SystemClock;
use connector_ingress::config::Settings;
use connector_ingress::startup::Application;
use connector_runtime::{shutdown, telemetry};

/// Buffers move between the tokio workers and lapin's I/O thread, which glibc's allocator
/// handles poorly (ops/BENCHMARKS.md: 8 % of the ingress's CPU). In the binary only, so the
/// tests and load tools that link the library keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The connector's HTTP ingress: authenticates bank (mTLS + JWS), BNC (SNAP RSA) and Paysafe
/// (HMAC) callbacks and answers 200 only once each is durably on RabbitMQ. SIGHUP reloads the
/// banks and their keys; SIGTERM or Ctrl-C stops it gracefully.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// TOML configuration file; `CONNECTOR_*` environment variables override it.
    #[arg(long, env = "CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("connector-ingress: {error}");
            return ExitCode::from(2);
        }
    };
    let _logs = telemetry::init(&settings.log);
    let application =
        match Application::build_with(settings, std::sync::Arc::new(SystemClock), cli.config).await
        {
            Ok(application) => application,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "cannot start");
                return ExitCode::from(2);
            }
        };
    tracing::info!(
        listen = %application.public_addr(),
        ops_listen = %application.ops_addr(),
        "ingress listening"
    );
    match application.run_until_stopped(shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "stopped with an error");
            ExitCode::FAILURE
        }
    }
}
