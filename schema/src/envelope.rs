//! The intake envelope (DESIGN.md §6): what the ingress puts on `connector.intake` for every
//! accepted request, and what the workers read back.
//!
//! The AMQP body is the request body, byte for byte as received, so an auditor (or a worker
//! re-verifying a signature) sees exactly what the sender signed. Everything else travels in
//! AMQP properties and headers, never re-encoded into the body.

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use uuid::Uuid;

use crate::verification::{self, Verification};

/// AMQP delivery mode that makes the broker write the message to disk.
pub const PERSISTENT: u8 = 2;

/// Bumped when the header layout below changes incompatibly, so a worker can tell an old
/// message from a broken one.
pub const ENVELOPE_VERSION: i32 = 1;

const APP_ID: &str = "connector-ingress";
const H_VERSION: &str = "connector-envelope-version";
const H_RECEIVED_AT: &str = "connector-received-at";
const H_CLIENT_ID: &str = "connector-client-id";
const H_REQUEST_PATH: &str = "connector-request-path";
const H_HTTP_HEADERS: &str = "connector-http-headers";

/// What an intake message is; its routing key on `connector.intake` (§6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntakeKind {
    CorelinkStatus,
    CorelinkStatusBatch,
    BncAccountBinding,
    PaysafeWebhook,
    PaysafeTrack,
}

impl IntakeKind {
    pub const ALL: [IntakeKind; 5] = [
        Self::CorelinkStatus,
        Self::CorelinkStatusBatch,
        Self::BncAccountBinding,
        Self::PaysafeWebhook,
        Self::PaysafeTrack,
    ];

    pub fn routing_key(self) -> &'static str {
        match self {
            Self::CorelinkStatus => "corelink.status",
            Self::CorelinkStatusBatch => "corelink.status.batch",
            Self::BncAccountBinding => "bnc.account_binding",
            Self::PaysafeWebhook => "paysafe.webhook",
            Self::PaysafeTrack => "paysafe.track",
        }
    }

    pub fn from_routing_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.routing_key() == key)
    }
}

/// One accepted request, as it travels from the ingress to the workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntakeEnvelope {
    /// Unique per accepted request (UUID v7, so ids sort by arrival). It is the AMQP
    /// `message_id`, and the key the workers log and audit by.
    pub message_id: Uuid,
    pub kind: IntakeKind,
    /// When the ingress received the request (its own clock).
    pub received_at: OffsetDateTime,
    /// The authenticated sender: the Corelink client id or the BNC client key; `None` where
    /// the source has no per-client identity (Paysafe webhooks, track commands).
    pub client_id: Option<String>,
    /// The request target as received (path and query), for audit and re-verification.
    pub request_path: Option<String>,
    /// The contract's request headers as received, lower-case names (sorted by name once they
    /// have crossed AMQP, whose header table is a map).
    pub headers: Vec<(String, String)>,
    /// The exact body bytes.
    pub body: Bytes,
    /// How the ingress verified the request (which key, which certificate, which signed path),
    /// for the evidence archive. The result is implied: the ingress enqueues only what
    /// verified. `None` on `paysafe.track` commands and on messages sealed before the facts
    /// were recorded. Crosses AMQP as the `connector-verification` header.
    pub verification: Option<Verification>,
}

/// Why a delivery is not a readable intake envelope (a worker dead-letters it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("AMQP property or header `{0}` is missing")]
    Missing(&'static str),
    #[error("AMQP property or header `{name}` is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
    #[error("envelope version {0} is not supported (this build reads {ENVELOPE_VERSION})")]
    UnsupportedVersion(i64),
}

impl IntakeEnvelope {
    /// A header value by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Persistent AMQP properties carrying everything but the body.
    pub fn amqp_properties(&self) -> BasicProperties {
        self.amqp_properties_with(self.amqp_headers())
    }

    /// The header table of [`Self::amqp_properties`], for a caller that adds to it (the seal):
    /// lapin's properties only hand out a shared reference, and copying a built table costs a
    /// clone of every entry per message.
    pub fn amqp_headers(&self) -> FieldTable {
        let mut http_headers = FieldTable::default();
        for (name, value) in &self.headers {
            http_headers.insert(
                ShortString::try_new(name.as_str()).unwrap_or_else(|_| "oversized-name".into()),
                AMQPValue::LongString(LongString::from(value.as_str())),
            );
        }
        let mut headers = FieldTable::default();
        headers.insert(H_VERSION.into(), AMQPValue::LongInt(ENVELOPE_VERSION));
        headers.insert(
            H_RECEIVED_AT.into(),
            AMQPValue::LongString(LongString::from(rfc3339(self.received_at))),
        );
        if let Some(client_id) = &self.client_id {
            headers.insert(H_CLIENT_ID.into(), long_string(client_id));
        }
        if let Some(path) = &self.request_path {
            headers.insert(H_REQUEST_PATH.into(), long_string(path));
        }
        headers.insert(H_HTTP_HEADERS.into(), AMQPValue::FieldTable(http_headers));
        if let Some(facts) = &self.verification {
            headers.insert(verification::HEADER.into(), facts.to_amqp());
        }
        headers
    }

