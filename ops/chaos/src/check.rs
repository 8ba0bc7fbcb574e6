//! After the run: the client's log of 200s against the database, the ledger queue and the
//! dead-letter queues.

use std::collections::{BTreeMap, HashMap, HashSet};

use connector_schema::events::{EventType, Source, event_id};
use sqlx::PgPool;

use crate::load::{Bank, FAILED, PENDING, SUCCESS, Status};

/// One message taken from the ledger queue.
#[derive(Debug, Clone)]
pub struct LedgerMessage {
    pub event_id: String,
    pub event_type: String,
    pub reference: String,
    pub status: String,
    pub message_id: Option<String>,
}

impl LedgerMessage {
    /// What the checks need of a ledger message (fields missing from a malformed body stay
    /// empty, and the checks count it as unknown).
    pub fn parse(properties: &lapin::BasicProperties, body: &[u8]) -> Self {
        let event: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
        let text = |field: &str| event[field].as_str().unwrap_or_default().to_owned();
        Self {
            event_id: text("event_id"),
            event_type: text("event_type"),
            reference: text("reference"),
            status: text("status"),
            message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        }
    }
}

#[derive(Debug, Default)]
pub struct Report {
    /// Distinct orders with at least one 200 (conflict pairs included).
    pub acked_orders: usize,
    /// ... whose acknowledged status is applied exactly once (and, final, one ledger event).
    pub applied: usize,
    pub lost: usize,
    pub duplicated: usize,
    /// Orders applied although no request for them got a 200 (enqueued, answer lost).
    pub applied_without_200: usize,
    pub acked_batches: usize,
    pub batches_applied_once: usize,
    pub ledger_messages: usize,
    pub ledger_events: usize,
    /// Events that reached the ledger queue more than once with the same event_id (the relay
    /// publishes at least once; consumers dedupe by event_id).
    pub ledger_republished: usize,
    /// ... of which the first publish was not confirmed (connection lost before the confirm):
    /// the relay recorded the failure and published again.
    pub republished_after_unconfirmed: usize,
    /// ... of which the broker confirmed, but the row was never marked published (the relay
    /// was killed in between, or the database stayed away past the claim): published again.
    pub republished_after_lost_mark: usize,
    /// (reference, type) pairs with more than one distinct event on the queue.
    pub ledger_duplicated: usize,
    pub outbox_unpublished: usize,
    pub conflict_pairs: usize,
    pub quarantined_expected: usize,
    pub quarantined_unexpected: usize,
    pub intake_dlq_expected: usize,
    pub intake_dlq_unexpected: usize,
    pub ledger_dlq: usize,
    pub unbacked_final: usize,
    pub unknown_rows: usize,
    pub unexpected_answers: usize,
    /// What went wrong, one line each (the table prints the first ones).
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.lost > 0
            || self.duplicated > 0
            || self.ledger_duplicated > 0
            || self.outbox_unpublished > 0
            || self.quarantined_unexpected > 0
            || self.intake_dlq_unexpected > 0
            || self.ledger_dlq > 0
            || self.unbacked_final > 0
            || self.unknown_rows > 0
            || self.unexpected_answers > 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Lost,
    Duplicated,
}

impl Report {
    /// Counts a lost or duplicated verdict; `true` when all is well.
    fn count(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Ok => true,
            Verdict::Lost => {
                self.lost += 1;
                false
            }
            Verdict::Duplicated => {
                self.duplicated += 1;
                false
            }
        }
    }
}

fn event_type_of(status: &str) -> Option<EventType> {
    match status {
        SUCCESS => Some(EventType::OrderSucceeded),
        FAILED => Some(EventType::OrderFailed),
        _ => None,
    }
}

fn is_final(status: &str) -> bool {
    status == SUCCESS || status == FAILED
}

pub struct Inputs<'a> {
    pub bank: &'a Bank,
    pub db: &'a PgPool,
    pub ledger: &'a [LedgerMessage],
    pub intake_dlq: &'a [String],
    pub ledger_dlq: &'a [String],
    pub poison: &'a HashSet<String>,
}

