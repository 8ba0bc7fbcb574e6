//! A broker resource alarm (§2.8, hardening item 4): while RabbitMQ blocks publishers, the
//! ingress answers 503 at once without publishing and `/readyz` says `blocked`; once the alarm
//! clears it accepts again, and what it refused during the alarm never reaches the queue.
//! On a RabbitMQ node of the test's own: an alarm on the shared node would block everyone.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use connector_e2e_tests::private_broker::PrivateBroker;
use connector_e2e_tests::{TestApp, eventually, spawn_app_with, unit_body};

const UNIT: &str = "/callbacks/orders/status";

async fn readiness(app: &TestApp) -> (u16, Value) {
    let response = app
        .http
        .get(format!("{}/readyz", app.ops_url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn post(app: &TestApp, reference: &str) -> reqwest::Response {
    app.post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
        .await
}

#[tokio::test]
async fn a_blocked_broker_gets_503_at_once_and_nothing_refused_is_enqueued_after() {
    let broker = PrivateBroker::start(None).await;
    // A confirm timeout far longer than "at once": a 503 before it was not a timeout.
    let confirm_timeout = Duration::from_secs(30);
    let url = broker.url();
    let app = spawn_app_with(|settings| {
        settings.broker.url = url;
        settings.broker.confirm_timeout_ms = confirm_timeout.as_millis() as u64;
    })
    .await;
    assert_eq!(post(&app, "PAY-AL1").await.status(), 200);

    broker.node.raise_memory_alarm().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            readiness(&app).await
                == (
                    503,
                    serde_json::json!({"status": "not_ready", "broker": "blocked"}),
                )
        })
        .await,
        "/readyz turns not-ready, saying the broker blocks publishing"
    );
    let asked = Instant::now();
    let refused = post(&app, "PAY-AL2").await;
    assert!(
        asked.elapsed() < confirm_timeout / 3,
        "answered without waiting for a confirm"
    );
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ENQUEUE_UNAVAILABLE");

    broker.node.clear_memory_alarm().await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            readiness(&app).await.0 == 200
        })
        .await,
        "ready again once the alarm clears"
    );
    assert_eq!(post(&app, "PAY-AL3").await.status(), 200);

    // The 503 was a total rejection: only the accepted requests are on the queue.
    let references: BTreeSet<String> = broker
        .take_all(&app.topology.intake_queue)
        .await
        .iter()
        .map(|body| {
            let body: Value = serde_json::from_slice(body).unwrap();
            body["reference"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        references,
        BTreeSet::from(["PAY-AL1".to_owned(), "PAY-AL3".to_owned()])
    );
}

#[tokio::test]
async fn an_ingress_started_during_an_alarm_is_not_ready_until_it_clears() {
    let broker = PrivateBroker::start(None).await;
    broker.node.raise_memory_alarm().await.unwrap();
    let url = broker.url();
    let app = tokio::spawn(spawn_app_with(move |settings| settings.broker.url = url));
    // spawn_app_with waits until ready: it cannot be, while the broker blocks the connection.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!app.is_finished(), "not ready while blocked");
    broker.node.clear_memory_alarm().await.unwrap();
    let app = tokio::time::timeout(Duration::from_secs(30), app)
        .await
        .expect("ready once the alarm clears")
        .unwrap();
    assert_eq!(post(&app, "PAY-AL4").await.status(), 200);
    assert_eq!(broker.depth(&app.topology.intake_queue).await, 1);
}
