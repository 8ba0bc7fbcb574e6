//! BNC's SNAP request signature (DESIGN.md §4): SHA256withRSA (RSASSA-PKCS1-v1_5) over
//! `POST:<path as sent>:<hex SHA-256 of the minified body>:<X-TIMESTAMP>`, checked against the
//! public keys configured for the partner that `X-CLIENT-KEY` names ([`partners`]).
//!
//! The string to sign, the header and body rules and the SNAP answers are in
//! [`connector_schema::bnc`]; this module adds the keys, the clock window and the RSA check.
//! The route (`routes::bnc`) runs them in the order the contract answers.

use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Padding;
use openssl::sign::{Signer, Verifier};
use time::OffsetDateTime;

use connector_schema::bnc::{SnapHeaders, SnapResponse, string_to_sign};

pub mod partners;

use partners::BncPartners;

/// Why a request is not authentic. `Display` is the reason for `Unauthorized. <reason>`: it
/// says what failed without echoing the request or any key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapAuthError {
    #[error("Unknown client key")]
    UnknownClientKey,
    /// `X-TIMESTAMP` is further from our clock than the tolerance, either way: a stale
    /// (possibly replayed) or future-dated request.
    #[error("Timestamp outside the allowed window")]
    TimestampOutOfWindow,
    #[error("Signature is not base64")]
    SignatureNotBase64,
    #[error("Invalid signature")]
    InvalidSignature,
}

impl SnapAuthError {
    /// The 401 answer.
    pub fn response(&self) -> SnapResponse {
        SnapResponse::unauthorized(&self.to_string())
    }
}

impl From<SnapAuthError> for SnapResponse {
    fn from(error: SnapAuthError) -> Self {
        error.response()
    }
}

/// Authenticates a request whose headers [`validate_headers`] accepted: [`check_headers`],
/// then [`verify_signature`].
pub fn verify(
    partners: &BncPartners,
    headers: &SnapHeaders<'_>,
    path_as_sent: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(), SnapAuthError> {
    check_headers(partners, headers, now, tolerance)?;
    verify_signature(partners, headers, path_as_sent, body).map(|_| ())
}

/// What authentication can refuse before the body has arrived, cheapest first: the client key,
/// then the timestamp window (which refuses a captured request replayed later before any RSA
/// work), then a signature that is not base64. `now` comes from the injected clock.
pub fn check_headers(
    partners: &BncPartners,
    headers: &SnapHeaders<'_>,
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(), SnapAuthError> {
    if partners.keys(headers.client_key).is_none() {
        return Err(SnapAuthError::UnknownClientKey);
    }
    if (now - headers.sent_at).unsigned_abs() > tolerance {
        return Err(SnapAuthError::TimestampOutOfWindow);
    }
    STANDARD
        .decode(headers.signature)
        .map_err(|_| SnapAuthError::SignatureNotBase64)?;
    Ok(())
}

/// The signature over the body, against each of the partner's keys (any one may match, so a
/// partner can rotate). `path_as_sent` is the request path exactly as received, `body` the
/// exact body bytes. Returns the SPKI SHA-256 fingerprint of the key that verified.
///
/// A body that cannot be minified (an unterminated string) has no string to sign, so no
/// signature can be valid for it: [`SnapAuthError::InvalidSignature`].
pub fn verify_signature<'p>(
    partners: &'p BncPartners,
    headers: &SnapHeaders<'_>,
    path_as_sent: &str,
    body: &[u8],
) -> Result<&'p str, SnapAuthError> {
    let mut keys = partners
        .keys(headers.client_key)
        .ok_or(SnapAuthError::UnknownClientKey)?;
    let signature = STANDARD
        .decode(headers.signature)
        .map_err(|_| SnapAuthError::SignatureNotBase64)?;
    let signed = string_to_sign("POST", path_as_sent, body, headers.timestamp)
        .map_err(|_| SnapAuthError::InvalidSignature)?;
    keys.find(|key| rsa_sha256_verifies(&key.key, signed.as_bytes(), &signature))
        .map(|key| key.spki_sha256.as_str())
        .ok_or(SnapAuthError::InvalidSignature)
}

/// RSASSA-PKCS1-v1_5 with SHA-256. Any OpenSSL error (such as a signature of the wrong
/// length) is simply "does not verify".
fn rsa_sha256_verifies(key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let Ok(mut verifier) = Verifier::new(MessageDigest::sha256(), key) else {
        return false;
    };
    verifier.set_rsa_padding(Padding::PKCS1).is_ok()
        && verifier.verify_oneshot(signature, message).unwrap_or(false)
}

/// Signs `string_to_sign` as a BNC partner would: base64 of SHA256withRSA (PKCS#1 v1.5) with
/// the PEM private key (`PRIVATE KEY` or `RSA PRIVATE KEY`). For the tests, the local run's
/// example request and the integrators' tools; the connector itself never signs.
pub fn sign(private_key_pem: &[u8], string_to_sign: &str) -> anyhow::Result<String> {
    let key =
        crate::auth::key_decoding::one_at_a_time(|| PKey::private_key_from_pem(private_key_pem))
            .context("not a PEM private key")?;
    if key.id() != Id::RSA {
        bail!("not an RSA private key ({:?})", key.id());
    }
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.set_rsa_padding(Padding::PKCS1)?;
    let signature = signer.sign_oneshot_to_vec(string_to_sign.as_bytes())?;
    Ok(STANDARD.encode(signature))
}

#[cfg(test)]
pub(crate) mod tests;