pub async fn check(inputs: Inputs<'_>) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let problem = |report: &mut Report, line: String| report.problems.push(line);

    // The client's side.
    let acks = inputs
        .bank
        .acks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let sent = inputs
        .bank
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let unexpected = inputs
        .bank
        .unexpected
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    report.unexpected_answers = unexpected.len();
    for line in unexpected.iter().take(20) {
        problem(&mut report, format!("unexpected answer: {line}"));
    }

    let mut acked: BTreeMap<String, HashSet<Status>> = BTreeMap::new();
    let mut conflicts: BTreeMap<String, Vec<(String, Status)>> = BTreeMap::new();
    let mut acked_batches: HashSet<String> = HashSet::new();
    for ack in &acks {
        let request = &ack.request;
        if request.is_batch() {
            acked_batches.insert(request.key.clone());
        }
        for (reference, status) in &request.orders {
            if request.conflict {
                let entry = conflicts.entry(reference.clone()).or_default();
                if !entry.iter().any(|(k, _)| k == &request.key) {
                    entry.push((request.key.clone(), status));
                }
            } else {
                acked.entry(reference.clone()).or_default().insert(status);
            }
        }
    }

    // The database.
    let orders: HashMap<String, String> = sqlx::query_as("SELECT reference, status FROM orders")
        .fetch_all(inputs.db)
        .await?
        .into_iter()
        .collect();
    let mut history: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
    for (reference, status, effect, key) in sqlx::query_as::<_, (String, String, String, String)>(
        "SELECT reference, status, effect, idempotency_key FROM order_history ORDER BY id",
    )
    .fetch_all(inputs.db)
    .await?
    {
        history
            .entry(reference)
            .or_default()
            .push((status, effect, key));
    }
    let transitions = |reference: &str, status: &str| -> usize {
        history.get(reference).map_or(0, |rows| {
            rows.iter()
                .filter(|(s, e, _)| s == status && (e == "created" || e == "applied"))
                .count()
        })
    };
    let mut outbox: HashMap<(String, String), Vec<String>> = HashMap::new();
    let mut attempts: HashMap<String, i32> = HashMap::new();
    for (id, event_type, reference, published, failed_attempts) in
        sqlx::query_as::<_, (uuid::Uuid, String, String, bool, i32)>(
            "SELECT event_id, event_type, reference, published_at IS NOT NULL, attempts
             FROM ledger_outbox",
        )
        .fetch_all(inputs.db)
        .await?
    {
        attempts.insert(id.to_string(), failed_attempts);
        if !published {
            report.outbox_unpublished += 1;
        }
        outbox
            .entry((reference, event_type))
            .or_default()
            .push(id.to_string());
    }
    if report.outbox_unpublished > 0 {
        let n = report.outbox_unpublished;
        problem(&mut report, format!("{n} outbox events never published"));
    }
    let applied_by_key: HashMap<String, i64> = sqlx::query_as(
        "SELECT idempotency_key, count(*) FROM received_messages WHERE outcome = 'applied' GROUP BY 1",
    )
    .fetch_all(inputs.db)
    .await?
    .into_iter()
    .collect();
    let quarantined: Vec<(uuid::Uuid, String, Option<String>, String)> = sqlx::query_as(
        "SELECT message_id, reason, idempotency_key, detail FROM quarantined_messages",
    )
    .fetch_all(inputs.db)
    .await?;

    // The ledger queue.
    report.ledger_messages = inputs.ledger.len();
    let mut by_event: HashMap<&str, usize> = HashMap::new();
    let mut events_of: HashMap<(String, String), HashSet<String>> = HashMap::new();
    for message in inputs.ledger {
        *by_event.entry(&message.event_id).or_default() += 1;
        events_of
            .entry((message.reference.clone(), message.event_type.clone()))
            .or_default()
            .insert(message.event_id.clone());
        if message.message_id.as_deref() != Some(message.event_id.as_str()) {
            problem(
                &mut report,
                format!(
                    "ledger event {} has message_id {:?}",
                    message.event_id, message.message_id
                ),
            );
            report.unknown_rows += 1;
        }
        match orders.get(&message.reference) {
            Some(status) if *status == message.status && is_final(status) => {}
            other => {
                report.unknown_rows += 1;
                problem(
                    &mut report,
                    format!(
                        "ledger event {} {} {} {}: the order is {other:?}",
                        message.event_id, message.event_type, message.reference, message.status
                    ),
                );
            }
        }
    }
    report.ledger_events = by_event.len();
    for (id, copies) in &by_event {
        if *copies > 1 {
            report.ledger_republished += 1;
            if attempts.get(*id).copied().unwrap_or(0) > 0 {
                report.republished_after_unconfirmed += 1;
            } else {
                report.republished_after_lost_mark += 1;
            }
        }
    }
    for ((reference, event_type), ids) in &events_of {
        if ids.len() > 1 {
            report.ledger_duplicated += 1;
            problem(
                &mut report,
                format!(
                    "{reference}: {} distinct {event_type} events on the ledger queue",
                    ids.len()
                ),
            );
        }
    }

    // One order: its status applied once, its event once in the outbox and on the queue.
    let check_final = |report: &mut Report, reference: &str, status: &str| -> Verdict {
        let n = transitions(reference, status);
        if n == 0 {
            report.problems.push(format!(
                "{reference}: {status} not in its history as an applied transition"
            ));
            return Verdict::Lost;
        }
        let mut verdict = Verdict::Ok;
        if n > 1 {
            report
                .problems
                .push(format!("{reference}: {status} applied {n} times"));
            verdict = Verdict::Duplicated;
        }
        let Some(event_type) = event_type_of(status) else {
            return verdict;
        };
        let key = (reference.to_owned(), event_type.as_str().to_owned());
        let expected_id = event_id(Source::Corelink, reference, event_type).to_string();
        match outbox.get(&key).map(Vec::as_slice) {
            Some([id]) if *id == expected_id => {}
            Some(ids) if ids.len() > 1 => {
                report.problems.push(format!(
                    "{reference}: {} outbox rows for {}",
                    ids.len(),
                    event_type.as_str()
                ));
                verdict = Verdict::Duplicated;
            }
            other => {
                report.problems.push(format!(
                    "{reference}: outbox rows {other:?} for {}",
                    event_type.as_str()
                ));
                if verdict == Verdict::Ok {
                    verdict = Verdict::Lost;
                }
            }
        }
        match events_of.get(&key) {
            Some(ids) if ids.len() == 1 && ids.contains(&expected_id) => {}
            None => {
                report.problems.push(format!(
                    "{reference}: no {} event on the ledger queue",
                    event_type.as_str()
                ));
                if verdict == Verdict::Ok {
                    verdict = Verdict::Lost;
                }
            }
            // Several distinct events: counted in ledger_duplicated above.
            Some(_) => verdict = Verdict::Duplicated,
        }
        verdict
    };

    for (reference, statuses) in &acked {
        report.acked_orders += 1;
        let finals: Vec<Status> = statuses.iter().copied().filter(|s| is_final(s)).collect();
        let db_status = orders.get(reference).map(String::as_str);
        let good = match finals.as_slice() {
            [] => {
                // Only PENDING acknowledged: the order exists, with PENDING in its history
                // (its final status may have been enqueued without a 200 reaching us).
                let has_pending = history
                    .get(reference)
                    .is_some_and(|rows| rows.iter().any(|(s, _, _)| s == PENDING));
                if db_status.is_none() || !has_pending {
                    problem(
                        &mut report,
                        format!("{reference}: PENDING acknowledged, database has {db_status:?}"),
                    );
                    report.lost += 1;
                    false
                } else {
                    if transitions(reference, PENDING) > 1 {
                        problem(&mut report, format!("{reference}: PENDING created twice"));
                        report.duplicated += 1;
                    }
                    true
                }
            }
            [status] => {
                if db_status != Some(status) {
                    problem(
                        &mut report,
                        format!("{reference}: {status} acknowledged, database has {db_status:?}"),
                    );
                    report.lost += 1;
                    false
                } else {
                    let verdict = check_final(&mut report, reference, status);
                    report.count(verdict)
                }
            }
            many => {
                problem(
                    &mut report,
                    format!("{reference}: the harness acknowledged several finals {many:?}"),
                );
                report.unknown_rows += 1;
                false
            }
        };
        if good {
            report.applied += 1;
        }
    }

    // Conflict pairs: one side applied, the other quarantined.
    report.conflict_pairs = conflicts.len();
    let mut losing_keys: HashSet<String> = HashSet::new();
    for (reference, sides) in &conflicts {
        report.acked_orders += 1;
        let db_status = orders.get(reference).map(String::as_str);
        let Some(winner) = db_status else {
            problem(
                &mut report,
                format!("{reference}: conflict pair acknowledged, order missing"),
            );
            report.lost += 1;
            continue;
        };
        let loser_key = format!("{reference}-{}", if winner == SUCCESS { "f" } else { "s" });
        let loser_acked = sides.iter().any(|(k, _)| *k == loser_key);
        let loser_quarantined = quarantined.iter().any(|(_, reason, key, _)| {
            reason == "FINAL_STATUS_CONFLICT" && key.as_deref() == Some(&loser_key)
        });
        losing_keys.insert(loser_key);
        let verdict = check_final(&mut report, reference, winner);
        if verdict != Verdict::Ok {
            report.count(verdict);
        } else if !loser_acked || loser_quarantined {
            report.applied += 1;
        } else {
            problem(
                &mut report,
                format!(
                    "{reference}: the losing side of the conflict was acknowledged but not quarantined"
                ),
            );
            report.lost += 1;
        }
    }

    // Quarantine: only the losing sides of conflict pairs.
    for (id, reason, key, detail) in &quarantined {
        let key = key.clone().unwrap_or_default();
        if reason == "FINAL_STATUS_CONFLICT" && losing_keys.contains(&key) {
            report.quarantined_expected += 1;
        } else if reason == "FINAL_STATUS_CONFLICT"
            && conflicts.keys().any(|r| key.starts_with(r.as_str()))
        {
            // The losing side of a pair of which neither half got a 200.
            report.quarantined_expected += 1;
        } else {
            report.quarantined_unexpected += 1;
            problem(
                &mut report,
                format!("quarantined {id}: {reason} ({key}): {detail}"),
            );
        }
    }

    // Batches: each acknowledged batch applied by exactly one message.
    for key in &acked_batches {
        report.acked_batches += 1;
        match applied_by_key.get(key).copied().unwrap_or(0) {
            1 => report.batches_applied_once += 1,
            0 => {
                problem(
                    &mut report,
                    format!("batch {key}: acknowledged, never applied"),
                );
            }
            n => {
                problem(&mut report, format!("batch {key}: applied by {n} messages"));
            }
        }
    }
    if report.batches_applied_once != report.acked_batches {
        let missing = report.acked_batches - report.batches_applied_once;
        report.notes.push(format!(
            "{missing} acknowledged batches not applied exactly once"
        ));
    }

    // Every order: one we sent, a status we sent, a final status backed by its notification,
    // one event per final status even when no 200 reached us.
    for (reference, status) in &orders {
        let Some(sent_statuses) = sent.get(reference) else {
            report.unknown_rows += 1;
            problem(&mut report, format!("{reference}: an order nobody sent"));
            continue;
        };
        if !sent_statuses.iter().any(|s| s == status) {
            report.unknown_rows += 1;
            problem(
                &mut report,
                format!("{reference}: status {status}, sent only {sent_statuses:?}"),
            );
        }
        if is_final(status) && transitions(reference, status) == 0 {
            report.unbacked_final += 1;
            problem(
                &mut report,
                format!("{reference}: final {status} without a notification in its history"),
            );
        }
        let acknowledged = acked.contains_key(reference) || conflicts.contains_key(reference);
        if !acknowledged {
            report.applied_without_200 += 1;
            if is_final(status) {
                let verdict = check_final(&mut report, reference, status);
                report.count(verdict);
            }
        }
    }

    // Dead-letter queues: exactly the poison messages the harness published.
    let mut seen_poison = HashSet::new();
    for id in inputs.intake_dlq {
        if inputs.poison.contains(id) {
            seen_poison.insert(id.clone());
            report.intake_dlq_expected += 1;
        } else {
            report.intake_dlq_unexpected += 1;
            problem(&mut report, format!("intake dead-letter queue: {id}"));
        }
    }
    for id in inputs.poison {
        if !seen_poison.contains(id) {
            report.intake_dlq_unexpected += 1;
            problem(
                &mut report,
                format!("poison message {id} not in the intake dead-letter queue"),
            );
        }
    }
    report.ledger_dlq = inputs.ledger_dlq.len();
    for id in inputs.ledger_dlq {
        problem(&mut report, format!("ledger dead-letter queue: {id}"));
    }
    Ok(report)
}
