//! Applying one Corelink notification, unit or batch, in one PostgreSQL transaction (DESIGN.md
//! §3.4): replay and idempotency checks, the order state machine, history, outbox events and
//! the audit record commit together or not at all.
//!
//! Concurrency: the nonce and idempotency-key rows are claimed by primary key, so two workers
//! handling copies of one message serialise on them; existing orders are locked with
//! `FOR UPDATE` in reference order and new ones inserted in reference order, so two batches
//! touching the same orders cannot deadlock.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use connector_schema::corelink::{self, OrderStatus, OrderStatusUpdate, headers};
use connector_schema::events::{EventType, LedgerEvent, Source};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::audit::{self, Received};
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::QuarantineReason;

/// A decoded Corelink request, ready to apply.
#[derive(Debug)]
struct Notification {
    client_id: String,
    idempotency_key: String,
    nonce: String,
    request_timestamp: OffsetDateTime,
    /// Everything the bank signed except the signature itself: equal for an exact replay.
    fingerprint: String,
    body_sha256: String,
    batch: Option<Batch>,
    /// Sorted by reference: the lock order.
    orders: Vec<OrderStatusUpdate>,
}

#[derive(Debug)]
struct Batch {
    id: Option<String>,
    /// Digest of the parsed content, compared by meaning (§3.4).
    digest: String,
}

fn decode(envelope: &IntakeEnvelope, max_batch_orders: usize) -> Result<Notification, ApplyError> {
    let header = |name: &str| {
        envelope
            .header(name)
            .map(str::to_owned)
            .ok_or_else(|| ApplyError::Invalid(format!("header {name} is missing")))
    };
    let client_id = envelope
        .client_id
        .clone()
        .ok_or_else(|| ApplyError::Invalid("no client id".into()))?;
    let idempotency_key = header(headers::IDEMPOTENCY_KEY)?;
    let nonce = header(headers::NONCE)?;
    let timestamp = header(headers::TIMESTAMP)?;
    let request_timestamp = OffsetDateTime::parse(&timestamp, &Rfc3339)
        .map_err(|e| ApplyError::Invalid(format!("X-Timestamp: {e}")))?;
    let body_sha256 = corelink::body_sha256(&envelope.body);
    let path = envelope.request_path.clone().unwrap_or_default();
    let fingerprint = hex_sha256(
        [path.as_str(), &timestamp, &idempotency_key, &body_sha256]
            .join("\n")
            .as_bytes(),
    );

    let invalid = |e: connector_schema::validation::BodyError| ApplyError::Invalid(e.to_string());
    let (batch, orders) = match envelope.kind {
        IntakeKind::CorelinkStatus => (
            None,
            vec![corelink::parse_unit(&envelope.body).map_err(invalid)?],
        ),
        IntakeKind::CorelinkStatusBatch => {
            let batch = corelink::parse_batch(&envelope.body, &idempotency_key, max_batch_orders)
                .map_err(invalid)?;
            let mut orders = batch.orders;
            orders.sort_by(|a, b| a.reference.cmp(&b.reference));
            let digest = content_digest(batch.batch_id.as_deref(), &orders);
            (
                Some(Batch {
                    id: batch.batch_id,
                    digest,
                }),
                orders,
            )
        }
        other => {
            return Err(ApplyError::Invalid(format!(
                "{} is not a Corelink message",
                other.routing_key()
            )));
        }
    };
    Ok(Notification {
        client_id,
        idempotency_key,
        nonce,
        request_timestamp,
        fingerprint,
        body_sha256,
        batch,
        orders,
    })
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The batch's meaning: `batch_id` and its orders sorted by reference, with instants
/// normalised, so a re-serialised retry (other whitespace, member order or offset) matches.
/// `sent_at` is left out: a retry is sent later.
fn content_digest(batch_id: Option<&str>, sorted_orders: &[OrderStatusUpdate]) -> String {
    let orders: Vec<_> = sorted_orders
        .iter()
        .map(|o| {
            (
                &o.reference,
                &o.bank_reference,
                o.status.as_str(),
                &o.reason_code,
                &o.reason_message,
                o.processed_at.unix_timestamp_nanos().to_string(),
            )
        })
        .collect();
    let canonical = serde_json::to_vec(&(batch_id, orders)).unwrap_or_default();
    hex_sha256(&canonical)
}

/// What one order's notification does, decided under its row lock.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Created,
    Applied,
    Unchanged,
    Stale,
}

