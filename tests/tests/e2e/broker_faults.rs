//! "200 means durable" under broker trouble: a lost connection, a broker that stops answering,
//! an unroutable publish and a broker nack each give 503 `ENQUEUE_UNAVAILABLE` with
//! `Retry-After`, and the ingress accepts again once the broker is back, without a restart.

use std::time::Duration;

use lapin::types::FieldTable;
use serde_json::Value;

use connector_e2e_tests::proxy::FaultProxy;
use connector_e2e_tests::{TestApp, amqp_addr, eventually, spawn_app_with, unit_body};

const UNIT: &str = "/callbacks/orders/status";

async fn assert_unavailable(response: reqwest::Response) {
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ENQUEUE_UNAVAILABLE");
}

async fn ready(app: &TestApp) -> bool {
    let response = app
        .http
        .get(format!("{}/readyz", app.ops_url))
        .send()
        .await
        .unwrap();
    response.status() == 200
}

async fn spawn_behind(
    proxy: &FaultProxy,
    configure: impl FnOnce(&mut connector_ingress::config::Settings),
) -> TestApp {
    let url = format!("amqp://guest:guest@{}/%2f?heartbeat=2", proxy.addr());
    spawn_app_with(|settings| {
        settings.broker.url = url;
        configure(settings);
    })
    .await
}

#[tokio::test]
async fn a_lost_connection_gives_503_until_it_is_back() {
    let proxy = FaultProxy::start(amqp_addr()).await.unwrap();
    let app = spawn_behind(&proxy, |_| {}).await;
    assert_eq!(
        app.post_signed(UNIT, &unit_body("PAY-B1", "SUCCESS"), "PAY-B1")
            .await
            .status(),
        200
    );

    proxy.cut();
    assert!(
        eventually(Duration::from_secs(10), || async { !ready(&app).await }).await,
        "/readyz turns not-ready"
    );
    assert_unavailable(
        app.post_signed(UNIT, &unit_body("PAY-B2", "SUCCESS"), "PAY-B2")
            .await,
    )
    .await;
    let health = app
        .http
        .get(format!("{}/healthz", app.ops_url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "/healthz stays live");

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(20), || ready(&app)).await,
        "reconnects by itself"
    );
    assert_eq!(
        app.post_signed(UNIT, &unit_body("PAY-B2", "SUCCESS"), "PAY-B2")
            .await
            .status(),
        200
    );
    assert_eq!(
        app.broker.intake_depth().await,
        2,
        "only the accepted requests are on the queue"
    );
}

#[tokio::test]
async fn a_broker_that_stops_answering_gives_503_after_the_confirm_timeout() {
    let proxy = FaultProxy::start(amqp_addr()).await.unwrap();
    let app = spawn_behind(&proxy, |settings| settings.broker.confirm_timeout_ms = 300).await;

    proxy.stall();
    assert_unavailable(
        app.post_signed(UNIT, &unit_body("PAY-S1", "SUCCESS"), "PAY-S1")
            .await,
    )
    .await;
    // The connection the publish sat on was aborted with the 503: not ready until a new one
    // is up, long before heartbeats (2 s) could have told.
    assert!(
        eventually(Duration::from_secs(1), || async { !ready(&app).await }).await,
        "the unconfirmed connection is dropped at once"
    );

    proxy.restore();
    assert!(
        eventually(Duration::from_secs(30), || async {
            app.post_signed(UNIT, &unit_body("PAY-S2", "SUCCESS"), "PAY-S2")
                .await
                .status()
                == 200
        })
        .await,
        "accepts again once the broker answers"
    );
}

#[tokio::test]
async fn an_unroutable_publish_is_not_acknowledged() {
    let app = spawn_app_with(|_| {}).await;
    // Someone removed the binding: the broker returns the mandatory message.
    app.broker
        .channel
        .queue_unbind(
            app.topology.intake_queue.as_str().into(),
            app.topology.intake_exchange.as_str().into(),
            "corelink.status".into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    assert_unavailable(
        app.post_signed(UNIT, &unit_body("PAY-U1", "SUCCESS"), "PAY-U1")
            .await,
    )
    .await;
    assert_eq!(app.broker.intake_depth().await, 0);

    // The return makes the ingress reconnect, which declares the binding again.
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.post_signed(UNIT, &unit_body("PAY-U2", "SUCCESS"), "PAY-U2")
                .await
                .status()
                == 200
        })
        .await,
        "accepts again once the topology is declared again"
    );
    assert_eq!(app.broker.intake_depth().await, 1);
}

#[tokio::test]
async fn a_full_intake_queue_nacks_and_gives_503() {
    // Quorum queues apply `x-max-length` once the length is over the limit, so with a limit
    // of 1 the second message still fits and the third is refused.
    let app = spawn_app_with(|settings| settings.topology.intake_max_length = 1).await;
    for reference in ["PAY-N1", "PAY-N2"] {
        assert_eq!(
            app.post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
                .await
                .status(),
            200
        );
    }
    assert_unavailable(
        app.post_signed(UNIT, &unit_body("PAY-N3", "SUCCESS"), "PAY-N3")
            .await,
    )
    .await;
    assert_eq!(app.broker.intake_depth().await, 2);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let proxy = FaultProxy::start(amqp_addr()).await.unwrap();
    let app = spawn_behind(&proxy, |settings| {
        settings.broker.confirm_timeout_ms = 1_000
    })
    .await;
    proxy.stall(); // the publish will wait for its confirm until the timeout

    let in_flight = {
        let (http, url) = (app.http.clone(), format!("{}{UNIT}", app.base_url));
        let body = unit_body("PAY-G1", "SUCCESS");
        let signed = app.bank.sign(UNIT, body.as_bytes(), "PAY-G1");
        let mut request = http.post(url).body(body);
        for (name, value) in signed.pairs() {
            request = request.header(name, value);
        }
        tokio::spawn(request.send())
    };
    tokio::time::sleep(Duration::from_millis(200)).await; // the request is now waiting on the broker
    let stopped = tokio::spawn(app.stop());

    let response = in_flight.await.unwrap().expect("answered, not cut off");
    assert_unavailable(response).await;
    stopped
        .await
        .unwrap()
        .expect("stops cleanly once the request is answered");
}
