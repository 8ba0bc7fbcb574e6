//! Property tests of the two status state machines: the Corelink order table (DESIGN.md §3.4,
//! `corelink::transition`) and the Paysafe payment/credit machine (§5, `paysafe::transition`
//! and `paysafe::event_type`).
//!
//! Each test folds a sequence of notifications about one order or item through the real pure
//! functions, keeping the stored status the way `corelink::orders::apply_orders` and
//! `paysafe::observe` do (Created/Applied/Reversed store the new status, Reversed also sets `reversed`;
//! Unchanged/Stale keep the old one; `Err` is a quarantined notification that changes nothing),
//! and collects the ledger event types emitted and the notifications quarantined. The
//! notifications are a "true lifecycle" with every step delivered 1 to 4 times (for Paysafe each
//! copy spelled as a poll answer or as any webhook name the schema maps to that status, so
//! PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are both COMPLETED), then shuffled arbitrarily.
//!
//! What holds, for any duplication and any order:
//! - Corelink orders end in the lifecycle's final status (PENDING if it has none) with exactly
//!   one `order.succeeded`/`order.failed` for a final and none otherwise, nothing quarantined.
//!   With a contradicting second final in the mix, the first final delivered stands, every copy
//!   of the other is quarantined, and there is still exactly one event (for the one that stands).
//! - Paysafe payments end in the lifecycle's final status with exactly one
//!   `paysafe.payment.completed`/`.failed`, or, without a final, in the most advanced non-final
//!   status seen with no event; nothing quarantined. A failure reported several ways (FAILED,
//!   CANCELLED, EXPIRED) is one `paysafe.payment.failed`. COMPLETED against a failure: the first
//!   delivered stands, the other is quarantined, one event.
//! - Standalone credits end in the lifecycle's last status (final), emit no event type twice,
//!   and quarantine nothing but COMPLETED. When the first COMPLETED is delivered before the first
//!   reversal (FAILED or CANCELLED), the result is exactly `paysafe.credit.completed` and, with a
//!   reversal, `paysafe.credit.reversed`, once each, and nothing is quarantined.
//!
//! What does NOT converge (a limitation of state-based idempotency, production logic unchanged):
//! - A standalone credit whose reversal is delivered before any report of its COMPLETED.
//!   proptest shrinks it to lifecycle `[COMPLETED, FAILED]` delivered as `[FAILED, COMPLETED]`.
//!   In order, the ledger gets `paysafe.credit.completed` then `paysafe.credit.reversed` and the
//!   item ends FAILED with `reversed` set. Reversal first, the FAILED is taken for the credit's
//!   first final status (`paysafe.credit.failed`), and the COMPLETED that follows is a final →
//!   other final contradiction (stored FAILED, `reversed` not set), so every copy of it is
//!   quarantined as a Paysafe conflict and neither `completed` nor `reversed` is ever emitted.
//!   The end status (FAILED/CANCELLED) and the net meaning (no money went out) agree, but the
//!   event set differs (`{failed}` against `{completed, reversed}`) and a legitimate
//!   notification is quarantined with an alert. Why: the machine decides from the stored status
//!   alone, and a stored FAILED cannot tell "failed without completing" from "completed, then
//!   reversed, and the completion is late"; only Paysafe's own event time (`eventDate`, stored
//!   as `status_at`) could, and a later poll cannot help since it reads only the current status.
//!   `a_credit_reversed_before_its_completion_arrives_does_not_converge` pins the behaviour.
//! - A milder one, on the stored status only: PENDING and HELD have the same progress, so a
//!   payment or credit that reports both keeps whichever was delivered first (no event is
//!   involved; a later final status overrides either).

#![allow(clippy::unwrap_used)]

use connector_schema::corelink::OrderStatus;
use connector_schema::events::EventType;
use connector_schema::paysafe::{PaysafeStatus, TrackedKind, WebhookEvent, WebhookFact};
use connector_workers::{corelink, paysafe};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// What a sequence of Corelink notifications for one order leaves behind.
#[derive(Debug, Default, PartialEq)]
struct OrderRun {
    state: Option<OrderStatus>,
    events: Vec<EventType>,
    quarantined: Vec<OrderStatus>,
}

