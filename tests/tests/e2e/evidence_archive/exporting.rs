//! Exporting partitions: a re-export, and the lifecycle role archiving before it drops.

use super::*;

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
