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

use crate::auth::keys::{BankClient, JwsAlgorithm};

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
    let expected = expected.members();
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| SignatureError::MalformedPayload)?;
    let signed = signed_claims(&payload, &expected).ok_or(SignatureError::MalformedPayload)?;
    for ((member, value), signed) in expected.iter().zip(signed) {
        match signed {
            None => return Err(SignatureError::MissingClaim(member)),
            Some(Claim::Text(signed)) if signed == *value => {}
            Some(_) => return Err(SignatureError::ClaimMismatch(member)),
        }
    }
    Ok(kid.clone())
}

/// The payload's members named in `expected`, in its order, as a `serde_json::Map` would hold
/// them (for a repeated name, the last occurrence), without building the map: the other
/// members are parsed as strictly (numbers in range, valid strings, nesting limit) and
/// dropped. `None` if the payload is not one JSON object.
fn signed_claims<'a>(
    payload: &'a [u8],
    expected: &[(&'static str, &str); 8],
) -> Option<[Option<Claim<'a>>; 8]> {
    use serde::de::DeserializeSeed as _;
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let claims = ClaimsSeed(expected).deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    Some(claims)
}

/// One JSON value: a string (borrowed unless it holds escapes), or anything else, which never
/// matches a claim.
enum Claim<'a> {
    Text(std::borrow::Cow<'a, str>),
    Other,
}

struct ClaimsSeed<'e, 'v>(&'e [(&'static str, &'v str); 8]);

impl<'de> serde::de::DeserializeSeed<'de> for ClaimsSeed<'_, '_> {
    type Value = [Option<Claim<'de>>; 8];

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ClaimsSeed<'_, '_> {
    type Value = [Option<Claim<'de>>; 8];

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut claims: [Option<Claim<'de>>; 8] = Default::default();
        while let Some(name) = map.next_key::<Claim<'de>>()? {
            let value = map.next_value::<Claim<'de>>()?;
            let index = match &name {
                Claim::Text(name) => self.0.iter().position(|(member, _)| member == name),
                Claim::Other => None,
            };
            if let Some(index) = index {
                claims[index] = Some(value);
            }
        }
        Ok(claims)
    }
}

impl<'de> serde::Deserialize<'de> for Claim<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ClaimVisitor)
    }
}

/// Visits any value the way `serde_json::Value` does (so the same documents are refused),
/// keeping only strings.
struct ClaimVisitor;

impl<'de> serde::de::Visitor<'de> for ClaimVisitor {
    type Value = Claim<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Claim::Text(std::borrow::Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Claim::Text(std::borrow::Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Claim::Text(std::borrow::Cow::Owned(v)))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Claim::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Claim::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Claim::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Claim::Other)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Claim::Other)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Claim<'de>>()?.is_some() {}
        Ok(Claim::Other)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<Claim<'de>, Claim<'de>>()?.is_some() {}
        Ok(Claim::Other)
    }
}

fn decode_object(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> SignedRequestClaims {
        SignedRequestClaims {
            method: "POST".into(),
            path: "/p".into(),
            client_id: "BANK_X".into(),
            timestamp: "t".into(),
            nonce: "n".into(),
            idempotency_key: "k".into(),
            content_type: "application/json".into(),
            body_sha256: "h".into(),
        }
    }

    /// What the comparison made of `payload` with a `serde_json::Map`, as before.
    fn with_map(payload: &str) -> Result<(), SignatureError> {
        let payload: Map<String, Value> = match serde_json::from_str(payload) {
            Ok(Value::Object(map)) => map,
            _ => return Err(SignatureError::MalformedPayload),
        };
        for (member, value) in expected().members() {
            match payload.get(member) {
                None => return Err(SignatureError::MissingClaim(member)),
                Some(Value::String(signed)) if signed == value => {}
                Some(_) => return Err(SignatureError::ClaimMismatch(member)),
            }
        }
        Ok(())
    }

    fn with_claims(payload: &str) -> Result<(), SignatureError> {
        let expected = expected();
        let expected = expected.members();
        let signed =
            signed_claims(payload.as_bytes(), &expected).ok_or(SignatureError::MalformedPayload)?;
        for ((member, value), signed) in expected.iter().zip(signed) {
            match signed {
                None => return Err(SignatureError::MissingClaim(member)),
                Some(Claim::Text(signed)) if signed == *value => {}
                Some(_) => return Err(SignatureError::ClaimMismatch(member)),
            }
        }
        Ok(())
    }

    #[test]
    fn the_claims_are_read_as_a_json_map_would_read_them() {
        let good = r#""method":"POST","path":"/p","client_id":"BANK_X","timestamp":"t","nonce":"n","idempotency_key":"k","content_type":"application/json","body_sha256":"h""#;
        let cases = [
            format!("{{{good}}}"),
            format!(r#"{{{good},"extra":[1,{{"a":null}},true,-2.5e3,"x"]}}"#),
            format!(r#"{{{good},"nonce":"other"}}"#),
            format!(r#"{{"nonce":"other",{good}}}"#),
            format!(r#"{{{good},"path":"\/p"}}"#),
            format!(r#"{{{good},"path":"\u002fq"}}"#),
            format!(r#"{{{good},"method":1}}"#),
            format!(r#"{{{good},"big":1e400}}"#),
            format!(r#"{{{good}}} x"#),
            format!("[{{{good}}}]"),
            format!(
                r#"{{{good},"deep":{}{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            r#"{"method":"POST"}"#.to_owned(),
            "null".to_owned(),
            "{".to_owned(),
        ];
        for case in &cases {
            assert_eq!(with_claims(case), with_map(case), "{case}");
        }
        assert_eq!(with_claims(&cases[0]), Ok(()));
        assert_eq!(with_claims(&cases[4]), Ok(()), "escapes are decoded");
    }
}
