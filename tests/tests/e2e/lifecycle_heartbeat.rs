//! The lifecycle role's heartbeats against the real database: the time of its last successful
//! cycle and of its last archive file, on the cycle's clock (injected far ahead). A cycle that
//! keeps partitions (a busy parent, a failing archive) still ran; one that errors did not, and
//! an archive that failed is not an archive.

use std::sync::Arc;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use time::{Duration, OffsetDateTime};

use connector_e2e_tests::pipeline::TestDatabase;
use connector_schema::evidence::{FsArchiveStore, MANIFEST_FILE};
use connector_workers::config::{NonceSettings, RetentionSettings};
use connector_workers::evidence::EvidenceArchiver;
use connector_workers::lifecycle::{BeforeDrop, Kept, Lifecycle, partitions};
use connector_workers::metrics::{EVIDENCE_LAST_ARCHIVE, LIFECYCLE_LAST_SUCCESS};

/// The value of an unlabelled gauge, `None` while it was never set.
fn gauge(handle: &PrometheusHandle, name: &str) -> Option<f64> {
    handle.render().lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        Some(value.trim().parse().unwrap())
    })
}

fn at(instant: OffsetDateTime) -> Option<f64> {
    Some(instant.unix_timestamp() as f64)
}

async fn sql(db: &TestDatabase, statement: &str) {
    sqlx::query(statement).execute(&db.pool).await.unwrap();
}

#[tokio::test]
async fn the_heartbeats_advance_with_successful_cycles_and_archives_only() {
    // A recorder of this test's own, on its thread: the test runtime polls every step here,
    // while the tests running in parallel set the same gauges in the process's recorder.
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);

    let db = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let archiver: Arc<dyn BeforeDrop> = Arc::new(EvidenceArchiver::new(Arc::new(
        FsArchiveStore::open(dir.path()).unwrap(),
    )));
    let settings = RetentionSettings::default();
    let lifecycle = Lifecycle::new(
        db.pool.clone(),
        settings.clone(),
        NonceSettings::default().retention_secs,
        Some(archiver),
    );
    assert_eq!(gauge(&handle, LIFECYCLE_LAST_SUCCESS), None);
    assert_eq!(gauge(&handle, EVIDENCE_LAST_ARCHIVE), None);

    let interval = Duration::seconds(settings.partition_interval_secs as i64);
    let retention = Duration::seconds(settings.raw_requests_secs as i64);
    let first = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap() + retention + interval * 2;

    // A busy parent keeps its partitions for the next cycle: the cycle still ran, and the
    // raw-request partitions were archived and dropped.
    partitions::ensure_ahead(&db.pool, &settings, first)
        .await
        .unwrap();
    let mut holder = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ledger_outbox IN ACCESS SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let report = lifecycle.cycle(first).await.unwrap();
    holder.rollback().await.unwrap();
    assert!(
        report
            .drops
            .kept
            .iter()
            .any(|(name, why)| name.starts_with("ledger_outbox") && *why == Kept::LockTimeout),
        "{report:?}"
    );
    assert!(
        report
            .drops
            .dropped
            .iter()
            .any(|name| name.starts_with("received_messages_")),
        "{report:?}"
    );
    assert_eq!(gauge(&handle, LIFECYCLE_LAST_SUCCESS), at(first));
    assert_eq!(gauge(&handle, EVIDENCE_LAST_ARCHIVE), at(first));

    // The archive's manifest unreadable: raw-request partitions are kept as archive failures.
    // The cycle ran; the archive's heartbeat stays where it was.
    let manifest = dir.path().join(MANIFEST_FILE);
    let intact = std::fs::read(&manifest).unwrap();
    std::fs::write(&manifest, b"not a manifest\n").unwrap();
    let second = first + retention + interval * 5;
    let report = lifecycle.cycle(second).await.unwrap();
    assert!(
        report.drops.kept.iter().any(
            |(name, why)| name.starts_with("received_messages_") && *why == Kept::ArchiveFailed
        ),
        "{report:?}"
    );
    assert_eq!(gauge(&handle, LIFECYCLE_LAST_SUCCESS), at(second));
    assert_eq!(gauge(&handle, EVIDENCE_LAST_ARCHIVE), at(first));

    // A cycle that errors (a table it purges is gone) is no heartbeat.
    sql(&db, "ALTER TABLE seen_nonces RENAME TO seen_nonces_away").await;
    let third = second + interval;
    let error = lifecycle.cycle(third).await.unwrap_err();
    assert!(format!("{error:#}").contains("seen_nonces"), "{error:#}");
    assert_eq!(gauge(&handle, LIFECYCLE_LAST_SUCCESS), at(second));
    assert_eq!(gauge(&handle, EVIDENCE_LAST_ARCHIVE), at(first));

    // Repaired, the next cycle reports both again.
    sql(&db, "ALTER TABLE seen_nonces_away RENAME TO seen_nonces").await;
    std::fs::write(&manifest, intact).unwrap();
    let report = lifecycle.cycle(third).await.unwrap();
    assert!(report.drops.kept.is_empty(), "{report:?}");
    assert_eq!(gauge(&handle, LIFECYCLE_LAST_SUCCESS), at(third));
    assert_eq!(gauge(&handle, EVIDENCE_LAST_ARCHIVE), at(third));
    db.drop_database().await;
}
