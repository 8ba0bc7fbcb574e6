//! The ingress's seal on what it accepted (DESIGN.md §2.7: every boundary is a trust boundary).
//!
//! Anyone who may publish to `connector.intake` (the merchant's service publishes `paysafe.track`
//! there) could otherwise put a "bank callback" on the queue, and a quarantine row or a dead
//! letter edited in the database or the broker would be applied as if the bank had sent it. So
//! the ingress seals every envelope that claims an authenticated source (Corelink, BNC, Paysafe
//! webhook): an HMAC-SHA256, under a key only the ingress and the workers hold, over everything
//! the workers act on (message id, kind, client, receive time, request path, headers, body
//! digest, and how the ingress verified it). The workers, and the admin commands that re-publish, apply nothing whose seal is
//! missing or wrong. The seal names its key (`<key id>:<mac>`), so keys rotate without downtime:
//! the workers accept every configured key, the ingress seals with its first.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use figment::value::magic::RelativePathBuf;
use hmac::{Hmac, Mac};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::envelope::{IntakeEnvelope, IntakeKind, rfc3339};

/// The AMQP header that carries the seal.
pub const HEADER: &str = "connector-seal";

/// Domain separation: a MAC of this layout can never be mistaken for another one of ours.
const LAYOUT: &[u8] = b"connector intake seal v1";

/// Starts the verification facts in the MAC input (see `mac_of`).
const VERIFICATION_MARKER: &[u8] = b"verification";

/// A shorter key would make the MAC guessable; 32 bytes is HMAC-SHA256's own block of security.
pub const MIN_KEY_BYTES: usize = 32;

/// One seal key in a configuration (`[[seal.keys]]`): its id, and the secret inline or, better,
/// in a file (a Docker or Kubernetes secret; surrounding whitespace ignored). `Debug` never
/// shows the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealKeySettings {
    /// Named in every seal made with the key: 1..64 of `A-Z a-z 0-9 _ -`.
    pub id: String,
    pub key: Option<String>,
    pub key_file: Option<RelativePathBuf>,
}

impl fmt::Debug for SealKeySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKeySettings")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field(
                "key_file",
                &self.key_file.as_ref().map(|file| file.relative()),
            )
            .finish()
    }
}

/// The `[seal]` section, the same in the ingress's and the workers' configuration: the
/// ingress seals with the first key, the workers accept every one (a rotation lists the new key
/// first in the ingress once every workers process has it).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SealSettings {
    pub keys: Vec<SealKeySettings>,
}

/// A configuration problem, naming the key at fault (relative to `seal.keys[i]`) and never
/// quoting a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {message}")]
pub struct SealConfigError {
    pub at: String,
    pub message: String,
}

/// The keys a process seals with (the first) and accepts (all of them).
#[derive(Clone)]
pub struct SealKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for SealKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SealKeys").field("ids", &ids).finish()
    }
}

/// Why an envelope is not what an ingress sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("no ingress seal")]
    Missing,
    #[error("the seal is not `<key id>:<mac>`")]
    Malformed,
    #[error("the seal names key `{0}`, which is not configured")]
    UnknownKey(String),
    #[error("the seal does not match the message: not what an ingress accepted, or edited since")]
    Mismatch,
}

impl SealError {
    /// The `reason` label of the forged-message counter.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "seal_missing",
            Self::Malformed => "seal_malformed",
            Self::UnknownKey(_) => "seal_unknown_key",
            Self::Mismatch => "seal_mismatch",
        }
    }
}