impl Effect {
    fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
        }
    }
}

/// The §3.4 transition table; `Err` is a final-status conflict.
#[doc(hidden)]
pub fn transition(
    current: Option<OrderStatus>,
    incoming: OrderStatus,
) -> Result<Effect, OrderStatus> {
    match current {
        None => Ok(Effect::Created),
        Some(OrderStatus::Pending) if incoming == OrderStatus::Pending => Ok(Effect::Unchanged),
        Some(OrderStatus::Pending) => Ok(Effect::Applied),
        Some(current) if current == incoming => Ok(Effect::Unchanged),
        Some(_) if incoming == OrderStatus::Pending => Ok(Effect::Stale),
        Some(current) => Err(current),
    }
}

/// Applies `envelope` in one transaction. On `Err` nothing was written.
pub async fn apply(
    pool: &PgPool,
    envelope: &IntakeEnvelope,
    max_batch_orders: usize,
) -> Result<Outcome, ApplyError> {
    let notification = decode(envelope, max_batch_orders)?;
    let mut tx = pool.begin().await?;

    if let Some(outcome) = claim_nonce(&mut tx, envelope, &notification).await? {
        return Ok(outcome);
    }
    if let Some(outcome) = claim_idempotency_key(&mut tx, envelope, &notification).await? {
        record_message(&mut tx, envelope, &notification, outcome).await?;
        tx.commit().await?;
        return Ok(outcome);
    }
    let outcome = apply_orders(&mut tx, envelope, &notification).await?;
    record_message(&mut tx, envelope, &notification, outcome).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// `Some(Replay)` if this exact request was seen; quarantine if the nonce served another.
async fn claim_nonce(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &IntakeEnvelope,
    n: &Notification,
) -> Result<Option<Outcome>, ApplyError> {
    let claimed = sqlx::query(
        "INSERT INTO seen_nonces (client_id, nonce, request_fingerprint, message_id, request_timestamp)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, nonce) DO NOTHING",
    )
    .bind(&n.client_id)
    .bind(&n.nonce)
    .bind(&n.fingerprint)
    .bind(envelope.message_id)
    .bind(n.request_timestamp)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (fingerprint, first): (String, Uuid) = sqlx::query_as(
        "SELECT request_fingerprint, message_id FROM seen_nonces WHERE client_id = $1 AND nonce = $2",
    )
    .bind(&n.client_id)
    .bind(&n.nonce)
    .fetch_one(&mut **tx)
    .await?;
    if fingerprint == n.fingerprint {
        Ok(Some(Outcome::Replay))
    } else {
        Err(ApplyError::Quarantine {
            reason: QuarantineReason::NonceReused,
            detail: format!(
                "nonce {} was first used by message {first} for another request",
                n.nonce
            ),
        })
    }
}

/// `Some(Duplicate)` for a batch seen with the same content; quarantine on key reuse.
async fn claim_idempotency_key(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &IntakeEnvelope,
    n: &Notification,
) -> Result<Option<Outcome>, ApplyError> {
    let (scope, reference, digest) = match &n.batch {
        Some(batch) => ("batch", None, Some(batch.digest.as_str())),
        None => ("unit", n.orders.first().map(|o| o.reference.as_str()), None),
    };
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, content_digest, first_message_id)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (client_id, idempotency_key) DO NOTHING",
    )
    .bind(&n.client_id)
    .bind(&n.idempotency_key)
    .bind(scope)
    .bind(reference)
    .bind(digest)
    .bind(envelope.message_id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if claimed {
        return Ok(None);
    }
    let (bound_scope, bound_reference, bound_digest): (String, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT scope, reference, content_digest FROM idempotency_keys
         WHERE client_id = $1 AND idempotency_key = $2",
        )
        .bind(&n.client_id)
        .bind(&n.idempotency_key)
        .fetch_one(&mut **tx)
        .await?;
    let reused = |detail: String| ApplyError::Quarantine {
        reason: QuarantineReason::IdempotencyKeyReused,
        detail,
    };
    match (scope, bound_scope.as_str()) {
        // A unit key is bound to its order: more notifications of that order may share it.
        ("unit", "unit") if bound_reference.as_deref() == reference => Ok(None),
        ("unit", "unit") => Err(reused(format!(
            "key {} is bound to order {}, not {}",
            n.idempotency_key,
            bound_reference.unwrap_or_default(),
            reference.unwrap_or_default()
        ))),
        ("batch", "batch") if bound_digest.as_deref() == digest => Ok(Some(Outcome::Duplicate)),
        ("batch", "batch") => Err(reused(format!(
            "batch key {} was already used for a batch with other content",
            n.idempotency_key
        ))),
        _ => Err(reused(format!(
            "key {} was already used for a {bound_scope} callback",
            n.idempotency_key
        ))),
    }
}

