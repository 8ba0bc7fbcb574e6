//! Paysafe webhooks: `Signature` is base64(HMAC-SHA256(key, raw body)) with a shared secret,
//! so only the holder of that key can re-verify, and only with the key given explicitly. The
//! report names the key the ingress recorded (`key_id`: the key's configured id, or its
//! position in the configuration for a key without one), so the operator knows which to give.

use connector_ingress::auth::hmac::WebhookKeys;
use connector_schema::corelink::body_sha256;
use connector_schema::evidence::ArchiveEntry;

use super::{Proof, Verdict, recorded};

pub fn prove_paysafe(entry: &ArchiveEntry, key: Option<&[u8]>) -> Proof {
    let mut details = Vec::new();
    if let Some(key_id) = recorded(entry, "key_id") {
        details.push(("key id (recorded)", key_id.to_owned()));
    }
    let Some(key) = key else {
        return Proof::not_proven(
            "Paysafe webhooks are signed with a shared HMAC secret, not a Paysafe key: \
             give it with --paysafe-key-file to re-verify",
            details,
        );
    };
    let Ok(body) = entry.body() else {
        return Proof::not_proven("the archived body is not base64", details);
    };
    if body_sha256(&body) != entry.body_sha256 {
        return Proof::not_proven(
            "the archived body does not hash to the recorded body_sha256",
            details,
        );
    }
    let signature = entry.signature.as_deref().unwrap_or_default();
    if WebhookKeys::new([key]).verify(&body, signature) {
        details.push((
            "signature",
            "HMAC-SHA256 verified with the given key".into(),
        ));
        Proof {
            verdict: Verdict::Proven,
            details,
        }
    } else {
        Proof::not_proven("signature does not verify with the given key", details)
    }
}
