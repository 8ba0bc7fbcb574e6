//! End to end, HTTP → RabbitMQ → apply worker → PostgreSQL → relay → ledger queue, against the
//! real broker and database: every effect once, every ledger event once (DESIGN.md §3.4, §6).

use lapin::BasicProperties;
use uuid::Uuid;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::{batch_body, spawn_app_with, unit_body};
use connector_ingress::auth::signing::random_nonce;
use connector_schema::events::LedgerEvent;

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";

async fn post(p: &Pipeline, path: &str, body: &str, key: &str) {
    let response = p.app.post_signed(path, body, key).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

async fn events(p: &Pipeline) -> Vec<(LedgerEvent, BasicProperties, String)> {
    p.relay_all().await;
    p.ledger_events().await
}

#[tokio::test]
async fn a_unit_success_becomes_exactly_one_order_succeeded_event() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-E1", "SUCCESS"), "PAY-E1").await;

    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.order_status("PAY-E1").await.as_deref(), Some("SUCCESS"));
    let events = events(&p).await;
    assert_eq!(events.len(), 1);
    let (event, properties, routing_key) = &events[0];

    let expected_id = Uuid::new_v5(
        &Uuid::NAMESPACE_URL,
        b"urn:connector:corelink:PAY-E1:order.succeeded",
    );
    assert_eq!(event.event_id, expected_id);
    assert_eq!(event.event_type, "order.succeeded");
    assert_eq!(event.reference, "PAY-E1");
    assert_eq!(event.status, "SUCCESS");
    assert_eq!(
        event.occurred_at,
        time::macros::datetime!(2025-11-19 07:09:30 UTC)
    );
    assert_eq!(event.data["bank_reference"], "BNK-PAY-E1");
    assert_eq!(event.data["client_id"], "BANK_X");
    let body = serde_json::to_value(event).unwrap();
    assert_eq!(body["source"], "corelink");
    assert_eq!(routing_key, "order.succeeded");
    assert_eq!(
        properties.message_id().as_ref().unwrap().as_str(),
        expected_id.to_string()
    );
    assert_eq!(
        properties.kind().as_ref().unwrap().as_str(),
        "order.succeeded"
    );
    assert_eq!(*properties.delivery_mode(), Some(2));

    // Published once: the relay finds nothing more.
    p.relay_all().await;
    assert!(p.ledger_events().await.is_empty());
    assert_eq!(
        p.db.count("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
            .await,
        0
    );
    p.teardown().await;
}

#[tokio::test]
async fn a_retried_request_is_applied_once_and_kept_in_history() {
    let p = spawn_pipeline().await;
    let body = unit_body("PAY-E2", "FAILED");
    post(&p, UNIT, &body, "PAY-E2").await;
    post(&p, UNIT, &body, "PAY-E2").await; // a retry: fresh nonce, same key

    assert_eq!(p.apply_all().await, 2);
    let events = events(&p).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.event_type, "order.failed");
    assert_eq!(events[0].0.data["reason_code"], "BUS_INSUFFICIENT_FUNDS");
    let effects: Vec<String> = sqlx::query_scalar(
        "SELECT effect FROM order_history WHERE reference = 'PAY-E2' ORDER BY id",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(effects, ["created", "unchanged"]);
    p.teardown().await;
}

#[tokio::test]
async fn a_unit_key_is_bound_to_its_order() {
    let p = spawn_pipeline().await;
    // PENDING then SUCCESS under one key (the reference): both applied.
    post(&p, UNIT, &unit_body("PAY-K1", "PENDING"), "PAY-K1").await;
    post(&p, UNIT, &unit_body("PAY-K1", "SUCCESS"), "PAY-K1").await;
    // The same key for another order: quarantined.
    post(&p, UNIT, &unit_body("PAY-K2", "SUCCESS"), "PAY-K1").await;

    assert_eq!(p.apply_all().await, 3);
    assert_eq!(p.order_status("PAY-K1").await.as_deref(), Some("SUCCESS"));
    assert_eq!(p.order_status("PAY-K2").await, None);
    let quarantined = p.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].0, "IDEMPOTENCY_KEY_REUSED");
    let events = events(&p).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0.reference, "PAY-K1");
    p.teardown().await;
}

