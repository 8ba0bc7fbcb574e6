//! The evidence archive end to end: real signed Corelink (unit, batch) and BNC requests go
//! through the ingress, RabbitMQ and the apply worker into `received_messages`; the table is
//! exported as a partition would be before its drop (and, in one test, by the lifecycle role
//! itself), its rows are deleted, and the built
//! `connector-evidence` proves requests from the archive alone, or names what was altered.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use time::{Duration, OffsetDateTime, UtcOffset};
use uuid::Uuid;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline_on};
use connector_e2e_tests::{TestBank, TestPki, batch_body, binary, spawn_tls_app_with, unit_body};
use connector_ingress::auth::snap::sign;
use connector_ingress::config::BncPartner;
use connector_schema::bnc::string_to_sign;
use connector_schema::evidence::{
    ArchiveBounds, ArchiveStore as _, FileDigest, FsArchiveStore, MANIFEST_FILE, ManifestRecord,
    decode_archive, parse_manifest, render_manifest, sha256_hex,
};
use connector_workers::config::{NonceSettings, RetentionSettings};
use connector_workers::evidence::{EXPORT_LOCK, EvidenceArchiver, export_partition};
use connector_workers::lifecycle::{BeforeDrop, Kept, Lifecycle};

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";
const BNC_PATH: &str = "/callbacks/bnc/account-binding";
const PARTNER: &str = "BNC_PARTNER_EV";
const TOKEN: &str = "5b1e0f3ad2c94e7fa0c1d2e3f4a5b6c7";
const ACCOUNT_NO: &str = "585945******7788";

/// A pipeline with BANK_X (mTLS + JWS) and a BNC partner, the requests applied and relayed.
struct Archived {
    pipeline: Pipeline,
    partner_key: PKey<Private>,
    partner_key_file: PathBuf,
    _pki: TestPki,
    dir: tempfile::TempDir,
    unit_id: Uuid,
    batch_id: Uuid,
    bnc_minified_id: Uuid,
    bnc_spaced_id: Uuid,
    bounds: ArchiveBounds,
}

fn bnc_body(reference: &str, spaced: bool) -> String {
    let body = format!(
        r#"{{"partnerReferenceNo":"{reference}","accountNo":"{ACCOUNT_NO}","accountTransactionLimit":500000.00,"accountCurrency":"IDR","additionalInfo":{{"userId":"8881701","token":"{TOKEN}","bindStatus":"1"}}}}"#
    );
    if spaced {
        body.replace(",\"", ", \"")
    } else {
        body
    }
}