impl SealKeys {
    /// Reads and checks every key. At least one is required: a process that cannot seal, or
    /// cannot check seals, must not start.
    pub fn from_settings(settings: &[SealKeySettings]) -> Result<Self, SealConfigError> {
        let error = |i: usize, key: &str, message: &str| SealConfigError {
            at: format!("seal.keys[{i}]{key}"),
            message: message.to_owned(),
        };
        if settings.is_empty() {
            return Err(SealConfigError {
                at: "seal.keys".into(),
                message: "at least one key is required: the ingress seals what it accepts and the workers apply only sealed messages".into(),
            });
        }
        let mut keys: Vec<(String, Vec<u8>)> = Vec::with_capacity(settings.len());
        for (i, key) in settings.iter().enumerate() {
            let id_ok = (1..=64).contains(&key.id.len())
                && key
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(error(i, ".id", "must be 1..64 of A-Z a-z 0-9 _ -"));
            }
            if keys.iter().any(|(id, _)| *id == key.id) {
                return Err(error(i, ".id", "is configured twice"));
            }
            let secret = match (&key.key, &key.key_file) {
                (Some(inline), None) => inline.trim().as_bytes().to_vec(),
                (None, Some(file)) => std::fs::read_to_string(file.relative())
                    .map_err(|e| {
                        error(
                            i,
                            ".key_file",
                            &format!("{}: {e}", file.relative().display()),
                        )
                    })?
                    .trim()
                    .as_bytes()
                    .to_vec(),
                _ => return Err(error(i, "", "give exactly one of key and key_file")),
            };
            if secret.len() < MIN_KEY_BYTES {
                return Err(error(
                    i,
                    "",
                    &format!("the key must be at least {MIN_KEY_BYTES} bytes"),
                ));
            }
            keys.push((key.id.clone(), secret));
        }
        Ok(Self { keys })
    }

    /// One key, for tests and tools.
    pub fn single(id: &str, secret: &[u8]) -> Self {
        Self {
            keys: vec![(id.to_owned(), secret.to_vec())],
        }
    }

    /// The seal of `envelope` under the first key.
    pub fn seal(&self, envelope: &IntakeEnvelope) -> String {
        let (id, secret) = &self.keys[0];
        format!("{id}:{}", URL_SAFE_NO_PAD.encode(mac(secret, envelope)))
    }

    /// `envelope`'s AMQP properties with its seal.
    pub fn sealed_properties(&self, envelope: &IntakeEnvelope) -> BasicProperties {
        properties_with_seal(envelope, &self.seal(envelope))
    }

    /// Checks `seal` (as carried) against `envelope`, in constant time.
    pub fn verify(&self, envelope: &IntakeEnvelope, seal: Option<&str>) -> Result<(), SealError> {
        let seal = seal.ok_or(SealError::Missing)?;
        let (id, tag) = seal.split_once(':').ok_or(SealError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| SealError::Malformed)?;
        let (_, secret) = self
            .keys
            .iter()
            .find(|(known, _)| known == id)
            .ok_or_else(|| SealError::UnknownKey(id.to_owned()))?;
        mac_of(secret, envelope)
            .verify_slice(&tag)
            .map_err(|_| SealError::Mismatch)
    }
}

/// Whether envelopes of `kind` must carry a seal: every kind that claims an authenticated
/// source. A `paysafe.track` command comes from the merchant's service, unsealed; what it may
/// do is limited instead (it starts tracking, and never sets a final status or an amount that
/// reaches the ledger).
pub fn required(kind: IntakeKind) -> bool {
    kind != IntakeKind::PaysafeTrack
}

/// The seal a delivery carries, if any.
pub fn of(properties: &BasicProperties) -> Option<String> {
    match properties.headers().as_ref()?.inner().get(HEADER)? {
        AMQPValue::LongString(text) => String::from_utf8(text.as_bytes().to_vec()).ok(),
        AMQPValue::ShortString(text) => Some(text.to_string()),
        _ => None,
    }
}

/// `envelope`'s AMQP properties carrying `seal`: also how a message re-published by an admin
/// command keeps the seal the ingress made (never a new one).
pub fn properties_with_seal(envelope: &IntakeEnvelope, seal: &str) -> BasicProperties {
    let mut headers = envelope.amqp_headers();
    headers.insert(HEADER.into(), AMQPValue::LongString(LongString::from(seal)));
    envelope.amqp_properties_with(headers)
}