    /// [`Self::amqp_properties`] carrying `headers`.
    pub fn amqp_properties_with(&self, headers: FieldTable) -> BasicProperties {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_message_id(self.message_id.to_string().into())
            .with_timestamp(self.received_at.unix_timestamp().max(0).unsigned_abs())
            .with_type(self.kind.routing_key().into())
            .with_app_id(APP_ID.into())
            .with_headers(headers);
        // AMQP's content-type is a short string; the header table keeps the exact value anyway.
        if let Some(content_type) = self
            .header("content-type")
            .and_then(|ct| ShortString::try_new(ct).ok())
        {
            properties = properties.with_content_type(content_type);
        }
        properties
    }

    /// Reads an envelope back from a delivery's properties and body.
    pub fn from_amqp(properties: &BasicProperties, body: &[u8]) -> Result<Self, EnvelopeError> {
        let headers = properties
            .headers()
            .as_ref()
            .ok_or(EnvelopeError::Missing("headers"))?;
        let table = headers.inner();

        match table.get(H_VERSION) {
            Some(AMQPValue::LongInt(v)) if *v == ENVELOPE_VERSION => {}
            Some(AMQPValue::LongInt(v)) => {
                return Err(EnvelopeError::UnsupportedVersion(i64::from(*v)));
            }
            Some(_) => return Err(malformed(H_VERSION, "not an integer")),
            None => return Err(EnvelopeError::Missing(H_VERSION)),
        }

        let message_id = properties
            .message_id()
            .as_ref()
            .ok_or(EnvelopeError::Missing("message_id"))?;
        let message_id = Uuid::parse_str(message_id.as_str())
            .map_err(|e| malformed("message_id", e.to_string()))?;
        let kind = properties
            .kind()
            .as_ref()
            .ok_or(EnvelopeError::Missing("type"))?;
        let kind = IntakeKind::from_routing_key(kind.as_str())
            .ok_or_else(|| malformed("type", format!("unknown intake kind {kind}")))?;

        let received_at = text(table.get(H_RECEIVED_AT), H_RECEIVED_AT)?
            .ok_or(EnvelopeError::Missing(H_RECEIVED_AT))?;
        let received_at = OffsetDateTime::parse(&received_at, &Rfc3339)
            .map_err(|e| malformed(H_RECEIVED_AT, e.to_string()))?;

        let mut http_headers = Vec::new();
        match table.get(H_HTTP_HEADERS) {
            Some(AMQPValue::FieldTable(t)) => {
                for (name, value) in t.inner() {
                    let value = text(Some(value), H_HTTP_HEADERS)?.unwrap_or_default();
                    http_headers.push((name.to_string(), value));
                }
            }
            Some(_) => return Err(malformed(H_HTTP_HEADERS, "not a table")),
            None => return Err(EnvelopeError::Missing(H_HTTP_HEADERS)),
        }
        let verification = table
            .get(verification::HEADER)
            .map(Verification::from_amqp)
            .transpose()
            .map_err(|error| malformed(verification::HEADER, error.0))?;

        Ok(Self {
            message_id,
            kind,
            received_at,
            client_id: text(table.get(H_CLIENT_ID), H_CLIENT_ID)?,
            request_path: text(table.get(H_REQUEST_PATH), H_REQUEST_PATH)?,
            headers: http_headers,
            body: Bytes::copy_from_slice(body),
            verification,
        })
    }
}

impl IntakeEnvelope {
    /// A command published straight to the intake exchange by another service (the merchant's
    /// payment service publishes `paysafe.track` after Paysafe answered PROCESSING): a plain
    /// JSON body without the ingress's headers. Its `message_id` is kept when it is a UUID,
    /// else derived from the body so a redelivery keeps the same id; the publisher's `app_id`
    /// stands for the client.
    pub fn from_published_command(
        kind: IntakeKind,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Self {
        let message_id = properties
            .message_id()
            .as_ref()
            .and_then(|id| Uuid::parse_str(id.as_str()).ok())
            .unwrap_or_else(|| Uuid::new_v5(&Uuid::NAMESPACE_OID, body));
        let received_at = properties
            .timestamp()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs as i64).ok())
            .unwrap_or_else(OffsetDateTime::now_utc);
        Self {
            message_id,
            kind,
            received_at,
            client_id: properties.app_id().as_ref().map(|id| id.to_string()),
            request_path: None,
            headers: Vec::new(),
            body: Bytes::copy_from_slice(body),
            verification: None,
        }
    }
}

