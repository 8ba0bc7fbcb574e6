//! The command line: `verify` and `prove`, their exit codes (0 proven / archive sound,
//! 1 not proven / archive altered, 2 usage or configuration error).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use connector_ingress::config::{KeyEncoding, Settings as IngressSettings};
use connector_schema::evidence::ArchiveEntry;

use crate::prove::{Verdict, prove_entry};
use crate::report::{print_entry, print_record};
use crate::{AnchorError, Archive, check_anchor};

#[derive(Debug, Parser)]
#[command(
    name = "connector-evidence",
    about = "Verify the evidence archive and prove requests from it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Checks every archive file's hash and the manifest chain; with --database-url, the chain
    /// against its anchor (evidence_archive_files).
    Verify {
        #[arg(long)]
        archive: PathBuf,
        #[arg(long, env = "CONNECTOR_EVIDENCE_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Finds a request in the archive and re-verifies its sender's signature offline.
    Prove {
        #[arg(long)]
        archive: PathBuf,
        /// The ingress configuration whose keys re-verify ([[corelink.clients]], [bnc]).
        #[arg(long)]
        ingress_config: PathBuf,
        #[arg(
            long,
            conflicts_with = "reference",
            required_unless_present = "reference"
        )]
        message_id: Option<Uuid>,
        /// An order reference, BNC partnerReferenceNo or Paysafe id: every entry about it.
        #[arg(long)]
        reference: Option<String>,
        #[arg(long, env = "CONNECTOR_EVIDENCE_DATABASE_URL")]
        database_url: Option<String>,
        /// Shown in the report as the time of the proof; never used to verify.
        #[arg(long, value_parser = parse_at)]
        at: Option<OffsetDateTime>,
        /// The Paysafe webhook HMAC key, to re-verify Paysafe webhooks.
        #[arg(long)]
        paysafe_key_file: Option<PathBuf>,
        /// How the key file is written: raw or base64.
        #[arg(long, default_value = "raw", value_parser = parse_encoding)]
        paysafe_key_encoding: KeyEncoding,
    },
}

fn parse_at(text: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("not an RFC 3339 time: {e}"))
}

fn parse_encoding(text: &str) -> Result<KeyEncoding, String> {
    match text {
        "raw" => Ok(KeyEncoding::Raw),
        "base64" => Ok(KeyEncoding::Base64),
        _ => Err("raw or base64".into()),
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Proven, or the archive verifies.
    Ok,
    /// Not proven, or the archive does not verify.
    Failed,
    /// Usage or configuration error.
    Usage,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Failed => 1,
            Self::Usage => 2,
        }
    }
}

/// Runs `cli`, writing its report to `out`.
pub async fn run(cli: Cli, out: &mut dyn Write) -> Exit {
    let result = match cli.command {
        Command::Verify {
            archive,
            database_url,
        } => verify(&archive, database_url.as_deref(), out).await,
        Command::Prove {
            archive,
            ingress_config,
            message_id,
            reference,
            database_url,
            at,
            paysafe_key_file,
            paysafe_key_encoding,
        } => {
            let request = Request {
                message_id,
                reference,
                at,
            };
            prove(
                &archive,
                &ingress_config,
                &request,
                database_url.as_deref(),
                paysafe_key_file
                    .as_deref()
                    .map(|f| (f, paysafe_key_encoding)),
                out,
            )
            .await
        }
    };
    match result {
        Ok(exit) => exit,
        Err((exit, message)) => {
            let _ = writeln!(out, "{message}");
            exit
        }
    }
}

type Outcome = Result<Exit, (Exit, String)>;

fn failed(message: impl std::fmt::Display) -> (Exit, String) {
    (Exit::Failed, format!("NOT OK: {message}"))
}

/// A database that cannot be read says nothing about the archive: a usage error, not a
/// mismatch.
fn anchor_failed(error: AnchorError) -> (Exit, String) {
    match error {
        AnchorError::Database(_) => (Exit::Usage, format!("error: {error}")),
        mismatch => failed(mismatch),
    }
}

