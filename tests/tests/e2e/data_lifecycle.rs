//! The data lifecycle against the real database: partitions created ahead, dropped after their
//! table's retention (published events only, raw requests only through the archive hook, never
//! through a lock), batched purges, the upgrade of an existing database, and the retention rule:
//! a retry after everything purgeable was purged still emits no second event. The clock is
//! injected far ahead instead of sleeping.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};

use connector_e2e_tests::pipeline::{Pipeline, TestDatabase, spawn_pipeline};
use connector_e2e_tests::{batch_body, unit_body};
use connector_workers::Step;
use connector_workers::config::RetentionSettings;
use connector_workers::lifecycle::{
    BeforeDrop, Kept, Lifecycle, Partition, PartitionedTable, partitions,
};

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";
const DAY: Duration = Duration::days(1);
const NONCE_RETENTION_SECS: u64 = 7 * 86_400;

/// Records each partition it is given and how many rows it held: what an archive would read.
#[derive(Debug, Default)]
struct RecordingArchive(Mutex<Vec<(String, i64)>>);

impl BeforeDrop for RecordingArchive {
    fn before_drop<'a>(
        &'a self,
        connection: &'a mut sqlx::PgConnection,
        partition: &'a Partition,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            let rows: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {}", partition.name))
                .fetch_one(connection)
                .await?;
            self.0.lock().unwrap().push((partition.name.clone(), rows));
            Ok(())
        })
    }
}

fn lifecycle(pool: &PgPool, archive: Option<Arc<RecordingArchive>>) -> Lifecycle {
    Lifecycle::new(
        pool.clone(),
        RetentionSettings::default(),
        NONCE_RETENTION_SECS,
        archive.map(|archive| archive as Arc<dyn BeforeDrop>),
    )
}

async fn partitions_of(pool: &PgPool, table: PartitionedTable) -> Vec<Partition> {
    partitions::list(&mut pool.acquire().await.unwrap(), table)
        .await
        .unwrap()
}

async fn post(p: &Pipeline, path: &str, body: &str, key: &str) {
    let response = p.app.post_signed(path, body, key).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_migrated_database_has_partitions_ahead_on_the_grid_and_a_later_step_adds_more() {
    let db = TestDatabase::create().await;
    let now = OffsetDateTime::now_utc();
    for table in PartitionedTable::ALL {
        let all = partitions_of(&db.pool, table).await;
        let legacy = &all[0];
        assert_eq!(legacy.name, format!("{}_legacy", table.name()));
        assert_eq!(legacy.lower, None);
        // The first after the legacy one starts where it ends, the others on the day grid.
        assert_eq!(all[1].lower, Some(legacy.upper));
        for partition in &all[1..] {
            let lower = partition.lower.unwrap();
            assert_eq!(partition.name, partitions::partition_name(table, lower));
            assert_eq!(partition.upper.unix_timestamp() % 86_400, 0);
            assert_eq!(partition.upper.nanosecond(), 0);
        }
        for pair in all.windows(2) {
            assert_eq!(Some(pair[0].upper), pair[1].lower, "{table:?}: contiguous");
        }
        assert!(all.last().unwrap().upper >= now + DAY * 3, "{table:?}");
    }
    let first_after_legacy = &partitions_of(&db.pool, PartitionedTable::LedgerOutbox).await[2];
    assert!(first_after_legacy.name.ends_with("t000000"));

    let later = now + DAY * 2;
    assert_eq!(
        lifecycle(&db.pool, None).run_once(later).await.unwrap(),
        Step::Processed
    );
    for table in PartitionedTable::ALL {
        let last = partitions_of(&db.pool, table).await.pop().unwrap();
        assert!(last.upper >= later + DAY * 3, "{table:?}");
    }
    // Nothing more to do at the same instant.
    assert_eq!(
        lifecycle(&db.pool, None).run_once(later).await.unwrap(),
        Step::Idle
    );
    db.drop_database().await;
}

#[tokio::test]
async fn published_events_are_dropped_with_their_partition_and_unpublished_ones_kept() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-L1", "SUCCESS"), "PAY-L1").await;
    assert_eq!(p.apply_all().await, 1);
    let lifecycle = lifecycle(&p.db.pool, None);
    let later = OffsetDateTime::now_utc() + DAY * 10;

    // Not yet published: its partition stays.
    let report = lifecycle.cycle(later).await.unwrap();
    let kept_outbox: Vec<_> = report
        .drops
        .kept
        .iter()
        .filter(|(name, _)| name.starts_with("ledger_outbox"))
        .collect();
    assert_eq!(kept_outbox.len(), 1, "{report:?}");
    assert_eq!(kept_outbox[0].1, Kept::UnpublishedEvents);
    assert_eq!(p.db.count("SELECT count(*) FROM ledger_outbox").await, 1);
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 1);
    let report = lifecycle.cycle(later).await.unwrap();
    assert!(
        report
            .drops
            .dropped
            .iter()
            .any(|name| name.starts_with("ledger_outbox")),
        "{report:?}"
    );
    assert_eq!(p.db.count("SELECT count(*) FROM ledger_outbox").await, 0);
    assert_eq!(
        p.db.count("SELECT count(*) FROM emitted_ledger_events")
            .await,
        1
    );
    // Raw requests past their retention without an archive: kept, and counted.
    let report = lifecycle.cycle(later + DAY * 90).await.unwrap();
    assert!(
        report
            .drops
            .kept
            .iter()
            .any(|(name, reason)| name.starts_with("received_messages")
                && *reason == Kept::NoArchive),
        "{report:?}"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        1
    );
    p.teardown().await;
}

