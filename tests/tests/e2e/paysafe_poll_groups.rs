//! The poller records its answers by groups, one transaction each (a savepoint per item), with
//! the Paysafe simulator over HTTP and the real PostgreSQL: many items due at once, answered a
//! mix of final, pending, 500 and 404, each ends as it would have alone; an item whose record
//! fails is rolled back alone; and far fewer transactions than items recorded them.

use std::time::Duration;

use paysafe_sim::Fault;
use sqlx::Connection as _;

use connector_schema::paysafe::TrackedKind;
use connector_workers::Step;

use crate::paysafe_tracking::{script, spawn};

/// (id, status, tracking, last poll outcome, poll attempts) of every item, by id.
type ItemRow = (String, String, String, Option<String>, i32);

#[tokio::test]
async fn answers_in_hand_are_recorded_together_each_as_it_would_be_alone() {
    let t = spawn(|s| {
        s.claim_batch = 100;
        s.concurrency = 100;
        s.record_group_size = 64;
    })
    .await;
    let ids = |prefix: &str| -> Vec<String> { (0..10).map(|i| format!("{prefix}-{i}")).collect() };
    let (finals, pendings, errors, unknown) = (
        ids("grp-final"),
        ids("grp-pending"),
        ids("grp-error"),
        ids("grp-unknown"),
    );
    let slow = || {
        vec![Fault::Delay {
            ms: 300,
            count: Some(1),
        }]
    };
    for id in &finals {
        t.sim
            .set_script(
                script(TrackedKind::Payment, id, &[("COMPLETED", None)]).with_faults(slow()),
            )
            .unwrap();
    }
    for id in &pendings {
        t.sim
            .set_script(
                script(
                    TrackedKind::Payment,
                    id,
                    &[("PROCESSING", Some(1)), ("COMPLETED", None)],
                )
                .with_faults(slow()),
            )
            .unwrap();
    }
    for id in &errors {
        t.sim
            .set_script(
                script(TrackedKind::Payment, id, &[("COMPLETED", None)])
                    .with_faults(vec![Fault::ServerError { count: Some(1) }]),
            )
            .unwrap();
    }
    // `unknown` has no script: the simulator answers 404.
    // Paysafe says COMPLETED, but recording it fails (a trigger refuses its poll fact): that
    // item alone is rolled back, the others of its group stay.
    t.sim
        .set_script(
            script(TrackedKind::Payment, "grp-poison", &[("COMPLETED", None)]).with_faults(slow()),
        )
        .unwrap();
    let all: Vec<String> = std::iter::once("grp-poison".to_owned())
        .chain(
            finals
                .iter()
                .chain(&pendings)
                .chain(&errors)
                .chain(&unknown)
                .cloned(),
        )
        .collect();
    for id in &all {
        t.track(TrackedKind::Payment, id).await;
    }
    let pool = &t.pipeline.db.pool;
    for statement in [
        // Recording an answer or a backoff sets `last_polled_at`; a claim does not.
        "CREATE FUNCTION hold_records() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared(7355); RETURN NEW; END $$",
        "CREATE TRIGGER hold_records BEFORE UPDATE ON paysafe_items FOR EACH ROW
         WHEN (NEW.last_polled_at IS DISTINCT FROM OLD.last_polled_at)
         EXECUTE FUNCTION hold_records()",
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON paysafe_item_history FOR EACH ROW
         WHEN (NEW.item_id = 'grp-poison' AND NEW.source = 'poll') EXECUTE FUNCTION refuse_poison()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }

    // Holding the lock the trigger above takes makes the first group wait at its first
    // record until every GET has been answered: whatever arrives meanwhile is in hand, and
    // must then be recorded in groups, not one transaction each.
    let mut holder = sqlx::PgConnection::connect(&t.pipeline.db.url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock(7355)")
        .execute(&mut holder)
        .await
        .unwrap();
    let poller = t.poller();
    let release = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let stats = t.sim.global_stats();
            let answered = all.iter().all(|id| {
                stats
                    .items
                    .get(id)
                    .is_some_and(|s| s.polls == 1 && s.in_flight == 0)
            });
            if answered {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not every item was polled: {stats:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The last answers from the simulator's socket into the poller.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("SELECT pg_advisory_unlock(7355)")
            .execute(&mut holder)
            .await
            .unwrap();
    };
    let (step, ()) = tokio::join!(poller.run_once(), release);
    assert_eq!(step.unwrap(), Step::Processed);

    let rows: Vec<ItemRow> = sqlx::query_as(
        "SELECT id, status, tracking, last_poll_outcome, poll_attempts
         FROM paysafe_items ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let row = |id: &str, status: &str, tracking: &str, outcome: Option<&str>, attempts: i32| {
        (
            id.to_owned(),
            status.to_owned(),
            tracking.to_owned(),
            outcome.map(str::to_owned),
            attempts,
        )
    };
    let mut expected: Vec<ItemRow> = vec![
        // Rolled back alone: as claimed, left to its lease.
        row("grp-poison", "PROCESSING", "polling", None, 0),
    ];
    expected.extend(
        finals
            .iter()
            .map(|id| row(id, "COMPLETED", "final", Some("final"), 0)),
    );
    expected.extend(
        pendings
            .iter()
            .map(|id| row(id, "PROCESSING", "polling", Some("pending"), 1)),
    );
    expected.extend(
        errors
            .iter()
            .map(|id| row(id, "PROCESSING", "polling", Some("server_error"), 1)),
    );
    expected.extend(
        unknown
            .iter()
            .map(|id| row(id, "PROCESSING", "polling", Some("not_found"), 1)),
    );
    expected.sort();
    assert_eq!(rows, expected);

    // The poison's lease stands (120 s): polled again when it expires, not before.
    let leased: bool = sqlx::query_scalar(
        "SELECT next_poll_at > now() + interval '60 seconds' FROM paysafe_items
         WHERE id = 'grp-poison'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(leased, "the poison keeps its lease");
    let mut events = t.events().await;
    events.sort();
    let mut completed: Vec<(String, String, String)> = finals
        .iter()
        .map(|id| {
            (
                "paysafe.payment.completed".to_owned(),
                id.to_owned(),
                "COMPLETED".to_owned(),
            )
        })
        .collect();
    completed.sort();
    assert_eq!(
        events, completed,
        "one event per final item, none for the poison"
    );

    // `now()` is the transaction's start, the same for every statement (savepoints included)
    // of one transaction: the distinct poll times count the transactions that recorded the
    // answers. One per item would be 40; the held group, then what was in hand once it
    // committed (a straggler or two still on the wire at most).
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT last_polled_at) FROM paysafe_items
         WHERE last_polled_at IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let recorded = all.len() - 1;
    assert!(
        (1..=4).contains(&transactions),
        "{recorded} answers recorded by {transactions} transactions"
    );
    t.pipeline.teardown().await;
}