/// Locks, transitions and writes every order of the notification, with history and events.
async fn apply_orders(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &IntakeEnvelope,
    n: &Notification,
) -> Result<Outcome, ApplyError> {
    let references: Vec<&str> = n.orders.iter().map(|o| o.reference.as_str()).collect();
    let current: HashMap<String, (String, String)> = sqlx::query_as::<_, (String, String, String)>(
        "SELECT reference, client_id, status FROM orders
         WHERE reference = ANY($1) ORDER BY reference FOR UPDATE",
    )
    .bind(&references)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|(reference, client, status)| (reference, (client, status)))
    .collect();

    let mut effects = Vec::with_capacity(n.orders.len());
    let mut conflicts = Vec::new();
    for order in &n.orders {
        let previous = match current.get(&order.reference) {
            Some((client, _)) if *client != n.client_id => {
                return Err(ApplyError::Quarantine {
                    reason: QuarantineReason::OrderOfAnotherClient,
                    detail: format!("order {} is reported by another client", order.reference),
                });
            }
            Some((_, status)) => Some(parse_status(status)?),
            None => None,
        };
        match transition(previous, order.status) {
            Ok(effect) => effects.push((order, previous, effect)),
            Err(applied) => conflicts.push(format!(
                "{} is {} and cannot become {}",
                order.reference,
                applied.as_str(),
                order.status.as_str()
            )),
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Quarantine {
            reason: QuarantineReason::FinalStatusConflict,
            detail: conflicts.join("; "),
        });
    }

    let created: Vec<&OrderStatusUpdate> = effects
        .iter()
        .filter(|(_, _, e)| *e == Effect::Created)
        .map(|(o, _, _)| *o)
        .collect();
    let updated: Vec<&OrderStatusUpdate> = effects
        .iter()
        .filter(|(_, _, e)| *e == Effect::Applied)
        .map(|(o, _, _)| *o)
        .collect();
    insert_orders(tx, &n.client_id, &created).await?;
    update_orders(tx, &updated).await?;
    insert_history(tx, envelope, n, &effects).await?;

    let recorded_at = OffsetDateTime::now_utc();
    let events: Vec<LedgerEvent> = effects
        .iter()
        .filter(|(order, _, effect)| {
            matches!(effect, Effect::Created | Effect::Applied) && order.status.is_final()
        })
        .map(|(order, _, _)| order_event(order, n, recorded_at))
        .collect();
    insert_events(tx, &events).await?;
    Ok(Outcome::Applied {
        items: n.orders.len(),
        events: events.len(),
    })
}

fn parse_status(status: &str) -> Result<OrderStatus, ApplyError> {
    serde_json::from_value(serde_json::Value::String(status.to_owned()))
        .map_err(|_| ApplyError::Invalid(format!("stored order status {status} is unknown")))
}

