//! The plans of the apply's statements on `orders` under a group's settings: generic plans are
//! allowed there (no re-planning at every execution), so each must read `orders` through its
//! primary key even when it was built while the table was small and has grown since.

use connector_e2e_tests::pipeline::TestDatabase;
use connector_workers::apply::GROUP_SETTINGS;
use connector_workers::corelink::statements::{LOCK_ORDERS, UPDATE_ORDERS};

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
