//! The messages an apply run consumes, built the way the ingress builds them (same envelope,
//! kind, client id, request path, recorded headers, a body the ingress would accept), and the
//! very same orders as ready-to-bind rows for the SQL baseline. Everything is prepared before
//! any clock starts, so neither part times the bench's own JSON or hashing.

use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use connector_ingress::auth::signing::{JSON, random_nonce};
use connector_schema::corelink::{self, DEFAULT_MAX_BATCH_ORDERS, OrderStatusUpdate, headers};
use connector_schema::envelope::rfc3339;
use connector_schema::events::{EventType, LedgerEvent, Source};
use connector_schema::{IntakeEnvelope, IntakeKind};
use connector_workers::quarantine::headers_json;

/// The client every bench message comes from.
pub const CLIENT_ID: &str = "BANK_X";
/// Route of a single order.
pub const UNIT_PATH: &str = "/callbacks/orders/status";
/// Route of a batch.
pub const BATCH_PATH: &str = "/callbacks/orders/status/batch";
/// The workers never re-verify signatures, so preloaded messages carry a placeholder.
const UNSIGNED: &str = "bench-unsigned";
/// Most messages one apply run preloads, whatever the order count asks for.
pub const MAX_MESSAGES: usize = 5_000;

/// One intake message and what the apply transaction writes for it, so that parts 1 and 2
/// write exactly the same orders.
#[derive(Debug)]
pub struct Message {
    pub envelope: IntakeEnvelope,
    pub rows: Rows,
}

/// All messages of one batch size; the same set serves every run of that size (each run has a
/// fresh database).
#[derive(Debug, Clone)]
pub struct Workload {
    pub batch_size: usize,
    pub messages: Arc<[Message]>,
}

impl Workload {
    pub fn orders(&self) -> usize {
        self.messages.len() * self.batch_size
    }
}

/// The bind values of the statements a worker runs for one new message, as
/// `connector_workers::corelink::apply` would compute them.
#[derive(Debug)]
pub struct Rows {
    pub message_id: Uuid,
    pub kind: &'static str,
    pub client_id: String,
    pub idempotency_key: String,
    pub nonce: String,
    pub fingerprint: String,
    pub request_timestamp: OffsetDateTime,
    pub received_at: OffsetDateTime,
    pub scope: &'static str,
    pub unit_reference: Option<String>,
    pub content_digest: Option<String>,
    pub batch_id: Option<String>,
    pub references: Vec<String>,
    pub statuses: Vec<&'static str>,
    pub bank_references: Vec<Option<String>>,
    pub reason_codes: Vec<Option<String>>,
    pub reason_messages: Vec<Option<String>>,
    pub processed_at: Vec<OffsetDateTime>,
    pub previous_statuses: Vec<Option<&'static str>>,
    pub effects: Vec<&'static str>,
    pub event_ids: Vec<Uuid>,
    pub event_types: Vec<String>,
    pub event_bodies: Vec<String>,
    pub body_sha256: String,
    pub request_path: Option<String>,
    pub headers: Value,
    pub body: Bytes,
}

/// Messages for about `orders` orders in batches of `batch_size`, at most [`MAX_MESSAGES`].
pub fn message_count(orders: usize, batch_size: usize) -> usize {
    (orders / batch_size.max(1)).clamp(1, MAX_MESSAGES)
}