/// Column arrays of `orders`, for one `UNNEST` statement whatever the batch size.
struct OrderColumns {
    reference: Vec<String>,
    status: Vec<&'static str>,
    bank_reference: Vec<Option<String>>,
    reason_code: Vec<Option<String>>,
    reason_message: Vec<Option<String>>,
    processed_at: Vec<OffsetDateTime>,
}

impl OrderColumns {
    fn of<'a>(orders: impl IntoIterator<Item = &'a OrderStatusUpdate>) -> Self {
        let mut columns = Self {
            reference: Vec::new(),
            status: Vec::new(),
            bank_reference: Vec::new(),
            reason_code: Vec::new(),
            reason_message: Vec::new(),
            processed_at: Vec::new(),
        };
        for order in orders {
            columns.reference.push(order.reference.clone());
            columns.status.push(order.status.as_str());
            columns.bank_reference.push(order.bank_reference.clone());
            columns.reason_code.push(order.reason_code.clone());
            columns.reason_message.push(order.reason_message.clone());
            columns.processed_at.push(order.processed_at);
        }
        columns
    }
}

async fn insert_orders(
    tx: &mut Transaction<'_, Postgres>,
    client_id: &str,
    orders: &[&OrderStatusUpdate],
) -> Result<(), ApplyError> {
    if orders.is_empty() {
        return Ok(());
    }
    let c = OrderColumns::of(orders.iter().copied());
    let inserted = sqlx::query(
        "INSERT INTO orders (reference, client_id, status, bank_reference, reason_code, reason_message, bank_processed_at)
         SELECT u.reference, $1, u.status, u.bank_reference, u.reason_code, u.reason_message, u.processed_at
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at)
         ON CONFLICT (reference) DO NOTHING",
    )
    .bind(client_id)
    .bind(&c.reference)
    .bind(&c.status)
    .bind(&c.bank_reference)
    .bind(&c.reason_code)
    .bind(&c.reason_message)
    .bind(&c.processed_at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    // Another transaction created one of them after our lock query saw none: its status must
    // be taken into account, so start again.
    if inserted != orders.len() as u64 {
        return Err(ApplyError::Contention);
    }
    Ok(())
}