async fn send_bnc(a: &Archived, client: &reqwest::Client, body: &str, external_id: &str) {
    let timestamp = OffsetDateTime::now_utc()
        .to_offset(UtcOffset::from_hms(7, 0, 0).unwrap())
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let to_sign = string_to_sign("POST", BNC_PATH, body.as_bytes(), &timestamp).unwrap();
    let signature = sign(&a.partner_key.private_key_to_pem_pkcs8().unwrap(), &to_sign).unwrap();
    let response = client
        .post(format!("{}{BNC_PATH}", a.pipeline.app.base_url))
        .header("Content-Type", "application/json")
        .header("X-TIMESTAMP", timestamp)
        .header("X-CLIENT-KEY", PARTNER)
        .header("X-SIGNATURE", signature)
        .header("X-EXTERNAL-ID", external_id)
        .header("CHANNEL-ID", "95221")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn message_id(p: &Pipeline, sql: &str) -> Uuid {
    sqlx::query_scalar(sql).fetch_one(&p.db.pool).await.unwrap()
}

async fn archived() -> Archived {
    let dir = tempfile::tempdir().unwrap();
    let partner_key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let partner_key_file = dir.path().join("partner.pem");
    std::fs::write(&partner_key_file, partner_key.public_key_to_pem().unwrap()).unwrap();
    let file = partner_key_file.clone();
    let (app, pki) = spawn_tls_app_with(move |s| {
        s.bnc.partners = vec![BncPartner {
            client_key: PARTNER.into(),
            public_key_files: vec![file.into()],
        }];
    })
    .await;
    let bnc_client = pki.client(None);
    let now = OffsetDateTime::now_utc();
    let mut a = Archived {
        pipeline: spawn_pipeline_on(app).await,
        partner_key,
        partner_key_file,
        _pki: pki,
        dir,
        unit_id: Uuid::nil(),
        batch_id: Uuid::nil(),
        bnc_minified_id: Uuid::nil(),
        bnc_spaced_id: Uuid::nil(),
        bounds: ArchiveBounds {
            from: now - Duration::days(1),
            to: now + Duration::days(1),
        },
    };
    let p = &a.pipeline;
    for (path, body, key) in [
        (UNIT, unit_body("PAY-EV1", "SUCCESS"), "PAY-EV1"),
        (
            BATCH,
            batch_body("BATCH-EV", &["PAY-EV2", "PAY-EV3"]),
            "BATCH-EV",
        ),
    ] {
        let response = p.app.post_signed(path, &body, key).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    send_bnc(&a, &bnc_client, &bnc_body("BND-EV-MIN", false), "EXT-EV-1").await;
    send_bnc(
        &a,
        &bnc_client,
        &bnc_body("BND-EV-SPACED", true),
        "EXT-EV-2",
    )
    .await;
    let p = &a.pipeline;
    assert_eq!(p.apply_all().await, 4);
    p.relay_all().await;

    a.unit_id = message_id(
        p,
        "SELECT message_id FROM received_messages WHERE kind = 'corelink.status'",
    )
    .await;
    a.batch_id = message_id(
        p,
        "SELECT message_id FROM received_messages WHERE kind = 'corelink.status.batch'",
    )
    .await;
    a.bnc_minified_id = message_id(
        p,
        "SELECT message_id FROM bnc_account_bindings WHERE partner_reference_no = 'BND-EV-MIN'",
    )
    .await;
    a.bnc_spaced_id = message_id(
        p,
        "SELECT message_id FROM bnc_account_bindings WHERE partner_reference_no = 'BND-EV-SPACED'",
    )
    .await;

    a
}

impl Archived {
    fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    fn store(&self) -> FsArchiveStore {
        FsArchiveStore::open(self.archive()).unwrap()
    }

    async fn export(&self) -> anyhow::Result<ManifestRecord> {
        let mut tx = self.pipeline.db.pool.begin().await.unwrap();
        let record =
            export_partition(&mut tx, &self.store(), "received_messages", self.bounds).await?;
        tx.commit().await.unwrap();
        Ok(record)
    }

    /// Exports, then deletes the rows as the partition's drop would.
    async fn export_and_drop(&self) -> ManifestRecord {
        let record = self.export().await.unwrap();
        sqlx::query("DELETE FROM received_messages")
            .execute(&self.pipeline.db.pool)
            .await
            .unwrap();
        record
    }

    /// An ingress configuration naming `bank`'s key as BANK_X's, and the BNC partner.
    fn ingress_config(&self, bank: &TestBank, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[corelink.clients]]\nid = \"BANK_X\"\n\
                 [[corelink.clients.keys]]\nkid = \"{}\"\nalg = \"ES256\"\njwk_file = \"{}\"\n\
                 [[bnc.partners]]\nclient_key = \"{PARTNER}\"\npublic_key_files = [\"{}\"]\n",
                bank.kid,
                bank.public_key_file.display(),
                self.partner_key_file.display()
            ),
        )
        .unwrap();
        path
    }

    fn config(&self) -> PathBuf {
        self.ingress_config(&self.pipeline.app.bank, "ingress.toml")
    }

    fn database_url(&self) -> &str {
        &self.pipeline.db.url
    }
}

/// Runs the built `connector-evidence`; its exit code and everything it printed.
fn evidence(args: &[&str]) -> (i32, String) {
    let output = Command::new(binary("connector-evidence", "connector-evidence"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn prove(archive: &Path, config: &Path, selector: &[&str]) -> (i32, String) {
    let mut args = vec![
        "prove",
        "--archive",
        archive.to_str().unwrap(),
        "--ingress-config",
        config.to_str().unwrap(),
    ];
    args.extend_from_slice(selector);
    evidence(&args)
}

/// Hidden files left in an archive folder (a staged file never committed nor removed).
fn temporaries(archive: &Path) -> Vec<String> {
    std::fs::read_dir(archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with('.'))
        .collect()
}

fn copy_archive(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

mod exporting;
mod proving;
