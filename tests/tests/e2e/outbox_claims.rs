//! The relay's claim on `ledger_outbox` reads what it claims, not the day's partition: on a
//! partition whose statistics were taken while it was young (as after midnight, when a new
//! one starts), holding many published rows and a backlog, one claim of 100 rows reads about
//! three pages per row it claims, however many rows the partition and the backlog hold.

use std::time::Duration;

use serde_json::Value;

use connector_e2e_tests::pipeline::TestDatabase;
use connector_workers::outbox::{self, CLAIM, CLAIM_SETTINGS};

/// The claim as it was written before: claimed rows joined back row by row.
const CLAIM_JOINED: &str =
    "UPDATE ledger_outbox o SET claimed_until = now() + make_interval(secs => $2)
     FROM (SELECT id FROM ledger_outbox
           WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) AS claim
     WHERE o.id = claim.id
     RETURNING o.id, o.event_id, o.event_type, o.body";

const PUBLISHED: i64 = 20_000;
const BACKLOG: i64 = 20_000;

/// `PUBLISHED` published rows, then a backlog of `BACKLOG` unpublished ones, in today's
/// partition, analyzed when it held 50 rows and never again.
async fn young_partition_with_history() -> TestDatabase {
    let db = TestDatabase::create().await;
    let rows = |count: i64, published: &str| {
        format!(
            "INSERT INTO ledger_outbox (event_id, event_type, reference, body, published_at)
             SELECT gen_random_uuid(), 'order.succeeded', 'PAY-' || g,
                    repeat('x', 400), {published}
             FROM generate_series(1, {count}) g;"
        )
    };
    let setup = format!(
        // Autovacuum would refresh the statistics this test needs stale.
        "DO $$ DECLARE p regclass; BEGIN
             FOR p IN SELECT inhrelid::regclass FROM pg_inherits
                      WHERE inhparent = 'ledger_outbox'::regclass LOOP
                 EXECUTE format('ALTER TABLE %s SET (autovacuum_enabled = false)', p);
             END LOOP;
         END $$;
         {young} ANALYZE ledger_outbox;
         {published} {backlog}",
        young = rows(50, "now()"),
        published = rows(PUBLISHED, "now()"),
        backlog = rows(BACKLOG, "NULL"),
    );
    sqlx::raw_sql(&setup).execute(&db.pool).await.unwrap();
    db
}

/// Pages the statement read to find its rows (the buffers of the plan under the update, which
/// writes its 100 rows whatever the plan), from `EXPLAIN (ANALYZE, BUFFERS)`, in a transaction
/// with `settings`, rolled back so that nothing is claimed.
async fn pages_read(db: &TestDatabase, settings: &str, statement: &str) -> (i64, String) {
    let mut tx = db
        .pool
        .begin_with(format!("BEGIN; {settings}"))
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement}"
    ))
    .bind(100_i64)
    .bind(30.0_f64)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    let pages = |node: &Value| {
        node["Shared Hit Blocks"].as_i64().unwrap() + node["Shared Read Blocks"].as_i64().unwrap()
    };
    let read = plan[0]["Plan"]["Plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(pages)
        .sum();
    (read, plan.to_string())
}

#[tokio::test]
async fn a_claim_reads_what_it_claims_not_the_whole_partition() {
    let db = young_partition_with_history().await;
    // The partition's heap alone: what a scan of it would touch.
    let heap_pages: i64 = sqlx::query_scalar(
        "SELECT sum(pg_relation_size(inhrelid) / current_setting('block_size')::int)::bigint
         FROM pg_inherits WHERE inhparent = 'ledger_outbox'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(heap_pages > 2_000, "the partition holds {heap_pages} pages");

    // About three pages per claimed row (its index descent and heap page), and no more for a
    // bigger backlog or partition.
    let (read, plan) = pages_read(&db, CLAIM_SETTINGS, CLAIM).await;
    assert!(
        read < 600,
        "one claim of 100 rows read {read} pages (the partition has {heap_pages}): {plan}"
    );

    // The controls: without its settings the claim reads the whole backlog; the statement as
    // it was joined the claimed rows back through the whole partition.
    let (sorted, plan) = pages_read(&db, "SET LOCAL enable_sort = on", CLAIM).await;
    assert!(sorted > heap_pages / 3, "{sorted} pages: {plan}");
    let (joined, plan) = pages_read(&db, "SET LOCAL enable_sort = on", CLAIM_JOINED).await;
    assert!(joined > heap_pages / 2, "{joined} pages: {plan}");

    // And the claim still takes the oldest unpublished rows, 100 of them, in id order.
    let claimed = outbox::claim(&db.pool, 100, Duration::from_secs(30))
        .await
        .unwrap();
    let oldest: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM ledger_outbox WHERE published_at IS NULL ORDER BY id LIMIT 100",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(claimed.iter().map(|row| row.id).collect::<Vec<_>>(), oldest);
    assert_eq!(
        db.count("SELECT count(*) FROM ledger_outbox WHERE claimed_until IS NOT NULL")
            .await,
        100
    );
    db.drop_database().await;
}