/// RFC 3339 with the offset as `Z`; infallible for any in-range UTC time the ingress produces.
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

fn malformed(name: &'static str, reason: impl Into<String>) -> EnvelopeError {
    EnvelopeError::Malformed {
        name,
        reason: reason.into(),
    }
}

fn text(value: Option<&AMQPValue>, name: &'static str) -> Result<Option<String>, EnvelopeError> {
    match value {
        None => Ok(None),
        Some(AMQPValue::LongString(s)) => String::from_utf8(s.as_bytes().to_vec())
            .map(Some)
            .map_err(|_| malformed(name, "not UTF-8")),
        Some(AMQPValue::ShortString(s)) => Ok(Some(s.to_string())),
        Some(_) => Err(malformed(name, "not a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IntakeEnvelope {
        IntakeEnvelope {
            message_id: Uuid::now_v7(),
            kind: IntakeKind::CorelinkStatusBatch,
            received_at: time::macros::datetime!(2025-11-19 07:15:00.123 UTC),
            client_id: Some("BANK_X".into()),
            request_path: Some("/callbacks/batch-status?x=1".into()),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-nonce".into(), "9a1f3c".into()),
            ],
            body: Bytes::from_static(b"{ \"orders\": [] }"),
            verification: Some(Verification {
                scheme: crate::verification::VerificationScheme::Jws,
                key_id: "bank-x-2025".into(),
                key_sha256: Some(crate::verification::sha256_hex(b"spki")),
                client_cert_sha256: None,
                signed_path: Some("/bank/callbacks/batch-status?x=1".into()),
            }),
        }
    }

    #[test]
    fn round_trips_through_amqp_properties() {
        let envelope = sample();
        let properties = envelope.amqp_properties();
        assert_eq!(*properties.delivery_mode(), Some(PERSISTENT));
        assert_eq!(
            properties.kind().as_ref().map(|k| k.as_str()),
            Some("corelink.status.batch")
        );
        let back = IntakeEnvelope::from_amqp(&properties, &envelope.body).expect("decodes");
        assert_eq!(back, envelope);
        assert_eq!(back.header("X-Nonce"), Some("9a1f3c"));

        let unverified = IntakeEnvelope {
            verification: None,
            ..envelope
        };
        let back = IntakeEnvelope::from_amqp(&unverified.amqp_properties(), &unverified.body);
        assert_eq!(back, Ok(unverified));
    }

    #[test]
    fn a_malformed_verification_header_is_an_error_naming_it() {
        let envelope = sample();
        let mut headers = envelope.amqp_properties().headers().clone().unwrap();
        headers.insert(
            verification::HEADER.into(),
            AMQPValue::LongString("jws".into()),
        );
        let properties = envelope.amqp_properties().with_headers(headers);
        assert!(matches!(
            IntakeEnvelope::from_amqp(&properties, &envelope.body),
            Err(EnvelopeError::Malformed {
                name: verification::HEADER,
                ..
            })
        ));
    }

    #[test]
    fn a_foreign_message_is_an_error_naming_what_is_missing() {
        let err = IntakeEnvelope::from_amqp(&BasicProperties::default(), b"{}").unwrap_err();
        assert_eq!(err, EnvelopeError::Missing("headers"));
        let mut properties = sample().amqp_properties();
        properties = properties.with_type("nope".into());
        assert!(matches!(
            IntakeEnvelope::from_amqp(&properties, b"{}"),
            Err(EnvelopeError::Malformed { name: "type", .. })
        ));
    }

    #[test]
    fn routing_keys_are_the_contract_names() {
        let keys: Vec<_> = IntakeKind::ALL.iter().map(|k| k.routing_key()).collect();
        assert_eq!(
            keys,
            [
                "corelink.status",
                "corelink.status.batch",
                "bnc.account_binding",
                "paysafe.webhook",
                "paysafe.track"
            ]
        );
        for kind in IntakeKind::ALL {
            assert_eq!(IntakeKind::from_routing_key(kind.routing_key()), Some(kind));
        }
    }
}
