//! The workers' pool hands out a connection back from its last use moments ago untested, and
//! tests one that sat idle longer (`db::TESTED_AFTER_IDLE` says why): a connection the database
//! killed while it sat is replaced before anyone gets it, and one killed within the window
//! costs its next user one failed statement, the transient error the apply and the relay retry.

use std::time::Duration;

use connector_e2e_tests::eventually;
use connector_e2e_tests::pipeline::TestDatabase;
use connector_workers::config::DatabaseSettings;
use connector_workers::db;

const BACKEND: &str = "SELECT pg_backend_pid()";

/// A one-connection pool on `db`, testing connections idle for `idle` or longer.
fn one_connection(db: &TestDatabase, idle: Duration) -> sqlx::PgPool {
    let settings = DatabaseSettings {
        max_connections: 1,
        ..TestDatabase::settings_for(&db.url)
    };
    db::pool_testing_after(&settings, idle).unwrap()
}

/// Waits until `pool`'s one connection is back and idle: sqlx tests a connection as it comes
/// back, in a task of its own, and a kill during that test would close it there instead.
async fn back_in(pool: &sqlx::PgPool) {
    let back = eventually(Duration::from_secs(10), || async { pool.num_idle() == 1 }).await;
    assert!(back, "the connection went back to the pool");
}

/// Kills the backend `pid` from another connection, as a restart or a failover would.
async fn kill(db: &TestDatabase, pid: i32) {
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(killed, "backend {pid} terminated");
}

#[tokio::test]
async fn a_connection_killed_while_idle_is_replaced_before_it_is_handed_out() {
    let db = TestDatabase::create().await;
    let pool = one_connection(&db, db::TESTED_AFTER_IDLE);
    let first: i32 = sqlx::query_scalar(BACKEND).fetch_one(&pool).await.unwrap();
    back_in(&pool).await;
    tokio::time::sleep(db::TESTED_AFTER_IDLE + Duration::from_millis(200)).await;
    kill(&db, first).await;

    let second: i32 = sqlx::query_scalar(BACKEND)
        .fetch_one(&pool)
        .await
        .expect("the dead connection is tested and replaced, not handed out");
    assert_ne!(second, first, "a new backend answered");
    pool.close().await;
    db.drop_database().await;
}

#[tokio::test]
async fn a_connection_killed_within_the_window_fails_one_statement_then_the_pool_recovers() {
    let db = TestDatabase::create().await;
    // A window no test outlasts: the killed connection is handed out untested.
    let pool = one_connection(&db, Duration::from_secs(3600));
    let first: i32 = sqlx::query_scalar(BACKEND).fetch_one(&pool).await.unwrap();
    back_in(&pool).await;
    kill(&db, first).await;

    let failed = sqlx::query_scalar::<_, i32>(BACKEND).fetch_one(&pool).await;
    assert!(
        failed.is_err(),
        "the untested dead connection fails its statement: {failed:?}"
    );
    let second: i32 = sqlx::query_scalar(BACKEND)
        .fetch_one(&pool)
        .await
        .expect("the failed connection was closed on release and a new one opened");
    assert_ne!(second, first);
    pool.close().await;
    db.drop_database().await;
}
