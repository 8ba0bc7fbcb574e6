//! The throw-away environment each measurement runs in: a PostgreSQL database and a RabbitMQ
//! topology prefix of its own, created fresh and removed afterwards, so that runs never see
//! each other's rows or messages. Everything created is also recorded until it is removed, so
//! that a failed or interrupted run still leaves nothing behind ([`Env::sweep`]).

use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use connector_schema::Topology;
use connector_schema::seal::{SealKeySettings, SealKeys, SealSettings};
use connector_schema::topology::TopologySettings;
use connector_workers::config::DatabaseSettings;

/// `x-expires` of every bench queue: should the tool die before deleting them, the broker
/// deletes them this long after their last use.
pub const QUEUE_EXPIRES_SECS: u64 = 300;

/// How long a pool waits for a connection before the attempt counts as failed.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker and database server the bench runs against, and what it has created on them.
#[derive(Debug)]
pub struct Env {
    pub amqp_url: String,
    admin_url: String,
    /// On the maintenance database: creates and drops the per-run databases.
    admin: PgPool,
    /// Preloading, queue depths and deleting topologies; the workers open their own.
    broker: Connection,
    created: Mutex<Created>,
    /// Orders each new database starts with (see [`Env::create_database`]).
    seed_orders: u64,
    /// Cancelled on Ctrl-C: every worker, server and wait the bench started stops.
    pub stop: CancellationToken,
}

/// Databases and topologies created and not yet removed: what [`Env::sweep`] must remove
/// if a run fails or is interrupted.
#[derive(Debug, Default)]
struct Created {
    databases: Vec<String>,
    topologies: Vec<Topology>,
}

/// A migrated database of one run: its name to drop it, its URL for the run's pools.
#[derive(Debug, Clone)]
pub struct BenchDatabase {
    pub name: String,
    pub url: String,
}

impl BenchDatabase {
    /// One connection to it, for the bench's own reads beside the pipeline's pools.
    pub async fn connection(&self) -> sqlx::Result<PgPool> {
        PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url)
            .await
    }
}

/// What the bench knows about the servers, printed above the figures because they depend on
/// it (where the servers run, whether commits are flushed).
#[derive(Debug)]
pub struct ServerFacts {
    pub postgres_version: String,
    pub synchronous_commit: String,
    pub fsync: String,
    pub shared_buffers: String,
    pub postgres_local: bool,
    pub rabbitmq_local: bool,
}