fn mac(secret: &[u8], envelope: &IntakeEnvelope) -> Vec<u8> {
    mac_of(secret, envelope).finalize().into_bytes().to_vec()
}

/// The MAC over the envelope's canonical form: each field length-prefixed (no two envelopes
/// share a form), the receive time to the microsecond, headers by lower-case name (AMQP tables
/// come back sorted), the body by its digest.
fn mac_of(secret: &[u8], envelope: &IntakeEnvelope) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    let mut field = |bytes: &[u8]| {
        mac.update(&(bytes.len() as u64).to_be_bytes());
        mac.update(bytes);
    };
    field(LAYOUT);
    field(envelope.message_id.to_string().as_bytes());
    field(envelope.kind.routing_key().as_bytes());
    field(envelope.client_id.as_deref().unwrap_or_default().as_bytes());
    // Microseconds: what PostgreSQL keeps of it, so a quarantined message still verifies.
    let received_at = envelope.received_at;
    let received_at = received_at
        .replace_nanosecond(received_at.microsecond() * 1_000)
        .unwrap_or(received_at);
    field(rfc3339(received_at).as_bytes());
    field(
        envelope
            .request_path
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    );
    let mut headers: Vec<(String, &str)> = envelope
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
        .collect();
    headers.sort();
    field(&(headers.len() as u64).to_be_bytes());
    for (name, value) in &headers {
        field(name.as_bytes());
        field(value.as_bytes());
    }
    field(&Sha256::digest(&envelope.body));
    // Appended only when present, so a message sealed before the facts existed (still queued
    // during an upgrade) verifies unchanged, while stripping or editing them breaks the seal.
    if let Some(facts) = &envelope.verification {
        field(VERIFICATION_MARKER);
        for value in facts.canonical_fields() {
            match value {
                Some(value) => {
                    field(b"+");
                    field(value.as_bytes());
                }
                None => field(b"-"),
            }
        }
    }
    mac
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use uuid::Uuid;

    use super::*;
    use crate::verification::{Verification, VerificationScheme, sha256_hex};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn envelope() -> IntakeEnvelope {
        IntakeEnvelope {
            message_id: Uuid::now_v7(),
            kind: IntakeKind::CorelinkStatus,
            received_at: time::macros::datetime!(2025-11-19 07:15:00.123456 UTC),
            client_id: Some("BANK_X".into()),
            request_path: Some("/callbacks/orders/status".into()),
            headers: vec![
                ("x-nonce".into(), "9a1f3c".into()),
                ("content-type".into(), "application/json".into()),
            ],
            body: Bytes::from_static(b"{\"reference\":\"PAY-1\"}"),
            verification: Some(Verification {
                scheme: VerificationScheme::Jws,
                key_id: "bank-x-2025".into(),
                key_sha256: Some(sha256_hex(b"spki")),
                client_cert_sha256: Some(sha256_hex(b"cert")),
                signed_path: Some("/callbacks/orders/status".into()),
            }),
        }
    }

    #[test]
    fn a_sealed_envelope_verifies_after_crossing_amqp() {
        let keys = SealKeys::single("k1", SECRET);
        let envelope = envelope();
        let properties = keys.sealed_properties(&envelope);
        let back = IntakeEnvelope::from_amqp(&properties, &envelope.body).unwrap();
        assert_eq!(keys.verify(&back, of(&properties).as_deref()), Ok(()));
    }

    #[test]
    fn any_change_breaks_the_seal() {
        let keys = SealKeys::single("k1", SECRET);
        let original = envelope();
        let seal = keys.seal(&original);
        let changes: [fn(&mut IntakeEnvelope); 13] = [
            |e| e.message_id = Uuid::now_v7(),
            |e| e.kind = IntakeKind::PaysafeTrack,
            |e| e.client_id = Some("BANK_Y".into()),
            |e| e.received_at += time::Duration::seconds(1),
            |e| e.request_path = None,
            |e| e.headers[0].1 = "9a1f3d".into(),
            |e| e.body = Bytes::from_static(b"{\"reference\":\"PAY-2\"}"),
            |e| e.verification = None,
            |e| e.verification.as_mut().unwrap().scheme = VerificationScheme::SnapRsa,
            |e| e.verification.as_mut().unwrap().key_id = "bank-x-2024".into(),
            |e| e.verification.as_mut().unwrap().key_sha256 = None,
            |e| e.verification.as_mut().unwrap().client_cert_sha256 = Some(sha256_hex(b"other")),
            // An absent option is not an empty one.
            |e| e.verification.as_mut().unwrap().signed_path = Some(String::new()),
        ];
        for change in changes {
            let mut edited = original.clone();
            change(&mut edited);
            assert_eq!(keys.verify(&edited, Some(&seal)), Err(SealError::Mismatch));
        }
    }

    #[test]
    fn a_message_sealed_before_verification_facts_existed_still_verifies() {
        let keys = SealKeys::single("k1", SECRET);
        let older = IntakeEnvelope {
            verification: None,
            ..envelope()
        };
        let properties = keys.sealed_properties(&older);
        let back = IntakeEnvelope::from_amqp(&properties, &older.body).unwrap();
        assert_eq!(back.verification, None);
        assert_eq!(keys.verify(&back, of(&properties).as_deref()), Ok(()));
        // Facts added to it afterwards are not what the ingress sealed.
        let claimed = IntakeEnvelope {
            verification: envelope().verification,
            ..back
        };
        assert_eq!(
            keys.verify(&claimed, of(&properties).as_deref()),
            Err(SealError::Mismatch)
        );
    }

    #[test]
    fn keys_rotate_and_unknown_or_missing_seals_are_refused() {
        let old = SealKeys::single("old", SECRET);
        let envelope = envelope();
        let sealed_with_old = old.seal(&envelope);
        let both = SealKeys {
            keys: vec![
                ("new".into(), b"fedcba9876543210fedcba9876543210".to_vec()),
                ("old".into(), SECRET.to_vec()),
            ],
        };
        assert_eq!(both.verify(&envelope, Some(&sealed_with_old)), Ok(()));
        assert!(both.seal(&envelope).starts_with("new:"));
        let new_only = SealKeys::single("new", b"fedcba9876543210fedcba9876543210");
        assert_eq!(
            new_only.verify(&envelope, Some(&sealed_with_old)),
            Err(SealError::UnknownKey("old".into()))
        );
        assert_eq!(new_only.verify(&envelope, None), Err(SealError::Missing));
        assert_eq!(
            new_only.verify(&envelope, Some("no-colon")),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn configuration_errors_name_the_key_and_never_the_secret() {
        let settings = |id: &str, key: Option<&str>| SealKeySettings {
            id: id.into(),
            key: key.map(str::to_owned),
            key_file: None,
        };
        let refused = |list: &[SealKeySettings]| SealKeys::from_settings(list).unwrap_err();
        assert_eq!(refused(&[]).at, "seal.keys");
        assert_eq!(
            refused(&[settings("a b", Some("x".repeat(32).as_str()))]).at,
            "seal.keys[0].id"
        );
        let short = refused(&[settings("k", Some("short-secret"))]);
        assert_eq!(short.at, "seal.keys[0]");
        assert!(!short.to_string().contains("short-secret"));
        assert_eq!(refused(&[settings("k", None)]).at, "seal.keys[0]");
        let long = "y".repeat(40);
        assert_eq!(
            refused(&[settings("k", Some(&long)), settings("k", Some(&long))]).at,
            "seal.keys[1].id"
        );
        let shown = format!("{:?}", settings("k", Some(&long)));
        assert!(!shown.contains(&long), "{shown}");
        assert!(SealKeys::from_settings(&[settings("k-1", Some(&long))]).is_ok());
    }
}
