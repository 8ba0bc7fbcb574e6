//! The workers under faults, against the real broker and database: a worker killed in the
//! middle of a batch, the database unreachable while messages arrive, the ledger unroutable
//! and the broker gone during relay. Nothing lost, nothing applied or emitted twice.

use std::time::Duration;

use lapin::types::FieldTable;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use connector_e2e_tests::pipeline::{Pipeline, TestDatabase, spawn_pipeline, worker_settings};
use connector_e2e_tests::proxy::FaultProxy;
use connector_e2e_tests::{amqp_addr, amqp_url, batch_body, eventually, unit_body, workers_binary};
use connector_workers::Step;
use connector_workers::apply::ApplyWorker;
use connector_workers::config::Settings;
use connector_workers::relay::Relay;

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";

async fn post(p: &Pipeline, path: &str, body: &str, key: &str) {
    assert_eq!(p.app.post_signed(path, body, key).await.status(), 200);
}

/// Takes the ledger queue: `expected` events, each once.
async fn assert_each_event_once(p: &Pipeline, expected: usize) {
    let events = p.ledger_events().await;
    let mut ids: Vec<_> = events.iter().map(|e| e.0.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (events.len(), ids.len()),
        (expected, expected),
        "every event once"
    );
}

/// A stepped relay on `pool` whose broker connection goes through `broker`, with the
/// pipeline's settings as `tune` leaves them; the connection must outlive the steps.
async fn relay_via(
    p: &Pipeline,
    broker: &FaultProxy,
    pool: PgPool,
    tune: impl FnOnce(&mut Settings),
) -> (Relay, lapin::Connection, lapin::Channel) {
    let connection = lapin::Connection::connect(
        &format!("amqp://guest:guest@{}/%2f", broker.addr()),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut settings = worker_settings(&p.app, &p.db.url);
    tune(&mut settings);
    let relay = Relay::new(
        pool,
        p.app.topology.clone(),
        settings.broker,
        settings.relay,
        CancellationToken::new(),
    );
    relay.prepare(&channel).await.unwrap();
    (relay, connection, channel)
}

#[tokio::test]
async fn a_worker_killed_before_commit_leaves_nothing_and_the_batch_is_applied_once_later() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-K0", "PENDING"), "PAY-K0").await;
    assert_eq!(p.apply_all().await, 1);
    post(
        &p,
        BATCH,
        &batch_body("B-KILL", &["PAY-K0", "PAY-K1", "PAY-K2"]),
        "B-KILL",
    )
    .await;

    // Hold PAY-K0's row so the worker's transaction stops half-way through the batch.
    let mut blocker = p.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM orders WHERE reference = 'PAY-K0' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut worker = tokio::process::Command::new(workers_binary())
        .args(["run", "--role", "apply"])
        .env("CONNECTOR_DATABASE__URL", &p.db.url)
        .env("CONNECTOR_BROKER__URL", amqp_url())
        .envs([connector_e2e_tests::test_seal_env()])
        .env("CONNECTOR_MODE", "development")
        .env(
            "CONNECTOR_TOPOLOGY__PREFIX",
            &p.app.settings.topology.prefix,
        )
        .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
        .env("CONNECTOR_OPS__LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let waiting = eventually(Duration::from_secs(30), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
        waiting == 1
    })
    .await;
    assert!(
        waiting,
        "the worker is inside its transaction, waiting for the row"
    );

    worker.kill().await.unwrap(); // SIGKILL: no cleanup, no rollback sent
    blocker.rollback().await.unwrap();

    assert_eq!(
        p.order_status("PAY-K1").await,
        None,
        "nothing of the batch applied"
    );
    assert_eq!(p.order_status("PAY-K0").await.as_deref(), Some("PENDING"));
    assert_eq!(
        p.db.count("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'B-KILL'")
            .await,
        0
    );

    // The broker redelivers the unacknowledged message; another worker applies it once.
    let redelivered = eventually(Duration::from_secs(30), || async {
        p.worker.run_once(&p.worker_channel).await.unwrap() == Step::Processed
    })
    .await;
    assert!(redelivered);
    assert_eq!(p.apply_all().await, 0);
    for reference in ["PAY-K0", "PAY-K1", "PAY-K2"] {
        assert_eq!(
            p.order_status(reference).await.as_deref(),
            Some("SUCCESS"),
            "{reference}"
        );
    }
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 3);
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        2
    );
    p.teardown().await;
}

