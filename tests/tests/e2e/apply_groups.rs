//! Group commit in the apply role: many messages in one transaction, each with the outcome it
//! would have had alone, nothing acknowledged before the commit, and a group whose commit fails
//! applied exactly once after redelivery.

use std::time::Duration;

use lapin::BasicProperties;
use sqlx::Connection;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline, worker_settings};
use connector_e2e_tests::{batch_body, unit_body};
use connector_workers::apply::{ApplyWorker, Disposition};

const UNIT: &str = "/callbacks/orders/status";
const BATCH: &str = "/callbacks/orders/status/batch";

/// Posts a signed callback and takes its sealed intake message off the queue, so the test
/// decides in which order, and how many times, the messages reach the worker.
async fn intake_message(p: &Pipeline, path: &str, body: &str, key: &str) -> Message {
    let delivery = p.app.accepted_intake(path, body, key).await;
    Message {
        routing_key: delivery.routing_key.to_string(),
        data: delivery.data,
        properties: delivery.properties,
    }
}

/// An intake message as the ingress published it (the seal travels in its properties).
struct Message {
    routing_key: String,
    data: Vec<u8>,
    properties: BasicProperties,
}

async fn publish(p: &Pipeline, routing_key: &str, m: &Message) {
    connector_workers::admin::publish_confirmed(
        &p.relay_channel,
        &p.app.topology.intake_exchange,
        routing_key,
        &m.data,
        m.properties.clone(),
    )
    .await
    .unwrap();
}