#[tokio::test]
async fn a_batch_key_is_bound_to_the_batch_content_by_meaning() {
    let p = spawn_pipeline().await;
    let batch = batch_body("B-1", &["PAY-B1", "PAY-B2"]);
    post(&p, BATCH, &batch, "B-1").await;
    // The same batch re-serialised: members reordered, other whitespace, another offset.
    let reserialised = r#"{"orders":[
        {"status":"SUCCESS","processed_at":"2025-11-19T08:09:30+01:00","reference":"PAY-B2","bank_reference":"BNK-PAY-B2"},
        {"bank_reference":"BNK-PAY-B1","reference":"PAY-B1","processed_at":"2025-11-19T07:09:30Z","status":"SUCCESS"}
    ],"sent_at":"2025-11-19T07:20:00Z","batch_id":"B-1"}"#;
    post(&p, BATCH, reserialised, "B-1").await;
    // The same key with other content.
    post(&p, BATCH, &batch_body("B-1", &["PAY-B1", "PAY-B3"]), "B-1").await;

    assert_eq!(p.apply_all().await, 3);
    let outcomes: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM received_messages ORDER BY received_at")
            .fetch_all(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["applied", "duplicate"]);
    let quarantined = p.quarantined().await;
    assert_eq!(
        quarantined.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["IDEMPOTENCY_KEY_REUSED"]
    );
    assert_eq!(p.order_status("PAY-B3").await, None);
    assert_eq!(events(&p).await.len(), 2);
    p.teardown().await;
}

#[tokio::test]
async fn a_batch_with_one_conflict_applies_nothing_and_stale_pending_is_ignored() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-C1", "SUCCESS"), "PAY-C1").await;
    p.apply_all().await;

    // PAY-C1 is SUCCESS; this batch says FAILED for it and creates PAY-C2: all or nothing.
    let conflicting = format!(
        r#"{{"batch_id":"B-C","orders":[{},{}]}}"#,
        unit_body("PAY-C2", "SUCCESS"),
        unit_body("PAY-C1", "FAILED")
    );
    post(&p, BATCH, &conflicting, "B-C").await;
    // PENDING after SUCCESS: stale, kept in history, ignored.
    post(&p, UNIT, &unit_body("PAY-C1", "PENDING"), "PAY-C1").await;
    assert_eq!(p.apply_all().await, 2);

    assert_eq!(
        p.order_status("PAY-C2").await,
        None,
        "nothing of the conflicting batch applied"
    );
    assert_eq!(p.order_status("PAY-C1").await.as_deref(), Some("SUCCESS"));
    let quarantined = p.quarantined().await;
    assert_eq!(
        quarantined.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["FINAL_STATUS_CONFLICT"]
    );
    let effects: Vec<String> = sqlx::query_scalar(
        "SELECT effect FROM order_history WHERE reference = 'PAY-C1' ORDER BY id",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(effects, ["created", "stale"]);
    let events = events(&p).await;
    assert_eq!(
        events
            .iter()
            .map(|e| e.0.event_type.as_str())
            .collect::<Vec<_>>(),
        ["order.succeeded"]
    );
    p.teardown().await;
}