async fn update_orders(
    tx: &mut Transaction<'_, Postgres>,
    orders: &[&OrderStatusUpdate],
) -> Result<(), ApplyError> {
    if orders.is_empty() {
        return Ok(());
    }
    let c = OrderColumns::of(orders.iter().copied());
    sqlx::query(
        "UPDATE orders o
         SET status = u.status, bank_reference = COALESCE(u.bank_reference, o.bank_reference),
             reason_code = u.reason_code, reason_message = u.reason_message,
             bank_processed_at = u.processed_at, updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at)
         WHERE o.reference = u.reference",
    )
    .bind(&c.reference)
    .bind(&c.status)
    .bind(&c.bank_reference)
    .bind(&c.reason_code)
    .bind(&c.reason_message)
    .bind(&c.processed_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_history(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &IntakeEnvelope,
    n: &Notification,
    effects: &[(&OrderStatusUpdate, Option<OrderStatus>, Effect)],
) -> Result<(), ApplyError> {
    let c = OrderColumns::of(effects.iter().map(|(o, _, _)| *o));
    let previous: Vec<Option<&str>> = effects
        .iter()
        .map(|(_, p, _)| p.map(OrderStatus::as_str))
        .collect();
    let effect: Vec<&str> = effects.iter().map(|(_, _, e)| e.as_str()).collect();
    sqlx::query(
        "INSERT INTO order_history (reference, status, bank_reference, reason_code, reason_message,
                                    bank_processed_at, previous_status, effect,
                                    message_id, client_id, idempotency_key, batch_id, received_at)
         SELECT u.*, $9, $10, $11, $12, $13
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::text[], $8::text[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at,
                   previous_status, effect)",
    )
    .bind(&c.reference)
    .bind(&c.status)
    .bind(&c.bank_reference)
    .bind(&c.reason_code)
    .bind(&c.reason_message)
    .bind(&c.processed_at)
    .bind(&previous)
    .bind(&effect)
    .bind(envelope.message_id)
    .bind(&n.client_id)
    .bind(&n.idempotency_key)
    .bind(n.batch.as_ref().and_then(|b| b.id.as_deref()))
    .bind(envelope.received_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn order_event(
    order: &OrderStatusUpdate,
    n: &Notification,
    recorded_at: OffsetDateTime,
) -> LedgerEvent {
    let event_type = match order.status {
        OrderStatus::Failed => EventType::OrderFailed,
        _ => EventType::OrderSucceeded,
    };
    LedgerEvent::new(
        Source::Corelink,
        event_type,
        &order.reference,
        order.status.as_str(),
        order.processed_at,
        recorded_at,
        serde_json::json!({
            "client_id": n.client_id,
            "bank_reference": order.bank_reference,
            "reason_code": order.reason_code,
            "reason_message": order.reason_message,
            "batch_id": n.batch.as_ref().and_then(|b| b.id.clone()),
        }),
    )
}

/// Writes events to the outbox; the unique `event_id` makes a second write of the same fact
/// impossible even if the state machine above were ever wrong.
pub(crate) async fn insert_events(
    tx: &mut Transaction<'_, Postgres>,
    events: &[LedgerEvent],
) -> Result<(), ApplyError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(events.len());
    let mut types = Vec::with_capacity(events.len());
    let mut references = Vec::with_capacity(events.len());
    let mut bodies = Vec::with_capacity(events.len());
    for event in events {
        ids.push(event.event_id);
        types.push(event.event_type.clone());
        references.push(event.reference.clone());
        bodies.push(serde_json::to_string(event).map_err(|e| ApplyError::Invalid(e.to_string()))?);
    }
    sqlx::query(
        "INSERT INTO ledger_outbox (event_id, event_type, reference, body)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[])
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&references)
    .bind(&bodies)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The audit record of the message, with the raw request.
async fn record_message(
    tx: &mut Transaction<'_, Postgres>,
    envelope: &IntakeEnvelope,
    n: &Notification,
    outcome: Outcome,
) -> Result<(), ApplyError> {
    let received = Received {
        client_id: Some(&n.client_id),
        idempotency_key: Some(&n.idempotency_key),
        nonce: Some(&n.nonce),
        body_sha256: &n.body_sha256,
        body: &envelope.body,
    };
    audit::record(tx, envelope, received, outcome).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::{Failed, Pending, Success};

    #[test]
    fn the_transition_table_of_section_3_4() {
        assert_eq!(transition(None, Pending), Ok(Effect::Created));
        assert_eq!(transition(None, Success), Ok(Effect::Created));
        assert_eq!(transition(Some(Pending), Pending), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Pending), Success), Ok(Effect::Applied));
        assert_eq!(transition(Some(Pending), Failed), Ok(Effect::Applied));
        assert_eq!(transition(Some(Success), Success), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Failed), Failed), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Success), Pending), Ok(Effect::Stale));
        assert_eq!(transition(Some(Success), Failed), Err(Success));
        assert_eq!(transition(Some(Failed), Success), Err(Failed));
    }

    #[test]
    fn the_batch_digest_ignores_order_and_offset_but_not_content() {
        let order = |reference: &str, at: &str| {
            corelink::parse_unit(
                format!(
                    r#"{{"reference":"{reference}","status":"PENDING","processed_at":"{at}"}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let a = vec![
            order("A", "2025-11-19T07:00:00Z"),
            order("B", "2025-11-19T07:00:00Z"),
        ];
        let b = vec![
            order("A", "2025-11-19T08:00:00+01:00"),
            order("B", "2025-11-19T07:00:00Z"),
        ];
        assert_eq!(content_digest(Some("K"), &a), content_digest(Some("K"), &b));
        let c = vec![
            order("A", "2025-11-19T07:00:01Z"),
            order("B", "2025-11-19T07:00:00Z"),
        ];
        assert_ne!(content_digest(Some("K"), &a), content_digest(Some("K"), &c));
        assert_ne!(content_digest(Some("K"), &a), content_digest(None, &a));
    }
}