fn run_orders(notifications: &[OrderStatus]) -> OrderRun {
    let mut run = OrderRun::default();
    for &new in notifications {
        match corelink::transition(run.state, new) {
            Ok(corelink::Effect::Created | corelink::Effect::Applied) => {
                run.state = Some(new);
                if new.is_final() {
                    run.events.push(order_event(new));
                }
            }
            Ok(corelink::Effect::Unchanged | corelink::Effect::Stale) => {}
            Err(applied) => {
                assert_eq!(Some(applied), run.state, "Err names the stored status");
                run.quarantined.push(new);
            }
        }
    }
    run
}

/// As `corelink::order_event`.
fn order_event(status: OrderStatus) -> EventType {
    match status {
        OrderStatus::Failed => EventType::OrderFailed,
        _ => EventType::OrderSucceeded,
    }
}

/// What a sequence of Paysafe facts about one item leaves behind.
#[derive(Debug, Default)]
struct ItemRun {
    known: Option<paysafe::Known>,
    events: Vec<EventType>,
    quarantined: Vec<PaysafeStatus>,
}

impl ItemRun {
    fn status(&self) -> Option<PaysafeStatus> {
        self.known.map(|k| k.status)
    }

    fn reversed(&self) -> bool {
        self.known.is_some_and(|k| k.reversed)
    }
}

fn run_item(kind: TrackedKind, notifications: &[Report]) -> ItemRun {
    let mut run = ItemRun::default();
    for report in notifications {
        let new = report.status(kind);
        match paysafe::transition(kind, run.known, new) {
            Ok(effect) => {
                if let Some(event) = paysafe::event_type(kind, new, effect) {
                    run.events.push(event);
                }
                run.known = match effect {
                    paysafe::Effect::Created => Some(paysafe::Known {
                        status: new,
                        reversed: false,
                    }),
                    paysafe::Effect::Applied => run.known.map(|k| paysafe::Known {
                        status: new,
                        reversed: k.reversed,
                    }),
                    paysafe::Effect::Reversed => Some(paysafe::Known {
                        status: new,
                        reversed: true,
                    }),
                    paysafe::Effect::Unchanged | paysafe::Effect::Stale => run.known,
                };
            }
            Err(current) => {
                assert_eq!(Some(current), run.status(), "Err names the stored status");
                run.quarantined.push(new);
            }
        }
    }
    run
}

/// One Paysafe fact as delivered: a poll answer, or a webhook whose name the schema maps to a
/// status (`WebhookEvent::fact`).
#[derive(Debug, Clone)]
enum Report {
    Poll(PaysafeStatus),
    Webhook(WebhookEvent),
}

impl Report {
    fn status(&self, kind: TrackedKind) -> PaysafeStatus {
        match self {
            Self::Poll(status) => *status,
            Self::Webhook(event) => match event.fact() {
                WebhookFact::Status { kind: k, status } if k == kind => status,
                other => panic!("{event} is not a {kind:?} status: {other:?}"),
            },
        }
    }
}

/// Every webhook name that carries a payment or credit status.
fn status_webhooks() -> Vec<WebhookEvent> {
    use WebhookEvent::*;
    vec![
        PaymentProcessing,
        PaymentPending,
        PaymentCompleted,
        SettlementCompleted,
        PaymentFailed,
        PaymentErrored,
        SettlementFailed,
        SaCreditProcessing,
        SaCreditPending,
        SaCreditCompleted,
        SaCreditFailed,
        SaCreditCancelled,
        SaCreditErrored,
    ]
}

