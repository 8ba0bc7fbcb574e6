//! The Paysafe webhook signature (DESIGN.md §5): the `Signature` header is base64 of
//! HMAC-SHA256(key, raw body), checked in constant time against every configured key (several
//! during a rotation).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The webhook signature header (§5): base64 of HMAC-SHA256 over the raw body.
pub const SIGNATURE_HEADER: &str = "Signature";

type HmacSha256 = Hmac<Sha256>;

/// The `Signature` header Paysafe sends: base64 (standard, padded) of HMAC-SHA256(key, body).
pub fn webhook_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature of the raw `body` under any of `keys` (several during a
/// key rotation). The comparison is constant-time (`verify_slice`); a header that is not
/// base64, or no key at all, is simply `false`.
pub fn verify_webhook_signature(keys: &[impl AsRef<[u8]>], body: &[u8], header: &str) -> bool {
    webhook_signature_key(keys, body, header).is_some()
}

/// Which of `keys` (its index) `header` is the signature of the raw `body` under, as
/// [`verify_webhook_signature`] checks it: what the ingress records as the key that verified.
pub fn webhook_signature_key(
    keys: &[impl AsRef<[u8]>],
    body: &[u8],
    header: &str,
) -> Option<usize> {
    let signature = STANDARD.decode(header.trim()).ok()?;
    keys.iter().position(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(key.as_ref()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const VECTORS: &str = include_str!("../../../ingress/tests/vectors/paysafe-webhook.json");

    #[test]
    fn shared_vectors_verify_as_expected() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = file["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 2);
        let mut outcomes = Vec::new();
        for vector in vectors {
            // The verifier is configured with the vector's key; "wrong key" carries the valid
            // signature of the same body, so a verifier holding another key must refuse it.
            let key = vector["hmac_key"].as_str().unwrap();
            let body = vector["body"].as_str().unwrap().as_bytes();
            let header = vector["Signature"].as_str().unwrap();
            let expect = vector["expect"].as_str().unwrap();
            let accepted = verify_webhook_signature(&[key], body, header);
            assert_eq!(accepted, expect == "ACCEPT", "{}", vector["name"]);
            // Signing agrees with the independent implementation byte for byte.
            assert_eq!(
                webhook_signature(key.as_bytes(), body) == header,
                accepted,
                "{}",
                vector["name"]
            );
            outcomes.push((vector["name"].as_str().unwrap(), accepted));
        }
        assert_eq!(outcomes, [("valid", true), ("wrong key", false)]);
    }

    #[test]
    fn signature_rotation_and_garbage_headers() {
        let body = br#"{"eventName":"PAYMENT_COMPLETED","resourceId":"p1"}"#;
        let old = b"old-key".as_slice();
        let new = b"new-key".as_slice();
        let header = webhook_signature(old, body);
        assert!(verify_webhook_signature(&[new, old], body, &header));
        assert!(!verify_webhook_signature(&[new], body, &header));
        let no_keys: [&[u8]; 0] = [];
        assert!(!verify_webhook_signature(&no_keys, body, &header));
        assert!(!verify_webhook_signature(&[old], b"{}", &header));
        assert!(!verify_webhook_signature(&[old], body, "not base64 !!"));
        assert!(!verify_webhook_signature(&[old], body, ""));
        assert!(!verify_webhook_signature(&[old], body, &header[..20]));
        let vec_keys = vec![b"old-key".to_vec()];
        assert!(verify_webhook_signature(&vec_keys, body, &header));
    }
}