async fn outcomes(p: &Pipeline) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT outcome, count(*) FROM received_messages GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn each_message_of_a_group_gets_its_own_disposition_and_the_others_commit() {
    let p = spawn_pipeline().await;
    // PAY-G1 is SUCCESS before the group.
    let first = intake_message(&p, UNIT, &unit_body("PAY-G1", "SUCCESS"), "PAY-G1").await;
    publish(&p, &first.routing_key, &first).await;
    assert_eq!(p.apply_all().await, 1);

    let applied = intake_message(&p, UNIT, &unit_body("PAY-G2", "SUCCESS"), "PAY-G2").await;
    let conflict = intake_message(&p, UNIT, &unit_body("PAY-G1", "FAILED"), "PAY-G1").await;
    let batch = batch_body("B-G", &["PAY-G4", "PAY-G5"]);
    let batch_first = intake_message(&p, BATCH, &batch, "B-G").await;
    let batch_again = intake_message(&p, BATCH, &batch, "B-G").await;
    // A batch with a final-status conflict: none of it, PAY-G3 included, may apply.
    let conflicting_batch = format!(
        r#"{{"batch_id":"B-GC","orders":[{},{}]}}"#,
        unit_body("PAY-G3", "SUCCESS"),
        unit_body("PAY-G1", "FAILED")
    );
    let all_or_nothing = intake_message(&p, BATCH, &conflicting_batch, "B-GC").await;
    let pending = intake_message(&p, UNIT, &unit_body("PAY-G6", "PENDING"), "PAY-G6").await;
    let success = intake_message(&p, UNIT, &unit_body("PAY-G6", "SUCCESS"), "PAY-G6").await;

    let unreadable = Message {
        routing_key: "corelink.status".into(),
        data: b"not an envelope".to_vec(),
        properties: BasicProperties::default().with_delivery_mode(2),
    };
    let group: Vec<(&str, &Message)> = vec![
        (&applied.routing_key, &applied),
        (&conflict.routing_key, &conflict),
        // The very same message again: its nonce was claimed earlier in the group.
        (&applied.routing_key, &applied),
        (&unreadable.routing_key, &unreadable),
        (&batch_first.routing_key, &batch_first),
        // A unit message under the batch routing key: forged, never applied.
        ("corelink.status.batch", &applied),
        (&batch_again.routing_key, &batch_again),
        (&all_or_nothing.routing_key, &all_or_nothing),
        (&pending.routing_key, &pending),
        (&success.routing_key, &success),
    ];
    for (routing_key, message) in &group {
        publish(&p, routing_key, message).await;
    }

    let dispositions = p
        .worker
        .run_group_once(&p.worker_channel, 64)
        .await
        .unwrap();
    assert_eq!(dispositions.len(), group.len(), "{dispositions:?}");
    let labels: Vec<String> = dispositions
        .iter()
        .map(|d| match d {
            Disposition::Ack(outcome) => (*outcome).to_owned(),
            Disposition::DeadLetter(_) => "dead-letter".to_owned(),
            Disposition::Forged { reason, .. } => format!("forged:{reason}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        labels,
        [
            "applied",
            "quarantined",
            "replay",
            "dead-letter",
            "applied",
            "forged:type_mismatch",
            "duplicate",
            "quarantined",
            "applied",
            "applied"
        ]
    );

    // The effects of the others are committed.
    for (reference, status) in [
        ("PAY-G1", Some("SUCCESS")),
        ("PAY-G2", Some("SUCCESS")),
        ("PAY-G3", None),
        ("PAY-G4", Some("SUCCESS")),
        ("PAY-G5", Some("SUCCESS")),
        ("PAY-G6", Some("SUCCESS")),
    ] {
        assert_eq!(
            p.order_status(reference).await.as_deref(),
            status,
            "{reference}"
        );
    }
    let effects: Vec<String> = sqlx::query_scalar(
        "SELECT effect FROM order_history WHERE reference = 'PAY-G6' ORDER BY id",
    )
    .fetch_all(&p.db.pool)
    .await
    .unwrap();
    assert_eq!(effects, ["created", "applied"], "in delivery order");
    let quarantined = p.quarantined().await;
    assert_eq!(
        quarantined.iter().map(|q| q.0.as_str()).collect::<Vec<_>>(),
        ["FINAL_STATUS_CONFLICT", "FINAL_STATUS_CONFLICT"]
    );
    // PAY-G1's first apply is on record too.
    let expected: Vec<(String, i64)> = [("applied", 5), ("duplicate", 1), ("replay", 1)]
        .map(|(outcome, count)| (outcome.to_owned(), count))
        .into();
    assert_eq!(outcomes(&p).await, expected);

    p.relay_all().await;
    let mut events: Vec<String> = p
        .ledger_events()
        .await
        .into_iter()
        .map(|(event, _, _)| format!("{} {}", event.reference, event.event_type))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "PAY-G1 order.succeeded",
            "PAY-G2 order.succeeded",
            "PAY-G4 order.succeeded",
            "PAY-G5 order.succeeded",
            "PAY-G6 order.succeeded"
        ]
    );
    assert!(
        p.depth_reaches(&p.app.topology.intake_dead_letter_queue, 2)
            .await,
        "the unreadable and the forged message are dead-lettered"
    );
    assert_eq!(p.depth(&p.app.topology.intake_queue).await, 0);
    p.teardown().await;
}

/// Kills the connection committing a group while `commit_fails` holds a row: a deferred
/// trigger runs at COMMIT, after every message of the group was applied.
const KILL_AT_COMMIT: &str = "
CREATE TABLE commit_fails (on_purpose boolean PRIMARY KEY);
CREATE SEQUENCE commits_killed;
CREATE FUNCTION kill_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM commit_fails) THEN
        PERFORM nextval('commits_killed');
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER kill_at_commit AFTER INSERT ON orders
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION kill_at_commit();
INSERT INTO commit_fails VALUES (true);
";

