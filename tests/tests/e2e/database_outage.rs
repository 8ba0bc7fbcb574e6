//! A database outage longer than the broker's consumer timeout (hardening item 5). A worker
//! that held its messages through it would have them requeued by the broker at every consumer
//! timeout, each requeue counting towards `x-delivery-limit`, until accepted notifications
//! were dead-lettered. Here the consumer timeout is 2 s (a node of the test's own; 30 min in
//! production) and the outage lasts 8 of them (the 40-minute outage, scaled), with a delivery
//! limit of 3: the workers give their messages back and stop consuming, nothing is
//! dead-lettered, and everything is applied once the database is back.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use connector_e2e_tests::pipeline::{TestDatabase, worker_settings};
use connector_e2e_tests::private_broker::PrivateBroker;
use connector_e2e_tests::proxy::FaultProxy;
use connector_e2e_tests::{eventually, spawn_app_with, unit_body};
use connector_workers::apply::ApplyWorker;

const UNIT: &str = "/callbacks/orders/status";
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(2);

/// (ready messages, consumers) of `queue`.
async fn queue_state(broker: &PrivateBroker, queue: &str) -> (u32, u32) {
    let connection = broker.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "done".into()).await;
    (declared.message_count(), declared.consumer_count())
}

#[tokio::test]
async fn an_outage_longer_than_the_consumer_timeout_dead_letters_nothing() {
    connector_e2e_tests::logs::install();
    // The consumer timeout is checked on the channel's tick: tick often, so it bites on time.
    let broker = PrivateBroker::start(Some(&format!(
        "[{{rabbit, [{{consumer_timeout, {}}}, {{channel_tick_interval, 250}}]}}].\n",
        CONSUMER_TIMEOUT.as_millis()
    )))
    .await;
    let url = broker.url();
    let app = spawn_app_with(|settings| {
        settings.broker.url = url;
        settings.topology.intake_delivery_limit = 3;
    })
    .await;
    let db = TestDatabase::create().await;
    let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .unwrap();
    let through_proxy =
        TestDatabase::url_of(&db.name).replace("127.0.0.1:5432", &proxy.addr().to_string());
    let mut settings = worker_settings(&app, &through_proxy);
    settings.broker.url = broker.url();
    settings.apply.max_hold_secs = 1;
    let stop = CancellationToken::new();
    // Two workers: one that finds the database down must not hand its messages to the other.
    let running: Vec<_> = (0..2)
        .map(|_| {
            let worker = ApplyWorker::new(
                connector_workers::db::pool(&settings.database).unwrap(),
                app.topology.clone(),
                settings.broker.clone(),
                settings.apply.clone(),
                connector_e2e_tests::test_seal_keys(),
                stop.clone(),
            );
            tokio::spawn(worker.run())
        })
        .collect();
    let intake = app.topology.intake_queue.clone();
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_state(&broker, &intake).await.1 == 2
        })
        .await,
        "the workers consume"
    );

    proxy.cut(); // the database goes away
    for i in 0..5 {
        let reference = format!("PAY-LO{i}");
        let response = app
            .post_signed(UNIT, &unit_body(&reference, "SUCCESS"), &reference)
            .await;
        assert_eq!(response.status(), 200);
    }
    // The workers find the database down, give back what they took and cancel their consumers.
    assert!(
        eventually(Duration::from_secs(20), || async {
            queue_state(&broker, &intake).await == (5, 0)
        })
        .await,
        "all five back on the queue, ready, and no consumer left"
    );
    tokio::time::sleep(CONSUMER_TIMEOUT * 8).await;
    assert_eq!(
        queue_state(&broker, &intake).await,
        (5, 0),
        "still not consuming while the database is away"
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(60), || async {
            db.count("SELECT count(*) FROM orders WHERE status = 'SUCCESS'")
                .await
                == 5
        })
        .await,
        "everything applied once the database is back"
    );
    stop.cancel();
    for worker in running {
        worker.await.unwrap();
    }
    assert_eq!(
        broker.depth(&app.topology.intake_dead_letter_queue).await,
        0,
        "nothing dead-lettered"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM order_history").await,
        5,
        "each notification applied once"
    );
    db.drop_database().await;
}
