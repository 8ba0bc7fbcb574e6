//! The ledger's side: the outbox all published, every event on the ledger queue one for an
//! order in the state it announces, no second distinct event for one order and type, and the
//! relay's at-least-once republishes (same event id) measured apart, since consumers dedupe
//! them by event id.

use super::facts::{Facts, is_final};
use super::report::Report;

/// Every outbox row published by the end of the drain.
pub(super) fn outbox_published(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        outbox_unpublished: facts.outbox_unpublished,
        ..Report::default()
    };
    if facts.outbox_unpublished > 0 {
        let n = facts.outbox_unpublished;
        findings
            .problems
            .push(format!("{n} outbox events never published"));
    }
    findings
}

/// Every ledger message carries its event id as message id, and announces the final status
/// its order has.
pub(super) fn ledger_events_match_orders(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    for message in facts.ledger {
        if message.message_id.as_deref() != Some(message.event_id.as_str()) {
            findings.problems.push(format!(
                "ledger event {} has message_id {:?}",
                message.event_id, message.message_id
            ));
            findings.unknown_rows += 1;
        }
        match facts.orders.get(&message.reference) {
            Some(status) if *status == message.status && is_final(status) => {}
            other => {
                findings.unknown_rows += 1;
                findings.problems.push(format!(
                    "ledger event {} {} {} {}: the order is {other:?}",
                    message.event_id, message.event_type, message.reference, message.status
                ));
            }
        }
    }
    findings
}

/// Messages and distinct events on the ledger queue, and the events that arrived more than
/// once, told apart by the outbox row's failed attempts (none: confirmed, never marked).
pub(super) fn ledger_republishes(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        ledger_messages: facts.ledger.len(),
        ledger_events: facts.by_event.len(),
        ..Report::default()
    };
    for (id, copies) in &facts.by_event {
        if *copies > 1 {
            findings.ledger_republished += 1;
            if facts.attempts.get(*id).copied().unwrap_or(0) > 0 {
                findings.republished_after_unconfirmed += 1;
            } else {
                findings.republished_after_lost_mark += 1;
            }
        }
    }
    findings
}

/// No (reference, type) with two distinct events on the ledger queue.
pub(super) fn no_ledger_event_twice(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    for ((reference, event_type), ids) in &facts.events_of {
        if ids.len() > 1 {
            findings.ledger_duplicated += 1;
            findings.problems.push(format!(
                "{reference}: {} distinct {event_type} events on the ledger queue",
                ids.len()
            ));
        }
    }
    findings
}
