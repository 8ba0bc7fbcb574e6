//! Paysafe tracking end to end (DESIGN.md §5), with the Paysafe simulator over HTTP and the real
//! ingress, RabbitMQ and PostgreSQL: a tracked payment polled to COMPLETED or FAILED, STALE at
//! its deadline, 429 and 500 storms that back off without losing the item, a refused API key
//! that pauses polling, two pollers sharing the work without ever polling one item at once; and
//! webhooks (signed and sent by the simulator to the ingress) before, after and during polls,
//! the two COMPLETED webhooks, a credit reversal and a payment conflict.

use std::time::Duration;

use paysafe_sim::{Fault, ItemScript, SimConfig, SimHandle, Step as SimStep, WebhookRequest};
use tokio_util::sync::CancellationToken;

use connector_e2e_tests::pipeline::{Pipeline, spawn_pipeline_on};
use connector_e2e_tests::{amqp_url, eventually, spawn_app_with};
use connector_schema::paysafe::{TrackCommand, TrackedKind};
use connector_workers::Step;
use connector_workers::admin;
use connector_workers::config::PaysafeSettings;
use connector_workers::poller::Poller;

const USER: &str = "api-user";
const PASSWORD: &str = "api-secret-password";
const WEBHOOK_KEY: &str = "paysafe-webhook-key-test";

pub(crate) struct Tracking {
    pub(crate) pipeline: Pipeline,
    pub(crate) sim: SimHandle,
    settings: PaysafeSettings,
}

/// A pipeline whose workers poll the simulator; polls are due at once unless `configure`
/// says otherwise.
pub(crate) async fn spawn(configure: impl FnOnce(&mut PaysafeSettings)) -> Tracking {
    let app = spawn_app_with(|s| s.paysafe.webhook_keys = vec![WEBHOOK_KEY.into()]).await;
    let webhook_url = format!("{}/webhooks/paysafe", app.base_url);
    let sim = paysafe_sim::spawn(
        SimConfig::new(USER, PASSWORD).with_webhook(&webhook_url, WEBHOOK_KEY.as_bytes()),
    )
    .await
    .unwrap();
    let mut settings = PaysafeSettings {
        base_url: sim.base_url(),
        api_username: USER.into(),
        api_password: PASSWORD.into(),
        first_poll_after_secs: 0,
        rate_limit_per_second: 1_000,
        request_timeout_ms: 2_000,
        idle_interval_ms: 10,
        ..PaysafeSettings::default()
    };
    configure(&mut settings);
    let mut pipeline = spawn_pipeline_on(app).await;
    pipeline.worker = pipeline.worker.clone().with_paysafe(settings.clone());
    Tracking {
        pipeline,
        sim,
        settings,
    }
}

pub(crate) fn script(kind: TrackedKind, id: &str, steps: &[(&str, Option<u32>)]) -> ItemScript {
    ItemScript::new(
        kind,
        id,
        &format!("order-{id}"),
        546,
        "CAD",
        steps
            .iter()
            .map(|(status, polls)| SimStep::new(status, *polls))
            .collect(),
    )
}

impl Tracking {
    pub(crate) fn poller(&self) -> Poller {
        self.poller_on(self.pipeline.db.pool.clone(), CancellationToken::new())
    }

    /// A poller on a pool of the caller's (e.g. through a proxy), stopped by `shutdown`.
    pub(crate) fn poller_on(&self, pool: sqlx::PgPool, shutdown: CancellationToken) -> Poller {
        Poller::new(pool, self.settings.clone(), shutdown).unwrap()
    }

    /// Publishes the merchant's `paysafe.track` command and applies it.
    pub(crate) async fn track(&self, kind: TrackedKind, id: &str) {
        let (_connection, channel) = admin::confirm_channel(&amqp_url()).await.unwrap();
        let command = TrackCommand {
            kind,
            id: id.into(),
            merchant_ref_num: format!("order-{id}"),
            amount: 546,
            currency_code: "CAD".into(),
        };
        admin::paysafe_track(&channel, &self.pipeline.app.topology, &command)
            .await
            .unwrap();
        assert_eq!(self.pipeline.apply_all().await, 1);
    }

