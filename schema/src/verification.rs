//! How the ingress verified an intake message: which scheme, which key (and the fingerprint of
//! the public key), which client certificate, and which path the signature covered.
//!
//! A dispute with a bank can come years later and needs proof of what the bank signed and how
//! we checked it. The body and headers alone do not say which of a client's rotating keys, or
//! which of its certificates, the ingress used; these facts travel with the envelope (one AMQP
//! header, a nested table), are covered by the seal, and the workers record them beside the
//! body. Only public facts are carried: key ids and SHA-256 fingerprints of public keys and
//! certificates, never anything derived from a secret (an HMAC key has an id only).
//!
//! The verification *result* is implied: the ingress enqueues only what verified, so every
//! message that carries these facts was verified with them (the workers record
//! `"result": "verified"`).

use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::{Deserialize, Serialize};

/// The AMQP header carrying the facts: a nested table, like `connector-http-headers`.
pub const HEADER: &str = "connector-verification";

const F_SCHEME: &str = "scheme";
const F_KEY_ID: &str = "key_id";
const F_KEY_SHA256: &str = "key_sha256";
const F_CLIENT_CERT_SHA256: &str = "client_cert_sha256";
const F_SIGNED_PATH: &str = "signed_path";

/// What a recorded verification says of its outcome: the only outcome that reaches a queue.
pub const RESULT_VERIFIED: &str = "verified";

/// The authentication scheme the ingress checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerificationScheme {
    /// Corelink: a JWS (RFC 7515) under one of the bank's public keys, over mTLS.
    Jws,
    /// BNC SNAP: an RSA signature under the partner's public key.
    SnapRsa,
    /// Paysafe webhooks: an HMAC-SHA256 under a shared webhook key.
    PaysafeHmac,
}

impl VerificationScheme {
    pub const ALL: [VerificationScheme; 3] = [Self::Jws, Self::SnapRsa, Self::PaysafeHmac];

    /// The name on the wire and in the audit rows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jws => "jws",
            Self::SnapRsa => "snap_rsa",
            Self::PaysafeHmac => "paysafe_hmac",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// How the ingress verified one request. Present on every message from an authenticated route
/// accepted by a build that records it; absent on `paysafe.track` commands (not the ingress's)
/// and on messages enqueued before it existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub scheme: VerificationScheme,
    /// The key that verified: the JWS `kid` (Corelink), the partner's key id or, without one,
    /// its client key (BNC), the webhook key's id (Paysafe).
    pub key_id: String,
    /// Lower-case hex SHA-256 of the public key's SubjectPublicKeyInfo DER; asymmetric keys
    /// only, never anything derived from an HMAC secret.
    pub key_sha256: Option<String>,
    /// The client certificate's SHA-256 (lower-case hex over its DER), from the TLS handshake
    /// or forwarded by the trusted proxy; `None` where the route has no client certificate.
    pub client_cert_sha256: Option<String>,
    /// The path the signature was checked against, always given where the signature covers a
    /// path (Corelink: the request target with `corelink.external_path_prefix` prepended; BNC:
    /// the SNAP relative URL), so it can differ from `request_path` behind a prefix-stripping
    /// proxy; `None` where the signature covers no path (Paysafe webhooks).
    pub signed_path: Option<String>,
}