/// The ways one status of `kind` can reach the workers: a poll, or any webhook naming it.
fn spellings(kind: TrackedKind, status: PaysafeStatus) -> Vec<Report> {
    let mut reports = vec![Report::Poll(status)];
    reports.extend(
        status_webhooks()
            .into_iter()
            .filter(|e| e.fact() == WebhookFact::Status { kind, status })
            .map(Report::Webhook),
    );
    reports
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Each step of `lifecycle` delivered 1 to 4 times, in an arbitrary order.
fn deliveries<T: Clone + std::fmt::Debug + 'static>(
    lifecycle: Vec<T>,
) -> impl Strategy<Value = Vec<T>> {
    let copies: Vec<_> = lifecycle
        .into_iter()
        .map(|step| (Just(step), 1usize..=4))
        .collect();
    copies.prop_flat_map(|steps| {
        let all: Vec<T> = steps
            .into_iter()
            .flat_map(|(step, n)| std::iter::repeat_n(step, n))
            .collect();
        Just(all).prop_shuffle()
    })
}

/// Each step of a Paysafe `lifecycle` delivered 1 to 4 times, each copy spelled any way it can
/// be, in an arbitrary order.
fn paysafe_deliveries(
    kind: TrackedKind,
    lifecycle: Vec<PaysafeStatus>,
) -> impl Strategy<Value = Vec<Report>> {
    let copies: Vec<_> = lifecycle
        .into_iter()
        .map(|status| prop::collection::vec(select(spellings(kind, status)), 1..=4))
        .collect();
    copies.prop_flat_map(|copies| Just(copies.concat()).prop_shuffle())
}

const NON_FINAL: [PaysafeStatus; 5] = [
    PaysafeStatus::Received,
    PaysafeStatus::Initiated,
    PaysafeStatus::Processing,
    PaysafeStatus::Pending,
    PaysafeStatus::Held,
];

fn is_reversal(status: PaysafeStatus) -> bool {
    matches!(status, PaysafeStatus::Failed | PaysafeStatus::Cancelled)
}

/// A standalone credit: some of PROCESSING, PENDING, then COMPLETED, then maybe a reversal.
fn credit_lifecycle() -> impl Strategy<Value = (Vec<PaysafeStatus>, Option<PaysafeStatus>)> {
    (
        subsequence(
            vec![PaysafeStatus::Processing, PaysafeStatus::Pending],
            0..=2,
        ),
        proptest::option::of(select(vec![
            PaysafeStatus::Failed,
            PaysafeStatus::Cancelled,
        ])),
    )
        .prop_map(|(mut lifecycle, reversal)| {
            lifecycle.push(PaysafeStatus::Completed);
            lifecycle.extend(reversal);
            (lifecycle, reversal)
        })
}

/// Corelink: zero or more PENDING, then maybe one final.
fn order_lifecycle() -> impl Strategy<Value = (Vec<OrderStatus>, Option<OrderStatus>)> {
    (
        0usize..=3,
        proptest::option::of(select(vec![OrderStatus::Success, OrderStatus::Failed])),
    )
        .prop_map(|(pending, last)| {
            let mut lifecycle = vec![OrderStatus::Pending; pending];
            lifecycle.extend(last);
            (lifecycle, last)
        })
}

/// Paysafe payment: some non-final statuses in order of progress, then maybe one final.
fn payment_lifecycle() -> impl Strategy<Value = (Vec<PaysafeStatus>, Option<PaysafeStatus>)> {
    (
        subsequence(NON_FINAL.to_vec(), 0..=NON_FINAL.len()),
        proptest::option::of(select(FINAL.to_vec())),
    )
        .prop_map(|(mut lifecycle, last)| {
            lifecycle.extend(last);
            (lifecycle, last)
        })
}

const FINAL: [PaysafeStatus; 4] = [
    PaysafeStatus::Completed,
    PaysafeStatus::Failed,
    PaysafeStatus::Cancelled,
    PaysafeStatus::Expired,
];

fn payment_event(status: PaysafeStatus) -> EventType {
    if status == PaysafeStatus::Completed {
        EventType::PaysafePaymentCompleted
    } else {
        EventType::PaysafePaymentFailed
    }
}

/// The index of the first report of a credit that is COMPLETED, and of the first that is a
/// reversal.
fn first_completed_and_reversal(reports: &[Report]) -> (Option<usize>, Option<usize>) {
    let status = |r: &Report| r.status(TrackedKind::StandaloneCredit);
    (
        reports
            .iter()
            .position(|r| status(r) == PaysafeStatus::Completed),
        reports.iter().position(|r| is_reversal(status(r))),
    )
}