    /// The simulator signs a webhook about `id` and sends it to the ingress, which must
    /// accept it; the apply worker then applies it.
    pub(crate) async fn webhook(&self, id: &str, event_name: &str) {
        let outcome = self
            .sim
            .send_webhook(WebhookRequest::event(id, event_name))
            .await
            .unwrap();
        assert_eq!(outcome.status, 200, "{event_name}: {}", outcome.body);
        assert_eq!(self.pipeline.apply_all().await, 1);
    }

    /// (status, tracking) of an item.
    pub(crate) async fn item(&self, id: &str) -> (String, String) {
        sqlx::query_as("SELECT status, tracking FROM paysafe_items WHERE id = $1")
            .bind(id)
            .fetch_one(&self.pipeline.db.pool)
            .await
            .unwrap()
    }

    /// Steps `poller` until `id` is no longer polled, at most `rounds` rounds.
    pub(crate) async fn poll_until_done(&self, poller: &Poller, id: &str, rounds: usize) {
        for _ in 0..rounds {
            poller.run_once().await.unwrap();
            if self.item(id).await.1 != "polling" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "{id} still polled after {rounds} rounds: {:?}",
            self.item(id).await
        );
    }

    /// The ledger events published so far: (event type, reference, status).
    pub(crate) async fn events(&self) -> Vec<(String, String, String)> {
        self.pipeline.relay_all().await;
        self.pipeline
            .ledger_events()
            .await
            .into_iter()
            .map(|(event, _, _)| (event.event_type, event.reference, event.status))
            .collect()
    }
}