/// `count` messages of `batch_size` SUCCESS orders each (a unit callback when the size is 1),
/// with unique references, idempotency keys and nonces.
pub fn build(batch_size: usize, count: usize) -> anyhow::Result<Workload> {
    let run = Uuid::new_v4().simple().to_string();
    let run = run.get(..12).unwrap_or(&run);
    let now = OffsetDateTime::now_utc();
    let stamp = rfc3339(now.replace_nanosecond(0).unwrap_or(now));
    let mut messages = Vec::with_capacity(count);
    for index in 0..count {
        let key = format!("BENCH-{run}-{index:06}");
        let (kind, path, body) = if batch_size <= 1 {
            (IntakeKind::CorelinkStatus, UNIT_PATH, order(&key, &stamp))
        } else {
            let orders: Vec<Value> = (0..batch_size)
                .map(|n| order(&format!("{key}-{n:04}"), &stamp))
                .collect();
            (
                IntakeKind::CorelinkStatusBatch,
                BATCH_PATH,
                json!({ "batch_id": key, "sent_at": stamp, "orders": orders }),
            )
        };
        let envelope = IntakeEnvelope {
            message_id: Uuid::now_v7(),
            kind,
            received_at: OffsetDateTime::now_utc(),
            client_id: Some(CLIENT_ID.to_owned()),
            request_path: Some(path.to_owned()),
            // The ingress records these six, in this order, lower-case.
            headers: vec![
                (headers::CONTENT_TYPE.to_owned(), JSON.to_owned()),
                (headers::CLIENT_ID.to_owned(), CLIENT_ID.to_owned()),
                (headers::TIMESTAMP.to_owned(), stamp.clone()),
                (headers::NONCE.to_owned(), random_nonce()),
                (headers::IDEMPOTENCY_KEY.to_owned(), key.clone()),
                (headers::SIGNATURE.to_owned(), UNSIGNED.to_owned()),
            ],
            body: Bytes::from(serde_json::to_vec(&body)?),
            verification: None,
        };
        let rows = Rows::of(&envelope).with_context(|| format!("message {index}"))?;
        messages.push(Message { envelope, rows });
    }
    Ok(Workload {
        batch_size: batch_size.max(1),
        messages: messages.into(),
    })
}

/// One SUCCESS order as a bank sends it.
pub fn order(reference: &str, processed_at: &str) -> Value {
    json!({
        "reference": reference,
        "bank_reference": format!("BNK-{reference}"),
        "status": "SUCCESS",
        "processed_at": processed_at,
    })
}

impl Rows {
    /// Parses the body with the ingress's own validation (so a body it would refuse fails
    /// here) and derives what a worker writes for a first-seen message.
    fn of(envelope: &IntakeEnvelope) -> anyhow::Result<Self> {
        let header = |name: &str| {
            envelope
                .header(name)
                .map(str::to_owned)
                .with_context(|| format!("header {name}"))
        };
        let client_id = envelope.client_id.clone().context("client id")?;
        let idempotency_key = header(headers::IDEMPOTENCY_KEY)?;
        let nonce = header(headers::NONCE)?;
        let timestamp = header(headers::TIMESTAMP)?;
        let request_timestamp = OffsetDateTime::parse(&timestamp, &Rfc3339)?;
        let body_sha256 = corelink::body_sha256(&envelope.body);
        let path = envelope.request_path.clone().unwrap_or_default();
        let fingerprint = hex_sha256(
            [path.as_str(), &timestamp, &idempotency_key, &body_sha256]
                .join("\n")
                .as_bytes(),
        );
        let refused = |e: connector_schema::validation::BodyError| {
            anyhow::anyhow!("the ingress would refuse this body: {e}")
        };
        let (scope, unit_reference, content_digest, batch_id, mut orders) = match envelope.kind {
            IntakeKind::CorelinkStatus => {
                let order = corelink::parse_unit(&envelope.body).map_err(refused)?;
                (
                    "unit",
                    Some(order.reference.clone()),
                    None,
                    None,
                    vec![order],
                )
            }
            _ => {
                let batch = corelink::parse_batch(
                    &envelope.body,
                    &idempotency_key,
                    DEFAULT_MAX_BATCH_ORDERS,
                )
                .map_err(refused)?;
                (
                    "batch",
                    None,
                    Some(hex_sha256(&envelope.body)),
                    batch.batch_id,
                    batch.orders,
                )
            }
        };
        orders.sort_by(|a, b| a.reference.cmp(&b.reference));

        let recorded_at = OffsetDateTime::now_utc();
        let mut event_ids = Vec::with_capacity(orders.len());
        let mut event_types = Vec::with_capacity(orders.len());
        let mut event_bodies = Vec::with_capacity(orders.len());
        for order in &orders {
            let event = event(order, &client_id, batch_id.as_deref(), recorded_at);
            event_ids.push(event.event_id);
            event_types.push(event.event_type.clone());
            event_bodies.push(serde_json::to_string(&event)?);
        }
        Ok(Self {
            message_id: envelope.message_id,
            kind: envelope.kind.routing_key(),
            idempotency_key,
            nonce,
            fingerprint,
            request_timestamp,
            received_at: envelope.received_at,
            scope,
            unit_reference,
            content_digest,
            batch_id,
            references: orders.iter().map(|o| o.reference.clone()).collect(),
            statuses: orders.iter().map(|o| o.status.as_str()).collect(),
            bank_references: orders.iter().map(|o| o.bank_reference.clone()).collect(),
            reason_codes: orders.iter().map(|o| o.reason_code.clone()).collect(),
            reason_messages: orders.iter().map(|o| o.reason_message.clone()).collect(),
            processed_at: orders.iter().map(|o| o.processed_at).collect(),
            previous_statuses: vec![None; orders.len()],
            effects: vec!["created"; orders.len()],
            event_ids,
            event_types,
            event_bodies,
            body_sha256,
            request_path: envelope.request_path.clone(),
            headers: headers_json(envelope),
            body: envelope.body.clone(),
            client_id,
        })
    }
}

