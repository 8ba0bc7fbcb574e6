//! The plans of the apply's statements under a group's settings: generic plans are allowed
//! there (no re-planning at every execution), so each must read `orders`, `seen_nonces` and
//! `idempotency_keys` through their primary keys even when it was built while the tables were
//! small and they have grown since.

use connector_e2e_tests::pipeline::TestDatabase;
use connector_workers::apply::GROUP_SETTINGS;
use connector_workers::corelink::statements::{LOCK_ORDERS, UNITS_SEEN, UPDATE_ORDERS};

/// The generic plan of each statement, built now, then explained again after `orders` grew.
async fn generic_plans(db: &TestDatabase, settings: &str) -> Vec<String> {
    let mut conn = db.pool.acquire().await.unwrap();
    let mut plans = Vec::new();
    sqlx::raw_sql(&format!(
        "BEGIN; {settings}; SET LOCAL plan_cache_mode = force_generic_plan;
         PREPARE lock_orders(text[]) AS {LOCK_ORDERS};
         PREPARE update_orders(text[], text[], text[], text[], text[], timestamptz[]) AS {UPDATE_ORDERS};"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    for explain in [
        "EXPLAIN EXECUTE lock_orders('{PAY-1}')",
        "EXPLAIN EXECUTE update_orders('{PAY-1}', '{SUCCESS}', '{NULL}', '{NULL}', '{NULL}', '{2026-12-01T00:00:00Z}')",
    ] {
        // Planned now, on the small table; explained again once it is big.
        sqlx::query(explain).execute(&mut *conn).await.unwrap();
        plans.push(explain);
    }
    sqlx::query(
        "INSERT INTO orders (reference, client_id, status, bank_processed_at)
         SELECT 'PAY-BIG-' || g, 'bank_x', 'SUCCESS', now() FROM generate_series(1, 20000) g",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    let mut explained = Vec::new();
    for explain in plans {
        let lines: Vec<String> = sqlx::query_scalar(explain)
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        explained.push(lines.join("\n"));
    }
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    explained
}

/// A database whose `orders` was analyzed with a few dozen rows, as autovacuum's first ANALYZE
/// leaves a young one.
async fn young_database() -> TestDatabase {
    let db = TestDatabase::create().await;
    sqlx::raw_sql(
        "INSERT INTO orders (reference, client_id, status, bank_processed_at)
         SELECT 'PAY-' || g, 'bank_x', 'SUCCESS', now() FROM generate_series(1, 50) g;
         ANALYZE orders;",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    db
}

#[tokio::test]
async fn generic_plans_built_on_a_small_orders_table_still_use_its_primary_key() {
    let db = young_database().await;
    for plan in generic_plans(&db, GROUP_SETTINGS).await {
        assert!(!plan.contains("Seq Scan on orders"), "{plan}");
        assert!(
            plan.contains("using orders_pkey on orders")
                && plan.contains("Index Cond: (reference = ANY ($1))"),
            "{plan}"
        );
    }
    db.drop_database().await;

    // The control: without the group's settings the same generic plans scan the whole table,
    // which is why the workers' sessions otherwise re-plan every execution.
    let db = young_database().await;
    let unprotected = generic_plans(&db, "SET LOCAL enable_seqscan = on").await;
    assert!(
        unprotected
            .iter()
            .any(|plan| plan.contains("Seq Scan on orders")),
        "{unprotected:?}"
    );
    db.drop_database().await;
}

/// The generic plan of the units' lookup (`statements::UNITS_SEEN`, or `statement`) built on
/// empty `seen_nonces` and `idempotency_keys`, explained once they hold 20 000 rows each.
async fn units_seen_plan(statement: &str) -> String {
    let db = TestDatabase::create().await;
    sqlx::raw_sql("ANALYZE seen_nonces; ANALYZE idempotency_keys;")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let explain = "EXPLAIN (COSTS OFF) EXECUTE units_seen('{bank_x}', '{n-1}', '{k-1}')";
    sqlx::raw_sql(&format!(
        "BEGIN; {GROUP_SETTINGS}; SET LOCAL plan_cache_mode = force_generic_plan;
         PREPARE units_seen(text[], text[], text[]) AS {statement};
         {explain};
         INSERT INTO seen_nonces (client_id, nonce, request_fingerprint, message_id, request_timestamp)
         SELECT 'bank_x', 'n-' || g, 'f', gen_random_uuid(), now() FROM generate_series(1, 20000) g;
         INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, first_message_id)
         SELECT 'bank_x', 'k-' || g, 'unit', 'PAY-' || g, gen_random_uuid() FROM generate_series(1, 20000) g;"
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let lines: Vec<String> = sqlx::query_scalar(explain)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut *conn).await.unwrap();
    drop(conn);
    db.drop_database().await;
    // One line, single spaces: a probe and its index condition read as one phrase.
    lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn the_units_lookup_probes_nonces_and_keys_by_key_whatever_the_plan_was_built_on() {
    let plan = units_seen_plan(UNITS_SEEN).await;
    for probe in [
        "seen_nonces_pkey on seen_nonces s Index Cond: ((client_id = u.client_id) AND (nonce = u.nonce))",
        "idempotency_keys_pkey on idempotency_keys k Index Cond: ((client_id = u.client_id) AND (idempotency_key = u.idempotency_key))",
    ] {
        assert!(plan.contains(probe), "{plan}");
    }
    assert!(
        !plan.contains("hashed") && !plan.contains("Materialize"),
        "{plan}"
    );

    // The control: the same lookup as `EXISTS` and a plain join, as it was, reads both tables
    // whole at every execution (a hashed subplan, a materialized scan filtered per unit).
    let plan = units_seen_plan(
        "SELECT EXISTS (SELECT FROM seen_nonces s WHERE s.client_id = u.client_id AND s.nonce = u.nonce),
                k.scope, k.reference
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
              AS u(client_id, nonce, idempotency_key, position)
         LEFT JOIN idempotency_keys k
              ON k.client_id = u.client_id AND k.idempotency_key = u.idempotency_key
         ORDER BY u.position",
    )
    .await;
    assert!(plan.contains("Materialize"), "{plan}");
    assert!(
        !plan.contains("Index Cond: ((client_id = u.client_id) AND (nonce = u.nonce))"),
        "{plan}"
    );
}
