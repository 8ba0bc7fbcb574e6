//! The unit notifications of a group that share no key with another member, applied together
//! (`corelink::units`: one statement per table for all of them). Each is taken only when it
//! would be applied alone, and then writes what one-by-one writes: its order, its history row
//! with the effect the transition table gives, its ledger event, its key, its nonce and its
//! audit record. A replay, a key reused and a final-status conflict are left to the one-by-one
//! path, which gives them their own outcomes; so are two of one order, should a caller pass
//! them.

use uuid::Uuid;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline};
use connector_e2e_tests::unit_body;
use connector_schema::IntakeEnvelope;
use connector_workers::corelink;
use connector_workers::outcome::{ApplyError, Outcome};
use connector_workers::quarantine::QuarantineReason;

const UNIT: &str = "/callbacks/orders/status";

/// Posts a signed unit callback and takes its intake message off the queue, as the worker
/// would receive it.
async fn intake(p: &Pipeline, reference: &str, status: &str, key: &str) -> IntakeEnvelope {
    let body = unit_body(reference, status);
    let delivery = p.app.accepted_intake(UNIT, &body, key).await;
    IntakeEnvelope::from_amqp(&delivery.properties, &delivery.data).unwrap()
}

/// Applies `envelope` one by one, committed, as a group of one would.
async fn apply_alone(p: &Pipeline, envelope: &IntakeEnvelope) -> Result<Outcome, ApplyError> {
    let mut tx = p.db.pool.begin().await.unwrap();
    let outcome = corelink::apply(&mut tx, envelope).await;
    if outcome.is_ok() {
        tx.commit().await.unwrap();
    }
    outcome
}

fn quarantined(outcome: Result<Outcome, ApplyError>) -> Option<QuarantineReason> {
    match outcome {
        Err(ApplyError::Quarantine { reason, .. }) => Some(reason),
        _ => None,
    }
}

