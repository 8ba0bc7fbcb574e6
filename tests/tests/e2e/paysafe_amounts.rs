//! Amounts that reach the ledger are Paysafe's own (DESIGN.md §2.7, §5): the merchant's track
//! command only starts tracking. When it claimed another amount or currency than Paysafe
//! reports (by poll or webhook, before or after the command), the mismatch is recorded once in
//! the item's history as PAYSAFE_AMOUNT_MISMATCH and shown by `paysafe show`; the ledger event
//! carries Paysafe's values. Simulator over HTTP, real ingress, RabbitMQ and PostgreSQL.

use paysafe_sim::{ItemScript, Step as SimStep};

use connector_schema::paysafe::TrackedKind;
use connector_workers::admin;

use crate::paysafe_tracking::{Tracking, spawn};

/// Paysafe's side of a payment: `amount` `currency`, COMPLETED at the first poll.
fn paysafe_payment(id: &str, amount: i64, currency: &str) -> ItemScript {
    ItemScript::new(
        TrackedKind::Payment,
        id,
        &format!("order-{id}"),
        amount,
        currency,
        vec![SimStep::new("COMPLETED", None)],
    )
}

/// (amount, currency) of each published ledger event about `id`, in order.
async fn event_amounts(t: &Tracking, id: &str) -> Vec<(Option<i64>, Option<String>)> {
    t.pipeline.relay_all().await;
    t.pipeline
        .ledger_events()
        .await
        .into_iter()
        .filter(|(event, _, _)| event.reference == id)
        .map(|(event, _, _)| {
            (
                event.data["amount"].as_i64(),
                event.data["currency_code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The item's (Paysafe amount, Paysafe currency, merchant's amount, mismatch recorded).
async fn amounts(t: &Tracking, id: &str) -> (Option<i64>, Option<String>, Option<i64>, bool) {
    sqlx::query_as(
        "SELECT amount, currency_code, merchant_amount, amount_mismatch_at IS NOT NULL
         FROM paysafe_items WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&t.pipeline.db.pool)
    .await
    .unwrap()
}

/// The history's mismatch records of `id`: (source, detail).
async fn mismatches(t: &Tracking, id: &str) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT source, detail FROM paysafe_item_history
         WHERE item_id = $1 AND detail LIKE 'PAYSAFE_AMOUNT_MISMATCH%' ORDER BY id",
    )
    .bind(id)
    .fetch_all(&t.pipeline.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_ledger_gets_paysafes_amount_and_a_different_track_amount_is_recorded_once() {
    let t = spawn(|_| {}).await;
    // The merchant's command says 546 CAD (as `track` always does); Paysafe says 700 CAD.
    t.sim
        .set_script(paysafe_payment("pay-am1", 700, "CAD"))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-am1").await;
    assert_eq!(
        amounts(&t, "pay-am1").await,
        (None, None, Some(546), false),
        "a track command's amount is the merchant's claim, not the item's amount"
    );
    t.poll_until_done(&t.poller(), "pay-am1", 10).await;
    assert_eq!(
        event_amounts(&t, "pay-am1").await,
        [(Some(700), Some("CAD".into()))]
    );
    assert_eq!(
        amounts(&t, "pay-am1").await,
        (Some(700), Some("CAD".into()), Some(546), true)
    );
    assert_eq!(
        mismatches(&t, "pay-am1").await,
        [(
            "poll".to_owned(),
            "PAYSAFE_AMOUNT_MISMATCH: the track command said 546 CAD, Paysafe says 700 CAD"
                .to_owned()
        )]
    );
    // The same fact again (a webhook) is not a second mismatch, and emits nothing more.
    t.webhook("pay-am1", "PAYMENT_COMPLETED").await;
    assert_eq!(mismatches(&t, "pay-am1").await.len(), 1, "recorded once");
    assert!(event_amounts(&t, "pay-am1").await.is_empty());
    let shown = admin::paysafe_show(&t.pipeline.db.pool, "pay-am1")
        .await
        .unwrap();
    assert!(
        shown.contains("amount 700 CAD (Paysafe's), 546 CAD (track command)")
            && shown.contains("PAYSAFE_AMOUNT_MISMATCH"),
        "{shown}"
    );
    t.pipeline.teardown().await;
}

#[tokio::test]
async fn a_track_command_after_the_webhook_changes_no_amount_and_its_mismatch_is_recorded() {
    let t = spawn(|_| {}).await;
    // Paysafe's webhook comes first: 546 USD reaches the ledger.
    t.sim
        .set_script(paysafe_payment("pay-am2", 546, "USD"))
        .unwrap();
    t.webhook("pay-am2", "PAYMENT_COMPLETED").await;
    assert_eq!(
        event_amounts(&t, "pay-am2").await,
        [(Some(546), Some("USD".into()))]
    );
    // The merchant's late command claims CAD: recorded, nothing emitted, the amount stays.
    t.track(TrackedKind::Payment, "pay-am2").await;
    assert_eq!(
        amounts(&t, "pay-am2").await,
        (Some(546), Some("USD".into()), Some(546), true)
    );
    assert_eq!(
        mismatches(&t, "pay-am2").await,
        [(
            "track".to_owned(),
            "PAYSAFE_AMOUNT_MISMATCH: the track command said 546 CAD, Paysafe says 546 USD"
                .to_owned()
        )]
    );
    assert!(event_amounts(&t, "pay-am2").await.is_empty());

    // Agreeing amounts are no mismatch.
    t.sim
        .set_script(paysafe_payment("pay-am3", 546, "CAD"))
        .unwrap();
    t.track(TrackedKind::Payment, "pay-am3").await;
    t.poll_until_done(&t.poller(), "pay-am3", 10).await;
    assert_eq!(
        event_amounts(&t, "pay-am3").await,
        [(Some(546), Some("CAD".into()))]
    );
    assert_eq!(
        amounts(&t, "pay-am3").await,
        (Some(546), Some("CAD".into()), Some(546), false)
    );
    assert!(mismatches(&t, "pay-am3").await.is_empty());
    t.pipeline.teardown().await;
}
