//! Corelink: the JWS in `X-Signature`, verified by the ingress's own
//! `verify_request_signature` with the bank key its kid names in the ingress configuration.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use connector_ingress::auth::jws::verify_request_signature;
use connector_ingress::auth::keys::ClientRegistry;
use connector_ingress::config::{ConfigError, Settings as IngressSettings};
use connector_schema::corelink::{SignedRequestClaims, body_sha256};
use connector_schema::evidence::ArchiveEntry;

use super::{Proof, Verdict, recorded};

pub fn prove_corelink(
    entry: &ArchiveEntry,
    settings: &IngressSettings,
) -> Result<Proof, ConfigError> {
    let registry = ClientRegistry::from_settings(&settings.corelink.clients)?;
    let mut details = Vec::new();
    let header = |name: &str| entry.header(name).unwrap_or_default().to_owned();
    let client_id = entry
        .client_id
        .clone()
        .unwrap_or_else(|| header("x-client-id"));
    details.push(("client", client_id.clone()));
    details.push(("signed timestamp", header("x-timestamp")));
    if let Some(certificate) = recorded(entry, "client_cert_sha256") {
        details.push((
            "client certificate sha256 (recorded)",
            certificate.to_owned(),
        ));
    }

    let Some(jws) = entry.signature.as_deref() else {
        return Ok(Proof::not_proven("no X-Signature was archived", details));
    };
    let kid = jws_kid(jws).unwrap_or_default();
    details.push(("key id (kid)", kid.clone()));
    let Some(client) = registry.client(&client_id) else {
        return Ok(Proof::not_proven(
            format!("client `{client_id}` is not in the ingress configuration"),
            details,
        ));
    };
    if let Some(recorded_kid) = recorded(entry, "key_id")
        && recorded_kid != kid
    {
        return Ok(Proof::not_proven(
            format!("the JWS names kid `{kid}`, the ingress recorded `{recorded_kid}`"),
            details,
        ));
    }
    // The key in force then: its fingerprint (computed by the ingress's own key loading) must
    // be the one the ingress recorded.
    let fingerprint = client.key(&kid).map(|key| key.spki_sha256.clone());
    if let Some(fingerprint) = &fingerprint {
        details.push(("key sha256 (configured)", fingerprint.clone()));
    }
    if let Some(expected) = recorded(entry, "key_sha256") {
        details.push(("key sha256 (recorded)", expected.to_owned()));
        if fingerprint.as_deref() != Some(expected) {
            return Ok(Proof::not_proven(
                format!(
                    "key fingerprint mismatch: the configured key `{kid}` has SPKI SHA-256 {}, \
                     the request was verified with {expected}",
                    fingerprint.as_deref().unwrap_or("(no such key configured)")
                ),
                details,
            ));
        }
    }

    let Ok(body) = entry.body() else {
        return Ok(Proof::not_proven(
            "the archived body is not base64",
            details,
        ));
    };
    let digest = body_sha256(&body);
    if digest != entry.body_sha256 {
        return Ok(Proof::not_proven(
            format!(
                "the archived body hashes to {digest}, the recorded body_sha256 is {}",
                entry.body_sha256
            ),
            details,
        ));
    }
    let path = match recorded(entry, "signed_path") {
        Some(path) => path.to_owned(),
        None => format!(
            "{}{}",
            settings.corelink.external_path_prefix,
            entry.request_path.as_deref().unwrap_or_default()
        ),
    };
    details.push(("signed path", path.clone()));
    let claims = SignedRequestClaims {
        method: "POST".into(),
        path,
        client_id: client_id.clone(),
        timestamp: header("x-timestamp"),
        nonce: header("x-nonce"),
        idempotency_key: header("x-idempotency-key"),
        content_type: header("content-type"),
        body_sha256: digest,
    };
    Ok(match verify_request_signature(client, &claims, jws) {
        Ok(kid) => {
            details.push(("signature", format!("verified with key `{kid}`")));
            Proof {
                verdict: Verdict::Proven,
                details,
            }
        }
        Err(error) => Proof::not_proven(format!("signature does not verify: {error}"), details),
    })
}

/// The `kid` of a compact JWS's protected header.
fn jws_kid(jws: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(jws.split('.').next()?).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}