#[tokio::test]
async fn units_applied_together_write_what_one_by_one_writes_and_leave_the_rest() {
    let p = spawn_pipeline().await;
    // Before the group: one order PENDING, four SUCCESS, applied one by one.
    let pending = intake(&p, "ORD-P", "PENDING", "K-P").await;
    let settled = intake(&p, "ORD-R", "SUCCESS", "K-R").await;
    for (reference, key) in [("ORD-S1", "K-S1"), ("ORD-S2", "K-S2"), ("ORD-S3", "K-S3")] {
        let envelope = intake(&p, reference, "SUCCESS", key).await;
        assert!(apply_alone(&p, &envelope).await.is_ok());
    }
    for envelope in [&pending, &settled] {
        assert!(apply_alone(&p, envelope).await.is_ok());
    }

    let group = [
        intake(&p, "ORD-N1", "SUCCESS", "K-N1").await, // created, final: one event
        intake(&p, "ORD-N2", "PENDING", "K-N2").await, // created
        intake(&p, "ORD-P", "SUCCESS", "K-P").await,   // applied under its own key: one event
        intake(&p, "ORD-S1", "PENDING", "K-S1b").await, // stale
        intake(&p, "ORD-S2", "SUCCESS", "K-S2b").await, // unchanged
        intake(&p, "ORD-S3", "FAILED", "K-S3b").await, // a final-status conflict
        intake(&p, "ORD-N3", "SUCCESS", "K-S1").await, // a key bound to another order
        settled.clone(),                               // an exact replay (its nonce seen)
    ];
    let envelopes: Vec<&IntakeEnvelope> = group.iter().collect();
    let mut tx = p.db.pool.begin().await.unwrap();
    let outcomes = corelink::units::apply_together(&mut tx, &envelopes)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let applied = |events| Some(Outcome::Applied { items: 1, events });
    assert_eq!(
        outcomes,
        [
            applied(1),
            applied(0),
            applied(1),
            applied(0),
            applied(0),
            None,
            None,
            None
        ]
    );

    // What one-by-one would have written, for the five taken.
    let taken: Vec<Uuid> = group[..5].iter().map(|e| e.message_id).collect();
    let history: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT reference, status, previous_status, effect FROM order_history
         WHERE message_id = ANY($1) ORDER BY reference",
    )
    .bind(&taken)
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    let row = |r: &str, s: &str, prev: Option<&str>, e: &str| {
        (
            r.to_owned(),
            s.to_owned(),
            prev.map(str::to_owned),
            e.to_owned(),
        )
    };
    assert_eq!(
        history,
        [
            row("ORD-N1", "SUCCESS", None, "created"),
            row("ORD-N2", "PENDING", None, "created"),
            row("ORD-P", "SUCCESS", Some("PENDING"), "applied"),
            row("ORD-S1", "PENDING", Some("SUCCESS"), "stale"),
            row("ORD-S2", "SUCCESS", Some("SUCCESS"), "unchanged"),
        ]
    );
    for (reference, status) in [
        ("ORD-N1", "SUCCESS"),
        ("ORD-N2", "PENDING"),
        ("ORD-P", "SUCCESS"),
        ("ORD-S1", "SUCCESS"),
        ("ORD-S2", "SUCCESS"),
        ("ORD-S3", "SUCCESS"),
    ] {
        assert_eq!(p.order_status(reference).await.as_deref(), Some(status));
    }
    let events: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT e.reference, e.message_id FROM emitted_ledger_events e
         JOIN ledger_outbox o USING (event_id)
         WHERE e.message_id = ANY($1) ORDER BY e.reference",
    )
    .bind(&taken)
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(
        events,
        [
            ("ORD-N1".to_owned(), group[0].message_id),
            ("ORD-P".to_owned(), group[2].message_id)
        ]
    );
    let records: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
        "SELECT message_id, outcome, idempotency_key, request_path FROM received_messages
         WHERE message_id = ANY($1) ORDER BY idempotency_key",
    )
    .bind(&taken)
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(records.len(), 5);
    assert!(
        records
            .iter()
            .all(|(_, outcome, _, path)| outcome == "applied" && path.as_deref() == Some(UNIT))
    );
    let keys: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT idempotency_key, scope, reference FROM idempotency_keys
         WHERE idempotency_key IN ('K-N1', 'K-N2', 'K-P', 'K-S1b', 'K-S2b') ORDER BY 1",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    let key = |k: &str, r: &str| (k.to_owned(), "unit".to_owned(), Some(r.to_owned()));
    assert_eq!(
        keys,
        [
            key("K-N1", "ORD-N1"),
            key("K-N2", "ORD-N2"),
            key("K-P", "ORD-P"),
            key("K-S1b", "ORD-S1"),
            key("K-S2b", "ORD-S2"),
        ]
    );
    let nonces: i64 =
        sqlx::query_scalar("SELECT count(*) FROM seen_nonces WHERE message_id = ANY($1)")
            .bind(&taken)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
    assert_eq!(nonces, 5);

    // The three left: nothing of theirs written, and the one-by-one path gives each its own.
    let left: Vec<Uuid> = group[5..].iter().map(|e| e.message_id).collect();
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM order_history WHERE message_id = ANY($1))
              + (SELECT count(*) FROM received_messages WHERE message_id = ANY($1))",
    )
    .bind(&left[..2])
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(written, 0);
    assert_eq!(
        quarantined(apply_alone(&p, &group[5]).await),
        Some(QuarantineReason::FinalStatusConflict)
    );
    assert_eq!(
        quarantined(apply_alone(&p, &group[6]).await),
        Some(QuarantineReason::IdempotencyKeyReused)
    );
    assert!(matches!(
        apply_alone(&p, &group[7]).await,
        Ok(Outcome::Replay)
    ));

    // Two of one order: the caller's promise broken, checked here; both left.
    let twins = [
        intake(&p, "ORD-T", "PENDING", "K-T1").await,
        intake(&p, "ORD-T", "SUCCESS", "K-T2").await,
    ];
    let mut tx = p.db.pool.begin().await.unwrap();
    let outcomes = corelink::units::apply_together(&mut tx, &[&twins[0], &twins[1]])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(outcomes, [None, None]);
    assert_eq!(p.order_status("ORD-T").await, None);
    p.teardown().await;
}
