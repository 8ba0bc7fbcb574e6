//! The `connector-workers` binary as shipped, configured through the environment: it
//! migrates, consumes, applies, relays and polls Paysafe (the simulator) with its real loops
//! (no stepping), serves its metrics and readiness, and stops cleanly on SIGTERM.

use std::time::Duration;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{amqp_url, eventually, unit_body, workers_binary};
use connector_schema::paysafe::{TrackCommand, TrackedKind};
use connector_workers::admin;
use connector_workers::metrics::LIFECYCLE_LAST_SUCCESS;
use paysafe_sim::{ItemScript, SimConfig, Step as SimStep};

/// The shipped binary running `roles` against `p`'s database and topology, configured through
/// the environment (plus `env`); returns it with its ops URL once `/readyz` answers 200.
async fn spawn_workers(
    p: &Pipeline,
    roles: &[&str],
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    let ops_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = tokio::process::Command::new(workers_binary());
    command.arg("run");
    for role in roles {
        command.args(["--role", role]);
    }
    command
        .env("CONNECTOR_DATABASE__URL", &p.db.url)
        .env("CONNECTOR_BROKER__URL", amqp_url())
        .envs([connector_e2e_tests::test_seal_env()])
        .env("CONNECTOR_MODE", "development")
        .env(
            "CONNECTOR_TOPOLOGY__PREFIX",
            &p.app.settings.topology.prefix,
        )
        .env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", "600")
        .env("CONNECTOR_OPS__LISTEN", format!("127.0.0.1:{ops_port}"))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    for (name, value) in env {
        command.env(name, value);
    }
    let workers = command.spawn().unwrap();
    let ops = format!("http://127.0.0.1:{ops_port}");
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || async {
        matches!(http.get(format!("{ops}/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(ready, "/readyz: database reachable, roles connected");
    (workers, ops)
}

/// SIGTERM, then a clean exit within 20 s.
async fn stop(mut workers: tokio::process::Child) {
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
}

#[tokio::test]
async fn the_workers_binary_turns_a_callback_into_a_ledger_event() {
    let p = spawn_pipeline().await;
    let (workers, ops) = spawn_workers(&p, &["apply", "relay"], &[]).await;
    let http = reqwest::Client::new();

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
        r#"connector_worker_quarantine_held{reason="FINAL_STATUS_CONFLICT"} 0"#,
        r#"connector_worker_broker_connected{role="apply"} 1"#,
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    // No lifecycle role here: no heartbeat that could hide a missing one.
    assert!(!metrics.contains(LIFECYCLE_LAST_SUCCESS), "{metrics}");

    stop(workers).await;
    p.teardown().await;
}

#[tokio::test]
async fn each_role_exports_its_counters_at_zero_before_their_first_event() {
    let p = spawn_pipeline().await;
    let archive = tempfile::tempdir().unwrap();
    let (workers, ops) = spawn_workers(
        &p,
        &["apply", "relay", "lifecycle"],
        &[(
            "CONNECTOR_EVIDENCE__DIRECTORY",
            archive.path().to_str().unwrap().to_owned(),
        )],
    )
    .await;
    let metrics = connector_e2e_tests::scrape_metrics(&ops).await;
    // Nothing has happened yet: the first forged message, quarantine, relay failure or kept
    // partition will be an increase from 0, which `increase()` and the alerts see.
    for series in [
        r#"connector_worker_messages_total{kind="corelink.status",outcome="quarantined"} 0"#,
        r#"connector_worker_messages_total{kind="unknown",outcome="forged"} 0"#,
        r#"connector_worker_forged_total{reason="seal_mismatch"} 0"#,
        r#"connector_worker_quarantined_total{reason="FINAL_STATUS_CONFLICT"} 0"#,
        "connector_worker_transient_retries_total 0",
        "connector_paysafe_amount_mismatches_total 0",
        r#"connector_relay_published_total{event_type="bnc.account.bound"} 0"#,
        r#"connector_relay_failures_total{reason="nack"} 0"#,
        "connector_relay_record_retries_total 0",
        r#"connector_worker_partitions_kept_total{table="received_messages",reason="archive_failed"} 0"#,
        r#"connector_worker_rows_purged_total{table="seen_nonces"} 0"#,
        "connector_nonces_purged_total 0",
        // With an evidence archive: its first file is an increase too.
        "connector_worker_archive_files_total 0",
        "connector_worker_archive_bytes_total 0",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    // A role not running exports nothing of its own.
    assert!(
        !metrics.contains("connector_paysafe_polls_total"),
        "{metrics}"
    );
    stop(workers).await;
    p.teardown().await;
}

#[tokio::test]
async fn the_lifecycle_role_reports_its_last_completed_cycle_on_the_wall_clock() {
    let p = spawn_pipeline().await;
    let started = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    let (workers, ops) = spawn_workers(&p, &["lifecycle"], &[]).await;
    let http = reqwest::Client::new();
    let heartbeat = || async {
        let metrics = http
            .get(format!("{ops}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics.lines().find_map(|line| {
            let value = line
                .strip_prefix(LIFECYCLE_LAST_SUCCESS)?
                .strip_prefix(' ')?;
            value.trim().parse::<f64>().ok()
        })
    };
    // Its first cycle runs once the database is migrated.
    let reported = eventually(Duration::from_secs(30), || async {
        heartbeat().await.is_some()
    })
    .await;
    assert!(reported, "the lifecycle role reports a completed cycle");
    let at = heartbeat().await.unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp() as f64;
    assert!(
        started - 1.0 <= at && at <= now + 1.0,
        "{started} <= {at} <= {now}"
    );

    stop(workers).await;
    p.teardown().await;
}

#[tokio::test]
async fn the_poller_role_follows_a_tracked_payment_and_reports_its_metrics() {
    let p = spawn_pipeline().await;
    let sim = paysafe_sim::spawn(SimConfig::new("merchant", "api-password"))
        .await
        .unwrap();
    sim.set_script(ItemScript::new(
        TrackedKind::Payment,
        "pay-bin-1",
        "order-bin-1",
        546,
        "CAD",
        vec![
            SimStep::new("PROCESSING", Some(1)),
            SimStep::new("COMPLETED", None),
        ],
    ))
    .unwrap();
    let env = [
        ("CONNECTOR_PAYSAFE__BASE_URL", sim.base_url()),
        ("CONNECTOR_PAYSAFE__API_USERNAME", "merchant".to_owned()),
        ("CONNECTOR_PAYSAFE__API_PASSWORD", "api-password".to_owned()),
        ("CONNECTOR_PAYSAFE__FIRST_POLL_AFTER_SECS", "0".to_owned()),
        ("CONNECTOR_PAYSAFE__IDLE_INTERVAL_MS", "50".to_owned()),
    ];
    let (workers, ops) = spawn_workers(&p, &["apply", "relay", "poller"], &env).await;
    let http = reqwest::Client::new();

    let (_connection, channel) = admin::confirm_channel(&amqp_url()).await.unwrap();
    let command = TrackCommand {
        kind: TrackedKind::Payment,
        id: "pay-bin-1".into(),
        merchant_ref_num: "order-bin-1".into(),
        amount: 546,
        currency_code: "CAD".into(),
    };
    admin::paysafe_track(&channel, &p.app.topology, &command)
        .await
        .unwrap();
    let ledger = p.app.topology.ledger_queue.clone();
    assert!(
        eventually(Duration::from_secs(30), || async {
            p.depth(&ledger).await == 1
        })
        .await,
        "the payment completes and its event arrives"
    );
    let events = p.ledger_events().await;
    assert_eq!(events[0].0.event_type, "paysafe.payment.completed");
    assert_eq!(sim.poll_count("pay-bin-1"), 2);

    // The gauges are refreshed every 10 s.
    let expected = [
        r#"connector_paysafe_polls_total{kind="payment",outcome="pending"} 1"#,
        r#"connector_paysafe_polls_total{kind="payment",outcome="final"} 1"#,
        "connector_paysafe_poll_duration_seconds_bucket",
        r#"connector_paysafe_items{kind="payment",tracking="final",status="COMPLETED"} 1"#,
        r#"connector_paysafe_items{kind="payment",tracking="polling",status="PROCESSING"} 0"#,
        r#"connector_paysafe_oldest_polling_age_seconds{kind="payment"} 0"#,
        "connector_paysafe_poller_auth_failed 0",
        // Exported at zero from the start (no such poll happened).
        r#"connector_paysafe_polls_total{kind="standalone_credit",outcome="unauthorized"} 0"#,
        r#"connector_paysafe_stale_total{kind="payment"} 0"#,
    ];
    let scrape = || async {
        http.get(format!("{ops}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let complete = eventually(Duration::from_secs(25), || async {
        let metrics = scrape().await;
        expected.iter().all(|name| metrics.contains(name))
    })
    .await;
    let metrics = scrape().await;
    assert!(complete, "{expected:#?} not all in:\n{metrics}");

    stop(workers).await;
    p.teardown().await;
}

#[tokio::test]
async fn topology_delete_removes_a_throw_away_topology_and_refuses_any_other() {
    let app = connector_e2e_tests::spawn_app().await;
    let prefix = app.settings.topology.prefix.clone();
    let delete = |expires: Option<&str>| {
        let mut command = std::process::Command::new(workers_binary());
        command
            .args(["topology", "delete"])
            .env("CONNECTOR_MODE", "development")
            .env("CONNECTOR_BROKER__URL", amqp_url())
            .env("CONNECTOR_TOPOLOGY__PREFIX", &prefix);
        if let Some(secs) = expires {
            command.env("CONNECTOR_TOPOLOGY__QUEUE_EXPIRES_SECS", secs);
        }
        command.output().unwrap()
    };
    let exists = || async {
        let channel = app.broker.connection().create_channel().await.unwrap();
        channel
            .queue_declare(
                app.topology.intake_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok()
    };

    // Without queue expiry the configuration is a long-lived one: nothing is touched.
    let refused = delete(None);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("not a throw-away topology"), "{said}");
    assert!(exists().await, "the refused command deleted nothing");

    let deleted = delete(Some("600"));
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    assert!(!exists().await, "the intake queue is gone");
}