#[tokio::test]
async fn the_same_nonce_on_another_request_is_quarantined_and_an_exact_replay_is_a_no_op() {
    let p = spawn_pipeline().await;
    // Two more ingress instances: their nonce caches do not know the first one's nonces.
    let first = &p.app;
    let share = |settings: &mut connector_ingress::config::Settings| {
        settings.topology = first.settings.topology.clone();
        settings.corelink.clients = vec![first.bank.client_settings()];
    };
    let second = spawn_app_with(share).await;
    let third = spawn_app_with(share).await;
    let nonce = random_nonce();
    let now = time::OffsetDateTime::now_utc();
    let body_a = unit_body("PAY-N1", "SUCCESS");
    let signed_a = first
        .bank
        .signer
        .sign(UNIT, body_a.as_bytes(), "PAY-N1", now, &nonce)
        .unwrap();
    assert_eq!(
        first
            .post(UNIT, &signed_a.pairs(), body_a.clone())
            .await
            .status(),
        200
    );
    // The exact request again, through another instance: an exact replay.
    assert_eq!(
        second.post(UNIT, &signed_a.pairs(), body_a).await.status(),
        200
    );
    // Another request reusing the nonce, through a third.
    let body_b = unit_body("PAY-N2", "SUCCESS");
    let signed_b = first
        .bank
        .signer
        .sign(UNIT, body_b.as_bytes(), "PAY-N2", now, &nonce)
        .unwrap();
    assert_eq!(
        third.post(UNIT, &signed_b.pairs(), body_b).await.status(),
        200
    );

    assert_eq!(p.apply_all().await, 3);
    assert_eq!(p.order_status("PAY-N1").await.as_deref(), Some("SUCCESS"));
    assert_eq!(p.order_status("PAY-N2").await, None);
    let quarantined = p.quarantined().await;
    assert_eq!(
        quarantined.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["NONCE_REUSED"]
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM order_history").await,
        1,
        "the replay changed nothing"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages WHERE outcome = 'replay'")
            .await,
        1,
        "but the copy that arrived is on record"
    );
    assert_eq!(events(&p).await.len(), 1);
    drop((second, third));
    p.teardown().await;
}

#[tokio::test]
async fn two_workers_given_the_same_message_apply_it_once() {
    let p = spawn_pipeline().await;
    post(
        &p,
        BATCH,
        &batch_body("B-W", &["PAY-W1", "PAY-W2", "PAY-W3"]),
        "B-W",
    )
    .await;
    // Deliver the very same message twice (a republish), to two workers at once.
    let original = p.app.broker.take_intake().await.unwrap();
    for _ in 0..2 {
        connector_workers::admin::publish_confirmed(
            &p.relay_channel,
            &p.app.topology.intake_exchange,
            "corelink.status.batch",
            &original.data,
            original.properties.clone(),
        )
        .await
        .unwrap();
    }
    let other_channel = p.app.broker.connection().create_channel().await.unwrap();
    let other_worker = p.worker.clone();
    let (a, b) = tokio::join!(
        p.worker.run_once(&p.worker_channel),
        other_worker.run_once(&other_channel)
    );
    assert_eq!(
        (a.unwrap(), b.unwrap()),
        (
            connector_workers::Step::Processed,
            connector_workers::Step::Processed
        )
    );

    assert_eq!(p.db.count("SELECT count(*) FROM order_history").await, 3);
    // The delivery log keeps both deliveries; only one applied.
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        2
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages WHERE outcome = 'applied'")
            .await,
        1
    );
    let events = events(&p).await;
    assert_eq!(events.len(), 3);
    let mut ids: Vec<_> = events.iter().map(|e| e.0.event_id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    p.teardown().await;
}