/// Swaps the first COMPLETED and the first reversal if needed so that the completion comes
/// first (`completion_first`) or the reversal does: the same deliveries, otherwise in the same
/// arbitrary order.
fn ordered(mut reports: Vec<Report>, completion_first: bool) -> Vec<Report> {
    if let (Some(c), Some(r)) = first_completed_and_reversal(&reports)
        && (c < r) != completion_first
    {
        reports.swap(c, r);
    }
    reports
}

fn credit_deliveries()
-> impl Strategy<Value = (Vec<PaysafeStatus>, Option<PaysafeStatus>, Vec<Report>)> {
    credit_lifecycle().prop_flat_map(|(lifecycle, reversal)| {
        (
            Just(lifecycle.clone()),
            Just(reversal),
            paysafe_deliveries(TrackedKind::StandaloneCredit, lifecycle),
        )
    })
}

fn count_completed(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| r.status(TrackedKind::StandaloneCredit) == PaysafeStatus::Completed)
        .count()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    /// §3.4: any duplication and order of an order's notifications ends in its true final
    /// status (or PENDING), with one event for a final and none otherwise.
    #[test]
    fn order_any_delivery_converges(
        ((lifecycle, last), notifications) in order_lifecycle()
            .prop_flat_map(|(lifecycle, last)| {
                (Just((lifecycle.clone(), last)), deliveries(lifecycle))
            })
    ) {
        let run = run_orders(&notifications);
        let expected_state = last.or_else(|| lifecycle.first().copied());
        prop_assert_eq!(run.state, expected_state);
        prop_assert_eq!(run.events, last.map(order_event).into_iter().collect::<Vec<_>>());
        prop_assert!(run.quarantined.is_empty(), "quarantined {:?}", run.quarantined);
    }

    /// §3.4: a second, contradicting final in the mix: the first final delivered stands, every
    /// copy of the other is quarantined, one event.
    #[test]
    fn order_contradicting_final_is_quarantined(
        notifications in (0usize..=3).prop_flat_map(|pending| {
            // SUCCESS and FAILED both in the mix, so either can be the true one, delivered first
            // or not.
            let mut lifecycle = vec![OrderStatus::Pending; pending];
            lifecycle.extend([OrderStatus::Success, OrderStatus::Failed]);
            deliveries(lifecycle)
        })
    ) {
        let run = run_orders(&notifications);
        let first_final = notifications.iter().copied().find(|s| s.is_final()).unwrap();
        let other_copies = notifications
            .iter()
            .filter(|s| s.is_final() && **s != first_final)
            .count();
        prop_assert_eq!(run.state, Some(first_final));
        prop_assert_eq!(run.events, vec![order_event(first_final)]);
        prop_assert!(other_copies >= 1);
        prop_assert_eq!(run.quarantined.len(), other_copies);
        prop_assert!(run.quarantined.iter().all(|s| *s != first_final));
    }

    /// §5: any duplication, spelling and order of a payment's facts ends in its final status
    /// with one event, or in the most advanced non-final status seen with none.
    #[test]
    fn payment_any_delivery_converges(
        ((lifecycle, last), notifications) in payment_lifecycle()
            .prop_flat_map(|(lifecycle, last)| {
                (
                    Just((lifecycle.clone(), last)),
                    paysafe_deliveries(TrackedKind::Payment, lifecycle),
                )
            })
    ) {
        let run = run_item(TrackedKind::Payment, &notifications);
        prop_assert!(run.quarantined.is_empty(), "quarantined {:?}", run.quarantined);
        prop_assert!(!run.reversed());
        match last {
            Some(last) => {
                prop_assert_eq!(run.status(), Some(last));
                prop_assert_eq!(run.events, vec![payment_event(last)]);
            }
            None => {
                prop_assert!(run.events.is_empty(), "events {:?}", run.events);
                let both_tied = lifecycle.contains(&PaysafeStatus::Pending)
                    && lifecycle.contains(&PaysafeStatus::Held);
                let expected = if both_tied {
                    // Same progress: the first of the two delivered stays (see the module doc).
                    notifications
                        .iter()
                        .map(|r| r.status(TrackedKind::Payment))
                        .find(|s| matches!(s, PaysafeStatus::Pending | PaysafeStatus::Held))
                } else {
                    lifecycle.last().copied()
                };
                prop_assert_eq!(run.status(), expected);
            }
        }
    }

    /// §5: one failure reported several ways (FAILED, CANCELLED, EXPIRED, by poll or webhook) is
    /// one `paysafe.payment.failed`; the first failure delivered is kept.
    #[test]
    fn payment_failure_reported_several_ways_is_one_event(
        notifications in (
            subsequence(NON_FINAL.to_vec(), 0..=NON_FINAL.len()),
            subsequence(FINAL[1..].to_vec(), 1..=3),
        )
            .prop_flat_map(|(mut lifecycle, failures)| {
                lifecycle.extend(failures);
                paysafe_deliveries(TrackedKind::Payment, lifecycle)
            })
    ) {
        let run = run_item(TrackedKind::Payment, &notifications);
        let first_failure = notifications
            .iter()
            .map(|r| r.status(TrackedKind::Payment))
            .find(|s| s.is_final());
        prop_assert_eq!(run.status(), first_failure);
        prop_assert_eq!(run.events, vec![EventType::PaysafePaymentFailed]);
        prop_assert!(run.quarantined.is_empty(), "quarantined {:?}", run.quarantined);
    }

    /// §5: a payment reported both COMPLETED and failed: the first delivered stands, every copy
    /// of the other is quarantined, one event.
    #[test]
    fn payment_contradicting_final_is_quarantined(
        notifications in (
            subsequence(NON_FINAL.to_vec(), 0..=NON_FINAL.len()),
            select(FINAL[1..].to_vec()),
        )
            .prop_flat_map(|(mut lifecycle, failure)| {
                lifecycle.push(PaysafeStatus::Completed);
                lifecycle.push(failure);
                paysafe_deliveries(TrackedKind::Payment, lifecycle)
            })
    ) {
        let run = run_item(TrackedKind::Payment, &notifications);
        let finals: Vec<PaysafeStatus> = notifications
            .iter()
            .map(|r| r.status(TrackedKind::Payment))
            .filter(|s| s.is_final())
            .collect();
        let first = finals[0];
        let others = finals.iter().filter(|s| **s != first).count();
        prop_assert_eq!(run.status(), Some(first));
        prop_assert_eq!(run.events, vec![payment_event(first)]);
        prop_assert_eq!(run.quarantined.len(), others);
        prop_assert!(run.quarantined.iter().all(|s| *s != first));
    }

    /// §5: a credit whose first COMPLETED is delivered before its first reversal: whatever the
    /// duplication and the rest of the order, `completed` then (with a reversal) `reversed`,
    /// once each, and nothing quarantined.
    #[test]
    fn credit_completed_before_reversal_converges(
        (lifecycle, reversal, notifications) in credit_deliveries()
            .prop_map(|(lifecycle, reversal, reports)| {
                (lifecycle, reversal, ordered(reports, true))
            })
    ) {
        let run = run_item(TrackedKind::StandaloneCredit, &notifications);
        prop_assert_eq!(run.status(), lifecycle.last().copied());
        prop_assert_eq!(run.reversed(), reversal.is_some());
        let mut expected = vec![EventType::PaysafeCreditCompleted];
        if reversal.is_some() {
            expected.push(EventType::PaysafeCreditReversed);
        }
        prop_assert_eq!(run.events, expected);
        prop_assert!(run.quarantined.is_empty(), "quarantined {:?}", run.quarantined);
    }

    /// §5, the limitation of the module doc: a credit whose first reversal is delivered before
    /// its first COMPLETED ends in the reversal status with `credit.failed` only, and every
    /// COMPLETED is quarantined.
    #[test]
    fn credit_reversal_before_completion_is_failed_and_quarantines_completed(
        (lifecycle, notifications) in credit_deliveries()
            .prop_filter("a reversal", |(_, reversal, _)| reversal.is_some())
            .prop_map(|(lifecycle, _, reports)| (lifecycle, ordered(reports, false)))
    ) {
        let run = run_item(TrackedKind::StandaloneCredit, &notifications);
        prop_assert_eq!(run.status(), lifecycle.last().copied());
        prop_assert!(!run.reversed());
        prop_assert_eq!(run.events, vec![EventType::PaysafeCreditFailed]);
        prop_assert_eq!(run.quarantined.len(), count_completed(&notifications));
        prop_assert!(run.quarantined.iter().all(|s| *s == PaysafeStatus::Completed));
    }

    /// §5, any order: a credit ends final in its lifecycle's last status, never emits an event
    /// type twice, emits one of the two outcomes above, and quarantines only COMPLETED.
    #[test]
    fn credit_any_order_is_final_without_repeated_events(
        (lifecycle, reversal, notifications) in credit_deliveries()
    ) {
        let run = run_item(TrackedKind::StandaloneCredit, &notifications);
        prop_assert_eq!(run.status(), lifecycle.last().copied());
        prop_assert!(run.status().is_some_and(PaysafeStatus::is_final));
        let mut distinct = run.events.clone();
        distinct.sort_by_key(|e| e.as_str());
        distinct.dedup();
        prop_assert_eq!(distinct.len(), run.events.len(), "repeated {:?}", run.events);
        let (completed, reversed) = first_completed_and_reversal(&notifications);
        let completion_first = match (completed, reversed) {
            (Some(c), Some(r)) => c < r,
            _ => true,
        };
        prop_assert_eq!(completion_first, reversal.is_none() || completed < reversed);
        if completion_first {
            prop_assert_eq!(run.events[0], EventType::PaysafeCreditCompleted);
            prop_assert_eq!(run.events.len(), 1 + usize::from(reversal.is_some()));
            prop_assert!(run.quarantined.is_empty(), "quarantined {:?}", run.quarantined);
        } else {
            prop_assert_eq!(run.events, vec![EventType::PaysafeCreditFailed]);
            prop_assert!(!run.quarantined.is_empty());
        }
        prop_assert!(run.quarantined.iter().all(|s| *s == PaysafeStatus::Completed));
    }
}

