//! Proving requests from the archive alone, and what a forged key or a tampered file proves.

use super::*;

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