async fn verify(archive: &Path, database_url: Option<&str>, out: &mut dyn Write) -> Outcome {
    let archive = Archive::open(archive).map_err(failed)?;
    archive.verify_files().map_err(failed)?;
    let _ = writeln!(
        out,
        "files: {} verified; chain: ok (head {})",
        archive.records.len(),
        archive.records.last().map_or("none".into(), |r| format!(
            "{} {}",
            r.sequence, r.record_sha256
        ))
    );
    if let Some(url) = database_url {
        let head = check_anchor(url, &archive.records)
            .await
            .map_err(anchor_failed)?;
        let _ = writeln!(out, "anchor: ok (evidence_archive_files head {head})");
    }
    let _ = writeln!(out, "OK");
    Ok(Exit::Ok)
}

struct Request {
    message_id: Option<Uuid>,
    reference: Option<String>,
    at: Option<OffsetDateTime>,
}

async fn prove(
    archive: &Path,
    ingress_config: &Path,
    request: &Request,
    database_url: Option<&str>,
    paysafe_key: Option<(&Path, KeyEncoding)>,
    out: &mut dyn Write,
) -> Outcome {
    let usage = |message: String| (Exit::Usage, format!("error: {message}"));
    let settings = IngressSettings::read(Some(ingress_config))
        .map_err(|e| usage(format!("{}: {e}", ingress_config.display())))?;
    let paysafe_key = match paysafe_key {
        Some((file, encoding)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| usage(format!("{}: {e}", file.display())))?;
            Some(
                encoding
                    .decode(text.trim_end_matches(['\n', '\r']))
                    .map_err(|e| usage(format!("{}: {e}", file.display())))?,
            )
        }
        None => None,
    };

    let archive = Archive::open(archive).map_err(failed)?;
    let _ = writeln!(out, "chain: ok ({} records)", archive.records.len());
    if let Some(url) = database_url {
        let head = check_anchor(url, &archive.records)
            .await
            .map_err(anchor_failed)?;
        let _ = writeln!(out, "anchor: ok (evidence_archive_files head {head})");
    }
    if let Some(at) = request.at {
        let _ = writeln!(out, "as of: {}", at.format(&Rfc3339).unwrap_or_default());
    }
    let found = archive
        .find(|entry| match (&request.message_id, &request.reference) {
            (Some(id), _) => entry.message_id == *id,
            (None, Some(reference)) => is_about(entry, reference),
            (None, None) => false,
        })
        .map_err(failed)?;
    if found.is_empty() {
        return Err(failed("no archived request matches"));
    }
    let mut all_proven = true;
    for (record, entry) in &found {
        print_record(out, record);
        let proof = prove_entry(entry, &settings, paysafe_key.as_deref())
            .map_err(|e| usage(format!("{}: {e}", ingress_config.display())))?;
        print_entry(out, entry, &proof);
        all_proven &= proof.verdict == Verdict::Proven;
    }
    let _ = writeln!(out, "{}", if all_proven { "PROVEN" } else { "NOT PROVEN" });
    Ok(if all_proven { Exit::Ok } else { Exit::Failed })
}