/// The ledger event a worker writes for a new final order.
fn event(
    order: &OrderStatusUpdate,
    client_id: &str,
    batch_id: Option<&str>,
    recorded_at: OffsetDateTime,
) -> LedgerEvent {
    LedgerEvent::new(
        Source::Corelink,
        EventType::OrderSucceeded,
        &order.reference,
        order.status.as_str(),
        order.processed_at,
        recorded_at,
        json!({
            "client_id": client_id,
            "bank_reference": order.bank_reference,
            "reason_code": order.reason_code,
            "reason_message": order.reason_message,
            "batch_id": batch_id,
        }),
    )
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_unique_valid_messages_of_each_kind() {
        let units = build(1, 3).unwrap();
        assert_eq!(units.orders(), 3);
        let batches = build(10, 2).unwrap();
        assert_eq!(batches.orders(), 20);
        for message in units.messages.iter().chain(batches.messages.iter()) {
            let e = &message.envelope;
            assert_eq!(
                e.header("x-idempotency-key"),
                Some(message.rows.idempotency_key.as_str())
            );
            assert_eq!(message.rows.references.len(), message.rows.event_ids.len());
            // What the broker carries reads back as the same envelope.
            let back = IntakeEnvelope::from_amqp(&e.amqp_properties(), &e.body).unwrap();
            assert_eq!(back.message_id, e.message_id);
            assert_eq!(back.kind, e.kind);
        }
        assert_eq!(units.messages[0].envelope.kind, IntakeKind::CorelinkStatus);
        assert_eq!(
            batches.messages[0].envelope.kind,
            IntakeKind::CorelinkStatusBatch
        );
        let mut references: Vec<&String> = batches
            .messages
            .iter()
            .flat_map(|m| &m.rows.references)
            .collect();
        references.sort();
        references.dedup();
        assert_eq!(references.len(), 20);
        let nonces: std::collections::HashSet<_> =
            units.messages.iter().map(|m| &m.rows.nonce).collect();
        assert_eq!(nonces.len(), 3);
    }

    #[test]
    fn message_count_is_capped() {
        assert_eq!(message_count(20_000, 1), MAX_MESSAGES);
        assert_eq!(message_count(20_000, 10), 2_000);
        assert_eq!(message_count(20_000, 100), 200);
        assert_eq!(message_count(5, 100), 1);
    }
}