impl Verification {
    /// The nested AMQP table carrying the facts (absent options are left out).
    pub fn to_amqp(&self) -> AMQPValue {
        let mut table = FieldTable::default();
        table.insert(F_SCHEME.into(), long_string(self.scheme.as_str()));
        table.insert(F_KEY_ID.into(), long_string(&self.key_id));
        let optional = [
            (F_KEY_SHA256, &self.key_sha256),
            (F_CLIENT_CERT_SHA256, &self.client_cert_sha256),
            (F_SIGNED_PATH, &self.signed_path),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                table.insert(name.into(), long_string(value));
            }
        }
        AMQPValue::FieldTable(table)
    }

    /// Reads the facts back from the header's value. Anything unexpected (not a table, a
    /// missing scheme or key id, an unknown scheme or field, a non-text value) is an error:
    /// a header someone edited must not be half-read.
    pub fn from_amqp(value: &AMQPValue) -> Result<Self, MalformedVerification> {
        let AMQPValue::FieldTable(table) = value else {
            return Err(malformed("not a table"));
        };
        let mut scheme = None;
        let mut key_id = None;
        let mut key_sha256 = None;
        let mut client_cert_sha256 = None;
        let mut signed_path = None;
        for (name, value) in table.inner() {
            let text = text(value, name.as_str())?;
            let slot = match name.as_str() {
                F_SCHEME => &mut scheme,
                F_KEY_ID => &mut key_id,
                F_KEY_SHA256 => &mut key_sha256,
                F_CLIENT_CERT_SHA256 => &mut client_cert_sha256,
                F_SIGNED_PATH => &mut signed_path,
                other => return Err(malformed(format!("unknown field `{other}`"))),
            };
            *slot = Some(text);
        }
        let scheme = scheme.ok_or_else(|| malformed("no `scheme`"))?;
        let scheme = VerificationScheme::parse(&scheme)
            .ok_or_else(|| malformed(format!("unknown scheme `{scheme}`")))?;
        let key_id = key_id.ok_or_else(|| malformed("no `key_id`"))?;
        for (name, digest) in [
            (F_KEY_SHA256, &key_sha256),
            (F_CLIENT_CERT_SHA256, &client_cert_sha256),
        ] {
            if digest.as_deref().is_some_and(|d| !is_sha256_hex(d)) {
                return Err(malformed(format!(
                    "`{name}` is not a lower-case hex SHA-256"
                )));
            }
        }
        Ok(Self {
            scheme,
            key_id,
            key_sha256,
            client_cert_sha256,
            signed_path,
        })
    }

    /// The audit record (`received_messages.verification`, `quarantined_messages.verification`):
    /// the facts plus the implied result.
    pub fn to_audit_json(&self) -> serde_json::Value {
        serde_json::json!({
            "scheme": self.scheme,
            "key_id": self.key_id,
            "key_sha256": self.key_sha256,
            "client_cert_sha256": self.client_cert_sha256,
            "signed_path": self.signed_path,
            "result": RESULT_VERIFIED,
        })
    }

    /// Reads an audit record back (a quarantine release rebuilds the envelope from its row).
    /// The `result` member is checked, not carried: a record that says anything but
    /// `verified` was not written by the workers.
    pub fn from_audit_json(value: &serde_json::Value) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Record {
            #[serde(flatten)]
            facts: Verification,
            result: String,
        }
        // serde cannot deny unknown members beside `flatten`: they are checked by hand.
        let members = value.as_object().ok_or("not a JSON object")?;
        if let Some(unknown) = members.keys().find(|k| {
            ![
                F_SCHEME,
                F_KEY_ID,
                F_KEY_SHA256,
                F_CLIENT_CERT_SHA256,
                F_SIGNED_PATH,
                "result",
            ]
            .contains(&k.as_str())
        }) {
            return Err(format!("unknown member `{unknown}`"));
        }
        let record: Record = Record::deserialize(value).map_err(|e| e.to_string())?;
        if record.result != RESULT_VERIFIED {
            return Err(format!("result is `{}`, not `verified`", record.result));
        }
        Ok(record.facts)
    }

    /// The seal's canonical form of the facts: every field in a fixed order, an absent option
    /// distinct from an empty one.
    pub(crate) fn canonical_fields(&self) -> [Option<&str>; 5] {
        [
            Some(self.scheme.as_str()),
            Some(self.key_id.as_str()),
            self.key_sha256.as_deref(),
            self.client_cert_sha256.as_deref(),
            self.signed_path.as_deref(),
        ]
    }
}

/// Lower-case hex of a SHA-256 digest.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Why a `connector-verification` header cannot be read (the envelope reports it as a
/// malformed header of that name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedVerification(pub String);

fn malformed(reason: impl Into<String>) -> MalformedVerification {
    MalformedVerification(reason.into())
}

fn text(value: &AMQPValue, field: &str) -> Result<String, MalformedVerification> {
    match value {
        AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec())
            .map_err(|_| malformed(format!("`{field}` is not UTF-8"))),
        AMQPValue::ShortString(s) => Ok(s.to_string()),
        _ => Err(malformed(format!("`{field}` is not a string"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corelink() -> Verification {
        Verification {
            scheme: VerificationScheme::Jws,
            key_id: "bank-x-2025".into(),
            key_sha256: Some(sha256_hex(b"spki")),
            client_cert_sha256: Some(sha256_hex(b"cert")),
            signed_path: Some("/bank/callbacks/orders/status".into()),
        }
    }

    #[test]
    fn round_trips_through_the_amqp_table_and_the_audit_record() {
        let minimal = Verification {
            scheme: VerificationScheme::PaysafeHmac,
            key_id: "webhook-1".into(),
            key_sha256: None,
            client_cert_sha256: None,
            signed_path: None,
        };
        for facts in [corelink(), minimal] {
            assert_eq!(Verification::from_amqp(&facts.to_amqp()), Ok(facts.clone()));
            let record = facts.to_audit_json();
            assert_eq!(record["result"], "verified");
            assert_eq!(Verification::from_audit_json(&record), Ok(facts));
        }
        assert_eq!(corelink().to_audit_json()["scheme"], "jws");
    }

    #[test]
    fn a_malformed_header_is_an_error_naming_it() {
        let edit = |name: &str, value: AMQPValue| {
            let AMQPValue::FieldTable(mut table) = corelink().to_amqp() else {
                unreachable!()
            };
            table.insert(name.into(), value);
            Verification::from_amqp(&AMQPValue::FieldTable(table))
        };
        let refused = [
            Verification::from_amqp(&long_string("jws")),
            edit("scheme", long_string("none")),
            edit("key_id", AMQPValue::LongInt(7)),
            edit("key_sha256", long_string("ABCDEF")),
            edit("extra", long_string("x")),
            Verification::from_amqp(&AMQPValue::FieldTable(FieldTable::default())),
        ];
        for result in refused {
            assert!(
                matches!(result, Err(MalformedVerification(_))),
                "{result:?}"
            );
        }
    }

    #[test]
    fn an_audit_record_that_is_not_a_verified_one_is_refused() {
        let mut record = corelink().to_audit_json();
        record["result"] = "failed".into();
        assert!(Verification::from_audit_json(&record).is_err());
        let mut record = corelink().to_audit_json();
        record["secret"] = "x".into();
        assert!(Verification::from_audit_json(&record).is_err());
        assert!(Verification::from_audit_json(&serde_json::json!("jws")).is_err());
    }

    #[test]
    fn fingerprints_are_lower_case_hex_sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