#[tokio::test]
async fn the_database_unreachable_while_messages_arrive_loses_nothing() {
    let p = spawn_pipeline().await;
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let through_proxy =
        TestDatabase::url_of(&p.db.name).replace("127.0.0.1:5432", &proxy.addr().to_string());
    let settings = worker_settings(&p.app, &through_proxy);
    let pool = connector_workers::db::pool(&settings.database).unwrap();
    let stop = CancellationToken::new();
    let worker = ApplyWorker::new(
        pool,
        p.app.topology.clone(),
        settings.broker.clone(),
        settings.apply.clone(),
        connector_e2e_tests::test_seal_keys(),
        stop.clone(),
    );
    let running = tokio::spawn(worker.run());

    proxy.cut(); // the database goes away
    for i in 0..5 {
        let reference = format!("PAY-DB{i}");
        post(&p, UNIT, &unit_body(&reference, "SUCCESS"), &reference).await;
    }
    post(
        &p,
        BATCH,
        &batch_body("B-DB", &["PAY-DB5", "PAY-DB6"]),
        "B-DB",
    )
    .await;

    // The worker takes the messages; finding the database down, it gives them back and
    // pauses until it answers (database_outage.rs follows that path closely).
    let intake = p.app.topology.intake_queue.clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.depth(&intake).await == 0
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(p.db.count("SELECT count(*) FROM orders").await, 0);

    proxy.restore();
    let applied = eventually(Duration::from_secs(30), || async {
        p.db.count("SELECT count(*) FROM orders WHERE status = 'SUCCESS'")
            .await
            == 7
    })
    .await;
    assert!(applied, "everything applied once the database is back");
    stop.cancel();
    running.await.unwrap();

    assert_eq!(
        p.depth(&p.app.topology.intake_dead_letter_queue).await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM order_history").await,
        7,
        "each notification once"
    );
    assert!(p.quarantined().await.is_empty());
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 7);
    p.teardown().await;
}

#[tokio::test]
async fn an_unroutable_ledger_keeps_events_in_the_outbox_until_it_is_routable() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-R1", "SUCCESS"), "PAY-R1").await;
    p.apply_all().await;
    let topology = &p.app.topology;
    p.app
        .broker
        .channel
        .queue_unbind(
            topology.ledger_queue.as_str().into(),
            topology.ledger_exchange.as_str().into(),
            "#".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    let error = p.relay.run_once(&p.relay_channel).await.unwrap_err();
    assert!(error.to_string().contains("unroutable"), "{error}");
    let (attempts, last_error): (i32, Option<String>) =
        sqlx::query_as("SELECT attempts, last_error FROM ledger_outbox WHERE published_at IS NULL")
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(attempts, 1);
    assert!(last_error.unwrap().contains("NO_ROUTE"));

    p.relay.prepare(&p.relay_channel).await.unwrap(); // declares (and binds) the ledger queue again
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1, "out exactly once");
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty());
    p.teardown().await;
}

#[tokio::test]
async fn the_broker_gone_during_relay_delays_events_but_never_doubles_them() {
    let p = spawn_pipeline().await;
    let proxy = FaultProxy::start(amqp_addr()).await.unwrap();
    let mut settings = worker_settings(&p.app, &p.db.url);
    settings.broker.url = format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.addr());
    let stop = CancellationToken::new();
    let relay = Relay::new(
        p.db.pool.clone(),
        p.app.topology.clone(),
        settings.broker.clone(),
        settings.relay.clone(),
        stop.clone(),
    );
    let running = tokio::spawn(relay.run());

    post(&p, BATCH, &batch_body("B-R", &["PAY-R1", "PAY-R2"]), "B-R").await;
    p.apply_all().await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                .await
                == 0
        })
        .await
    );

    proxy.cut();
    post(
        &p,
        BATCH,
        &batch_body("B-R2", &["PAY-R3", "PAY-R4", "PAY-R5"]),
        "B-R2",
    )
    .await;
    p.apply_all().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
            .await,
        3,
        "held in the outbox while the broker is away"
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(30), || async {
            p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                .await
                == 0
        })
        .await
    );
    stop.cancel();
    running.await.unwrap();

    assert_each_event_once(&p, 5).await;
    p.teardown().await;
}

