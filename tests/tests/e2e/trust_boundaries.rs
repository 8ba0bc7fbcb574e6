//! Every boundary is a trust boundary (DESIGN.md §2.7), driven from outside: a message put on
//! the intake exchange by anyone but an ingress, or edited after an ingress sealed it (on the
//! broker, or as a quarantine row), is never applied. The workers dead-letter and count it,
//! `dead-letters replay` leaves it where it is, and `quarantine release` refuses it.

use lapin::BasicProperties;
use uuid::Uuid;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{test_seal_keys, unit_body};
use connector_schema::seal::SealKeys;
use connector_schema::{IntakeEnvelope, IntakeKind};
use connector_workers::admin::{self, DeadLetterQueue};

const UNIT: &str = "/callbacks/orders/status";

/// An envelope exactly as an ingress would build it for a SUCCESS of `reference`.
fn bank_callback(reference: &str) -> IntakeEnvelope {
    IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: IntakeKind::CorelinkStatus,
        received_at: time::OffsetDateTime::now_utc(),
        client_id: Some("BANK_X".into()),
        request_path: Some(UNIT.into()),
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-client-id".into(), "BANK_X".into()),
            ("x-idempotency-key".into(), reference.into()),
            ("x-nonce".into(), Uuid::new_v4().simple().to_string()),
            ("x-signature".into(), "eyJ.forged.sig".into()),
            (
                "x-timestamp".into(),
                connector_schema::envelope::rfc3339(time::OffsetDateTime::now_utc()),
            ),
        ],
        body: unit_body(reference, "SUCCESS").into_bytes().into(),
        verification: None,
    }
}

/// Publishes to the intake exchange as anyone with broker access could, confirmed.
async fn publish(p: &Pipeline, routing_key: &str, properties: BasicProperties, body: &[u8]) {
    admin::publish_confirmed(
        &p.relay_channel,
        &p.app.topology.intake_exchange,
        routing_key,
        body,
        properties,
    )
    .await
    .unwrap();
}

fn forged_count(reason: &str) -> f64 {
    let rendered = connector_runtime::metrics::prometheus().render();
    let prefix = format!("connector_worker_forged_total{{reason=\"{reason}\"}} ");
    rendered
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn messages_no_ingress_accepted_are_dead_lettered_and_never_replayed() {
    let p = spawn_pipeline().await;
    let counted_before: Vec<f64> = [
        "type_mismatch",
        "seal_missing",
        "seal_unknown_key",
        "seal_mismatch",
    ]
    .iter()
    .map(|reason| forged_count(reason))
    .collect();

    // Accepted by the ingress, then edited on its way: another body under the same seal. (Taken
    // off the queue first, while it is the only message there.)
    let response = p
        .app
        .post_signed(UNIT, &unit_body("PAY-GENUINE", "PENDING"), "PAY-GENUINE")
        .await;
    assert_eq!(response.status(), 200);
    let genuine = p
        .app
        .broker
        .take_intake()
        .await
        .expect("the accepted message");
    let edited = unit_body("PAY-GENUINE", "SUCCESS");
    publish(
        &p,
        genuine.routing_key.as_str(),
        genuine.properties.clone(),
        edited.as_bytes(),
    )
    .await;

    // The reproduction: a bank callback slipped in under the routing key the merchant's
    // service may publish, typed as a bank callback, with the ingress's headers.
    let slipped = bank_callback("PAY-FORGED-1");
    publish(
        &p,
        "paysafe.track",
        slipped.amqp_properties(),
        &slipped.body,
    )
    .await;
    // Under its own routing key, but without a seal.
    let unsealed = bank_callback("PAY-FORGED-2");
    publish(
        &p,
        "corelink.status",
        unsealed.amqp_properties(),
        &unsealed.body,
    )
    .await;
    // Sealed with a key the workers do not have.
    let foreign = bank_callback("PAY-FORGED-3");
    let other_key = SealKeys::single("elsewhere", b"someone-elses-key-0123456789abcdef!!");
    publish(
        &p,
        "corelink.status",
        other_key.sealed_properties(&foreign),
        &foreign.body,
    )
    .await;
    assert_eq!(p.apply_all().await, 4);
    assert_eq!(
        p.db.count("SELECT count(*) FROM orders").await,
        0,
        "nothing of them applied"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        0
    );
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty(), "no ledger event");
    assert!(
        p.depth_reaches(&p.app.topology.intake_dead_letter_queue, 4)
            .await
    );
    let counted_after = [
        "type_mismatch",
        "seal_missing",
        "seal_unknown_key",
        "seal_mismatch",
    ]
    .map(forged_count);
    for (i, (before, after)) in counted_before.iter().zip(counted_after).enumerate() {
        assert!(
            after >= before + 1.0,
            "reason {i} counted: {before} → {after}"
        );
    }

    // An operator replaying the dead letters sends none of them back.
    let replayed = admin::dead_letters_replay(
        p.app.broker.connection(),
        &p.app.topology,
        &test_seal_keys(),
        DeadLetterQueue::Intake,
        10,
    )
    .await
    .unwrap();
    assert!(replayed.starts_with("replayed 0 message(s)"), "{replayed}");
    assert_eq!(
        replayed.matches(" kept: forged message").count(),
        4,
        "{replayed}"
    );
    let dlq = p.app.topology.intake_dead_letter_queue.clone();
    let kept = connector_e2e_tests::eventually(std::time::Duration::from_secs(10), || async {
        p.depth(&dlq).await == 4
    })
    .await;
    assert!(kept, "all four are back on the dead-letter queue");
    p.teardown().await;
}

#[tokio::test]
async fn a_quarantine_row_edited_in_the_database_is_not_released() {
    let p = spawn_pipeline().await;
    for (status, key) in [("SUCCESS", "PAY-QE"), ("FAILED", "PAY-QE")] {
        let response = p
            .app
            .post_signed(UNIT, &unit_body("PAY-QE", status), key)
            .await;
        assert_eq!(response.status(), 200);
    }
    p.apply_all().await;
    let held = p.quarantined().await[0].1; // FINAL_STATUS_CONFLICT
    // Someone with write access to the table turns the refused FAILED into another order.
    sqlx::query(
        "UPDATE quarantined_messages SET body = convert_to(replace(convert_from(body, 'UTF8'), 'PAY-QE', 'PAY-QX'), 'UTF8')
         WHERE message_id = $1",
    )
    .bind(held)
    .execute(&p.db.pool)
    .await
    .unwrap();

    let error = admin::quarantine_release(
        &p.db.pool,
        &p.relay_channel,
        &p.app.topology,
        &test_seal_keys(),
        held,
        "trust me",
    )
    .await
    .unwrap_err();
    assert!(
        error.to_string().contains("not as the ingress sealed it"),
        "{error}"
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM quarantined_messages WHERE message_id = $1")
            .bind(held)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "held");
    assert_eq!(p.apply_all().await, 0, "nothing was published");
    assert_eq!(p.order_status("PAY-QX").await, None);
    p.teardown().await;
}
