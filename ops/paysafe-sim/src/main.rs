//! `paysafe-sim`: serves the simulated Paysafe API until interrupted (see the README).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use paysafe_sim::{ScriptFile, SimConfig};

/// Command-line options. No `Debug`: it holds the API password and the webhook key.
#[derive(Parser)]
#[command(
    version,
    about = "Simulated Paysafe API: payments and standalone credits with scripted statuses, faults and signed webhooks"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, env = "PAYSAFE_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// The API key the poller must present with HTTP Basic: `user:password`, or Paysafe's
    /// base64 form of it.
    #[arg(long, env = "PAYSAFE_SIM_API_KEY", hide_env_values = true, conflicts_with_all = ["username", "password"])]
    api_key: Option<String>,
    /// The API user name (with --password, instead of --api-key).
    #[arg(long, env = "PAYSAFE_SIM_USERNAME", requires = "password")]
    username: Option<String>,
    #[arg(
        long,
        env = "PAYSAFE_SIM_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    password: Option<String>,
    /// Where webhooks are POSTed, such as https://127.0.0.1:8443/webhooks/paysafe.
    #[arg(long, env = "PAYSAFE_SIM_WEBHOOK_URL")]
    webhook_url: Option<String>,
    /// The HMAC-SHA256 key webhooks are signed with (its UTF-8 bytes).
    #[arg(long, env = "PAYSAFE_SIM_WEBHOOK_KEY", hide_env_values = true)]
    webhook_key: Option<String>,
    /// PEM CA certificate(s) to trust for an https webhook URL (the ingress's dev CA).
    #[arg(long, env = "PAYSAFE_SIM_WEBHOOK_CA")]
    webhook_ca: Option<PathBuf>,
    /// JSON script file: an array of item scripts, or {"items": [...], "globalFaults": [...]}.
    #[arg(long, env = "PAYSAFE_SIM_SCRIPT")]
    script: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key) instead of plain HTTP.
    #[arg(long, env = "PAYSAFE_SIM_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PAYSAFE_SIM_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// `user:password`, or its base64 (the form Paysafe hands out).
fn split_api_key(key: &str) -> anyhow::Result<(String, String)> {
    if let Some((user, password)) = key.split_once(':') {
        return Ok((user.to_owned(), password.to_owned()));
    }
    let decoded = STANDARD
        .decode(key.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    match decoded.as_deref().and_then(|text| text.split_once(':')) {
        Some((user, password)) => Ok((user.to_owned(), password.to_owned())),
        // Never echo the key: it is a secret.
        None => bail!("--api-key must be user:password (or its base64)"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colours only for a terminal, never in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();

    let (username, password) = match (cli.api_key, cli.username, cli.password) {
        (Some(key), _, _) => split_api_key(&key)?,
        (None, Some(user), Some(password)) => (user, password),
        _ => bail!("give --api-key user:password, or --username and --password"),
    };
    let mut config = SimConfig::new(&username, &password);
    config.webhook_url = cli.webhook_url;
    config.webhook_key = cli.webhook_key.map(String::into_bytes);
    if let Some(path) = &cli.webhook_ca {
        config.webhook_ca_pem =
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        config = config.with_tls(&read(cert)?, &read(key)?);
    }
    if let Some(path) = &cli.script {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file: ScriptFile = serde_json::from_str(&text)
            .with_context(|| format!("parsing the script {}", path.display()))?;
        (config.items, config.global_faults) = file.into_parts();
    }

    let sim = paysafe_sim::spawn_at(cli.listen, config).await?;
    tracing::info!(base_url = sim.base_url(), "ready");
    stop_signal().await;
    tracing::info!("stopping");
    sim.shutdown().await
}

/// Ctrl-C, or SIGTERM (docker stop).
async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "no SIGTERM handler; Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_forms() {
        assert_eq!(
            split_api_key("user:pa:ss").unwrap(),
            ("user".to_owned(), "pa:ss".to_owned())
        );
        let encoded = STANDARD.encode("u:p");
        assert_eq!(
            split_api_key(&encoded).unwrap(),
            ("u".to_owned(), "p".to_owned())
        );
        let error = split_api_key("secretvalue").unwrap_err().to_string();
        assert!(!error.contains("secretvalue"));
    }
}
