//! One archived request: exactly what was received (headers, body as stored, digests), how it
//! was verified, what the workers did with it and which ledger events it caused.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// One row of `received_messages`, as archived (one line of an archive file). A message
/// redelivered after its commit has two rows (`applied`, then `replay`/`duplicate`): two
/// entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveEntry {
    pub message_id: Uuid,
    /// The intake routing key (`corelink.status`, `bnc.account_binding`, ...).
    pub kind: String,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub processed_at: OffsetDateTime,
    pub client_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub nonce: Option<String>,
    pub request_path: Option<String>,
    /// The contract's request headers as received (lower-case names).
    pub headers: serde_json::Value,
    /// The body exactly as stored: the raw body, or for BNC its redacted copy.
    pub body_base64: String,
    /// base64url SHA-256 of the bytes the sender sent (also of a body archived redacted).
    pub body_sha256: String,
    /// Whether `body_base64` is a redacted copy (BNC: no card token, no account number), so
    /// it does not hash to `body_sha256`.
    pub body_redacted: bool,
    /// The signature header's value for this kind (`x-signature`, `signature`), if any.
    pub signature: Option<String>,
    /// How the ingress verified the request (scheme, key id, key fingerprint), when recorded.
    pub verification: Option<serde_json::Value>,
    /// applied | duplicate | replay.
    pub outcome: String,
    pub events: Vec<ArchivedEvent>,
}

/// A ledger event the request caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchivedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub reference: Option<String>,
}

impl ArchiveEntry {
    /// The header `name` as received (names compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .as_object()?
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .and_then(|(_, value)| value.as_str())
    }

    /// The archived body bytes.
    pub fn body(&self) -> Result<Vec<u8>, base64::DecodeError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(&self.body_base64)
    }

    /// The signature header for a kind of request: which header carries the sender's
    /// signature, by intake routing key.
    pub fn signature_header(kind: &str) -> Option<&'static str> {
        match kind {
            "corelink.status" | "corelink.status.batch" | "bnc.account_binding" => {
                Some("x-signature")
            }
            "paysafe.webhook" => Some("signature"),
            _ => None,
        }
    }
}