#[tokio::test]
async fn an_unreadable_message_is_dead_lettered_at_once() {
    let p = spawn_pipeline().await;
    connector_workers::admin::publish_confirmed(
        &p.relay_channel,
        &p.app.topology.intake_exchange,
        "corelink.status",
        b"not an envelope",
        BasicProperties::default().with_delivery_mode(2),
    )
    .await
    .unwrap();
    assert_eq!(p.apply_all().await, 1);
    let dlq = p.app.topology.intake_dead_letter_queue.clone();
    assert!(
        connector_e2e_tests::eventually(std::time::Duration::from_secs(5), || async {
            p.depth(&dlq).await == 1
        })
        .await,
        "the message is on the dead-letter queue"
    );

    let listed = connector_workers::admin::dead_letters_list(
        p.app.broker.connection(),
        &p.app.topology,
        connector_workers::admin::DeadLetterQueue::Intake,
        10,
    )
    .await
    .unwrap();
    assert!(
        listed.contains("1 message(s) shown") && listed.contains("reason=rejected"),
        "{listed}"
    );
    assert!(
        connector_e2e_tests::eventually(std::time::Duration::from_secs(5), || async {
            p.depth(&dlq).await == 1
        })
        .await,
        "listing leaves it there"
    );

    let replayed = connector_workers::admin::dead_letters_replay(
        p.app.broker.connection(),
        &p.app.topology,
        &connector_e2e_tests::test_seal_keys(),
        connector_workers::admin::DeadLetterQueue::Intake,
        10,
    )
    .await
    .unwrap();
    assert!(replayed.starts_with("replayed 1 message(s)"), "{replayed}");
    assert_eq!(p.depth(&dlq).await, 0);
    assert_eq!(
        p.depth(&p.app.topology.intake_queue).await,
        1,
        "back on the intake queue"
    );
    p.teardown().await;
}

#[tokio::test]
async fn operators_can_inspect_release_and_discard_quarantined_messages() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-Q1", "SUCCESS"), "PAY-Q1").await;
    post(&p, UNIT, &unit_body("PAY-Q1", "FAILED"), "PAY-Q1").await; // conflict
    post(&p, UNIT, &unit_body("PAY-Q2", "SUCCESS"), "PAY-Q1").await; // key reuse
    p.apply_all().await;
    let quarantined = p.quarantined().await;
    assert_eq!(quarantined.len(), 2);
    let (conflict, reuse) = (quarantined[0].1, quarantined[1].1);

    let listed = connector_workers::admin::quarantine_list(&p.db.pool, false)
        .await
        .unwrap();
    assert!(
        listed.starts_with("2 quarantined message(s) held"),
        "{listed}"
    );
    assert!(listed.contains("FINAL_STATUS_CONFLICT") && listed.contains("IDEMPOTENCY_KEY_REUSED"));
    let shown = connector_workers::admin::quarantine_show(&p.db.pool, conflict)
        .await
        .unwrap();
    assert!(
        shown.contains("PAY-Q1 is SUCCESS and cannot become FAILED"),
        "{shown}"
    );
    assert!(
        shown.contains("\"status\": \"FAILED\""),
        "the raw request is kept: {shown}"
    );

    let discarded = connector_workers::admin::quarantine_discard(
        &p.db.pool,
        conflict,
        "the bank confirmed SUCCESS",
    )
    .await
    .unwrap();
    assert!(discarded.starts_with("discarded"));
    assert!(
        connector_workers::admin::quarantine_discard(&p.db.pool, conflict, "again")
            .await
            .is_err()
    );

    // Released after the cause is gone (here: the key's binding removed by an operator).
    sqlx::query("DELETE FROM idempotency_keys WHERE idempotency_key = 'PAY-Q1'")
        .execute(&p.db.pool)
        .await
        .unwrap();
    connector_workers::admin::quarantine_release(
        &p.db.pool,
        &p.relay_channel,
        &p.app.topology,
        &connector_e2e_tests::test_seal_keys(),
        reuse,
        "key rebound",
    )
    .await
    .unwrap();
    assert_eq!(p.apply_all().await, 1);
    assert_eq!(p.order_status("PAY-Q2").await.as_deref(), Some("SUCCESS"));
    let listed = connector_workers::admin::quarantine_list(&p.db.pool, true)
        .await
        .unwrap();
    assert!(
        listed.contains("released") && listed.contains("discarded"),
        "{listed}"
    );

    let timeline = connector_workers::admin::order_timeline(&p.db.pool, "PAY-Q1")
        .await
        .unwrap();
    assert!(timeline.starts_with("order PAY-Q1: SUCCESS"), "{timeline}");
    p.relay_all().await;
    let timeline = connector_workers::admin::order_timeline(&p.db.pool, "PAY-Q1")
        .await
        .unwrap();
    assert!(
        timeline.contains("order.succeeded") && timeline.contains("published"),
        "{timeline}"
    );
    p.teardown().await;
}

