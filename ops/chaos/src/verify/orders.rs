//! The database's side held against the client: every order in it is one the bank sent, with a
//! status it sent, a final status backed by its notification in the history, and one event per
//! final status even when no 200 reached the bank.

use super::acknowledged::final_applied_once;
use super::facts::{Facts, is_final};
use super::report::Report;

pub(super) fn every_order_sent_and_backed(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    for (reference, status) in &facts.orders {
        let Some(sent_statuses) = facts.sent.get(reference) else {
            findings.unknown_rows += 1;
            findings
                .problems
                .push(format!("{reference}: an order nobody sent"));
            continue;
        };
        if !sent_statuses.iter().any(|s| s == status) {
            findings.unknown_rows += 1;
            findings.problems.push(format!(
                "{reference}: status {status}, sent only {sent_statuses:?}"
            ));
        }
        if is_final(status) && facts.transitions(reference, status) == 0 {
            findings.unbacked_final += 1;
            findings.problems.push(format!(
                "{reference}: final {status} without a notification in its history"
            ));
        }
        let acknowledged =
            facts.acked.contains_key(reference) || facts.conflicts.contains_key(reference);
        if !acknowledged {
            findings.applied_without_200 += 1;
            if is_final(status) {
                let verdict = final_applied_once(facts, &mut findings, reference, status);
                findings.count(verdict);
            }
        }
    }
    findings
}