#[tokio::test]
async fn the_database_gone_between_confirm_and_mark_publishes_nothing_twice() {
    let p = spawn_pipeline().await;
    post(
        &p,
        BATCH,
        &batch_body("B-M", &["PAY-M1", "PAY-M2", "PAY-M3"]),
        "B-M",
    )
    .await;
    p.apply_all().await;

    // A relay that reaches the broker and the database through proxies.
    let options: PgConnectOptions = p.db.url.parse().unwrap();
    let upstream = tokio::net::lookup_host((options.get_host().to_owned(), options.get_port()))
        .await
        .unwrap()
        .next()
        .expect("the test database is reached over TCP");
    let database = FaultProxy::start(upstream).await.unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(options.host("127.0.0.1").port(database.addr().port()))
        .await
        .unwrap();
    let broker = FaultProxy::start(amqp_addr()).await.unwrap();
    let (relay, connection, channel) = relay_via(&p, &broker, pool, |settings| {
        settings.broker.retry_initial_ms = 100;
        settings.broker.retry_max_ms = 500;
    })
    .await;

    // The confirms are held up while the database goes away: the relay cannot mark them.
    broker.stall();
    let step = tokio::spawn(async move {
        let step = relay.run_once(&channel).await.map_err(|e| format!("{e:#}"));
        drop(connection);
        step
    });
    assert!(
        eventually(Duration::from_secs(10), || async {
            p.db.count("SELECT count(*) FROM ledger_outbox WHERE claimed_until IS NOT NULL")
                .await
                == 3
        })
        .await,
        "the relay claimed the three events"
    );
    database.cut();
    broker.restore();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
            .await,
        3,
        "confirmed, but not marked while the database is away"
    );
    // Another relay must leave claimed rows alone.
    assert_eq!(
        p.relay.run_once(&p.relay_channel).await.unwrap(),
        Step::Idle
    );

    database.restore();
    assert_eq!(step.await.unwrap(), Ok(Step::Processed));
    assert_eq!(
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL OR claimed_until IS NOT NULL")
            .await,
        0,
        "marked once the database is back"
    );
    p.relay_all().await;
    assert_each_event_once(&p, 3).await;
    p.teardown().await;
}

#[tokio::test]
async fn a_stalled_broker_fails_the_batch_once_and_releases_its_claim() {
    let p = spawn_pipeline().await;
    post(
        &p,
        BATCH,
        &batch_body("B-S", &["PAY-S1", "PAY-S2", "PAY-S3"]),
        "B-S",
    )
    .await;
    p.apply_all().await;

    let broker = FaultProxy::start(amqp_addr()).await.unwrap();
    let (relay, _connection, channel) = relay_via(&p, &broker, p.db.pool.clone(), |settings| {
        settings.relay.confirm_timeout_ms = 1_000;
    })
    .await;

    // Nothing comes back from the broker: the batch fails as a whole, within its deadline.
    broker.stall();
    let error = tokio::time::timeout(Duration::from_secs(30), relay.run_once(&channel))
        .await
        .expect("the relay gives up on its own")
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("3 of 3 ledger events not confirmed (first: timeout"),
        "{error}"
    );
    let (attempts, claimed): (i64, i64) = sqlx::query_as(
        "SELECT sum(attempts)::bigint, count(claimed_until) FROM ledger_outbox
         WHERE published_at IS NULL",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (attempts, claimed),
        (3, 0),
        "each failure counted, and the rows released at once for another try"
    );

    // The stalled publishes die with the connection; a healthy relay publishes each once.
    broker.cut();
    p.relay_all().await;
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 3, "{events:?}");
    p.teardown().await;
}

#[tokio::test]
async fn a_full_ledger_queue_nacks_and_the_events_wait_in_the_outbox() {
    // Quorum queues apply `x-max-length` once the length is over it: with 1, two fit.
    let app = connector_e2e_tests::spawn_app_with(|settings| {
        settings.topology.ledger_max_length = 1;
    })
    .await;
    let p = connector_e2e_tests::pipeline::spawn_pipeline_on(app).await;
    for reference in ["PAY-F1", "PAY-F2", "PAY-F3"] {
        post(&p, UNIT, &unit_body(reference, "SUCCESS"), reference).await;
    }
    assert_eq!(p.apply_all().await, 3);

    // One event per step: the queue's length is checked as each publish arrives.
    let mut settings = worker_settings(&p.app, &p.db.url);
    settings.relay.batch_size = 1;
    let relay = Relay::new(
        p.db.pool.clone(),
        p.app.topology.clone(),
        settings.broker,
        settings.relay,
        CancellationToken::new(),
    );
    // The stalled ledger consumer: the broker refuses the third event, which stays unpublished.
    let mut nacked = false;
    for _ in 0..3 {
        match relay.run_once(&p.relay_channel).await {
            Err(error) => {
                assert!(error.to_string().contains("nack"), "{error}");
                nacked = true;
            }
            Ok(Step::Idle) => break,
            Ok(Step::Processed) => {}
        }
    }
    assert!(nacked, "the broker refused an event");
    assert_eq!(p.depth(&p.app.topology.ledger_queue).await, 2);
    assert_eq!(
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
            .await,
        1
    );

    // The consumer catches up: the waiting event goes out, once.
    let mut events = p.ledger_events().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            let _ = relay.run_once(&p.relay_channel).await;
            p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                .await
                == 0
        })
        .await,
        "published once the queue has room"
    );
    events.extend(p.ledger_events().await);
    let mut references: Vec<_> = events.iter().map(|e| e.0.reference.clone()).collect();
    references.sort();
    assert_eq!(references, ["PAY-F1", "PAY-F2", "PAY-F3"]);
    p.teardown().await;
}