impl Env {
    /// Connects to both servers (so a missing one fails at once, before any work).
    pub async fn connect(
        amqp_url: &str,
        admin_url: &str,
        seed_orders: u64,
    ) -> anyhow::Result<Self> {
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin_url}"))?;
        let broker = Connection::connect(
            amqp_url,
            ConnectionProperties::default().with_connection_name("pipeline-bench".into()),
        )
        .await
        .context("connecting to RabbitMQ")?;
        Ok(Self {
            amqp_url: amqp_url.to_owned(),
            admin_url: admin_url.to_owned(),
            admin,
            broker,
            created: Mutex::new(Created::default()),
            seed_orders,
            stop: CancellationToken::new(),
        })
    }

    pub async fn server_facts(&self) -> anyhow::Result<ServerFacts> {
        let (postgres_version, synchronous_commit, fsync, shared_buffers): (
            String,
            String,
            String,
            String,
        ) = sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'),
                    current_setting('fsync'), current_setting('shared_buffers')",
        )
        .fetch_one(&self.admin)
        .await
        .context("reading the PostgreSQL settings")?;
        let postgres_host = self
            .admin_url
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map(|options| options.get_host().to_owned())
            .unwrap_or_default();
        let rabbitmq_host = self
            .amqp_url
            .parse::<lapin::uri::AMQPUri>()
            .map(|uri| uri.authority.host)
            .unwrap_or_default();
        Ok(ServerFacts {
            postgres_version,
            synchronous_commit,
            fsync,
            shared_buffers,
            postgres_local: is_local(&postgres_host),
            rabbitmq_local: is_local(&rabbitmq_host),
        })
    }

    /// Pool settings for `database`, as a workers process would configure them.
    pub fn database_settings(database: &BenchDatabase, max_connections: u32) -> DatabaseSettings {
        DatabaseSettings {
            url: database.url.clone(),
            max_connections,
            acquire_timeout_ms: u64::try_from(ACQUIRE_TIMEOUT.as_millis()).unwrap_or(5_000),
        }
    }

    pub fn seed_orders(&self) -> u64 {
        self.seed_orders
    }

    /// `CREATE DATABASE bench_<uuid>`, migrated with the workers' own migrations, then seeded
    /// with `seed_orders` settled orders of other references and analysed.
    ///
    /// Why seed: on an empty `orders` table, autovacuum's first ANALYZE (at ~50 rows) makes
    /// the generic plan of the workers' prepared `SELECT ... WHERE reference = ANY($1) FOR
    /// UPDATE` a sequential scan, and every pooled connection keeps that plan until the next
    /// ANALYZE, a minute or more later; each apply then scans the whole growing table, and a
    /// run is fast or several times slower depending on when autovacuum happened to pass.
    /// A production database is large and analysed, so the plan is an index scan; seeding
    /// gives every run that plan. `--seed-orders 0` shows the empty-database behaviour.
    pub async fn create_database(&self) -> anyhow::Result<BenchDatabase> {
        let name = format!("bench_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"))?;
        self.lock().databases.push(name.clone());
        let (server, _) = self
            .admin_url
            .rsplit_once('/')
            .context("the database URL has no database name")?;
        let database = BenchDatabase {
            url: format!("{server}/{name}"),
            name,
        };
        let pool = connector_workers::db::pool(&Self::database_settings(&database, 2))?;
        let prepared = prepare(&pool, self.seed_orders).await;
        close_pool(&pool).await;
        prepared.with_context(|| format!("migrating and seeding {}", database.name))?;
        Ok(database)
    }

    /// `DROP DATABASE ... WITH (FORCE)`: also ends any connection still open on it.
    pub async fn drop_database(&self, database: &BenchDatabase) -> anyhow::Result<()> {
        self.drop_database_named(&database.name).await
    }

    async fn drop_database_named(&self, name: &str) -> anyhow::Result<()> {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("DROP DATABASE {name}"))?;
        self.lock().databases.retain(|n| n != name);
        Ok(())
    }

    /// A fresh `bench-<uuid>` topology whose queues expire if abandoned.
    pub fn new_topology(&self) -> TopologySettings {
        let settings = TopologySettings {
            prefix: format!("bench-{}", Uuid::new_v4()),
            queue_expires_secs: Some(QUEUE_EXPIRES_SECS),
            ..TopologySettings::default()
        };
        self.lock().topologies.push(settings.topology());
        settings
    }

    /// A new channel on the bench's own broker connection.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        self.broker
            .create_channel()
            .await
            .context("opening a broker channel")
    }

    /// Messages ready on `queue`; `None` if the queue does not exist.
    pub async fn queue_depth(&self, queue: &str) -> anyhow::Result<Option<u32>> {
        // A passive declare of a missing queue closes its channel: use one of its own.
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await;
        let depth = declared.ok().map(|queue| queue.message_count());
        channel.close(200, "done".into()).await.ok();
        Ok(depth)
    }

    /// Deletes every queue and exchange of `topology` (and so the messages on them).
    pub async fn delete_topology(&self, topology: &Topology) -> anyhow::Result<()> {
        let channel = self.channel().await?;
        topology
            .delete(&channel)
            .await
            .with_context(|| format!("deleting the bench topology {}", topology.intake_exchange))?;
        channel.close(200, "done".into()).await.ok();
        self.lock()
            .topologies
            .retain(|t| t.intake_queue != topology.intake_queue);
        Ok(())
    }

    /// Removes whatever a failed or interrupted run left; returns what it removed.
    pub async fn sweep(&self) -> Vec<String> {
        let (databases, topologies) = {
            let created = self.lock();
            (created.databases.clone(), created.topologies.clone())
        };
        let mut removed = Vec::new();
        for name in databases {
            match self.drop_database_named(&name).await {
                Ok(()) => removed.push(format!("database {name}")),
                Err(error) => eprintln!("pipeline-bench: {error:#}"),
            }
        }
        for topology in topologies {
            match self.delete_topology(&topology).await {
                Ok(()) => removed.push(format!("topology {}", topology.intake_exchange)),
                Err(error) => eprintln!("pipeline-bench: {error:#}"),
            }
        }
        removed
    }

    pub async fn close(self) {
        self.broker.close(200, "bench done".into()).await.ok();
        self.admin.close().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Created> {
        // The list stays usable even if a thread panicked while holding it.
        self.created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Migrates, seeds `seed_orders` orders (references `SEED-…`, which no bench message uses) and
/// analyses every table.
async fn prepare(pool: &PgPool, seed_orders: u64) -> anyhow::Result<()> {
    connector_workers::db::migrate(pool, &Default::default()).await?;
    if seed_orders > 0 {
        sqlx::query(
            "INSERT INTO orders (reference, client_id, status, bank_reference, bank_processed_at)
             SELECT 'SEED-' || lpad(g::text, 10, '0'), $2, 'SUCCESS', 'BNK-SEED-' || g, now()
             FROM generate_series(1, $1) AS g",
        )
        .bind(i64::try_from(seed_orders).unwrap_or(i64::MAX))
        .bind(crate::bench::workload::CLIENT_ID)
        .execute(pool)
        .await
        .context("seeding orders")?;
    }
    sqlx::query("ANALYZE")
        .execute(pool)
        .await
        .context("ANALYZE")?;
    Ok(())
}

/// Closes `pool` once every connection is back in it. sqlx returns a released connection to
/// its pool only after a round trip to the server, and `close()` can return while one is still
/// on its way; dropping the database right then makes that round trip fail with a warning.
pub async fn close_pool(pool: &PgPool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pool.num_idle() < pool.size() as usize && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    pool.close().await;
}

/// Opens `connections` connections of `pool` at once and returns them to it, so a run starts
/// with a warm pool instead of timing the connection handshakes.
pub async fn warm(pool: &PgPool, connections: usize) -> anyhow::Result<()> {
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        held.push(pool.acquire().await.context("warming the pool")?);
    }
    drop(held);
    Ok(())
}

fn is_local(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1" | "[::1]") || host.starts_with('/')
}

/// The seal the bench's ingress and workers share: messages the bench preloads into the intake
/// queue are sealed with it, as an ingress would, so the apply role accepts them. Not a secret:
/// the bench's topologies are its own and thrown away.
const BENCH_SEAL_KEY: &str = "pipeline-bench-seal-key-0123456789abcdef";

/// The bench's `[seal]` section, for the ingress and workers it runs in process.
pub fn seal_settings() -> SealSettings {
    SealSettings {
        keys: vec![SealKeySettings {
            id: "bench".into(),
            key: Some(BENCH_SEAL_KEY.into()),
            key_file: None,
        }],
    }
}

/// The bench's seal, loaded.
pub fn seal_keys() -> SealKeys {
    SealKeys::single("bench", BENCH_SEAL_KEY.as_bytes())
}
