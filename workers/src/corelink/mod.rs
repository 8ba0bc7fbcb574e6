//! Applying one Corelink notification, unit or batch, atomically (DESIGN.md §3.4, in the
//! caller's transaction or savepoint): replay and idempotency checks, the order state
//! machine, history, outbox events and the audit record commit together or not at all. Here: the transaction, with its replay and
//! idempotency checks; `decode` reads the message first, `orders` moves the orders inside it.
//!
//! Concurrency: a group's transaction first locks every key its messages can write, in one
//! global order ([`lock_keys`], `crate::group_transaction`), so groups holding copies of one
//! message, or the same orders in another delivery order, wait for each other instead of
//! deadlocking. Inside a message, orders are still locked and inserted in reference order: a
//! transaction outside that protocol touching several of them cannot deadlock with it either.

mod decode;
mod orders;
pub mod statements;
pub mod units;

use sqlx::PgConnection;
use uuid::Uuid;

use connector_schema::corelink::{self as schema, headers};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::audit::{self, Received};
use crate::corelink::decode::{Notification, decode};
use crate::corelink::orders::apply_orders;
use crate::group_transaction::GroupKeys;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::QuarantineReason;

#[doc(hidden)]
pub use crate::corelink::orders::{Effect, transition};

/// A Corelink message read once for its group: the group's lock, the units applied together
/// and [`apply_read`] all take it from here, instead of each parsing the body (a batch of 100
/// orders was parsed twice, the first time for its references only).
#[derive(Debug)]
pub struct Read(Result<Notification, String>);

impl Read {
    pub fn of(envelope: &IntakeEnvelope) -> Self {
        Self(decode(envelope))
    }

    /// What [`apply_read`] can write under, for a group's lock (see `crate::group_transaction`).
    /// A message that cannot be read adds what it can ([`lock_keys`]): it is dead-lettered
    /// without writing anything.
    pub fn lock_keys(&self, envelope: &IntakeEnvelope, keys: &mut GroupKeys) {
        let Ok(n) = &self.0 else {
            return lock_keys(envelope, keys);
        };
        keys.nonce(&n.client_id, &n.nonce);
        keys.idempotency_key(&n.client_id, &n.idempotency_key);
        for order in &n.orders {
            keys.order(&order.reference);
        }
    }
}

/// Applies `envelope` on `conn`, inside the caller's transaction or savepoint: on `Err` the
/// caller rolls it back, so nothing of the message is written.
pub async fn apply(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
) -> Result<Outcome, ApplyError> {
    apply_read(conn, envelope, &Read::of(envelope)).await
}

/// [`apply`], `envelope` read already.
pub async fn apply_read(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
    read: &Read,
) -> Result<Outcome, ApplyError> {
    let notification = read
        .0
        .as_ref()
        .map_err(|reason| ApplyError::Invalid(reason.clone()))?;
    let outcome = match claim(conn, envelope, notification).await? {
        // Nothing applied, but the copy that arrived is on record (audit, disputes).
        Claim::NonceSeen => replay_of(conn, notification).await?,
        Claim::KeyBound => match key_bound_before(conn, notification).await? {
            Some(outcome) => outcome,
            None => apply_orders(conn, envelope, notification).await?,
        },
        Claim::Both => apply_orders(conn, envelope, notification).await?,
    };
    record_message(conn, envelope, notification, outcome).await?;
    Ok(outcome)
}

/// What [`apply`] can write under, for a group's lock (see `crate::group_transaction`). A
/// message that cannot be read adds what it can: it is dead-lettered without writing anything.
pub fn lock_keys(envelope: &IntakeEnvelope, keys: &mut GroupKeys) {
    let client_id = envelope.client_id.as_deref().unwrap_or_default();
    if let Some(nonce) = envelope.header(headers::NONCE) {
        keys.nonce(client_id, nonce);
    }
    let idempotency_key = envelope
        .header(headers::IDEMPOTENCY_KEY)
        .unwrap_or_default();
    keys.idempotency_key(client_id, idempotency_key);
    match envelope.kind {
        IntakeKind::CorelinkStatus => {
            if let Ok(order) = schema::parse_unit(&envelope.body) {
                keys.order(&order.reference);
            }
        }
        IntakeKind::CorelinkStatusBatch => {
            if let Ok(batch) = schema::parse_batch(&envelope.body, idempotency_key, usize::MAX) {
                for order in &batch.orders {
                    keys.order(&order.reference);
                }
            }
        }
        _ => {}
    }
}

/// What claiming the nonce and the idempotency key found.
enum Claim {
    /// Both were free: a new request.
    Both,
    /// The nonce was seen before: a replay, or a nonce reused for another request.
    NonceSeen,
    /// A new nonce, but the key was bound before: a duplicate, more news of the same order, or
    /// a key reused.
    KeyBound,
}