/// The shrunk counterexample proptest found for "any order of a credit's facts converges",
/// pinned: the same facts give different ledger events depending on the order.
#[test]
fn a_credit_reversed_before_its_completion_arrives_does_not_converge() {
    use PaysafeStatus::{Completed, Failed};
    let credit = TrackedKind::StandaloneCredit;

    let in_order = run_item(credit, &[Report::Poll(Completed), Report::Poll(Failed)]);
    assert_eq!(in_order.status(), Some(Failed));
    assert!(in_order.reversed());
    assert_eq!(
        in_order.events,
        vec![
            EventType::PaysafeCreditCompleted,
            EventType::PaysafeCreditReversed
        ]
    );
    assert!(in_order.quarantined.is_empty());

    let reversal_first = run_item(
        credit,
        &[
            Report::Webhook(WebhookEvent::SaCreditFailed),
            Report::Webhook(WebhookEvent::SaCreditCompleted),
        ],
    );
    assert_eq!(reversal_first.status(), Some(Failed));
    assert!(!reversal_first.reversed());
    assert_eq!(reversal_first.events, vec![EventType::PaysafeCreditFailed]);
    assert_eq!(reversal_first.quarantined, vec![Completed]);
}

/// Every status-bearing webhook name maps to a status of the right kind, and
/// PAYMENT_COMPLETED/SETTLEMENT_COMPLETED are both a payment's COMPLETED (the generators rely on
/// it).
#[test]
fn the_spellings_cover_the_webhook_names() {
    let payment_completed = spellings(TrackedKind::Payment, PaysafeStatus::Completed);
    assert_eq!(payment_completed.len(), 3, "{payment_completed:?}");
    let all: usize = [TrackedKind::Payment, TrackedKind::StandaloneCredit]
        .into_iter()
        .flat_map(|kind| PaysafeStatus::ALL.map(|status| spellings(kind, status).len() - 1))
        .sum();
    assert_eq!(all, status_webhooks().len());
}
