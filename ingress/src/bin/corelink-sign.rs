//! `corelink-sign`: the integrator's tool for the Corelink signature (DESIGN.md §3.1).
//!
//! `corelink-sign keygen` makes a key pair; `corelink-sign request` prints the headers, or a
//! complete curl command, of a correctly signed request for a body file; `dev-pki`,
//! `dev-client-cert` and `dev-server-cert` make development certificates for the local run, for
//! onboarding a bank locally and for the compose stack's Paysafe simulator.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use josekit::jwk::Jwk;
use time::OffsetDateTime;

use connector_ingress::auth::keys::JwsAlgorithm;
use connector_ingress::auth::signing::{
    RequestSigner, generate_key_pair, random_nonce, render_request, write_private_file,
};
use connector_ingress::pki::DevCa;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Sign Corelink callbacks the way the connector verifies them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a bank's signing key pair as JWK files: the complete private JWK (readable by
    /// its owner only; any JOSE library loads it) and the public JWK to give the connector.
    Keygen {
        /// ES256, PS256, RS256 or EdDSA (Ed25519).
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// The key id the bank's signatures name in their `kid` header.
        #[arg(long)]
        kid: String,
        #[arg(long)]
        private_out: PathBuf,
        #[arg(long)]
        public_out: PathBuf,
        /// Also write the public key as a JWK set (`{"keys": [...]}`), for banks that publish
        /// their keys that way.
        #[arg(long)]
        jwks_out: Option<PathBuf>,
    },
    /// Generate a development PKI in OUT_DIR: a CA (ca.pem, and its key ca.key so more bank
    /// certificates can be issued later with dev-client-cert), the server's certificate
    /// (server.pem, server.key) and a bank's client certificate (<bank>.pem, <bank>.key).
    /// Prints the bank certificate's SHA-256 fingerprint, which the connector binds the bank
    /// to. Development only: in production the banks' CA and a real server certificate are
    /// used, and no CA key lies beside a certificate.
    DevPki {
        #[arg(long)]
        out_dir: PathBuf,
        /// Client id the bank certificate is issued to (its common name).
        #[arg(long, default_value = "BANK_X")]
        bank: String,
        /// Names and addresses the server certificate is valid for.
        #[arg(long, default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        host: Vec<String>,
    },
    /// Issue another bank's client certificate from the development CA that dev-pki wrote in
    /// PKI_DIR (ca.pem, ca.key): writes <bank>.pem and <bank>.key there and prints the
    /// certificate's SHA-256 fingerprint, for the bank's `certificate_sha256`. Development only.
    DevClientCert {
        #[arg(long)]
        pki_dir: PathBuf,
        /// Client id the certificate is issued to (its common name).
        #[arg(long)]
        bank: String,
    },
    /// Issue another server certificate from the development CA that dev-pki wrote in
    /// PKI_DIR (ca.pem, ca.key): writes <name>.pem and <name>.key there, such as the Paysafe
    /// simulator's (`--name paysafe-sim --host paysafe-sim --host localhost --host 127.0.0.1`),
    /// so a client trusting ca.pem reaches it over https. Development only.
    DevServerCert {
        #[arg(long)]
        pki_dir: PathBuf,
        /// File stem of the certificate and key (letters, digits, '-' and '_').
        #[arg(long)]
        name: String,
        /// Names and addresses the certificate is valid for.
        #[arg(long, required = true)]
        host: Vec<String>,
    },
    /// Print the signed headers (or a curl command) for POSTing a body file.
    Request {
        /// Private JWK with `kid` and `alg`.
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        client_id: String,
        /// Request target as it will be sent (path, plus `?query` if any).
        #[arg(long, default_value = "/callbacks/orders/status")]
        path: String,
        /// The body, sent byte for byte as signed.
        #[arg(long)]
        body: PathBuf,
        /// Defaults to the body's `batch_id`, else its `reference`.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Defaults to 128 random bits.
        #[arg(long)]
        nonce: Option<String>,
        /// Base URL for the curl command.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// For the curl command over mTLS: the bank's certificate, its key, and the CA that
        /// issued the server's certificate.
        #[arg(long, requires_all = ["cert_key", "cacert"])]
        cert: Option<PathBuf>,
        #[arg(long)]
        cert_key: Option<PathBuf>,
        #[arg(long)]
        cacert: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Format::Curl)]
        format: Format,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One `Name: value` line per header.
    Headers,
    /// A ready-to-paste curl command.
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
            eprintln!("corelink-sign: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Keygen {
            alg,
            kid,
            private_out,
            public_out,
            jwks_out,
        } => {
            let alg = JwsAlgorithm::from_name(&alg)
                .context("--alg must be ES256, PS256, RS256 or EdDSA")?;
            let (private, public) = generate_key_pair(alg, &kid)?;
            write_private(&private_out, private.to_string().as_bytes())?;
            write_public(&public_out, &public.to_string())?;
            let mut written = format!(
                "wrote {} (keep it secret) and {} (give it to the connector)",
                private_out.display(),
                public_out.display()
            );
            if let Some(jwks_out) = jwks_out {
                write_public(&jwks_out, &format!("{{\"keys\":[{public}]}}"))?;
                written.push_str(&format!(
                    ", and the same as a JWK set in {}",
                    jwks_out.display()
                ));
            }
            Ok(written + "\n")
        }
        Command::DevPki {
            out_dir,
            bank,
            host,
        } => {
            std::fs::create_dir_all(&out_dir)
                .with_context(|| format!("creating {}", out_dir.display()))?;
            let ca = DevCa::new("connector development CA")?;
            let hosts: Vec<&str> = host.iter().map(String::as_str).collect();
            let server = ca.server(&hosts)?;
            write_public(&out_dir.join("ca.pem"), &ca.cert_pem)?;
            write_private(&out_dir.join("ca.key"), ca.key_pem().as_bytes())?;
            write_public(&out_dir.join("server.pem"), &server.cert_pem)?;
            write_private(&out_dir.join("server.key"), server.key_pem.as_bytes())?;
            write_client_certificate(&out_dir, &bank, &ca)
        }
        Command::DevClientCert { pki_dir, bank } => {
            write_client_certificate(&pki_dir, &bank, &read_dev_ca(&pki_dir)?)
        }
        Command::DevServerCert {
            pki_dir,
            name,
            host,
        } => {
            // The stem becomes a file name in PKI_DIR: nothing that could leave it.
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("--name must be letters, digits, '-' or '_'");
            }
            let hosts: Vec<&str> = host.iter().map(String::as_str).collect();
            let server = read_dev_ca(&pki_dir)?.server(&hosts)?;
            let (cert, key) = (
                pki_dir.join(format!("{name}.pem")),
                pki_dir.join(format!("{name}.key")),
            );
            write_public(&cert, &server.cert_pem)?;
            write_private(&key, server.key_pem.as_bytes())?;
            Ok(format!(
                "wrote {} and {} (for {})\n",
                cert.display(),
                key.display(),
                host.join(", ")
            ))
        }
        Command::Request {
            key,
            client_id,
            path,
            body,
            idempotency_key,
            nonce,
            url,
            cert,
            cert_key,
            cacert,
            format,
        } => {
            let jwk_bytes =
                std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let jwk = Jwk::from_bytes(&jwk_bytes)
                .with_context(|| format!("{} is not a JWK", key.display()))?;
            let signer = RequestSigner::from_private_jwk(&client_id, &jwk)?;
            let body_bytes =
                std::fs::read(&body).with_context(|| format!("reading {}", body.display()))?;
            let idempotency_key = match idempotency_key {
                Some(key) => key,
                None => default_idempotency_key(&body_bytes)?,
            };
            let nonce = nonce.unwrap_or_else(random_nonce);
            let headers = signer.sign(
                &path,
                &body_bytes,
                &idempotency_key,
                OffsetDateTime::now_utc(),
                &nonce,
            )?;
            let tls_options = match (&cert, &cert_key, &cacert) {
                (Some(cert), Some(key), Some(ca)) => format!(
                    "--cert '{}' --key '{}' --cacert '{}'",
                    cert.display(),
                    key.display(),
                    ca.display()
                ),
                _ => String::new(),
            };
            Ok(render_request(
                matches!(format, Format::Curl),
                &url,
                &path,
                &tls_options,
                &headers.pairs(),
                &body,
            ))
        }
    }
}

