//! Quarantine: messages that are valid but cannot be applied (§2.6), held with their reason
//! and the raw request (and how the ingress verified it) until a human releases or discards
//! them. Never silently dropped.

use serde_json::{Map, Value};
use sqlx::PgConnection;

use connector_schema::{IntakeEnvelope, IntakeKind};

/// Why a message was quarantined; the `reason` column and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineReason {
    /// A unit key already bound to another reference, or a batch key already bound to other
    /// content (§3.4).
    IdempotencyKeyReused,
    /// A final status contradicting an applied final status (§3.4).
    FinalStatusConflict,
    /// The nonce of an earlier, different request (§3.1).
    NonceReused,
    /// A notification for an order another bank reports: no bank may move another's order.
    OrderOfAnotherClient,
    /// A BNC callback whose `X-EXTERNAL-ID` or `partnerReferenceNo` was already used by a
    /// different binding.
    BindingConflict,
    /// A Paysafe fact contradicting a final status (a payment COMPLETED then FAILED, a failed
    /// credit COMPLETED), or an id reported as the other kind.
    PaysafeConflict,
}

impl QuarantineReason {
    pub const ALL: [QuarantineReason; 6] = [
        Self::IdempotencyKeyReused,
        Self::FinalStatusConflict,
        Self::NonceReused,
        Self::OrderOfAnotherClient,
        Self::BindingConflict,
        Self::PaysafeConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::FinalStatusConflict => "FINAL_STATUS_CONFLICT",
            Self::NonceReused => "NONCE_REUSED",
            Self::OrderOfAnotherClient => "ORDER_OF_ANOTHER_CLIENT",
            Self::BindingConflict => "BINDING_CONFLICT",
            Self::PaysafeConflict => "PAYSAFE_STATUS_CONFLICT",
        }
    }
}

/// The envelope's headers as a JSON object, for the `headers` columns.
pub fn headers_json(envelope: &IntakeEnvelope) -> Value {
    Value::Object(
        envelope
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), Value::String(value.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// How the ingress verified the message, for the `verification` columns: the facts with
/// `"result": "verified"`, or NULL where the message carried none.
pub fn verification_json(envelope: &IntakeEnvelope) -> Option<Value> {
    envelope
        .verification
        .as_ref()
        .map(|facts| facts.to_audit_json())
}

/// Holds `envelope` in quarantine, on `conn` inside the caller's transaction or savepoint
/// (its two rows commit together). Idempotent per message id: a
/// redelivery changes nothing, and a released message that fails again is held again (a hold
/// always wins over the release that sent it back: the release was recorded first). The seal
/// it carried is kept, for the release to check again.
///
/// A BNC body carries a card token and an account number: the row keeps a redacted copy, and
/// the raw body, needed only to release the message, goes to `quarantined_secret_bodies`,
/// which only the token readers may read.
pub async fn hold(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
    seal: Option<&str>,
    reason: QuarantineReason,
    detail: &str,
) -> sqlx::Result<()> {
    let secret_bearing = envelope.kind == IntakeKind::BncAccountBinding;
    let readable_body = if secret_bearing {
        connector_schema::bnc::redact_body(&envelope.body)
    } else {
        envelope.body.to_vec()
    };
    sqlx::query(
        "INSERT INTO quarantined_messages
             (message_id, reason, detail, kind, client_id, idempotency_key, received_at,
              request_path, headers, body, seal, verification)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (message_id) DO UPDATE
             SET state = 'held', reason = EXCLUDED.reason, detail = EXCLUDED.detail,
                 quarantined_at = now(), resolved_at = NULL, resolution_note = NULL
             WHERE quarantined_messages.state = 'released'",
    )
    .bind(envelope.message_id)
    .bind(reason.as_str())
    .bind(detail)
    .bind(envelope.kind.routing_key())
    .bind(envelope.client_id.as_deref())
    .bind(envelope.header("x-idempotency-key"))
    .bind(envelope.received_at)
    .bind(envelope.request_path.as_deref())
    .bind(headers_json(envelope))
    .bind(readable_body)
    .bind(seal)
    .bind(verification_json(envelope))
    .execute(&mut *conn)
    .await?;
    if secret_bearing {
        sqlx::query(
            "INSERT INTO quarantined_secret_bodies (message_id, body) VALUES ($1, $2)
             ON CONFLICT (message_id) DO NOTHING",
        )
        .bind(envelope.message_id)
        .bind(envelope.body.as_ref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