/// Whether `entry`'s body (or one of its events) is about `reference`: a Corelink order
/// reference (unit or batch), a BNC partnerReferenceNo, a Paysafe payment or credit id.
fn is_about(entry: &ArchiveEntry, reference: &str) -> bool {
    if entry
        .events
        .iter()
        .any(|e| e.reference.as_deref() == Some(reference))
    {
        return true;
    }
    let Ok(body) = entry.body() else {
        return false;
    };
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return false;
    };
    let is = |value: Option<&serde_json::Value>| value.and_then(|v| v.as_str()) == Some(reference);
    is(body.get("reference"))
        || is(body.get("partnerReferenceNo"))
        || is(body.get("id"))
        || is(body.pointer("/payload/id"))
        || body
            .get("orders")
            .and_then(|orders| orders.as_array())
            .is_some_and(|orders| orders.iter().any(|o| is(o.get("reference"))))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use time::macros::datetime;

    use connector_schema::evidence::{ArchivedEvent, GENESIS};

    use super::*;

    fn entry(body: &str) -> ArchiveEntry {
        ArchiveEntry {
            message_id: Uuid::from_u128(1),
            kind: "corelink.status.batch".into(),
            received_at: datetime!(2026-12-01 10:00 UTC),
            processed_at: datetime!(2026-12-01 10:00:01 UTC),
            client_id: None,
            idempotency_key: None,
            nonce: None,
            request_path: None,
            headers: serde_json::json!({}),
            body_base64: STANDARD.encode(body),
            body_sha256: String::new(),
            body_redacted: false,
            signature: None,
            verification: None,
            outcome: "applied".into(),
            events: vec![ArchivedEvent {
                event_id: Uuid::from_u128(2),
                event_type: "order.succeeded".into(),
                reference: Some("FROM-EVENT".into()),
            }],
        }
    }

    #[test]
    fn a_reference_is_found_in_every_source_shape() {
        let batch = entry(r#"{"orders":[{"reference":"A"},{"reference":"B"}]}"#);
        assert!(is_about(&batch, "B") && is_about(&batch, "FROM-EVENT"));
        assert!(!is_about(&batch, "C"));
        assert!(is_about(&entry(r#"{"reference":"U"}"#), "U"));
        assert!(is_about(&entry(r#"{"partnerReferenceNo":"P"}"#), "P"));
        assert!(is_about(&entry(r#"{"payload":{"id":"pay-1"}}"#), "pay-1"));
        assert!(!is_about(&entry("not json"), "U"));
    }

    async fn run_args(args: &[&str]) -> (Exit, String) {
        let cli =
            Cli::try_parse_from(std::iter::once("connector-evidence").chain(args.iter().copied()))
                .unwrap();
        let mut out = Vec::new();
        let exit = run(cli, &mut out).await;
        (exit, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn an_archive_without_a_manifest_or_folder_does_not_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (exit, out) = run_args(&["verify", "--archive", dir.path().to_str().unwrap()]).await;
        assert_eq!(exit, Exit::Failed, "{out}");
        assert!(out.contains("has no manifest.ndjson"), "{out}");
        let gone = dir.path().join("gone");
        let (exit, out) = run_args(&["verify", "--archive", gone.to_str().unwrap()]).await;
        assert_eq!(exit, Exit::Failed, "{out}");
        assert!(out.contains("no such archive folder"), "{out}");
    }

    #[tokio::test]
    async fn an_empty_manifest_verifies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.ndjson"), "").unwrap();
        let (exit, out) = run_args(&["verify", "--archive", dir.path().to_str().unwrap()]).await;
        assert_eq!(exit, Exit::Ok, "{out}");
        assert!(out.contains("files: 0 verified"), "{out}");
        assert_eq!(GENESIS.len(), 64);
    }

    #[tokio::test]
    async fn an_unreadable_ingress_configuration_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("ingress.toml");
        std::fs::write(&config, "[corelink]\nno_such_option = 1\n").unwrap();
        let (exit, out) = run_args(&[
            "prove",
            "--archive",
            dir.path().to_str().unwrap(),
            "--ingress-config",
            config.to_str().unwrap(),
            "--reference",
            "X",
        ])
        .await;
        assert_eq!(exit, Exit::Usage, "{out}");
        assert_eq!(exit.code(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("manifest.ndjson"), "").unwrap();
        let (exit, out) = run_args(&[
            "verify",
            "--archive",
            dir.path().to_str().unwrap(),
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
        ])
        .await;
        assert_eq!(exit, Exit::Usage, "{out}");
        assert!(out.contains("the database cannot be read"), "{out}");
    }

    #[test]
    fn a_selector_is_required_and_at_must_be_rfc3339() {
        let base = [
            "connector-evidence",
            "prove",
            "--archive",
            "a",
            "--ingress-config",
            "c",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        let with_both = [
            &base[..],
            &[
                "--message-id",
                "00000000-0000-0000-0000-000000000001",
                "--reference",
                "R",
            ],
        ]
        .concat();
        assert!(Cli::try_parse_from(with_both).is_err());
        let bad_at = [&base[..], &["--reference", "R", "--at", "yesterday"]].concat();
        assert!(Cli::try_parse_from(bad_at).is_err());
    }
}
