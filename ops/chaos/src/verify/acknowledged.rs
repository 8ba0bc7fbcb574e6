//! The client's side held against the rest: every answer was one the bank expects, and every
//! 200 (unit order, conflict pair, batch) was applied exactly once, with exactly one outbox row
//! and one ledger event for a final status. Missing: lost; twice: duplicated.

use connector_schema::events::{Source, event_id};

use crate::load::{PENDING, Status};

use super::facts::{Facts, event_type_of, is_final, loser_key};
use super::report::{Report, Verdict};

/// Answers that were neither a 200 nor worth a retry (the first 20 named).
pub(super) fn unexpected_answers(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        unexpected_answers: facts.unexpected.len(),
        ..Report::default()
    };
    for line in facts.unexpected.iter().take(20) {
        findings.problems.push(format!("unexpected answer: {line}"));
    }
    findings
}

/// Every attempt answered 503 during a memory alarm was refused whole: none reached the
/// workers (its nonce is in no `received_messages` row). The sender's retry is what applies it.
pub(super) fn refused_in_alarm_not_applied(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        refused_in_alarm: facts.refused_in_alarm.len(),
        refused_applied: facts.refused_received.len(),
        ..Report::default()
    };
    for nonce in facts.refused_received.iter().take(20) {
        findings.problems.push(format!(
            "an attempt answered 503 during the memory alarm was received by the workers (nonce {nonce})"
        ));
    }
    findings
}

/// One order's final `status`: applied once in its history, one outbox row and one event on
/// the ledger queue, both with the deterministic event id. Its problems go into `findings`;
/// the caller counts the verdict.
pub(super) fn final_applied_once(
    facts: &Facts<'_>,
    findings: &mut Report,
    reference: &str,
    status: &str,
) -> Verdict {
    let n = facts.transitions(reference, status);
    if n == 0 {
        findings.problems.push(format!(
            "{reference}: {status} not in its history as an applied transition"
        ));
        return Verdict::Lost;
    }
    let mut verdict = Verdict::Ok;
    if n > 1 {
        findings
            .problems
            .push(format!("{reference}: {status} applied {n} times"));
        verdict = Verdict::Duplicated;
    }
    let Some(event_type) = event_type_of(status) else {
        return verdict;
    };
    let key = (reference.to_owned(), event_type.as_str().to_owned());
    let expected_id = event_id(Source::Corelink, reference, event_type).to_string();
    match facts.outbox.get(&key).map(Vec::as_slice) {
        Some([id]) if *id == expected_id => {}
        Some(ids) if ids.len() > 1 => {
            findings.problems.push(format!(
                "{reference}: {} outbox rows for {}",
                ids.len(),
                event_type.as_str()
            ));
            verdict = Verdict::Duplicated;
        }
        other => {
            findings.problems.push(format!(
                "{reference}: outbox rows {other:?} for {}",
                event_type.as_str()
            ));
            if verdict == Verdict::Ok {
                verdict = Verdict::Lost;
            }
        }
    }
    match facts.events_of.get(&key) {
        Some(ids) if ids.len() == 1 && ids.contains(&expected_id) => {}
        None => {
            findings.problems.push(format!(
                "{reference}: no {} event on the ledger queue",
                event_type.as_str()
            ));
            if verdict == Verdict::Ok {
                verdict = Verdict::Lost;
            }
        }
        // Several distinct events: counted in ledger_duplicated by their own check.
        Some(_) => verdict = Verdict::Duplicated,
    }
    verdict
}

/// Every acknowledged order (conflict pairs apart) has its acknowledged status, applied once.
pub(super) fn acknowledged_orders_applied_once(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    for (reference, statuses) in &facts.acked {
        findings.acked_orders += 1;
        let finals: Vec<Status> = statuses.iter().copied().filter(|s| is_final(s)).collect();
        let db_status = facts.orders.get(reference).map(String::as_str);
        let good = match finals.as_slice() {
            [] => {
                // Only PENDING acknowledged: the order exists, with PENDING in its history
                // (its final status may have been enqueued without a 200 reaching us).
                let has_pending = facts
                    .history
                    .get(reference)
                    .is_some_and(|rows| rows.iter().any(|(s, _, _)| s == PENDING));
                if db_status.is_none() || !has_pending {
                    findings.problems.push(format!(
                        "{reference}: PENDING acknowledged, database has {db_status:?}"
                    ));
                    findings.lost += 1;
                    false
                } else {
                    if facts.transitions(reference, PENDING) > 1 {
                        findings
                            .problems
                            .push(format!("{reference}: PENDING created twice"));
                        findings.duplicated += 1;
                    }
                    true
                }
            }
            [status] => {
                if db_status != Some(status) {
                    findings.problems.push(format!(
                        "{reference}: {status} acknowledged, database has {db_status:?}"
                    ));
                    findings.lost += 1;
                    false
                } else {
                    let verdict = final_applied_once(facts, &mut findings, reference, status);
                    findings.count(verdict)
                }
            }
            many => {
                findings.problems.push(format!(
                    "{reference}: the harness acknowledged several finals {many:?}"
                ));
                findings.unknown_rows += 1;
                false
            }
        };
        if good {
            findings.applied += 1;
        }
    }
    findings
}

/// Conflict pairs: one side applied once, the other, if acknowledged, quarantined.
pub(super) fn conflict_pairs_resolved(facts: &Facts<'_>) -> Report {
    let mut findings = Report {
        conflict_pairs: facts.conflicts.len(),
        ..Report::default()
    };
    for (reference, sides) in &facts.conflicts {
        findings.acked_orders += 1;
        let db_status = facts.orders.get(reference).map(String::as_str);
        let Some(winner) = db_status else {
            findings.problems.push(format!(
                "{reference}: conflict pair acknowledged, order missing"
            ));
            findings.lost += 1;
            continue;
        };
        let loser_key = loser_key(reference, winner);
        let loser_acked = sides.iter().any(|(k, _)| *k == loser_key);
        let loser_quarantined = facts.quarantined.iter().any(|(_, reason, key, _)| {
            reason == "FINAL_STATUS_CONFLICT" && key.as_deref() == Some(&loser_key)
        });
        let verdict = final_applied_once(facts, &mut findings, reference, winner);
        if verdict != Verdict::Ok {
            findings.count(verdict);
        } else if !loser_acked || loser_quarantined {
            findings.applied += 1;
        } else {
            findings.problems.push(format!(
                "{reference}: the losing side of the conflict was acknowledged but not quarantined"
            ));
            findings.lost += 1;
        }
    }
    findings
}

/// Each acknowledged batch applied by exactly one intake message.
pub(super) fn batches_applied_once(facts: &Facts<'_>) -> Report {
    let mut findings = Report::default();
    for key in &facts.acked_batches {
        findings.acked_batches += 1;
        match facts.applied_by_key.get(key).copied().unwrap_or(0) {
            1 => findings.batches_applied_once += 1,
            0 => {
                findings
                    .problems
                    .push(format!("batch {key}: acknowledged, never applied"));
            }
            n => {
                findings
                    .problems
                    .push(format!("batch {key}: applied by {n} messages"));
            }
        }
    }
    if findings.batches_applied_once != findings.acked_batches {
        let missing = findings.acked_batches - findings.batches_applied_once;
        findings.notes.push(format!(
            "{missing} acknowledged batches not applied exactly once"
        ));
    }
    findings
}
