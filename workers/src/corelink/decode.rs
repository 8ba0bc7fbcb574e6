//! What a Corelink intake message says, read once before its transaction: who sent it under
//! which key and nonce, the fingerprint that tells an exact replay from a reused nonce, and its
//! orders sorted by reference (the lock order). A batch also gets a digest of its meaning, so a
//! re-serialised retry is recognised as the same batch (§3.4).

use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use connector_schema::corelink::{self, OrderStatusUpdate, headers};
use connector_schema::{IntakeEnvelope, IntakeKind};

/// A decoded Corelink request, ready to apply.
#[derive(Debug)]
pub(super) struct Notification {
    pub(super) client_id: String,
    pub(super) idempotency_key: String,
    pub(super) nonce: String,
    pub(super) request_timestamp: OffsetDateTime,
    /// Everything the bank signed except the signature itself: equal for an exact replay.
    pub(super) fingerprint: String,
    pub(super) body_sha256: String,
    pub(super) batch: Option<Batch>,
    /// Sorted by reference: the lock order.
    pub(super) orders: Vec<OrderStatusUpdate>,
}

#[derive(Debug)]
pub(super) struct Batch {
    pub(super) id: Option<String>,
    /// Digest of the parsed content, compared by meaning (§3.4).
    pub(super) digest: String,
}

/// Reads `envelope`, or says why it cannot be read (the reason it is dead-lettered with).
pub(super) fn decode(envelope: &IntakeEnvelope) -> Result<Notification, String> {
    let header = |name: &str| {
        envelope
            .header(name)
            .map(str::to_owned)
            .ok_or_else(|| format!("header {name} is missing"))
    };
    let client_id = envelope
        .client_id
        .clone()
        .ok_or_else(|| "no client id".to_owned())?;
    let idempotency_key = header(headers::IDEMPOTENCY_KEY)?;
    let nonce = header(headers::NONCE)?;
    let timestamp = header(headers::TIMESTAMP)?;
    let request_timestamp =
        OffsetDateTime::parse(&timestamp, &Rfc3339).map_err(|e| format!("X-Timestamp: {e}"))?;
    let body_sha256 = corelink::body_sha256(&envelope.body);
    let path = envelope.request_path.clone().unwrap_or_default();
    let fingerprint = hex_sha256(
        [path.as_str(), &timestamp, &idempotency_key, &body_sha256]
            .join("\n")
            .as_bytes(),
    );

    let invalid = |e: connector_schema::validation::BodyError| e.to_string();
    let (batch, orders) = match envelope.kind {
        IntakeKind::CorelinkStatus => (
            None,
            vec![corelink::parse_unit(&envelope.body).map_err(invalid)?],
        ),
        IntakeKind::CorelinkStatusBatch => {
            // No size limit of our own: the ingress enforced its own before the bank was told
            // 200, and a smaller one here would dead-letter what was accepted.
            let batch = corelink::parse_batch(&envelope.body, &idempotency_key, usize::MAX)
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
            return Err(format!("{} is not a Corelink message", other.routing_key()));
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

#[cfg(test)]
mod tests {
    use super::*;

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