#[tokio::test]
async fn a_tracked_payment_is_polled_to_completed_and_emitted_once() {
    let t = spawn(|_| {}).await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-1",
            &[("PROCESSING", Some(2)), ("COMPLETED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-1").await;
    assert_eq!(
        t.item("pay-1").await,
        ("PROCESSING".into(), "polling".into())
    );

    let poller = t.poller();
    t.poll_until_done(&poller, "pay-1", 20).await;
    assert_eq!(t.item("pay-1").await, ("COMPLETED".into(), "final".into()));
    assert_eq!(
        t.sim.poll_count("pay-1"),
        3,
        "two PROCESSING answers, then COMPLETED"
    );
    assert_eq!(
        t.events().await,
        [(
            "paysafe.payment.completed".to_owned(),
            "pay-1".to_owned(),
            "COMPLETED".to_owned()
        )]
    );
    assert_eq!(
        poller.run_once().await.unwrap(),
        Step::Idle,
        "a final item is not polled"
    );
    assert_eq!(t.sim.poll_count("pay-1"), 3);

    // The merchant publishing the track command again changes nothing.
    t.track(TrackedKind::Payment, "pay-1").await;
    assert_eq!(t.item("pay-1").await.1, "final");
    assert!(t.events().await.is_empty());
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn a_failed_payment_and_a_credit_emit_their_events() {
    let t = spawn(|_| {}).await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-2",
            &[("PROCESSING", Some(1)), ("FAILED", None)],
        ))
        .unwrap();
    t.sim
        .set_script(script(
            TrackedKind::StandaloneCredit,
            "cred-1",
            &[("PENDING", Some(1)), ("COMPLETED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-2").await;
    t.track(TrackedKind::StandaloneCredit, "cred-1").await;
    let poller = t.poller();
    t.poll_until_done(&poller, "pay-2", 20).await;
    t.poll_until_done(&poller, "cred-1", 20).await;
    let mut events = t.events().await;
    events.sort();
    assert_eq!(
        events,
        [
            (
                "paysafe.credit.completed".to_owned(),
                "cred-1".to_owned(),
                "COMPLETED".to_owned()
            ),
            (
                "paysafe.payment.failed".to_owned(),
                "pay-2".to_owned(),
                "FAILED".to_owned()
            ),
        ]
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn an_item_still_processing_at_its_deadline_becomes_stale_without_a_status() {
    let t = spawn(|s| s.payment_deadline_secs = 1).await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-3",
            &[("PROCESSING", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-3").await;
    let poller = t.poller();
    let within = Duration::from_secs(10);
    assert!(
        eventually(within, || async {
            poller.run_once().await.unwrap();
            t.item("pay-3").await.1 == "stale"
        })
        .await
    );
    assert_eq!(t.item("pay-3").await, ("PROCESSING".into(), "stale".into()));
    assert!(t.events().await.is_empty(), "no invented final status");
    let polls = t.sim.poll_count("pay-3");
    assert!(polls >= 1);
    assert_eq!(poller.run_once().await.unwrap(), Step::Idle);
    assert_eq!(
        t.sim.poll_count("pay-3"),
        polls,
        "a stale item is not polled"
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn rate_limit_and_server_error_storms_back_off_without_losing_the_item() {
    // Delays of 1 s (no growth, no jitter), so the back-off is visible and the test short.
    let t = spawn(|s| {
        s.first_poll_after_secs = 1;
        s.backoff_multiplier = 1.0;
        s.backoff_jitter = 0.0;
    })
    .await;
    t.sim
        .set_script(
            script(
                TrackedKind::Payment,
                "pay-4",
                &[("PROCESSING", Some(1)), ("COMPLETED", None)],
            )
            .with_faults(vec![
                Fault::RateLimit {
                    count: Some(3),
                    retry_after_secs: None,
                },
                Fault::ServerError { count: Some(3) },
            ]),
        )
        .unwrap();
    t.track(TrackedKind::Payment, "pay-4").await;
    let poller = t.poller();
    let pool = &t.pipeline.db.pool;

    let mut outcomes = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while t.item("pay-4").await.1 == "polling" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never completed: {outcomes:?}"
        );
        if poller.run_once().await.unwrap() == Step::Processed {
            let (outcome, wait_ms): (Option<String>, f64) = sqlx::query_as(
                "SELECT last_poll_outcome,
                        EXTRACT(EPOCH FROM next_poll_at - now())::float8 * 1000
                 FROM paysafe_items WHERE id = 'pay-4'",
            )
            .fetch_one(pool)
            .await
            .unwrap_or((None, 0.0));
            if let Some(outcome) = outcome.filter(|o| o != "final") {
                assert!(
                    wait_ms > 800.0,
                    "{outcome} backs off ~1 s, not {wait_ms} ms"
                );
                outcomes.push(outcome);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        outcomes,
        [
            "rate_limited",
            "rate_limited",
            "rate_limited",
            "server_error",
            "server_error",
            "server_error",
            "pending"
        ]
    );
    assert_eq!(t.item("pay-4").await, ("COMPLETED".into(), "final".into()));
    assert_eq!(t.events().await.len(), 1);
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn a_refused_api_key_pauses_polling_and_keeps_the_item() {
    let t = spawn(|s| {
        s.api_password = "not-the-password".into();
        s.auth_pause_secs = 3_600;
    })
    .await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-5",
            &[("COMPLETED", None)],
        ))
        .unwrap();
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-6",
            &[("COMPLETED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-5").await;
    t.track(TrackedKind::Payment, "pay-6").await;
    let poller = Poller::new(
        t.pipeline.db.pool.clone(),
        PaysafeSettings {
            concurrency: 1,
            claim_batch: 1,
            ..t.settings.clone()
        },
        CancellationToken::new(),
    )
    .unwrap();
    assert_eq!(poller.run_once().await.unwrap(), Step::Processed);
    assert_eq!(
        poller.run_once().await.unwrap(),
        Step::Idle,
        "paused after the 401"
    );
    assert_eq!(
        t.sim.poll_count("pay-5") + t.sim.poll_count("pay-6"),
        0,
        "no GET was answered"
    );
    let mut outcomes: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT tracking, last_poll_outcome FROM paysafe_items")
            .fetch_all(&t.pipeline.db.pool)
            .await
            .unwrap();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("polling".to_owned(), None),
            ("polling".to_owned(), Some("unauthorized".to_owned()))
        ],
        "one call, then the pause; both items still tracked"
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn two_pollers_share_the_work_and_never_poll_one_item_at_once() {
    let t = spawn(|s| {
        s.claim_batch = 5;
        s.concurrency = 5;
    })
    .await;
    let ids: Vec<String> = (0..30).map(|i| format!("pay-share-{i}")).collect();
    for id in &ids {
        t.sim
            .set_script(
                script(
                    TrackedKind::Payment,
                    id,
                    &[("PROCESSING", Some(1)), ("COMPLETED", None)],
                )
                .with_faults(vec![Fault::Delay {
                    ms: 30,
                    count: None,
                }]),
            )
            .unwrap();
        t.track(TrackedKind::Payment, id).await;
    }
    let (a, b) = (t.poller(), t.poller());
    let all_final = || async {
        let polling: i64 =
            sqlx::query_scalar("SELECT count(*) FROM paysafe_items WHERE tracking = 'polling'")
                .fetch_one(&t.pipeline.db.pool)
                .await
                .unwrap();
        polling == 0
    };
    let run = |poller: Poller| async move {
        // Bounded in time, not in rounds: a slow machine only makes it take longer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while !all_final().await && tokio::time::Instant::now() < deadline {
            if poller.run_once().await.unwrap() == Step::Idle {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        poller
    };
    let (a, b) = tokio::join!(run(a), run(b));
    drop((a, b));
    assert!(all_final().await);
    for id in &ids {
        assert_eq!(t.sim.max_concurrent(id), 1, "{id} polled twice at once");
        assert_eq!(
            t.sim.poll_count(id),
            2,
            "{id}: one PROCESSING, one COMPLETED"
        );
    }
    assert_eq!(t.events().await.len(), ids.len(), "one event per payment");
    t.pipeline.teardown().await;
}

fn completed(event_type: &str, id: &str) -> (String, String, String) {
    (event_type.to_owned(), id.to_owned(), "COMPLETED".to_owned())
}

#[tokio::test]
async fn a_webhook_before_the_poll_settles_the_item_and_stops_its_polling() {
    let t = spawn(|s| s.first_poll_after_secs = 3_600).await;
    // Polled, it would never complete: only the webhook can settle it.
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-w1",
            &[("PROCESSING", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-w1").await;
    t.webhook("pay-w1", "PAYMENT_COMPLETED").await;
    assert_eq!(t.item("pay-w1").await, ("COMPLETED".into(), "final".into()));
    sqlx::query("UPDATE paysafe_items SET next_poll_at = now()")
        .execute(&t.pipeline.db.pool)
        .await
        .unwrap();
    assert_eq!(t.poller().run_once().await.unwrap(), Step::Idle);
    assert_eq!(t.sim.poll_count("pay-w1"), 0, "never polled");
    assert_eq!(
        t.events().await,
        [completed("paysafe.payment.completed", "pay-w1")]
    );

    // A webhook for a payment nobody tracked yet starts (and here ends) its tracking; the
    // merchant's late track command is a no-op.
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-w2",
            &[("COMPLETED", None)],
        ))
        .unwrap();
    t.webhook("pay-w2", "SETTLEMENT_COMPLETED").await;
    t.track(TrackedKind::Payment, "pay-w2").await;
    assert_eq!(t.item("pay-w2").await, ("COMPLETED".into(), "final".into()));
    assert_eq!(
        t.events().await,
        [completed("paysafe.payment.completed", "pay-w2")]
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn webhooks_after_the_poll_and_the_two_completed_webhooks_emit_nothing_more() {
    let t = spawn(|_| {}).await;
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-w3",
            &[("COMPLETED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-w3").await;
    t.poll_until_done(&t.poller(), "pay-w3", 10).await;
    t.webhook("pay-w3", "PAYMENT_COMPLETED").await;
    t.webhook("pay-w3", "SETTLEMENT_COMPLETED").await;
    t.webhook("pay-w3", "PAYMENT_COMPLETED").await; // Paysafe retrying its delivery
    t.webhook("pay-w3", "PAYMENT_PROCESSING").await; // late and out of order
    assert_eq!(t.item("pay-w3").await, ("COMPLETED".into(), "final".into()));
    assert_eq!(
        t.events().await,
        [completed("paysafe.payment.completed", "pay-w3")]
    );

    // On an item still polled, PAYMENT_COMPLETED then SETTLEMENT_COMPLETED: one fact.
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-w4",
            &[("PROCESSING", None)],
        ))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-w4").await;
    t.webhook("pay-w4", "PAYMENT_COMPLETED").await;
    t.webhook("pay-w4", "SETTLEMENT_COMPLETED").await;
    assert_eq!(
        t.events().await,
        [completed("paysafe.payment.completed", "pay-w4")]
    );
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM received_messages WHERE kind = 'paysafe.webhook' ORDER BY processed_at",
    )
    .fetch_all(&t.pipeline.db.pool)
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [
            "duplicate",
            "duplicate",
            "duplicate",
            "duplicate",
            "applied",
            "duplicate"
        ]
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn a_webhook_and_a_poll_at_once_emit_one_event() {
    let t = spawn(|_| {}).await;
    for round in 0..5 {
        let id = format!("pay-race-{round}");
        t.sim
            .set_script(
                script(TrackedKind::Payment, &id, &[("COMPLETED", None)]).with_faults(vec![
                    Fault::Delay {
                        ms: 20 * round,
                        count: None,
                    },
                ]),
            )
            .unwrap();
        t.track(TrackedKind::Payment, &id).await;
        let poller = t.poller();
        let (_, ()) = tokio::join!(poller.run_once(), t.webhook(&id, "PAYMENT_COMPLETED"));
        assert_eq!(t.item(&id).await, ("COMPLETED".into(), "final".into()));
        assert_eq!(
            t.events().await,
            [completed("paysafe.payment.completed", &id)],
            "round {round}"
        );
    }
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn a_credit_cancelled_after_completion_is_reversed_once() {
    let t = spawn(|_| {}).await;
    t.sim
        .set_script(script(
            TrackedKind::StandaloneCredit,
            "cred-r1",
            &[("COMPLETED", Some(1)), ("CANCELLED", None)],
        ))
        .unwrap();
    t.track(TrackedKind::StandaloneCredit, "cred-r1").await;
    t.poll_until_done(&t.poller(), "cred-r1", 10).await;
    t.webhook("cred-r1", "SA_CREDIT_CANCELLED").await;
    t.webhook("cred-r1", "SA_CREDIT_COMPLETED").await; // late: already reversed
    t.webhook("cred-r1", "SA_CREDIT_CANCELLED").await; // delivered again
    assert_eq!(
        t.item("cred-r1").await,
        ("CANCELLED".into(), "final".into())
    );
    assert_eq!(
        t.events().await,
        [
            completed("paysafe.credit.completed", "cred-r1"),
            (
                "paysafe.credit.reversed".to_owned(),
                "cred-r1".to_owned(),
                "CANCELLED".to_owned()
            )
        ]
    );
    assert!(t.pipeline.quarantined().await.is_empty());

    // A payment is not a credit: COMPLETED then FAILED is a conflict, held for a human.
    t.sim
        .set_script(script(
            TrackedKind::Payment,
            "pay-c1",
            &[("COMPLETED", None)],
        ))
        .unwrap();
    t.webhook("pay-c1", "PAYMENT_COMPLETED").await;
    t.webhook("pay-c1", "PAYMENT_FAILED").await;
    assert_eq!(
        t.item("pay-c1").await.0,
        "COMPLETED",
        "the first final status stands"
    );
    let quarantined = t.pipeline.quarantined().await;
    assert_eq!(quarantined.len(), 1);
    assert_eq!(quarantined[0].0, "PAYSAFE_STATUS_CONFLICT");
    assert_eq!(
        t.events().await,
        [completed("paysafe.payment.completed", "pay-c1")]
    );
    t.pipeline.teardown().await;
}