/// Runs a cycle far ahead (everything purgeable goes), then one at the real time, which
/// recreates the partitions of the present that the far one dropped.
async fn purge_everything(p: &Pipeline, archive: &Arc<RecordingArchive>) {
    let lifecycle = lifecycle(&p.db.pool, Some(archive.clone()));
    let report = lifecycle
        .cycle(OffsetDateTime::now_utc() + DAY * 500)
        .await
        .unwrap();
    assert!(report.drops.kept.is_empty(), "{report:?}");
    lifecycle.run_once(OffsetDateTime::now_utc()).await.unwrap();
    for table in [
        "idempotency_keys",
        "seen_nonces",
        "ledger_outbox",
        "order_history",
        "received_messages",
    ] {
        assert_eq!(
            p.db.count(&format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }
}

#[tokio::test]
async fn a_retry_after_everything_purgeable_was_purged_emits_no_second_event() {
    let p = spawn_pipeline().await;
    let body = unit_body("PAY-L2", "SUCCESS");
    post(&p, UNIT, &body, "KEY-L2").await;
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 1);

    let archive = Arc::new(RecordingArchive::default());
    purge_everything(&p, &archive).await;
    // The archive saw the raw request before its partition went.
    assert_eq!(
        archive
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, rows)| rows)
            .sum::<i64>(),
        1
    );

    // The bank's retry: same key, same body, a fresh nonce.
    post(&p, UNIT, &body, "KEY-L2").await;
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty());
    assert_eq!(
        p.db.count("SELECT count(*) FROM emitted_ledger_events")
            .await,
        1
    );
    assert_eq!(p.order_status("PAY-L2").await.as_deref(), Some("SUCCESS"));
    p.teardown().await;
}

#[tokio::test]
async fn a_batch_retry_after_everything_purgeable_was_purged_emits_no_second_event() {
    let p = spawn_pipeline().await;
    let body = batch_body("B-L3", &["PAY-L3A", "PAY-L3B"]);
    post(&p, BATCH, &body, "B-L3").await;
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 2);

    purge_everything(&p, &Arc::new(RecordingArchive::default())).await;

    post(&p, BATCH, &body, "B-L3").await;
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty());
    assert_eq!(
        p.db.count("SELECT count(*) FROM emitted_ledger_events")
            .await,
        2
    );
    p.teardown().await;
}

