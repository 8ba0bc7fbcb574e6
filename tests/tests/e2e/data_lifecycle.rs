//! The data lifecycle against the real database: partitions created ahead, dropped after their
//! table's retention (published events only, raw requests only through the archive hook, never
//! through a lock), batched purges, the upgrade of an existing database, and the retention rule:
//! a retry after everything purgeable was purged still emits no second event. The clock is
//! injected far ahead instead of sleeping.

use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use sqlx::PgPool;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use time::{Duration, OffsetDateTime};

use connector_e2e_tests::pipeline::{Pipeline, TestDatabase, spawn_pipeline, spawn_pipeline_with};
use connector_e2e_tests::{batch_body, spawn_app_with, unit_body};
use connector_schema::events::{EventType, LedgerEvent, Source};
use connector_workers::Step;
use connector_workers::config::RetentionSettings;
use connector_workers::lifecycle::{
    BeforeDrop, Kept, Lifecycle, Partition, PartitionedTable, partitions,
};
use connector_workers::outbox::EventColumns;

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
async fn expired_nonces_are_purged_by_the_lifecycle_and_recent_ones_kept() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-P1", "PENDING"), "PAY-P1").await;
    p.apply_all().await;
    assert_eq!(p.db.count("SELECT count(*) FROM seen_nonces").await, 1);
    let lifecycle = lifecycle(&p.db.pool, None);

    // Seen a moment ago: within the retention.
    let report = lifecycle.cycle(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(report.purged.seen_nonces, 0);
    assert_eq!(p.db.count("SELECT count(*) FROM seen_nonces").await, 1);
    let past_retention = Duration::seconds(NONCE_RETENTION_SECS as i64) + DAY;
    let report = lifecycle
        .cycle(OffsetDateTime::now_utc() + past_retention)
        .await
        .unwrap();
    assert_eq!(report.purged.seen_nonces, 1);
    assert_eq!(p.db.count("SELECT count(*) FROM seen_nonces").await, 0);
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

/// The migration that partitions the history tables: the upgrade test stops just before it.
const PARTITIONING_MIGRATION: i64 = 20261202000001;

/// The schema's migrations older than a version: a database as a release before it left it.
#[derive(Debug)]
struct MigrationsBefore(i64);

impl<'s> MigrationSource<'s> for MigrationsBefore {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            Ok(connector_schema::MIGRATOR
                .iter()
                .filter(|migration| migration.version < self.0)
                .cloned()
                .collect())
        })
    }
}

fn corelink_success(reference: &str) -> LedgerEvent {
    let at = OffsetDateTime::now_utc() - Duration::hours(1);
    LedgerEvent::new(
        Source::Corelink,
        EventType::OrderSucceeded,
        reference,
        "SUCCESS",
        at,
        at,
        serde_json::json!({}),
    )
}

/// Writes `event` through the workers' outbox statement, as an apply would.
async fn write_event(pool: &PgPool, event: &LedgerEvent) {
    let mut connection = pool.acquire().await.unwrap();
    connector_workers::outbox::write_columns(
        &mut connection,
        EventColumns {
            event_ids: &[event.event_id],
            event_types: std::slice::from_ref(&event.event_type),
            references: std::slice::from_ref(&event.reference),
            bodies: &[serde_json::to_string(event).unwrap()],
            message_id: None,
        },
    )
    .await
    .unwrap();
}