fn default_idempotency_key(body: &[u8]) -> anyhow::Result<String> {
    let value: serde_json::Value = serde_json::from_slice(body).context("the body is not JSON")?;
    for member in ["batch_id", "reference"] {
        if let Some(key) = value.get(member).and_then(|v| v.as_str()) {
            return Ok(key.to_owned());
        }
    }
    bail!("the body has neither batch_id nor reference: pass --idempotency-key")
}

/// The development CA that dev-pki wrote in `pki_dir` (ca.pem, ca.key).
fn read_dev_ca(pki_dir: &Path) -> anyhow::Result<DevCa> {
    let read = |name: &str| {
        let path = pki_dir.join(name);
        std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {} (written by corelink-sign dev-pki)",
                path.display()
            )
        })
    };
    DevCa::from_pem(&read("ca.pem")?, &read("ca.key")?)
        .context("ca.pem and ca.key are not a CA certificate and its key")
}

/// `<bank>.pem` and `<bank>.key` in `dir`; answers the certificate's fingerprint.
fn write_client_certificate(dir: &Path, bank: &str, ca: &DevCa) -> anyhow::Result<String> {
    let client = ca.client(bank)?;
    let stem = bank.to_ascii_lowercase();
    write_public(&dir.join(format!("{stem}.pem")), &client.cert_pem)?;
    write_private(&dir.join(format!("{stem}.key")), client.key_pem.as_bytes())?;
    Ok(format!("{}\n", client.sha256))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_private_file(path, bytes).with_context(|| format!("writing {}", path.display()))
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
