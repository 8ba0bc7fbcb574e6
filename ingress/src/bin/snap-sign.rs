//! `snap-sign`: the integrator's tool for BNC's SNAP signature (DESIGN.md §4).
//!
//! `snap-sign keygen` makes an RSA key pair (PEM); `snap-sign request` prints a complete curl
//! command, or the headers, of a correctly signed account-binding callback for a body file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use connector_ingress::auth::signing::{render_request, write_private_file};
use connector_ingress::auth::snap::sign;
use connector_schema::bnc::{headers as names, string_to_sign};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sign BNC account-binding callbacks the way the connector verifies them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an RSA key pair as PEM files (the private one readable by its owner only).
    Keygen {
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        #[arg(long)]
        private_out: PathBuf,
        #[arg(long)]
        public_out: PathBuf,
    },
    /// Print a curl command (or the headers) POSTing a body file with SNAP headers.
    Request {
        /// The partner's RSA private key, PEM.
        #[arg(long)]
        key: PathBuf,
        /// `X-CLIENT-KEY`.
        #[arg(long)]
        client_key: String,
        /// `X-EXTERNAL-ID`, unique per callback; defaults to digits from the current time.
        #[arg(long)]
        external_id: Option<String>,
        /// `CHANNEL-ID`.
        #[arg(long, default_value = "95221")]
        channel_id: String,
        /// The path as it will be sent, which is what gets signed.
        #[arg(long, default_value = "/callbacks/bnc/account-binding")]
        path: String,
        /// The body, sent byte for byte as signed.
        #[arg(long)]
        body: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// For the curl command over TLS: the CA that issued the server's certificate.
        #[arg(long)]
        cacert: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Curl)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Headers,
    Curl,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(output) => {
            use std::io::Write as _;
            match std::io::stdout().write_all(output.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(error) => {
            eprintln!("snap-sign: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Keygen {
            bits,
            private_out,
            public_out,
        } => {
            let key = PKey::from_rsa(Rsa::generate(bits)?)?;
            write_private(&private_out, &key.private_key_to_pem_pkcs8()?)?;
            std::fs::write(&public_out, key.public_key_to_pem()?)
                .with_context(|| format!("writing {}", public_out.display()))?;
            Ok(format!(
                "wrote {} (keep it secret) and {} (give it to the connector)\n",
                private_out.display(),
                public_out.display()
            ))
        }
        Command::Request {
            key,
            client_key,
            external_id,
            channel_id,
            path,
            body,
            url,
            cacert,
            format,
        } => {
            let private =
                std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let body_bytes =
                std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?;
            let now = OffsetDateTime::now_utc();
            // BNC's own form: whole seconds with an offset, e.g. 2022-09-06T13:00:00+07:00.
            let timestamp = now
                .to_offset(UtcOffset::from_hms(7, 0, 0)?)
                .replace_nanosecond(0)?
                .format(&Rfc3339)?;
            let external_id =
                external_id.unwrap_or_else(|| format!("{}", now.unix_timestamp_nanos() / 1000));
            let to_sign = string_to_sign("POST", &path, &body_bytes, &timestamp)
                .context("the body is not JSON")?;
            let signature = sign(&private, &to_sign)?;
            let headers = [
                ("Content-Type", "application/json"),
                (names::X_TIMESTAMP, timestamp.as_str()),
                (names::X_CLIENT_KEY, client_key.as_str()),
                (names::X_SIGNATURE, signature.as_str()),
                (names::X_EXTERNAL_ID, external_id.as_str()),
                (names::CHANNEL_ID, channel_id.as_str()),
            ];
            let tls_options = cacert
                .map(|ca| format!("--cacert '{}'", ca.display()))
                .unwrap_or_default();
            Ok(render_request(
                matches!(format, Format::Curl),
                &url,
                &path,
                &tls_options,
                &headers,
                &body,
            ))
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_private_file(path, bytes).with_context(|| format!("writing {}", path.display()))
}
