//! What the checks compare, gathered once: the client's side (its 200s, everything it sent, the
//! answers it did not expect), the database's rows (the purged tables' from the run's
//! [`Journal`](super::journal::Journal)), and the ledger queue indexed by event. The
//! checks only read these, so that each can be understood, and run, on its own.

use std::collections::{BTreeMap, HashMap, HashSet};

use connector_schema::events::EventType;

use crate::load::{FAILED, SUCCESS, Status};

use super::Inputs;

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

/// A row of `quarantined_messages`: message id, reason, idempotency key, detail.
pub(super) type Quarantined = (uuid::Uuid, String, Option<String>, String);

#[derive(Debug)]
pub(super) struct Facts<'a> {
    /// Answers that were neither a 200 nor worth a retry.
    pub unexpected: Vec<String>,
    /// Nonces of the attempts answered 503 during a memory alarm ...
    pub refused_in_alarm: Vec<String>,
    /// ... and those of them found in `received_messages` (applied or at least received).
    pub refused_received: Vec<String>,
    /// Every status ever sent for each reference (acknowledged or not).
    pub sent: HashMap<String, Vec<Status>>,
    /// Acknowledged statuses per order, conflict pairs apart.
    pub acked: BTreeMap<String, HashSet<Status>>,
    /// Conflict pairs: per order, the acknowledged sides (key, status).
    pub conflicts: BTreeMap<String, Vec<(String, Status)>>,
    /// Keys of acknowledged batches.
    pub acked_batches: HashSet<String>,
    /// `orders`: status per reference.
    pub orders: HashMap<String, String>,
    /// `order_history` per reference, in order: (status, effect, idempotency key).
    pub history: HashMap<String, Vec<(String, String, String)>>,
    /// `ledger_outbox` event ids per (reference, event type).
    pub outbox: HashMap<(String, String), Vec<String>>,
    /// `ledger_outbox.attempts` (failed publishes) per event id.
    pub attempts: HashMap<String, i32>,
    pub outbox_unpublished: usize,
    /// `received_messages` applied per idempotency key.
    pub applied_by_key: HashMap<String, i64>,
    pub quarantined: Vec<Quarantined>,
    pub ledger: &'a [LedgerMessage],
    /// Copies on the ledger queue per event id.
    pub by_event: HashMap<&'a str, usize>,
    /// Distinct event ids on the ledger queue per (reference, event type).
    pub events_of: HashMap<(String, String), HashSet<String>>,
    pub intake_dlq: &'a [String],
    pub ledger_dlq: &'a [String],
    pub poison: &'a HashSet<String>,
}

impl<'a> Facts<'a> {
    pub async fn gather(inputs: Inputs<'a>) -> anyhow::Result<Self> {
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
        let refused_in_alarm = inputs
            .bank
            .refused_in_alarm
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let journal = inputs.journal;
        let refused_received: Vec<String> = journal
            .deliveries
            .values()
            .filter_map(|row| row.nonce.clone())
            .filter(|nonce| refused_in_alarm.contains(nonce))
            .collect();
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
        let orders: HashMap<String, String> =
            sqlx::query_as("SELECT reference, status FROM orders")
                .fetch_all(inputs.db)
                .await?
                .into_iter()
                .collect();
        // The purged tables, from the journal (rows of the whole run, dropped ones included).
        let mut history: HashMap<String, Vec<(String, String, String)>> = HashMap::new();
        for (reference, status, effect, key) in journal.history.values() {
            history.entry(reference.clone()).or_default().push((
                status.clone(),
                effect.clone(),
                key.clone(),
            ));
        }
        let mut outbox: HashMap<(String, String), Vec<String>> = HashMap::new();
        let mut attempts: HashMap<String, i32> = HashMap::new();
        for row in journal.outbox.values() {
            attempts.insert(row.event_id.to_string(), row.attempts);
            outbox
                .entry((row.reference.clone(), row.event_type.clone()))
                .or_default()
                .push(row.event_id.to_string());
        }
        // Unpublished rows are never dropped: the table as it is now has them all.
        let outbox_unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                .fetch_one(inputs.db)
                .await?;
        let mut applied_by_key: HashMap<String, i64> = HashMap::new();
        for row in journal.deliveries.values() {
            if let (Some(key), "applied") = (&row.idempotency_key, row.outcome.as_str()) {
                *applied_by_key.entry(key.clone()).or_default() += 1;
            }
        }
        let quarantined: Vec<Quarantined> = journal.quarantined.values().cloned().collect();

        // The ledger queue.
        let mut by_event: HashMap<&str, usize> = HashMap::new();
        let mut events_of: HashMap<(String, String), HashSet<String>> = HashMap::new();
        for message in inputs.ledger {
            *by_event.entry(&message.event_id).or_default() += 1;
            events_of
                .entry((message.reference.clone(), message.event_type.clone()))
                .or_default()
                .insert(message.event_id.clone());
        }

        Ok(Self {
            unexpected,
            refused_in_alarm,
            refused_received,
            sent,
            acked,
            conflicts,
            acked_batches,
            orders,
            history,
            outbox,
            attempts,
            outbox_unpublished: usize::try_from(outbox_unpublished).unwrap_or(usize::MAX),
            applied_by_key,
            quarantined,
            ledger: inputs.ledger,
            by_event,
            events_of,
            intake_dlq: inputs.intake_dlq,
            ledger_dlq: inputs.ledger_dlq,
            poison: inputs.poison,
        })
    }

    /// Applying transitions (`created` or `applied`) of `reference` to `status` in its history.
    pub fn transitions(&self, reference: &str, status: &str) -> usize {
        self.history.get(reference).map_or(0, |rows| {
            rows.iter()
                .filter(|(s, e, _)| s == status && (e == "created" || e == "applied"))
                .count()
        })
    }
}

/// The ledger event a final status emits.
pub(super) fn event_type_of(status: &str) -> Option<EventType> {
    match status {
        SUCCESS => Some(EventType::OrderSucceeded),
        FAILED => Some(EventType::OrderFailed),
        _ => None,
    }
}

pub(super) fn is_final(status: &str) -> bool {
    status == SUCCESS || status == FAILED
}

/// The idempotency key of the side of `reference`'s conflict pair that lost to `winner`: the
/// harness sends SUCCESS under `<reference>-s` and FAILED under `<reference>-f`.
pub(super) fn loser_key(reference: &str, winner: &str) -> String {
    format!("{reference}-{}", if winner == SUCCESS { "f" } else { "s" })
}
