//! The `connector-workers` binary as shipped, configured through the environment: it
//! migrates, consumes, applies and relays with its real loops (no stepping), serves its
//! metrics and readiness, and stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use connector_e2e_tests::pipeline::spawn_pipeline;
use connector_e2e_tests::{amqp_url, eventually, unit_body, workers_binary};

#[tokio::test]
async fn the_workers_binary_turns_a_callback_into_a_ledger_event() {
    let p = spawn_pipeline().await;
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut workers = tokio::process::Command::new(workers_binary())
        .args(["run", "--role", "apply", "--role", "relay"])
        .env("CONNECTOR_DATABASE__URL", &p.db.url)
        .env("CONNECTOR_BROKER__URL", amqp_url())
        .env(
            "CONNECTOR_TOPOLOGY__PREFIX",
            &p.app.settings.topology.prefix,
        )
        .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
        .env("CONNECTOR_OPS__LISTEN", format!("127.0.0.1:{ops_port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let ops = format!("http://127.0.0.1:{ops_port}");
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || async {
        matches!(http.get(format!("{ops}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(
        ready,
        "/readyz: database reachable, apply and relay connected"
    );

    let response = p
        .app
        .post_signed(
            "/callbacks/orders/status",
            &unit_body("PAY-P1", "SUCCESS"),
            "PAY-P1",
        )
        .await;
    assert_eq!(response.status(), 200);
    let ledger = p.app.topology.ledger_queue.clone();
    let arrived = eventually(Duration::from_secs(30), || async {
        p.depth(&ledger).await == 1
    })
    .await;
    assert!(arrived, "the ledger event arrives");
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.event_type, "order.succeeded");
    assert_eq!(events[0].0.reference, "PAY-P1");

    let metrics = http
        .get(format!("{ops}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        r#"connector_worker_messages_total{kind="corelink.status",outcome="applied"} 1"#,
        "connector_worker_apply_duration_seconds_bucket",
        r#"connector_relay_published_total{event_type="order.succeeded"} 1"#,
        "connector_relay_publish_duration_seconds_bucket",
        "connector_outbox_backlog",
        "connector_outbox_oldest_unpublished_age_seconds",
        r#"connector_worker_broker_connected{role="apply"} 1"#,
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }

    let pid = workers.id().unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), workers.wait())
        .await
        .expect("stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "exits cleanly: {status}");
    p.teardown().await;
}