#[tokio::test]
async fn two_relays_side_by_side_publish_each_event_once() {
    let p = spawn_pipeline().await;
    let references: Vec<String> = (0..40).map(|i| format!("PAY-RR{i}")).collect();
    let refs: Vec<&str> = references.iter().map(String::as_str).collect();
    post(&p, BATCH, &batch_body("B-RR", &refs), "B-RR").await;
    p.apply_all().await;

    // Small claims, so the two relays interleave over the same outbox.
    let settings = connector_workers::config::RelaySettings {
        batch_size: 3,
        ..Default::default()
    };
    let relay = || {
        connector_workers::relay::Relay::new(
            p.db.pool.clone(),
            p.app.topology.clone(),
            connector_workers::config::BrokerSettings::default(),
            settings.clone(),
            p.shutdown.clone(),
        )
    };
    let shared = &p;
    let drain = |relay: connector_workers::relay::Relay| async move {
        let channel = shared
            .app
            .broker
            .connection()
            .create_channel()
            .await
            .unwrap();
        relay.prepare(&channel).await.unwrap();
        let mut batches = 0;
        while relay.run_once(&channel).await.unwrap() == connector_workers::Step::Processed {
            batches += 1;
        }
        batches
    };
    let (a, b) = tokio::join!(drain(relay()), drain(relay()));
    assert_eq!(a + b, 14, "40 events in claims of 3, none claimed twice");
    let events = p.ledger_events().await;
    let mut ids: Vec<_> = events.iter().map(|e| e.0.event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((events.len(), ids.len()), (40, 40));
    p.teardown().await;
}

#[tokio::test]
async fn a_relay_publishes_a_claim_in_the_order_its_events_were_written() {
    let p = spawn_pipeline().await;
    let references: Vec<String> = (0..40).map(|i| format!("PAY-RO{i:02}")).collect();
    let refs: Vec<&str> = references.iter().map(String::as_str).collect();
    post(&p, BATCH, &batch_body("B-RO", &refs), "B-RO").await;
    p.apply_all().await;
    let written: Vec<Uuid> = sqlx::query_scalar("SELECT event_id FROM ledger_outbox ORDER BY id")
        .fetch_all(&p.db.pool)
        .await
        .unwrap();
    assert_eq!(written.len(), 40);

    // One claim of 40, every publish queued before any write is waited for.
    p.relay_all().await;
    let published: Vec<_> = p
        .ledger_events()
        .await
        .into_iter()
        .map(|(event, _, _)| event.event_id)
        .collect();
    assert_eq!(
        published, written,
        "the ledger queue holds them in outbox order"
    );
    p.teardown().await;
}

#[tokio::test]
async fn a_ledger_event_no_consumer_takes_is_dead_lettered_and_can_be_replayed() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-L1", "SUCCESS"), "PAY-L1").await;
    p.apply_all().await;
    p.relay_all().await;

    // A consumer rejects the event: it goes to the ledger's dead-letter queue (§6).
    let topology = &p.app.topology;
    let message = p
        .app
        .broker
        .channel
        .basic_get(
            topology.ledger_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .unwrap()
        .expect("the event is on the ledger queue");
    message
        .delivery
        .reject(lapin::options::BasicRejectOptions { requeue: false })
        .await
        .unwrap();
    let dlq = topology.ledger_dead_letter_queue.clone();
    assert!(
        connector_e2e_tests::eventually(std::time::Duration::from_secs(5), || async {
            p.depth(&dlq).await == 1
        })
        .await
    );

    let replayed = connector_workers::admin::dead_letters_replay(
        p.app.broker.connection(),
        topology,
        &connector_e2e_tests::test_seal_keys(),
        connector_workers::admin::DeadLetterQueue::Ledger,
        10,
    )
    .await
    .unwrap();
    assert!(replayed.starts_with("replayed 1 message(s)"), "{replayed}");
    let events = p.ledger_events().await;
    assert_eq!(events.len(), 1, "back on the ledger queue");
    assert_eq!(
        events[0].2, "order.succeeded",
        "with its original routing key"
    );
    p.teardown().await;
}

#[tokio::test]
async fn the_workers_apply_any_batch_the_ingress_accepted_whatever_its_size() {
    // An ingress allowing larger batches than the default: the workers hold no limit of their
    // own that could dead-letter what the bank was told was accepted.
    let app = spawn_app_with(|settings| settings.corelink.max_batch_orders = 1500).await;
    let p = connector_e2e_tests::pipeline::spawn_pipeline_on(app).await;
    let references: Vec<String> = (0..1200).map(|i| format!("PAY-BIG-{i:04}")).collect();
    let references: Vec<&str> = references.iter().map(String::as_str).collect();
    post(
        &p,
        BATCH,
        &batch_body("batch-big", &references),
        "batch-big",
    )
    .await;

    assert_eq!(p.apply_all().await, 1);
    assert_eq!(
        p.db.count("SELECT count(*) FROM orders WHERE status = 'SUCCESS'")
            .await,
        1200
    );
    assert_eq!(p.depth(&p.app.topology.intake_dead_letter_queue).await, 0);
    assert!(p.quarantined().await.is_empty());
    p.teardown().await;
}

#[tokio::test]
async fn a_release_never_loses_a_message_a_worker_quarantines_again() {
    let p = spawn_pipeline().await;
    post(&p, UNIT, &unit_body("PAY-RQ", "SUCCESS"), "PAY-RQ").await;
    post(&p, UNIT, &unit_body("PAY-RQ", "FAILED"), "PAY-RQ").await; // conflicts at every try
    p.apply_all().await;
    let held = p.quarantined().await[0].1;
    let state = || async {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT state, release_generation FROM quarantined_messages WHERE message_id = $1",
        )
        .bind(held)
        .fetch_one(&p.db.pool)
        .await
        .unwrap()
    };

    // A worker consuming all along, as in production: it takes a released message the moment
    // it is published, and quarantines it again, racing the release's own bookkeeping.
    let settings = connector_e2e_tests::pipeline::worker_settings(&p.app, &p.db.url);
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn(
        connector_workers::apply::ApplyWorker::new(
            p.db.pool.clone(),
            p.app.topology.clone(),
            settings.broker,
            settings.apply,
            connector_e2e_tests::test_seal_keys(),
            stop.clone(),
        )
        .run(),
    );
    for release in 1..=10 {
        let said = connector_workers::admin::quarantine_release(
            &p.db.pool,
            &p.relay_channel,
            &p.app.topology,
            &connector_e2e_tests::test_seal_keys(),
            held,
            "try again",
        )
        .await
        .unwrap();
        assert!(said.contains(&format!("(release {release})")), "{said}");
        let held_again =
            connector_e2e_tests::eventually(std::time::Duration::from_secs(20), || async {
                state().await == ("held".to_owned(), release)
            })
            .await;
        assert!(
            held_again,
            "release {release}: quarantined again, never left as released"
        );
    }
    stop.cancel();
    worker.await.unwrap();

    // A release whose publish fails is undone, and says so: the message is held still.
    let nowhere = connector_schema::Topology::with_prefix(
        &format!("test-nowhere-{}", Uuid::new_v4()),
        connector_schema::topology::QueueOptions::default(),
    );
    let channel = p.app.broker.connection().create_channel().await.unwrap();
    let error = connector_workers::admin::quarantine_release(
        &p.db.pool,
        &channel,
        &nowhere,
        &connector_e2e_tests::test_seal_keys(),
        held,
        "lost?",
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("was not released"),
        "{error:#}"
    );
    assert_eq!(state().await, ("held".to_owned(), 11));
    p.teardown().await;
}
