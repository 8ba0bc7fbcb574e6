//! The whole pipeline for end-to-end tests: a real ingress, a per-test PostgreSQL database,
//! and the apply worker and relay, stepped with `run_once` so tests decide when each runs.

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use connector_schema::events::LedgerEvent;
use connector_workers::Step;
use connector_workers::apply::ApplyWorker;
use connector_workers::config::{self as workers_config, DatabaseSettings};
use connector_workers::relay::Relay;

use crate::{TestApp, amqp_url, spawn_app_with};

/// The server the tests create their databases on; `CONNECTOR_TEST_DATABASE_URL` points them
/// elsewhere (it names the maintenance database, `postgres`).
pub fn database_admin_url() -> String {
    std::env::var("CONNECTOR_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own, migrated, dropped when this is dropped, test passed or failed.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let db = Self::create_empty().await;
        connector_workers::db::migrate(&db.pool, &Default::default())
            .await
            .expect("migrations apply");
        db
    }

    /// A database without any migration applied (the upgrade tests apply them in steps).
    pub async fn create_empty() -> Self {
        let admin = PgPool::connect(&database_admin_url())
            .await
            .expect("the test PostgreSQL is reachable");
        let name = format!("connector_test_{}", Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE");
        admin.close().await;
        let url = Self::url_of(&name);
        let pool = connector_workers::db::pool(&Self::settings_for(&url)).expect("pool");
        Self { name, url, pool }
    }

    /// The URL of database `name` on the test server.
    pub fn url_of(name: &str) -> String {
        let admin = database_admin_url();
        let (server, _) = admin.rsplit_once('/').expect("a database URL");
        format!("{server}/{name}")
    }

    pub fn settings_for(url: &str) -> DatabaseSettings {
        DatabaseSettings {
            url: url.to_owned(),
            max_connections: 10,
            acquire_timeout_ms: 2_000,
        }
    }

    /// Closes the pool, then drops the database (as [`Drop`] does for a test that failed).
    pub async fn drop_database(self) {
        self.pool.close().await;
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.pool)
            .await
            .expect("count query")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        crate::cleanup::run_detached(async move {
            // FORCE ends the connections a failed test's pool still holds.
            if let Ok(admin) = PgPool::connect(&database_admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        });
    }
}

/// Ingress + database + stepped apply worker and relay, all on one test topology.
#[derive(Debug)]
pub struct Pipeline {
    pub app: TestApp,
    pub db: TestDatabase,
    pub worker: ApplyWorker,
    pub relay: Relay,
    pub worker_channel: Channel,
    pub relay_channel: Channel,
    pub shutdown: CancellationToken,
}

pub async fn spawn_pipeline() -> Pipeline {
    spawn_pipeline_on(spawn_app_with(|_| {}).await).await
}

/// A pipeline behind `app`, an ingress the test configured itself (TLS, BNC partners, ...).
pub async fn spawn_pipeline_on(app: TestApp) -> Pipeline {
    spawn_pipeline_with(app, TestDatabase::create().await).await
}

/// A pipeline behind `app` on `db`, a database the test prepared itself (an upgraded one).
pub async fn spawn_pipeline_with(app: TestApp, db: TestDatabase) -> Pipeline {
    // Logs go to the test's output, shown when it fails.
    crate::logs::install();
    let shutdown = CancellationToken::new();
    let settings = worker_settings(&app, &db.url);
    let worker = ApplyWorker::new(
        db.pool.clone(),
        app.topology.clone(),
        settings.broker.clone(),
        settings.apply.clone(),
        crate::test_seal_keys(),
        shutdown.clone(),
    );
    let relay = Relay::new(
        db.pool.clone(),
        app.topology.clone(),
        settings.broker.clone(),
        settings.relay.clone(),
        shutdown.clone(),
    );
    let worker_channel = app.broker.connection().create_channel().await.unwrap();
    let relay_channel = app.broker.connection().create_channel().await.unwrap();
    relay
        .prepare(&relay_channel)
        .await
        .expect("ledger topology");
    Pipeline {
        app,
        db,
        worker,
        relay,
        worker_channel,
        relay_channel,
        shutdown,
    }
}

/// Worker settings matching `app`'s broker and topology, on database `database_url`.
pub fn worker_settings(app: &TestApp, database_url: &str) -> workers_config::Settings {
    let mut settings = workers_config::Settings {
        database: TestDatabase::settings_for(database_url),
        topology: app.settings.topology.clone(),
        seal: crate::test_seal(),
        ..workers_config::Settings::default()
    };
    settings.broker.url = amqp_url();
    settings.broker.retry_initial_ms = 20;
    settings.broker.retry_max_ms = 200;
    settings.relay.poll_interval_ms = 100;
    settings.log.format = connector_workers::config::LogFormat::Pretty;
    settings
}

impl Pipeline {
    /// Applies every message on the intake queue; returns how many.
    pub async fn apply_all(&self) -> usize {
        let mut processed = 0;
        while self
            .worker
            .run_once(&self.worker_channel)
            .await
            .expect("apply step")
            == Step::Processed
        {
            processed += 1;
        }
        processed
    }

    /// Publishes the whole outbox.
    pub async fn relay_all(&self) {
        while self
            .relay
            .run_once(&self.relay_channel)
            .await
            .expect("relay step")
            == Step::Processed
        {}
    }

    /// Takes every event on the test's ledger queue.
    pub async fn ledger_events(&self) -> Vec<(LedgerEvent, BasicProperties, String)> {
        let mut events = Vec::new();
        while let Some(message) = self
            .app
            .broker
            .channel
            .basic_get(
                self.app.topology.ledger_queue.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            let event = serde_json::from_slice(&delivery.data).expect("a ledger event body");
            events.push((event, delivery.properties, delivery.routing_key.to_string()));
        }
        events
    }

    /// Messages waiting on a queue.
    pub async fn depth(&self, queue: &str) -> u32 {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.app
            .broker
            .channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("queue exists")
            .message_count()
    }

    /// Whether `queue` comes to hold `depth` messages within 5 s. Nacks and rejects have no
    /// reply: the broker requeues or dead-letters after the worker has moved on.
    pub async fn depth_reaches(&self, queue: &str, depth: u32) -> bool {
        crate::eventually(std::time::Duration::from_secs(5), || async {
            self.depth(queue).await == depth
        })
        .await
    }

    /// Posts a SUCCESS for `reference` (key `<reference>-k`), takes its accepted, sealed intake
    /// message and rejects it: RabbitMQ dead-letters it, with its x-death record, as it does a
    /// message the workers gave up on. Its message id.
    pub async fn dead_letter_accepted(&self, reference: &str) -> String {
        let body = crate::unit_body(reference, "SUCCESS");
        let response = self
            .app
            .post_signed("/callbacks/orders/status", &body, &format!("{reference}-k"))
            .await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        let channel = self.app.broker.connection().create_channel().await.unwrap();
        let delivery = channel
            .basic_get(
                self.app.topology.intake_queue.as_str().into(),
                BasicGetOptions { no_ack: false },
            )
            .await
            .unwrap()
            .expect("the accepted callback's intake message")
            .delivery;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        delivery
            .nack(BasicNackOptions {
                requeue: false,
                multiple: false,
            })
            .await
            .unwrap();
        id
    }

    /// (reason, message id) of every quarantined message.
    pub async fn quarantined(&self) -> Vec<(String, Uuid)> {
        sqlx::query_as(
            "SELECT reason, message_id FROM quarantined_messages ORDER BY quarantined_at",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("quarantine query")
    }

    pub async fn order_status(&self, reference: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM orders WHERE reference = $1")
            .bind(reference)
            .fetch_optional(&self.db.pool)
            .await
            .expect("order query")
    }

    pub async fn teardown(self) {
        self.shutdown.cancel();
        let Pipeline { app, db, .. } = self;
        drop(app);
        db.drop_database().await;
    }
}
