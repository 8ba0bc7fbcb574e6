//! What the pipeline set aside: the quarantine table and the two dead-letter queues must hold
//! exactly what the run put there on purpose (the losing halves of conflict pairs, the poison
//! messages) and nothing else; anything more is a message the connector gave up on.

use std::collections::HashSet;

use super::facts::{Facts, loser_key};
use super::report::Report;

/// The quarantine holds only losing halves of conflict pairs.
pub(super) fn quarantine_only_conflict_losers(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    let losing_keys: HashSet<String> = facts
        .conflicts
        .keys()
        .filter_map(|reference| {
            let winner = facts.orders.get(reference)?;
            Some(loser_key(reference, winner))
        })
        .collect();
    for (id, reason, key, detail) in &facts.quarantined {
        let key = key.clone().unwrap_or_default();
        if reason == "FINAL_STATUS_CONFLICT" && losing_keys.contains(&key) {
            findings.quarantined_expected += 1;
        } else if reason == "FINAL_STATUS_CONFLICT"
            && facts.conflicts.keys().any(|r| key.starts_with(r.as_str()))
        {
            // The losing side of a pair of which neither half got a 200.
            findings.quarantined_expected += 1;
        } else {
            findings.quarantined_unexpected += 1;
            findings
                .problems
                .push(format!("quarantined {id}: {reason} ({key}): {detail}"));
        }
    }
    findings
}

/// The intake dead-letter queue holds exactly the poison messages the harness published.
pub(super) fn intake_dlq_only_poison(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    let mut seen_poison = HashSet::new();
    for id in facts.intake_dlq {
        if facts.poison.contains(id) {
            seen_poison.insert(id.clone());
            findings.intake_dlq_expected += 1;
        } else {
            findings.intake_dlq_unexpected += 1;
            findings
                .problems
                .push(format!("intake dead-letter queue: {id}"));
        }
    }
    for id in facts.poison {
        if !seen_poison.contains(id) {
            findings.intake_dlq_unexpected += 1;
            findings.problems.push(format!(
                "poison message {id} not in the intake dead-letter queue"
            ));
        }
    }
    findings
}

/// The ledger dead-letter queue is empty.
pub(super) fn ledger_dlq_empty(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        ledger_dlq: facts.ledger_dlq.len(),
        ..Report::default()
    };
    for id in facts.ledger_dlq {
        findings
            .problems
            .push(format!("ledger dead-letter queue: {id}"));
    }
    findings
}
