//! Verification of the Corelink request signature (DESIGN.md §3.1): a compact JWS whose
//! payload restates the request (method, path, headers, body hash).
//!
//! The header is parsed here rather than by a JOSE library's generic path, because the
//! contract is stricter than RFC 7515: `kid` is mandatory and selects a key of the calling
//! bank only, the algorithm must be the one registered for that key, and `crit` or
//! `b64: false` are refused outright. The cryptography itself is josekit's.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use connector_schema::corelink::SignedRequestClaims;

use crate::keys::{BankClient, JwsAlgorithm};

/// Why a signature is refused. Every variant is answered `401 SIGNATURE_INVALID`; the message
/// tells the bank's integrator what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("X-Signature is not a JWS in compact serialization (header.payload.signature)")]
    NotCompact,
    #[error("the JWS protected header is not a base64url-encoded JSON object")]
    MalformedHeader,
    #[error("the JWS algorithm `{0}` is not accepted (ES256, PS256, RS256 or EdDSA)")]
    AlgorithmNotAllowed(String),
    #[error("the JWS protected header has no `kid`")]
    MissingKid,
    #[error("the JWS protected header parameter `{0}` is not accepted")]
    ForbiddenParameter(&'static str),
    #[error("no key with kid `{0}` is registered for this client")]
    UnknownKid(String),
    #[error("key `{kid}` is registered for {registered}, the JWS says {used}")]
    AlgorithmMismatch {
        kid: String,
        registered: JwsAlgorithm,
        used: JwsAlgorithm,
    },
    #[error("the signature does not verify with key `{0}`")]
    BadSignature(String),
    #[error("the JWS payload is not a base64url-encoded JSON object")]
    MalformedPayload,
    #[error("the signed payload has no `{0}` member")]
    MissingClaim(&'static str),
    #[error("the signed `{0}` does not match the request")]
    ClaimMismatch(&'static str),
}

/// Verifies `jws` as `client`'s signature of the request described by `expected`.
/// Returns the `kid` of the key that verified it.
pub fn verify_request_signature(
    client: &BankClient,
    expected: &SignedRequestClaims,
    jws: &str,
) -> Result<String, SignatureError> {
    let mut parts = jws.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::NotCompact);
    };
    // An empty payload would be a detached JWS: the request must be restated in the payload.
    if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(SignatureError::NotCompact);
    }

    let header = decode_object(header_b64).ok_or(SignatureError::MalformedHeader)?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => JwsAlgorithm::from_name(name)
            .ok_or_else(|| SignatureError::AlgorithmNotAllowed(name.clone()))?,
        Some(other) => return Err(SignatureError::AlgorithmNotAllowed(other.to_string())),
        None => return Err(SignatureError::AlgorithmNotAllowed("(none)".into())),
    };
    if header.contains_key("crit") {
        return Err(SignatureError::ForbiddenParameter("crit"));
    }
    // RFC 7797's unencoded payload; `b64: true` is the default and harmless.
    if header
        .get("b64")
        .is_some_and(|b64| b64 != &Value::Bool(true))
    {
        return Err(SignatureError::ForbiddenParameter("b64"));
    }
    let kid = match header.get("kid") {
        Some(Value::String(kid)) if !kid.is_empty() => kid,
        _ => return Err(SignatureError::MissingKid),
    };
    let key = client
        .key(kid)
        .ok_or_else(|| SignatureError::UnknownKid(kid.clone()))?;
    if key.alg != alg {
        return Err(SignatureError::AlgorithmMismatch {
            kid: kid.clone(),
            registered: key.alg,
            used: alg,
        });
    }

    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| SignatureError::BadSignature(kid.clone()))?;
    let signing_input_len = header_b64.len() + 1 + payload_b64.len();
    if !key.verify(&jws.as_bytes()[..signing_input_len], &signature) {
        return Err(SignatureError::BadSignature(kid.clone()));
    }

    // Only now, with the bank's signature proven, compare what it signed with what it sent.
    let payload = decode_object(payload_b64).ok_or(SignatureError::MalformedPayload)?;
    for (member, value) in expected.members() {
        match payload.get(member) {
            None => return Err(SignatureError::MissingClaim(member)),
            Some(Value::String(signed)) if signed == value => {}
            Some(_) => return Err(SignatureError::ClaimMismatch(member)),
        }
    }
    Ok(kid.clone())
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}
