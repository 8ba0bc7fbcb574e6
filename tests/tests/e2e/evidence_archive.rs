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

#[tokio::test]
async fn corelink_requests_are_proven_from_the_archive_alone() {
    let a = archived().await;
    let record = a.export_and_drop().await;
    assert_eq!(record.sequence, 1);
    assert_eq!(record.entries, 4);
    assert_eq!(
        a.pipeline
            .db
            .count("SELECT count(*) FROM received_messages")
            .await,
        0
    );
    let (archive, config) = (a.archive(), a.config());
    let unit = a.unit_id.to_string();
    let url = a.database_url().to_owned();

    let (code, out) = prove(
        &archive,
        &config,
        &["--message-id", &unit, "--database-url", &url],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("anchor: ok"), "{out}");
    assert!(
        out.contains(&format!("key id (kid): {}", a.pipeline.app.bank.kid)),
        "{out}"
    );
    assert!(out.contains("signature: verified with key"), "{out}");
    assert!(out.contains("key sha256 (recorded)"), "{out}");
    assert!(out.contains("order.succeeded PAY-EV1"), "{out}");
    assert!(out.contains("outcome: applied"), "{out}");
    assert!(out.contains(&record.file), "{out}");
    assert!(out.trim_end().ends_with("PROVEN"), "{out}");

    // By reference: the batch that carried PAY-EV3.
    let (code, out) = prove(&archive, &config, &["--reference", "PAY-EV3"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&a.batch_id.to_string()), "{out}");
    assert!(out.contains("order.succeeded PAY-EV3"), "{out}");
    assert!(out.contains("order.succeeded PAY-EV2"), "{out}");

    let (code, out) = prove(&archive, &config, &["--reference", "PAY-NOWHERE"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no archived request matches"), "{out}");

    let (code, out) = evidence(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("files: 1 verified"), "{out}");

    let missing = a.dir.path().join("nowhere.toml");
    let (code, out) = prove(&archive, &missing, &["--message-id", &unit]);
    assert_eq!(code, 2, "{out}");
    a.pipeline.teardown().await;
}

#[tokio::test]
async fn another_key_under_the_same_kid_proves_nothing() {
    let a = archived().await;
    // A row recorded before the ingress recorded its verification facts (the legacy
    // partition of an upgraded database) names no fingerprint.
    sqlx::query("UPDATE received_messages SET verification = NULL WHERE message_id = $1")
        .bind(a.batch_id)
        .execute(&a.pipeline.db.pool)
        .await
        .unwrap();
    a.export_and_drop().await;
    let impostor_dir = tempfile::tempdir().unwrap();
    let impostor = TestBank::with_kid("BANK_X", &a.pipeline.app.bank.kid, impostor_dir.path());
    let config = a.ingress_config(&impostor, "impostor.toml");

    // No fingerprint recorded for the batch: the signature itself fails.
    let (code, out) = prove(
        &a.archive(),
        &config,
        &["--message-id", &a.batch_id.to_string()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
    assert!(out.contains("NOT PROVEN"), "{out}");

    // The unit request's recorded fingerprint names the key then in force.
    let (code, out) = prove(
        &a.archive(),
        &config,
        &["--message-id", &a.unit_id.to_string()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("key fingerprint mismatch"), "{out}");
    a.pipeline.teardown().await;
}

#[tokio::test]
async fn bnc_bindings_are_archived_without_secrets_and_proven_when_the_digest_allows() {
    let a = archived().await;
    let record = a.export_and_drop().await;
    let bytes = a.store().get(&record.file).unwrap().unwrap();
    let entries = decode_archive(&bytes).unwrap();
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(bytes.as_slice()),
        &mut plain,
    )
    .unwrap();
    let text = String::from_utf8(plain).unwrap();
    assert!(text.contains("BND-EV-MIN"), "{text}");
    for secret in [TOKEN, ACCOUNT_NO, "7788"] {
        assert!(!text.contains(secret), "{secret} archived");
    }
    let bnc: Vec<_> = entries
        .iter()
        .filter(|e| e.kind == "bnc.account_binding")
        .collect();
    assert_eq!(bnc.len(), 2);
    assert!(bnc.iter().all(|e| e.body_redacted && e.signature.is_some()));

    let (code, out) = prove(&a.archive(), &a.config(), &["--reference", "BND-EV-MIN"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&a.bnc_minified_id.to_string()), "{out}");
    assert!(out.contains("bnc.account.bound BND-EV-MIN"), "{out}");

    let (code, out) = prove(
        &a.archive(),
        &a.config(),
        &["--message-id", &a.bnc_spaced_id.to_string()],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot re-verify from the archive"), "{out}");
    a.pipeline.teardown().await;
}

#[tokio::test]
async fn tampering_is_named_and_a_rewritten_chain_is_caught_by_the_anchor() {
    let a = archived().await;
    let record = a.export_and_drop().await;
    let (archive, url) = (a.archive(), a.database_url().to_owned());
    let unit = a.unit_id.to_string();

    // One byte of the archive file.
    let flipped = a.dir.path().join("flipped");
    copy_archive(&archive, &flipped);
    let path = flipped.join(&record.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let (code, out) = evidence(&["verify", "--archive", flipped.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "archive file {} (record 1) does not match",
            record.file
        )),
        "{out}"
    );
    let (code, out) = prove(&flipped, &a.config(), &["--message-id", &unit]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&record.file), "{out}");

    // One manifest record edited.
    let edited = a.dir.path().join("edited");
    copy_archive(&archive, &edited);
    let manifest = std::fs::read_to_string(edited.join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        edited.join(MANIFEST_FILE),
        manifest.replace("\"entries\":4", "\"entries\":3"),
    )
    .unwrap();
    let (code, out) = evidence(&["verify", "--archive", edited.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("manifest record 1"), "{out}");

    // The file and the whole chain rewritten consistently: only the anchor can tell.
    let rewritten = a.dir.path().join("rewritten");
    copy_archive(&archive, &rewritten);
    let mut entries =
        decode_archive(&std::fs::read(rewritten.join(&record.file)).unwrap()).unwrap();
    entries.retain(|e| e.message_id != a.unit_id);
    let forged = connector_schema::evidence::encode_archive(&entries);
    std::fs::write(rewritten.join(&record.file), &forged).unwrap();
    let forged_record = ManifestRecord::new(
        None,
        &record.file,
        &record.relation,
        record.bounds(),
        entries.len(),
        &FileDigest::of(&forged),
    );
    assert_eq!(forged_record.sha256, sha256_hex(&forged));
    std::fs::write(
        rewritten.join(MANIFEST_FILE),
        render_manifest(&[forged_record]),
    )
    .unwrap();
    let (code, out) = evidence(&["verify", "--archive", rewritten.to_str().unwrap()]);
    assert_eq!(code, 0, "a consistent rewrite passes on its own: {out}");
    let (code, out) = evidence(&[
        "verify",
        "--archive",
        rewritten.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("manifest record 1 differs from its anchor"),
        "{out}"
    );
    a.pipeline.teardown().await;
}

#[tokio::test]
async fn a_re_export_reuses_its_record_and_other_content_is_refused() {
    let a = archived().await;
    let first = a.export().await.unwrap();
    let inode = || {
        std::fs::metadata(a.archive().join(&first.file))
            .unwrap()
            .ino()
    };
    let written = inode();
    let again = a.export().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(
        inode(),
        written,
        "an identical stored file is left as it is"
    );
    assert_eq!(temporaries(&a.archive()), Vec::<String>::new());
    assert_eq!(
        a.pipeline
            .db
            .count("SELECT count(*) FROM evidence_archive_files")
            .await,
        1
    );
    let manifest = a.store().get(MANIFEST_FILE).unwrap().unwrap();
    assert_eq!(
        parse_manifest(&String::from_utf8(manifest).unwrap()).unwrap(),
        std::slice::from_ref(&first)
    );

    // A crash after writing the files, before the commit: the retry anchors the same record.
    let mut tx = a.pipeline.db.pool.begin().await.unwrap();
    sqlx::query("DELETE FROM evidence_archive_files")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Another partition waits until that export is settled: the anchor never skips a record.
    sqlx::query("CREATE TABLE received_messages_later (LIKE received_messages INCLUDING ALL)")
        .execute(&a.pipeline.db.pool)
        .await
        .unwrap();
    let mut tx = a.pipeline.db.pool.begin().await.unwrap();
    let error = export_partition(&mut tx, &a.store(), "received_messages_later", a.bounds)
        .await
        .unwrap_err();
    drop(tx);
    assert!(
        format!("{error:#}").contains("retry that export first"),
        "{error:#}"
    );
    let url = a.database_url().to_owned();
    let archive = a.archive();
    let (code, out) = evidence(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("manifest record 1 (") && out.contains("is not anchored"),
        "{out}"
    );
    // The file damaged meanwhile: the retry, which gives the recorded bytes again, restores it.
    let path = archive.join(&first.file);
    let mut damaged = std::fs::read(&path).unwrap();
    damaged[20] ^= 1;
    std::fs::write(&path, damaged).unwrap();
    assert_eq!(a.export().await.unwrap(), first);
    assert_eq!(
        a.store().get(&first.file).unwrap().map(|b| sha256_hex(&b)),
        Some(first.sha256.clone())
    );
    assert_eq!(
        a.pipeline
            .db
            .count("SELECT count(*) FROM evidence_archive_files")
            .await,
        1
    );
    let (code, out) = evidence(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 0, "{out}");

    sqlx::query("UPDATE received_messages SET outcome = 'duplicate' WHERE message_id = $1")
        .bind(a.unit_id)
        .execute(&a.pipeline.db.pool)
        .await
        .unwrap();
    let error = a.export().await.unwrap_err();
    assert!(
        format!("{error:#}").contains("with other content"),
        "{error:#}"
    );
    assert_eq!(
        a.store().get(&first.file).unwrap().map(|b| sha256_hex(&b)),
        Some(first.sha256.clone())
    );
    assert_eq!(
        temporaries(&archive),
        Vec::<String>::new(),
        "the refused file was staged and is gone"
    );

    // A manifest that no longer holds the anchored head: no export appends to it, and
    // `verify` names the anchored record it lost.
    a.store().put(MANIFEST_FILE, b"").unwrap();
    let error = a.export().await.unwrap_err();
    assert!(
        format!("{error:#}").contains("does not hold the anchored record 1"),
        "{error:#}"
    );
    let (code, out) = evidence(&[
        "verify",
        "--archive",
        archive.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("anchored record 1") && out.contains("missing from the manifest"),
        "{out}"
    );
    // An edited one: no export appends to a chain that does not verify.
    let mut altered = first.clone();
    altered.entries += 1;
    a.store()
        .put(MANIFEST_FILE, &render_manifest(&[altered]))
        .unwrap();
    let error = a.export().await.unwrap_err();
    assert!(
        format!("{error:#}").contains("does not verify"),
        "{error:#}"
    );
    a.pipeline.teardown().await;
}

/// The path production takes: the lifecycle role, past the raw requests' retention, exports
/// each partition through the archive hook in the transaction that drops it; the requests are
/// then proven from the archive alone, and a flipped byte in their file is named.
#[tokio::test]
async fn the_lifecycle_role_archives_drops_and_the_request_is_proven_afterwards() {
    let a = archived().await;
    let settings = RetentionSettings::default();
    let archiver: Arc<dyn BeforeDrop> = Arc::new(EvidenceArchiver::new(Arc::new(a.store())));
    let lifecycle = Lifecycle::new(
        a.pipeline.db.pool.clone(),
        settings.clone(),
        NonceSettings::default().retention_secs,
        Some(archiver),
    );
    let later = OffsetDateTime::now_utc()
        + Duration::seconds(
            (settings.raw_requests_secs + 2 * settings.partition_interval_secs) as i64,
        );
    // Another process in the middle of an export holds the archive's lock: the partitions
    // are kept for the next cycle, counted as a lock timeout, not as an archive failure.
    let mut racing = a.pipeline.db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EXPORT_LOCK)
        .execute(&mut *racing)
        .await
        .unwrap();
    let report = lifecycle.cycle(later).await.unwrap();
    let raw_kept: Vec<_> = report
        .drops
        .kept
        .iter()
        .filter(|(name, _)| name.starts_with("received_messages_"))
        .collect();
    assert!(!raw_kept.is_empty(), "{report:?}");
    assert!(
        raw_kept.iter().all(|(_, why)| *why == Kept::LockTimeout),
        "{report:?}"
    );
    racing.rollback().await.unwrap();

    let report = lifecycle.cycle(later).await.unwrap();
    let dropped_raw: Vec<_> = report
        .drops
        .dropped
        .iter()
        .filter(|name| name.starts_with("received_messages_"))
        .collect();
    assert!(!dropped_raw.is_empty(), "{report:?}");
    let db = &a.pipeline.db;
    assert_eq!(db.count("SELECT count(*) FROM received_messages").await, 0);

    // Every dropped partition has its anchored record; together they hold the four requests.
    let records =
        parse_manifest(&String::from_utf8(a.store().get(MANIFEST_FILE).unwrap().unwrap()).unwrap())
            .unwrap();
    assert_eq!(records.len(), dropped_raw.len(), "{records:?}");
    assert_eq!(records.iter().map(|r| r.entries).sum::<i64>(), 4);
    assert_eq!(
        db.count("SELECT count(*) FROM evidence_archive_files")
            .await,
        records.len() as i64
    );

    let (archive, config) = (a.archive(), a.config());
    let unit = a.unit_id.to_string();
    let url = a.database_url().to_owned();
    let (code, out) = prove(
        &archive,
        &config,
        &["--message-id", &unit, "--database-url", &url],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("order.succeeded PAY-EV1"), "{out}");
    assert!(out.trim_end().ends_with("PROVEN"), "{out}");

    // The file that holds the unit request, one byte flipped: named, not proven.
    let holder = records.iter().find(|r| {
        r.entries > 0 && {
            let bytes = a.store().get(&r.file).unwrap().unwrap();
            decode_archive(&bytes)
                .unwrap()
                .iter()
                .any(|e| e.message_id == a.unit_id)
        }
    });
    let holder = holder.expect("the unit request is in an archived file");
    let path = archive.join(&holder.file);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).unwrap();
    let (code, out) = prove(&archive, &config, &["--message-id", &unit]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&holder.file), "{out}");
    a.pipeline.teardown().await;
}