#[tokio::test]
async fn a_partition_whose_parent_is_locked_is_kept_then_dropped_once_released() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-L4", "SUCCESS"), "PAY-L4").await;
    assert_eq!(p.apply_all().await, 1);
    p.relay_all().await;
    let lifecycle = lifecycle(&p.db.pool, None);
    let later = OffsetDateTime::now_utc() + DAY * 10;

    // The partitions ahead first: creating one also locks the parent (without the timeout).
    partitions::ensure_ahead(&p.db.pool, &RetentionSettings::default(), later)
        .await
        .unwrap();
    // Another session holds a lock that conflicts with the drop's ACCESS EXCLUSIVE.
    let mut holder = p.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE ledger_outbox IN ACCESS SHARE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let report = lifecycle.cycle(later).await.unwrap();
    assert!(
        report
            .drops
            .kept
            .iter()
            .any(|(name, reason)| name.starts_with("ledger_outbox") && *reason == Kept::LockTimeout),
        "{report:?}"
    );
    assert_eq!(p.db.count("SELECT count(*) FROM ledger_outbox").await, 1);

    holder.rollback().await.unwrap();
    let report = lifecycle.cycle(later).await.unwrap();
    assert!(
        report
            .drops
            .kept
            .iter()
            .all(|(name, _)| !name.starts_with("ledger_outbox"))
    );
    assert_eq!(p.db.count("SELECT count(*) FROM ledger_outbox").await, 0);
    p.teardown().await;
}

#[tokio::test]
async fn idempotency_keys_and_resolved_quarantine_are_purged_in_batches_and_held_rows_never() {
    let db = TestDatabase::create().await;
    let old = OffsetDateTime::now_utc() - DAY * 200;
    sqlx::query(
        "INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, first_message_id, created_at)
         SELECT 'BANK_X', 'K' || n, 'unit', 'R' || n, gen_random_uuid(), $1 FROM generate_series(1, 7) n",
    )
    .bind(old)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, first_message_id)
         VALUES ('BANK_X', 'FRESH', 'unit', 'R', gen_random_uuid())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    for (state, resolved_at) in [
        ("released", Some(old)),
        ("discarded", Some(old)),
        ("held", None),
        ("released", Some(OffsetDateTime::now_utc())),
    ] {
        let message_id = uuid::Uuid::new_v4();
        sqlx::query(
            "INSERT INTO quarantined_messages (message_id, reason, detail, kind, received_at, quarantined_at,
                                               state, resolved_at, headers, body)
             VALUES ($1, 'FINAL_STATUS_CONFLICT', '', 'bnc.account_binding', $2, $2, $3, $4, '{}', '')",
        )
        .bind(message_id)
        .bind(old)
        .bind(state)
        .bind(resolved_at)
        .execute(&db.pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO quarantined_secret_bodies (message_id, body) VALUES ($1, 'x')")
            .bind(message_id)
            .execute(&db.pool)
            .await
            .unwrap();
    }

    let settings = RetentionSettings {
        delete_batch: 3,
        ..RetentionSettings::default()
    };
    let lifecycle = Lifecycle::new(db.pool.clone(), settings, NONCE_RETENTION_SECS, None);
    let report = lifecycle.cycle(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(report.purged.idempotency_keys, 7);
    assert_eq!(report.purged.quarantined_messages, 2);
    assert_eq!(db.count("SELECT count(*) FROM idempotency_keys").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM quarantined_messages WHERE state = 'held'")
            .await,
        1
    );
    assert_eq!(
        db.count("SELECT count(*) FROM quarantined_messages").await,
        2
    );
    assert_eq!(
        db.count("SELECT count(*) FROM quarantined_secret_bodies")
            .await,
        2
    );

    // Even far ahead, a held row stays.
    let report = lifecycle
        .cycle(OffsetDateTime::now_utc() + DAY * 1_000)
        .await
        .unwrap();
    assert_eq!(report.purged.quarantined_messages, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM quarantined_messages").await,
        1
    );
    db.drop_database().await;
}