/// Claims the nonce and, only if that succeeded, the idempotency key: one statement, one round
/// trip (`statements::CLAIM_NONCE_AND_KEY`).
async fn claim(
    tx: &mut PgConnection,
    envelope: &IntakeEnvelope,
    n: &Notification,
) -> Result<Claim, ApplyError> {
    let (scope, reference, digest) = key_binding(n);
    let (nonce, key): (bool, bool) = sqlx::query_as(statements::CLAIM_NONCE_AND_KEY)
        .bind(&n.client_id)
        .bind(&n.nonce)
        .bind(&n.fingerprint)
        .bind(envelope.message_id)
        .bind(n.request_timestamp)
        .bind(&n.idempotency_key)
        .bind(scope)
        .bind(reference)
        .bind(digest)
        .fetch_one(&mut *tx)
        .await?;
    Ok(match (nonce, key) {
        (false, _) => Claim::NonceSeen,
        (true, false) => Claim::KeyBound,
        (true, true) => Claim::Both,
    })
}

/// What a key binds: its scope, and the unit's order or the batch's content digest.
fn key_binding(n: &Notification) -> (&'static str, Option<&str>, Option<&str>) {
    match &n.batch {
        Some(batch) => ("batch", None, Some(batch.digest.as_str())),
        None => ("unit", n.orders.first().map(|o| o.reference.as_str()), None),
    }
}

/// `Replay` if the nonce was seen with this exact request; quarantine if it served another.
async fn replay_of(tx: &mut PgConnection, n: &Notification) -> Result<Outcome, ApplyError> {
    let (fingerprint, first): (String, Uuid) = sqlx::query_as(
        "SELECT request_fingerprint, message_id FROM seen_nonces WHERE client_id = $1 AND nonce = $2",
    )
    .bind(&n.client_id)
    .bind(&n.nonce)
    .fetch_one(&mut *tx)
    .await?;
    if fingerprint == n.fingerprint {
        Ok(Outcome::Replay)
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

/// For a key bound before: `Some(Duplicate)` for a batch seen with the same content, `None`
/// for more news of the unit's order; quarantine on key reuse.
async fn key_bound_before(
    tx: &mut PgConnection,
    n: &Notification,
) -> Result<Option<Outcome>, ApplyError> {
    let (scope, reference, digest) = key_binding(n);
    let (bound_scope, bound_reference, bound_digest): (String, Option<String>, Option<String>) =
        sqlx::query_as(
            "SELECT scope, reference, content_digest FROM idempotency_keys
         WHERE client_id = $1 AND idempotency_key = $2",
        )
        .bind(&n.client_id)
        .bind(&n.idempotency_key)
        .fetch_one(&mut *tx)
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

/// The audit record of the message, with the raw request.
async fn record_message(
    tx: &mut PgConnection,
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
    use bytes::Bytes;
    use time::OffsetDateTime;

    use super::*;

    const BATCH: &str = r#"{"batch_id": "K-1", "orders": [
        {"reference": "ORD-2", "status": "SUCCESS", "processed_at": "2026-12-02T00:00:00Z"},
        {"reference": "ORD-1", "status": "PENDING", "processed_at": "2026-12-02T00:00:00Z"}]}"#;

    fn batch(headers: &[(&str, &str)]) -> IntakeEnvelope {
        IntakeEnvelope {
            message_id: Uuid::now_v7(),
            kind: IntakeKind::CorelinkStatusBatch,
            received_at: OffsetDateTime::now_utc(),
            client_id: Some("BANK_X".into()),
            request_path: Some("/callbacks/orders/status/batch".into()),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).into(), (*value).into()))
                .collect(),
            body: Bytes::from_static(BATCH.as_bytes()),
            verification: None,
        }
    }

    /// The group's lock keys of `envelope`, from the message read once and from the envelope.
    fn both_ways(envelope: &IntakeEnvelope) -> (Vec<i32>, Vec<i32>) {
        let mut read = GroupKeys::default();
        Read::of(envelope).lock_keys(envelope, &mut read);
        let mut direct = GroupKeys::default();
        lock_keys(envelope, &mut direct);
        (read.sorted(), direct.sorted())
    }

    #[test]
    fn a_message_read_once_locks_the_same_keys_as_one_read_for_its_keys_only() {
        let readable = batch(&[
            ("x-nonce", "n-1"),
            ("x-idempotency-key", "K-1"),
            ("x-timestamp", "2026-12-02T00:00:00Z"),
        ]);
        assert!(Read::of(&readable).0.is_ok());
        let (read, direct) = both_ways(&readable);
        assert_eq!(read, direct);
        // The nonce, the key and both orders.
        assert_eq!(read.len(), 4);

        // Unreadable (no X-Timestamp): what can be read is still locked.
        let unreadable = batch(&[("x-nonce", "n-1"), ("x-idempotency-key", "K-1")]);
        assert!(matches!(&Read::of(&unreadable).0, Err(reason) if reason.contains("x-timestamp")));
        let (read, direct) = both_ways(&unreadable);
        assert_eq!(read, direct);
        assert_eq!(read.len(), 4);
    }
}
