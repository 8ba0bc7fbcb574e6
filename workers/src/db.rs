//! PostgreSQL access: the pool, the migrations, and which errors are worth retrying.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{DatabaseSettings, RetentionSettings};

/// A connection back in the pool for less than this is handed out untested: sqlx tested it as
/// it came back (a round trip on release), and testing it again on every acquire cost each
/// group, each relay claim and each mark another round trip (medians in the pipeline bench:
/// a relay cycle 31 → 23 ms, a claim 5.7 → 4.3 ms). One idle for longer is tested first,
/// since a restart or a failover most likely killed it while it sat; one killed within the
/// window fails its first statement, a transient error the apply and the relay already retry.
pub const TESTED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A pool that connects lazily, so a worker starts (and reports not-ready) while the
/// database is down instead of crashing.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    pool_testing_after(settings, TESTED_AFTER_IDLE)
}

/// [`pool`], testing connections idle for `idle` or longer (tests choose the window).
pub fn pool_testing_after(settings: &DatabaseSettings, idle: Duration) -> anyhow::Result<PgPool> {
    // Plan every execution with its real arguments. With cached generic plans, a statement
    // first planned while `orders` was nearly empty keeps scanning the whole table as it
    // grows (seen in the pipeline bench: 2-5x slower applies on a young database).
    let options: PgConnectOptions = settings
        .url
        .parse::<PgConnectOptions>()?
        .options([("plan_cache_mode", "force_custom_plan")]);
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .after_connect(|connection, _| Box::pin(refuse_standby(connection)))
        .test_before_acquire(false)
        .before_acquire(move |connection, meta| {
            Box::pin(async move {
                use sqlx::Connection as _;
                if meta.idle_for >= idle {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// Behind a failover proxy (HAProxy on Patroni's health checks), a new connection can still
/// reach a demoted primary for a check interval: such a connection is refused at once, as
/// unreachable, instead of staying in the pool and failing every write with 25006.
async fn refuse_standby(connection: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(connection)
        .await?;
    if standby {
        return Err(sqlx::Error::Protocol(
            "connected to a standby (in recovery), not the primary".into(),
        ));
    }
    Ok(())
}

/// Creates the database named in `url` if it does not exist yet (first start of a new
/// environment; production databases are usually provisioned beforehand).
pub async fn create_if_missing(url: &str) -> anyhow::Result<bool> {
    use sqlx::migrate::MigrateDatabase as _;
    if sqlx::Postgres::database_exists(url).await? {
        return Ok(false);
    }
    sqlx::Postgres::create_database(url).await?;
    Ok(true)
}

/// Applies pending migrations, then creates the partitions ahead so that the tables accept
/// rows at once; safe to run from several processes at once (sqlx and the partition grid take
/// advisory locks).
pub async fn migrate(pool: &PgPool, retention: &RetentionSettings) -> anyhow::Result<()> {
    connector_schema::MIGRATOR.run(pool).await?;
    crate::lifecycle::partitions::ensure_ahead(pool, retention, time::OffsetDateTime::now_utc())
        .await?;
    Ok(())
}

/// Asks the database for `SELECT 1` through `pool`. A pool timeout alone says nothing (every
/// connection may be busy applying), so then one connection of its own is tried, held to the
/// pool's rule (a standby is refused): behind a failover proxy with no primary up, that is
/// where the outage shows (the proxy accepts, then closes, or a standby answers), whereas the
/// pool only reports that it timed out.
pub async fn probe(pool: &PgPool) -> Result<(), sqlx::Error> {
    use sqlx::Connection as _;
    match sqlx::query("SELECT 1").execute(pool).await {
        Err(sqlx::Error::PoolTimedOut) => {
            let options = pool.connect_options();
            let connect = sqlx::PgConnection::connect_with(&options);
            let within = pool.options().get_acquire_timeout();
            let mut connection = match tokio::time::timeout(within, connect).await {
                Ok(connected) => connected?,
                Err(_) => return Err(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())),
            };
            let primary = refuse_standby(&mut connection).await;
            let _ = connection.close().await;
            primary
        }
        answered => answered.map(drop),
    }
}

/// Whether `error` is a passing condition (database unreachable or restarting, deadlock,
/// serialization failure, pool exhausted) rather than a fault of the message or the code.
/// The database cannot be reached (as opposed to busy: a pool timeout is not counted, so a
/// worker whose connections are all applying does not take itself for cut off).
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P0")),
        _ => false,
    }
}

pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            let code = code.as_ref();
            // 08: connection exception; 40001 serialization failure; 40P01 deadlock;
            // 55P03 lock not available; 57P0x operator intervention (shutdown, restart);
            // 53300 too many connections; 25006 read-only transaction (a primary demoted
            // during a failover, still reached until the proxy cuts it).
            code.starts_with("08")
                || matches!(
                    code,
                    "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300" | "25006"
                )
        }),
        _ => false,
    }
}