#[tokio::test]
async fn a_group_whose_commit_fails_acks_nothing_and_is_applied_once_after_redelivery() {
    let p = spawn_pipeline().await;
    sqlx::raw_sql(KILL_AT_COMMIT)
        .execute(&p.db.pool)
        .await
        .unwrap();
    let references = ["PAY-K1", "PAY-K2", "PAY-K3", "PAY-K4", "PAY-K5"];
    for reference in references {
        let response = p
            .app
            .post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
            .await;
        assert_eq!(response.status(), 200);
    }
    // Held for at most a second: then the messages are given back.
    let mut settings = worker_settings(&p.app, &p.db.url);
    settings.apply.max_hold_secs = 1;
    let worker = ApplyWorker::new(
        p.db.pool.clone(),
        p.app.topology.clone(),
        settings.broker.clone(),
        settings.apply.clone(),
        connector_e2e_tests::test_seal_keys(),
        p.shutdown.clone(),
    );

    let dispositions = worker.run_group_once(&p.worker_channel, 64).await.unwrap();
    assert_eq!(dispositions.len(), references.len());
    assert!(
        dispositions
            .iter()
            .all(|d| matches!(d, Disposition::GiveBack(_))),
        "{dispositions:?}"
    );
    let killed: i64 = sqlx::query_scalar("SELECT last_value FROM commits_killed")
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
    assert!(
        killed >= 3,
        "the group, then its messages one at a time, reached COMMIT and were cut: {killed}"
    );
    assert_eq!(p.db.count("SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        0
    );
    assert!(
        p.depth_reaches(&p.app.topology.intake_queue, references.len() as u32)
            .await,
        "nothing was acknowledged: every message is back on the queue"
    );

    sqlx::query("DELETE FROM commit_fails")
        .execute(&p.db.pool)
        .await
        .unwrap();
    let dispositions = worker.run_group_once(&p.worker_channel, 64).await.unwrap();
    assert_eq!(dispositions, vec![Disposition::Ack("applied"); 5]);
    assert_eq!(p.db.count("SELECT count(*) FROM orders").await, 5);
    assert_eq!(
        p.db.count("SELECT count(*) FROM order_history").await,
        5,
        "each applied once"
    );
    assert_eq!(
        p.db.count("SELECT count(*) FROM received_messages").await,
        5
    );
    p.relay_all().await;
    assert_eq!(p.ledger_events().await.len(), 5);
    assert_eq!(p.depth(&p.app.topology.intake_queue).await, 0);
    p.teardown().await;
}

/// A database that refuses writes, as a primary demoted in a failover does until the proxy
/// cuts it (25006, read-only transaction): the group is held, then given back; nothing is
/// acknowledged or dead-lettered, and it applies once writes are accepted again.
#[tokio::test]
async fn a_group_meeting_a_read_only_database_is_given_back_and_applied_later() {
    let p = spawn_pipeline().await;
    for reference in ["PAY-R1", "PAY-R2"] {
        let response = p
            .app
            .post_signed(UNIT, &unit_body(reference, "SUCCESS"), reference)
            .await;
        assert_eq!(response.status(), 200);
    }
    let read_only = |on: bool| {
        let (name, value) = (p.db.name.clone(), if on { "on" } else { "off" });
        let pool = p.db.pool.clone();
        async move {
            sqlx::query(&format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = {value}"
            ))
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    read_only(true).await;
    let mut settings = worker_settings(&p.app, &p.db.url);
    settings.apply.max_hold_secs = 1;
    // A fresh pool: its connections take the database's new default.
    let worker_on = |settings: &connector_workers::config::Settings| {
        ApplyWorker::new(
            connector_workers::db::pool(&settings.database).unwrap(),
            p.app.topology.clone(),
            settings.broker.clone(),
            settings.apply.clone(),
            connector_e2e_tests::test_seal_keys(),
            p.shutdown.clone(),
        )
    };
    let dispositions = worker_on(&settings)
        .run_group_once(&p.worker_channel, 64)
        .await
        .unwrap();
    assert_eq!(dispositions.len(), 2);
    assert!(
        dispositions
            .iter()
            .all(|d| matches!(d, Disposition::GiveBack(reason) if reason.contains("read-only"))),
        "{dispositions:?}"
    );
    assert!(
        p.depth_reaches(&p.app.topology.intake_queue, 2).await,
        "both messages are back on the queue"
    );
    assert_eq!(p.depth(&p.app.topology.intake_dead_letter_queue).await, 0);

    read_only(false).await;
    let dispositions = worker_on(&settings)
        .run_group_once(&p.worker_channel, 64)
        .await
        .unwrap();
    assert_eq!(dispositions, vec![Disposition::Ack("applied"); 2]);
    assert_eq!(p.db.count("SELECT count(*) FROM order_history").await, 2);
    p.teardown().await;
}

/// Two groups holding the same two orders in opposite delivery order. Group A is held inside
/// its transaction after it wrote its first order; were rows locked only as each message
/// reaches them, group B would take the second order and wait for the first, and A, released,
/// would wait for B: a deadlock. Groups lock their keys first, in one global order, so B waits
/// at its start on an advisory lock, and both apply once A commits.
#[tokio::test]
async fn groups_sharing_orders_in_opposite_order_wait_instead_of_deadlocking() {
    let p = spawn_pipeline().await;
    let a = [
        intake_message(&p, UNIT, &unit_body("PAY-L1", "PENDING"), "PAY-L1").await,
        intake_message(&p, UNIT, &unit_body("PAY-L2", "PENDING"), "PAY-L2").await,
    ];
    let b = [
        intake_message(&p, UNIT, &unit_body("PAY-L2", "SUCCESS"), "PAY-L2").await,
        intake_message(&p, UNIT, &unit_body("PAY-L1", "SUCCESS"), "PAY-L1").await,
    ];
    sqlx::raw_sql(
        "CREATE FUNCTION hold_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared(7356); RETURN NULL; END $$;
         CREATE TRIGGER hold_after_insert AFTER INSERT ON orders FOR EACH ROW
         WHEN (NEW.reference = 'PAY-L1') EXECUTE FUNCTION hold_after_insert();",
    )
    .execute(&p.db.pool)
    .await
    .unwrap();
    let mut holder = sqlx::PgConnection::connect(&p.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(7356)")
        .execute(&mut holder)
        .await
        .unwrap();
    for message in &a {
        publish(&p, &message.routing_key, message).await;
    }
    let group_a = p.worker.run_group_once(&p.worker_channel, 2);
    let group_b = async {
        assert!(
            until_waiting(&p.db.pool, 1).await,
            "group A holds PAY-L1 in its trigger"
        );
        for message in &b {
            publish(&p, &message.routing_key, message).await;
        }
        let group_b = p.worker.run_group_once(&p.worker_channel, 2);
        let observe = async {
            assert!(until_waiting(&p.db.pool, 2).await, "group B waits");
            let mut locks = waiting_locks(&p.db.pool).await;
            locks.sort();
            sqlx::query("SELECT pg_advisory_unlock(7356)")
                .execute(&mut holder)
                .await
                .unwrap();
            locks
        };
        tokio::join!(group_b, observe)
    };
    let (a_done, (b_done, locks)) = tokio::join!(group_a, group_b);
    let group_lock_class = i64::from(0x6170_706c_i32);
    assert_eq!(
        locks,
        [
            ("advisory".to_owned(), Some(1), Some(0)),
            ("advisory".to_owned(), Some(2), Some(group_lock_class)),
        ],
        "A waits in its trigger; B waits at its start for a key A holds, not for a row"
    );
    assert_eq!(a_done.unwrap(), vec![Disposition::Ack("applied"); 2]);
    assert_eq!(b_done.unwrap(), vec![Disposition::Ack("applied"); 2]);
    for reference in ["PAY-L1", "PAY-L2"] {
        assert_eq!(p.order_status(reference).await.as_deref(), Some("SUCCESS"));
    }
    assert_eq!(
        p.db.count("SELECT count(*) FROM order_history").await,
        4,
        "each message applied once"
    );
    p.teardown().await;
}

/// The locks this database's transactions wait for: lock type, and for advisory locks which
/// key space (`objsubid`: 1 one `bigint`, 2 two `int4`) and first key.
async fn waiting_locks(pool: &sqlx::PgPool) -> Vec<(String, Option<i16>, Option<i64>)> {
    sqlx::query_as(
        "SELECT locktype, objsubid, classid::bigint FROM pg_locks
         WHERE NOT granted
           AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn until_waiting(pool: &sqlx::PgPool, count: usize) -> bool {
    connector_e2e_tests::eventually(Duration::from_secs(30), || async {
        waiting_locks(pool).await.len() >= count
    })
    .await
}

/// A small deterministic generator (xorshift), so a failing case can be run again by its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// The grouped path against the §3.4 state machine (`workers/tests/state_machines.rs` checks
/// the machine alone): lifecycles of several orders, every step delivered 1 to 3 times, some
/// with a contradicting second final, shuffled and applied in groups of random sizes, end
/// exactly as the machine folds them in delivery order.
#[tokio::test]
async fn shuffled_notifications_in_random_groups_end_as_the_state_machine_says() {
    use connector_schema::corelink::OrderStatus;
    use connector_workers::corelink::{Effect, transition};

    let p = spawn_pipeline().await;
    let mut total_quarantined = 0;
    for seed in [0x9e37_79b9_u64, 0x51_7cc1_b727, 0x2545_f491_4f6c_dd1d] {
        let mut rng = Rng(seed);
        let mut deliveries: Vec<(String, OrderStatus)> = Vec::new();
        for order in 0..5 {
            let reference = format!("PAY-{seed:x}-{order}");
            let finals = [OrderStatus::Success, OrderStatus::Failed];
            let first = finals[rng.below(2)];
            let mut steps = vec![OrderStatus::Pending, first];
            if rng.below(3) == 0 {
                steps.push(finals.into_iter().find(|f| *f != first).unwrap());
            }
            for step in steps {
                for _ in 0..=rng.below(3) {
                    deliveries.push((reference.clone(), step));
                }
            }
        }
        for i in (1..deliveries.len()).rev() {
            deliveries.swap(i, rng.below(i + 1));
        }
        for (reference, status) in &deliveries {
            let body = unit_body(reference, status.as_str());
            let response = p.app.post_signed(UNIT, &body, reference).await;
            assert_eq!(response.status(), 200);
        }
        let mut applied = 0;
        loop {
            let size = 1 + rng.below(8);
            let group = p
                .worker
                .run_group_once(&p.worker_channel, size)
                .await
                .unwrap();
            if group.is_empty() {
                break;
            }
            applied += group.len();
        }
        assert_eq!(applied, deliveries.len());

        // The machine, folded over each order's deliveries in the order they were applied.
        let mut quarantined = 0;
        for order in 0..5 {
            let reference = format!("PAY-{seed:x}-{order}");
            let (mut state, mut events) = (None, 0);
            for (_, status) in deliveries.iter().filter(|(r, _)| *r == reference) {
                match transition(state, *status) {
                    Ok(Effect::Created | Effect::Applied) => {
                        state = Some(*status);
                        events += usize::from(status.is_final());
                    }
                    Ok(Effect::Unchanged | Effect::Stale) => {}
                    Err(_) => quarantined += 1,
                }
            }
            assert_eq!(
                p.order_status(&reference).await.as_deref(),
                state.map(OrderStatus::as_str),
                "seed {seed:x}: {reference}"
            );
            let emitted: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM emitted_ledger_events WHERE reference = $1",
            )
            .bind(&reference)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
            assert_eq!(emitted, events as i64, "seed {seed:x}: {reference}");
            assert!(events <= 1);
        }
        let held =
            p.db.count("SELECT count(*) FROM quarantined_messages WHERE state = 'held'")
                .await;
        total_quarantined += quarantined;
        assert_eq!(held, total_quarantined as i64, "seed {seed:x}");
    }
    p.teardown().await;
}