/// Fills the tables of the release before partitioning, as its workers wrote them.
async fn fill_unpartitioned(pool: &PgPool, unpublished: &LedgerEvent, published: &LedgerEvent) {
    let an_hour_ago = OffsetDateTime::now_utc() - Duration::hours(1);
    let statements = [
        "INSERT INTO orders (reference, client_id, status, bank_processed_at)
         VALUES ('PAY-U1', 'BANK_X', 'SUCCESS', $1), ('PAY-U2', 'BANK_X', 'SUCCESS', $1)",
        "INSERT INTO order_history (reference, message_id, client_id, idempotency_key, status,
                                    effect, bank_processed_at, received_at, recorded_at)
         VALUES ('PAY-U1', gen_random_uuid(), 'BANK_X', 'KEY-U1', 'SUCCESS', 'created', $1, $1, $1),
                ('PAY-U2', gen_random_uuid(), 'BANK_X', 'KEY-U2', 'SUCCESS', 'created', $1, $1, $1)",
        "INSERT INTO received_messages (message_id, kind, client_id, idempotency_key, nonce,
                                        body_sha256, outcome, received_at, processed_at,
                                        request_path, headers, body)
         VALUES (gen_random_uuid(), 'corelink.unit', 'BANK_X', 'KEY-U1', 'N-U1', 'x', 'applied',
                 $1, $1, '/callbacks/orders/status', '{}', '\\x7b7d')",
        "INSERT INTO paysafe_items (id, kind, status, tracking, deadline_at)
         VALUES ('PS-U1', 'payment', 'COMPLETED', 'final', $1 + interval '2 days')",
        "INSERT INTO paysafe_item_history (item_id, source, status, effect, recorded_at)
         VALUES ('PS-U1', 'webhook', 'COMPLETED', 'created', $1)",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(an_hour_ago)
            .execute(pool)
            .await
            .unwrap();
    }
    for (event, published_at) in [(unpublished, None), (published, Some(an_hour_ago))] {
        sqlx::query(
            "INSERT INTO ledger_outbox (event_id, event_type, reference, body, created_at, published_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(event.event_id)
        .bind(&event.event_type)
        .bind(&event.reference)
        .bind(serde_json::to_string(event).unwrap())
        .bind(an_hour_ago)
        .bind(published_at)
        .execute(pool)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn an_upgraded_database_keeps_its_rows_publishes_its_backlog_and_drops_its_legacy_partitions()
{
    let db = TestDatabase::create_empty().await;
    Migrator::new(MigrationsBefore(PARTITIONING_MIGRATION))
        .await
        .unwrap()
        .run(&db.pool)
        .await
        .unwrap();
    let (unpublished, published) = (corelink_success("PAY-U1"), corelink_success("PAY-U2"));
    fill_unpartitioned(&db.pool, &unpublished, &published).await;

    connector_workers::db::migrate(&db.pool, &RetentionSettings::default())
        .await
        .unwrap();
    // Every old row is in its table's legacy partition, reached through the parent.
    for (table, rows) in [
        ("order_history", 2),
        ("received_messages", 1),
        ("paysafe_item_history", 1),
        ("ledger_outbox", 2),
    ] {
        let legacy = format!("SELECT count(*) FROM {table}_legacy");
        assert_eq!(db.count(&legacy).await, rows, "{table}");
        let parent = format!("SELECT count(*) FROM {table}");
        assert_eq!(db.count(&parent).await, rows, "{table}");
    }
    let emitted: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT event_id FROM emitted_ledger_events ORDER BY reference")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(emitted, [unpublished.event_id, published.event_id]);

    let p = spawn_pipeline_with(spawn_app_with(|_| {}).await, db).await;
    // The backlog of the old release is published, and only it.
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, unpublished);

    // The trigger on the partitioned table still wakes the relays.
    let mut listener = connector_workers::outbox::listen(&p.db.pool).await.unwrap();
    let fresh = corelink_success("PAY-U3");
    write_event(&p.db.pool, &fresh).await;
    tokio::time::timeout(std::time::Duration::from_secs(10), listener.recv())
        .await
        .expect("a notification for the new outbox row")
        .unwrap();
    // Events emitted before the upgrade are not written again.
    write_event(&p.db.pool, &unpublished).await;
    write_event(&p.db.pool, &published).await;
    assert_eq!(p.db.count("SELECT count(*) FROM ledger_outbox").await, 3);
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, fresh);

    // After their retention the legacy partitions go like any other; raw requests only
    // through the archive.
    let far_ahead = OffsetDateTime::now_utc() + DAY * 500;
    let report = lifecycle(&p.db.pool, None).cycle(far_ahead).await.unwrap();
    assert!(
        report
            .drops
            .kept
            .contains(&("received_messages_legacy".to_owned(), Kept::NoArchive)),
        "{report:?}"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        1
    );
    let archive = Arc::new(RecordingArchive::default());
    let report = lifecycle(&p.db.pool, Some(archive.clone()))
        .cycle(far_ahead)
        .await
        .unwrap();
    assert!(report.drops.kept.is_empty(), "{report:?}");
    // The archive read the old raw request before its partition went (the newer, empty
    // partitions pass through it too).
    let archived = archive.0.lock().unwrap().clone();
    assert_eq!(
        archived[0],
        ("received_messages_legacy".to_owned(), 1),
        "{archived:?}"
    );
    assert_eq!(archived.iter().map(|(_, rows)| rows).sum::<i64>(), 1);
    for table in PartitionedTable::ALL {
        let names: Vec<String> = partitions_of(&p.db.pool, table)
            .await
            .into_iter()
            .map(|partition| partition.name)
            .collect();
        assert!(
            !names.contains(&format!("{}_legacy", table.name())),
            "{names:?}"
        );
        let rows = format!("SELECT count(*) FROM {}", table.name());
        assert_eq!(p.db.count(&rows).await, 0, "{table:?}");
    }
    assert_eq!(
        p.db.count("SELECT count(*) FROM emitted_ledger_events")
            .await,
        3
    );
    p.teardown().await;
}
