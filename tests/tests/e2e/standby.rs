//! A failover proxy can still hand a new connection to a demoted primary, now a standby, for a
//! check interval. The workers' pool refuses such a connection at connect (it would fail every
//! write), and the outage watch counts a database where only a standby answers as unreachable,
//! so the apply role gives its messages back and pauses instead of holding them. A real
//! standby: `pg_basebackup -R` of a PostgreSQL of the test's own.

use std::time::Duration;

use connector_chaos::services::Postgres;
use connector_workers::config::DatabaseSettings;
use connector_workers::db;

fn pool_on(port: u16) -> sqlx::PgPool {
    db::pool(&DatabaseSettings {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        max_connections: 2,
        acquire_timeout_ms: 1_000,
    })
    .unwrap()
}

#[tokio::test]
async fn a_standby_is_refused_by_the_pool_and_seen_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Postgres::init(&dir.path().join("primary")).await.unwrap();
    let standby = Postgres::standby_of(&primary, &dir.path().join("standby"))
        .await
        .unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(
            &sqlx::PgPool::connect(&format!("postgres://postgres@{}/postgres", standby.addr()))
                .await
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(in_recovery, "the standby is in recovery");

    let on_standby = pool_on(standby.port);
    let refused = sqlx::query("SELECT 1").execute(&on_standby).await;
    assert!(
        matches!(refused, Err(sqlx::Error::PoolTimedOut)),
        "no connection to a standby is kept: {refused:?}"
    );
    let probed = tokio::time::timeout(Duration::from_secs(10), db::probe(&on_standby))
        .await
        .expect("the probe ends");
    match probed {
        Err(error) => {
            assert!(error.to_string().contains("standby"), "{error}");
            assert!(db::is_unreachable(&error), "{error}");
        }
        Ok(()) => panic!("a database where only a standby answers passed the probe"),
    }

    let on_primary = pool_on(primary.port);
    sqlx::query("SELECT 1").execute(&on_primary).await.unwrap();
    db::probe(&on_primary).await.unwrap();
}
