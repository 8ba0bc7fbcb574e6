//! The claims a bank signs for each Corelink request (DESIGN.md §3.1): the JWS payload whose
//! members must equal the request exactly, and the body hash it carries. The signer (tests, the
//! `corelink-sign` tool) and the ingress's verifier both build it from here, so they cannot
//! disagree on a member's name or order.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The JWS payload a bank signs for each request (§3.1). Every member must equal the request
/// exactly; extra members are ignored by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequestClaims {
    pub method: String,
    /// The request target as the bank sent it: path plus `?query` if any.
    pub path: String,
    pub client_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub idempotency_key: String,
    pub content_type: String,
    /// [`body_sha256`] of the exact body bytes.
    pub body_sha256: String,
}

impl SignedRequestClaims {
    /// The members in the order §3.1 lists them, as (name, value) pairs, so the verifier and
    /// the signer walk the same list.
    pub fn members(&self) -> [(&'static str, &str); 8] {
        [
            ("method", &self.method),
            ("path", &self.path),
            ("client_id", &self.client_id),
            ("timestamp", &self.timestamp),
            ("nonce", &self.nonce),
            ("idempotency_key", &self.idempotency_key),
            ("content_type", &self.content_type),
            ("body_sha256", &self.body_sha256),
        ]
    }
}

/// Base64url (no padding) of SHA-256 over the exact body bytes, as signed in `body_sha256`.
pub fn body_sha256(body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_hash_is_base64url_without_padding() {
        // SHA-256("") = e3b0c442...; base64url of it, no '='.
        assert_eq!(
            body_sha256(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
