//! BNC's SNAP request signature (DESIGN.md §4): SHA256withRSA (RSASSA-PKCS1-v1_5) over
//! `POST:<path as sent>:<hex SHA-256 of the minified body>:<X-TIMESTAMP>`, checked against the
//! public keys configured for the partner that `X-CLIENT-KEY` names.
//!
//! The string to sign, the header and body rules and the SNAP answers are in
//! [`connector_schema::bnc`]; this module adds the keys, the clock window and the RSA check.
//! [`check_request`] runs the whole sequence in the order the route should use.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use figment::value::magic::RelativePathBuf;
use openssl::hash::MessageDigest;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{Signer, Verifier};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use connector_schema::bnc::{
    AccountBindingCallback, SnapFieldError, SnapHeaders, SnapResponse, parse_account_binding,
    string_to_sign, validate_headers,
};

use crate::config::ConfigError;

/// The route BNC calls unless configured otherwise.
pub const DEFAULT_PATH: &str = "/callbacks/bnc/account-binding";

/// RSA keys shorter than this are refused: 2048 bits is the floor of current guidance
/// (NIST SP 800-131A) and what SNAP partners issue.
pub const MIN_RSA_BITS: u32 = 2048;

/// The `[bnc]` configuration section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BncSettings {
    /// The route's path. It is also what partners sign, so it must be the path they call; a
    /// reverse proxy that rewrites the path breaks every signature.
    pub path: String,
    /// Accepted distance between `X-TIMESTAMP` and our clock, either way.
    pub timestamp_tolerance_secs: u64,
    /// The partners allowed to call, by `X-CLIENT-KEY`. None: the route answers 401 to all.
    pub partners: Vec<BncPartner>,
}

impl Default for BncSettings {
    fn default() -> Self {
        Self {
            path: DEFAULT_PATH.into(),
            timestamp_tolerance_secs: 300,
            partners: Vec::new(),
        }
    }
}

impl BncSettings {
    pub fn timestamp_tolerance(&self) -> Duration {
        Duration::from_secs(self.timestamp_tolerance_secs)
    }

    /// Checks what the types cannot express (errors name `bnc.<key>`). The key files are read
    /// and checked by [`BncPartners::from_settings`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') || self.path.contains(['?', '#', ' ']) {
            return Err(ConfigError::new(
                "bnc.path",
                "must be an absolute path without query, such as /callbacks/bnc/account-binding",
            ));
        }
        if self.timestamp_tolerance_secs == 0 {
            return Err(ConfigError::new(
                "bnc.timestamp_tolerance_secs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// One partner allowed to call the BNC callback.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BncPartner {
    /// The `X-CLIENT-KEY` it sends (1..32 visible ASCII characters).
    pub client_key: String,
    /// Its RSA public keys, PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`), one per file; several at
    /// once while it rotates. Relative paths resolve against the configuration file's folder,
    /// like every other key file.
    pub public_key_files: Vec<RelativePathBuf>,
}

/// One loaded public key; `source` (a file name or a label) is what errors and logs show.
struct PartnerKey {
    source: String,
    key: PKey<Public>,
}

/// The configured partners and their RSA public keys, by client key.
#[derive(Default)]
pub struct BncPartners {
    partners: HashMap<String, Vec<PartnerKey>>,
}

impl fmt::Debug for BncPartners {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Which keys, never the key material.
        let mut map = f.debug_map();
        for (client_key, keys) in &self.partners {
            let sources: Vec<&str> = keys.iter().map(|k| k.source.as_str()).collect();
            map.entry(client_key, &sources);
        }
        map.finish()
    }
}

impl BncPartners {
    /// Reads every configured key file; an error names the configuration key and the file.
    pub fn from_settings(settings: &BncSettings) -> Result<Self, ConfigError> {
        let mut partners = Self::default();
        for (i, partner) in settings.partners.iter().enumerate() {
            let at = format!("bnc.partners[{i}]");
            partners.check_client_key(&partner.client_key, &at)?;
            if partner.public_key_files.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.public_key_files"),
                    "needs at least one key file",
                ));
            }
            let mut keys = Vec::with_capacity(partner.public_key_files.len());
            for (j, file) in partner.public_key_files.iter().enumerate() {
                let path = file.relative();
                let source = path.display().to_string();
                let fail = |message: String| {
                    ConfigError::new(
                        format!("{at}.public_key_files[{j}]"),
                        format!("{source}: {message}"),
                    )
                };
                let pem = std::fs::read(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
                let key = load_public_key(&pem).map_err(fail)?;
                keys.push(PartnerKey { source, key });
            }
            partners.partners.insert(partner.client_key.clone(), keys);
        }
        Ok(partners)
    }

    /// Builds the partners from PEM text, for tests and tools: `(client key, [pem, ...])`.
    pub fn from_pems<K, P>(
        partners: impl IntoIterator<Item = (K, Vec<P>)>,
    ) -> Result<Self, ConfigError>
    where
        K: Into<String>,
        P: AsRef<[u8]>,
    {
        let mut loaded = Self::default();
        for (i, (client_key, pems)) in partners.into_iter().enumerate() {
            let client_key = client_key.into();
            let at = format!("partners[{i}]");
            loaded.check_client_key(&client_key, &at)?;
            if pems.is_empty() {
                return Err(ConfigError::new(&at, "needs at least one key"));
            }
            let mut keys = Vec::with_capacity(pems.len());
            for (j, pem) in pems.iter().enumerate() {
                let source = format!("{client_key} key #{j}");
                let key = load_public_key(pem.as_ref())
                    .map_err(|m| ConfigError::new(format!("{at}.keys[{j}]"), m))?;
                keys.push(PartnerKey { source, key });
            }
            loaded.partners.insert(client_key, keys);
        }
        Ok(loaded)
    }

    fn check_client_key(&self, client_key: &str, at: &str) -> Result<(), ConfigError> {
        if !connector_schema::validation::is_visible_ascii(
            client_key,
            connector_schema::bnc::MAX_CLIENT_KEY_CHARS,
        ) {
            return Err(ConfigError::new(
                format!("{at}.client_key"),
                "must be 1..32 visible ASCII characters (the X-CLIENT-KEY header's limit)",
            ));
        }
        if self.partners.contains_key(client_key) {
            return Err(ConfigError::new(
                format!("{at}.client_key"),
                format!("`{client_key}` is configured twice"),
            ));
        }
        Ok(())
    }

    pub fn contains(&self, client_key: &str) -> bool {
        self.partners.contains_key(client_key)
    }

    pub fn len(&self) -> usize {
        self.partners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.partners.is_empty()
    }
}

/// Parses one RSA public key from PEM: SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
/// (`BEGIN RSA PUBLIC KEY`). The messages never quote the file's content.
fn load_public_key(pem: &[u8]) -> Result<PKey<Public>, String> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("PRIVATE KEY-----") {
        return Err("is a private key; configure the partner's public key only".into());
    }
    let key = if text.contains("-----BEGIN RSA PUBLIC KEY-----") {
        Rsa::public_key_from_pem_pkcs1(pem)
            .and_then(PKey::from_rsa)
            .map_err(|_| "is not a valid PEM `RSA PUBLIC KEY`".to_owned())?
    } else if text.contains("-----BEGIN PUBLIC KEY-----") {
        PKey::public_key_from_pem(pem)
            .map_err(|_| "is not a valid PEM `PUBLIC KEY` (SubjectPublicKeyInfo)".to_owned())?
    } else {
        return Err("holds no PEM `PUBLIC KEY` or `RSA PUBLIC KEY` block".into());
    };
    if key.id() != Id::RSA {
        return Err(format!(
            "is not an RSA key ({:?}); BNC signs with SHA256withRSA",
            key.id()
        ));
    }
    if key.bits() < MIN_RSA_BITS {
        return Err(format!(
            "is a {}-bit RSA key; at least {MIN_RSA_BITS} bits are required",
            key.bits()
        ));
    }
    Ok(key)
}

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

/// Authenticates a request whose headers [`validate_headers`] accepted.
///
/// Order: the client key, then the timestamp window (cheap, and it refuses a captured request
/// replayed later before spending any RSA work on it), then the signature against each of the
/// partner's keys (any one may match, so a partner can rotate). `path_as_sent` is the request
/// path exactly as received, `body` the exact body bytes; `now` comes from the injected clock.
///
/// A body that cannot be minified (an unterminated string) has no string to sign, so no
/// signature can be valid for it: [`SnapAuthError::InvalidSignature`].
pub fn verify(
    partners: &BncPartners,
    headers: &SnapHeaders<'_>,
    path_as_sent: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(), SnapAuthError> {
    let keys = partners
        .partners
        .get(headers.client_key)
        .ok_or(SnapAuthError::UnknownClientKey)?;
    if (now - headers.sent_at).unsigned_abs() > tolerance {
        return Err(SnapAuthError::TimestampOutOfWindow);
    }
    let signature = STANDARD
        .decode(headers.signature)
        .map_err(|_| SnapAuthError::SignatureNotBase64)?;
    let signed = string_to_sign("POST", path_as_sent, body, headers.timestamp)
        .map_err(|_| SnapAuthError::InvalidSignature)?;
    if keys
        .iter()
        .any(|key| rsa_sha256_verifies(&key.key, signed.as_bytes(), &signature))
    {
        Ok(())
    } else {
        Err(SnapAuthError::InvalidSignature)
    }
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

/// Why [`check_request`] refused a request: a field problem (400) or an authentication
/// failure (401). Kept apart so the route can count and log them differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapRejection {
    #[error(transparent)]
    Field(#[from] SnapFieldError),
    #[error("Unauthorized. {0}")]
    Auth(#[from] SnapAuthError),
}

impl SnapRejection {
    /// The SNAP answer (and, through it, the HTTP status).
    pub fn response(&self) -> SnapResponse {
        match self {
            Self::Field(error) => error.response(),
            Self::Auth(error) => error.response(),
        }
    }
}

/// The whole check of one callback, in the order the route should answer:
///
/// 1. the headers' presence and format (400, [`validate_headers`]);
/// 2. authentication (401, [`verify`]): before the body is judged, so that only the partner
///    learns anything about our body rules, and a forged request costs no parsing;
/// 3. the body (400, [`parse_account_binding`]).
///
/// `header` looks a header up case-insensitively (`|name| request.headers().get(name)`).
pub fn check_request<'a, V>(
    partners: &BncPartners,
    header: impl Fn(&str) -> Option<&'a V>,
    path_as_sent: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(SnapHeaders<'a>, AccountBindingCallback), SnapRejection>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let headers = validate_headers(header)?;
    verify(partners, &headers, path_as_sent, body, now, tolerance)?;
    let callback = parse_account_binding(body)?;
    Ok((headers, callback))
}

/// Signs `string_to_sign` as a BNC partner would: base64 of SHA256withRSA (PKCS#1 v1.5) with
/// the PEM private key (`PRIVATE KEY` or `RSA PRIVATE KEY`). For the tests, the local run's
/// example request and the integrators' tools; the connector itself never signs.
pub fn sign(private_key_pem: &[u8], string_to_sign: &str) -> anyhow::Result<String> {
    let key = PKey::private_key_from_pem(private_key_pem).context("not a PEM private key")?;
    if key.id() != Id::RSA {
        bail!("not an RSA private key ({:?})", key.id());
    }
    let mut signer = Signer::new(MessageDigest::sha256(), &key)?;
    signer.set_rsa_padding(Padding::PKCS1)?;
    let signature = signer.sign_oneshot_to_vec(string_to_sign.as_bytes())?;
    Ok(STANDARD.encode(signature))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use time::macros::datetime;

    use super::*;

    const PATH: &str = "/callbacks/bnc/account-binding";
    const TIMESTAMP: &str = "2022-09-06T13:00:00+07:00";
    const TOLERANCE: Duration = Duration::from_secs(300);
    const BODY: &str = r#"{ "accountCurrency": "IDR", "accountNo": "585945******2348",
  "accountTransactionLimit": 500000.00,
  "additionalInfo": { "userId": "8881701", "token": "c9fead3d790f41d4819456ebc13f2910", "bindStatus": "1" },
  "partnerReferenceNo": "BEL2210170001" }"#;

    fn now() -> OffsetDateTime {
        datetime!(2022-09-06 13:01:00 +07:00)
    }

    /// (private PEM, public SPKI PEM); generating RSA keys is slow, so two are shared.
    fn key_pair(which: usize) -> &'static (Vec<u8>, Vec<u8>) {
        static KEYS: OnceLock<Vec<(Vec<u8>, Vec<u8>)>> = OnceLock::new();
        &KEYS.get_or_init(|| {
            (0..2)
                .map(|_| {
                    let rsa = Rsa::generate(2048).unwrap();
                    (
                        rsa.private_key_to_pem().unwrap(),
                        rsa.public_key_to_pem().unwrap(),
                    )
                })
                .collect()
        })[which]
    }

    fn partners(public_pems: &[&[u8]]) -> BncPartners {
        BncPartners::from_pems([("BNC_PARTNER_1", public_pems.to_vec())]).unwrap()
    }

    fn snap_headers<'a>(signature: &'a str, timestamp: &'a str) -> SnapHeaders<'a> {
        SnapHeaders {
            timestamp,
            sent_at: OffsetDateTime::parse(
                timestamp,
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap(),
            client_key: "BNC_PARTNER_1",
            signature,
            external_id: "77778042022091500001",
            channel_id: "95221",
        }
    }

    fn signed(private: &[u8], path: &str, body: &[u8], timestamp: &str) -> String {
        sign(
            private,
            &string_to_sign("POST", path, body, timestamp).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_breaks_it() {
        let (private, public) = key_pair(0);
        let partners = partners(&[public]);
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let headers = snap_headers(&signature, TIMESTAMP);
        assert_eq!(
            verify(&partners, &headers, PATH, BODY.as_bytes(), now(), TOLERANCE),
            Ok(())
        );
        // Whitespace outside strings is not signed.
        let compact = connector_schema::bnc::minify(BODY.as_bytes()).unwrap();
        assert_eq!(
            verify(&partners, &headers, PATH, &compact, now(), TOLERANCE),
            Ok(())
        );

        // Another path, a re-serialised amount, a changed string.
        let bad = Err(SnapAuthError::InvalidSignature);
        let other_path = "/callbacks/bnc/other";
        assert_eq!(
            verify(
                &partners,
                &headers,
                other_path,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            bad
        );
        for (from, to) in [
            ("500000.00", "500000.0"),
            ("500000.00", "5e5"),
            ("500000.00", "500000"),
            ("\"1\"", "\" 1\""),
        ] {
            let changed = BODY.replace(from, to);
            assert_eq!(
                verify(
                    &partners,
                    &headers,
                    PATH,
                    changed.as_bytes(),
                    now(),
                    TOLERANCE
                ),
                bad,
                "{to}"
            );
        }
        // A body without a string to sign.
        assert_eq!(
            verify(&partners, &headers, PATH, b"{\"a", now(), TOLERANCE),
            bad
        );
        // Another timestamp in the header than the one signed (still inside the window).
        let later = "2022-09-06T13:00:01+07:00";
        assert_eq!(
            verify(
                &partners,
                &snap_headers(&signature, later),
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            bad
        );
        // The same instant written differently is another string to sign.
        let utc = "2022-09-06T06:00:00Z";
        assert_eq!(
            verify(
                &partners,
                &snap_headers(&signature, utc),
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            bad
        );
    }

    #[test]
    fn a_wrong_key_or_an_unknown_partner_fails() {
        let (private, _) = key_pair(0);
        let (_, other_public) = key_pair(1);
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let headers = snap_headers(&signature, TIMESTAMP);
        assert_eq!(
            verify(
                &partners(&[other_public]),
                &headers,
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            Err(SnapAuthError::InvalidSignature)
        );
        let mut unknown = headers.clone();
        unknown.client_key = "SOMEONE_ELSE";
        assert_eq!(
            verify(
                &partners(&[other_public]),
                &unknown,
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            Err(SnapAuthError::UnknownClientKey)
        );
    }

    #[test]
    fn two_keys_for_one_partner_during_rotation() {
        let (old_private, old_public) = key_pair(0);
        let (new_private, new_public) = key_pair(1);
        let both = partners(&[old_public, new_public]);
        for private in [old_private, new_private] {
            let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
            assert_eq!(
                verify(
                    &both,
                    &snap_headers(&signature, TIMESTAMP),
                    PATH,
                    BODY.as_bytes(),
                    now(),
                    TOLERANCE
                ),
                Ok(())
            );
        }
        // Once the old key is removed, its signatures stop verifying.
        let signature = signed(old_private, PATH, BODY.as_bytes(), TIMESTAMP);
        assert_eq!(
            verify(
                &partners(&[new_public]),
                &snap_headers(&signature, TIMESTAMP),
                PATH,
                BODY.as_bytes(),
                now(),
                TOLERANCE
            ),
            Err(SnapAuthError::InvalidSignature)
        );
    }

    #[test]
    fn the_timestamp_window_is_inclusive_both_ways_and_checked_before_the_signature() {
        let (private, public) = key_pair(0);
        let partners = partners(&[public]);
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let headers = snap_headers(&signature, TIMESTAMP);
        let sent = datetime!(2022-09-06 13:00:00 +07:00);
        for (now, ok) in [
            (sent + time::Duration::seconds(300), true),
            (sent - time::Duration::seconds(300), true),
            (sent + time::Duration::seconds(301), false),
            (sent - time::Duration::seconds(301), false),
            (sent + time::Duration::days(1), false),
        ] {
            let expected = if ok {
                Ok(())
            } else {
                Err(SnapAuthError::TimestampOutOfWindow)
            };
            assert_eq!(
                verify(&partners, &headers, PATH, BODY.as_bytes(), now, TOLERANCE),
                expected,
                "{now}"
            );
        }
        // A stale request is refused as stale even when its signature is garbage.
        let garbage = snap_headers("AAAA", TIMESTAMP);
        assert_eq!(
            verify(
                &partners,
                &garbage,
                PATH,
                BODY.as_bytes(),
                sent + time::Duration::hours(1),
                TOLERANCE
            ),
            Err(SnapAuthError::TimestampOutOfWindow)
        );
        assert_eq!(
            verify(&partners, &garbage, PATH, BODY.as_bytes(), now(), TOLERANCE),
            Err(SnapAuthError::InvalidSignature),
            "base64 of the wrong length is simply invalid"
        );
    }

    #[test]
    fn a_signature_that_does_not_decode_is_not_base64() {
        let (_, public) = key_pair(0);
        for bad in ["abc", "ab=c", "@@@@", "YWJj\n"] {
            assert_eq!(
                verify(
                    &partners(&[public]),
                    &snap_headers(bad, TIMESTAMP),
                    PATH,
                    BODY.as_bytes(),
                    now(),
                    TOLERANCE
                ),
                Err(SnapAuthError::SignatureNotBase64),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn check_request_answers_in_order_headers_authentication_body() {
        let (private, public) = key_pair(0);
        let partners = partners(&[public]);
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let mut map: HashMap<&str, String> = HashMap::from([
            ("X-TIMESTAMP", TIMESTAMP.to_owned()),
            ("X-CLIENT-KEY", "BNC_PARTNER_1".to_owned()),
            ("X-SIGNATURE", signature),
            ("X-EXTERNAL-ID", "77778042022091500001".to_owned()),
            ("CHANNEL-ID", "95221".to_owned()),
        ]);
        let run = |map: &HashMap<&str, String>, body: &[u8]| {
            check_request(
                &partners,
                |name| map.get(name).map(String::as_str),
                PATH,
                body,
                now(),
                TOLERANCE,
            )
            .map(|(headers, callback)| (headers.external_id.to_owned(), callback))
            .map_err(|rejection| rejection.response())
        };
        let (external_id, callback) = run(&map, BODY.as_bytes()).unwrap();
        assert_eq!(external_id, "77778042022091500001");
        assert_eq!(callback.account_transaction_limit.as_str(), "500000.00");

        // A signed body that breaks the contract is 400, once authenticated.
        let invalid = r#"{"partnerReferenceNo":"BEL2210170001"}"#;
        let mut signed_invalid = map.clone();
        signed_invalid.insert(
            "X-SIGNATURE",
            signed(private, PATH, invalid.as_bytes(), TIMESTAMP),
        );
        assert_eq!(
            run(&signed_invalid, invalid.as_bytes()),
            Err(SnapResponse::invalid_mandatory("accountNo"))
        );
        // The same body unsigned is 401: strangers learn nothing about the body rules.
        assert_eq!(
            run(&map, invalid.as_bytes()),
            Err(SnapResponse::unauthorized("Invalid signature"))
        );
        map.insert("X-CLIENT-KEY", "NOBODY".into());
        let unknown = run(&map, BODY.as_bytes()).unwrap_err();
        assert_eq!(unknown.http_status(), 401);
        assert_eq!(unknown.response_message, "Unauthorized. Unknown client key");
        map.remove("CHANNEL-ID");
        assert_eq!(
            run(&map, BODY.as_bytes()),
            Err(SnapResponse::invalid_mandatory("CHANNEL-ID"))
        );
    }

    #[test]
    fn keys_are_checked_when_loaded() {
        let (private, public) = key_pair(0);
        // PKCS#1 `RSA PUBLIC KEY` is accepted like SPKI.
        let rsa = Rsa::public_key_from_pem(public).unwrap();
        let pkcs1 = rsa.public_key_to_pem_pkcs1().unwrap();
        assert!(
            std::str::from_utf8(&pkcs1)
                .unwrap()
                .contains("BEGIN RSA PUBLIC KEY")
        );
        let partners = BncPartners::from_pems([("P", vec![pkcs1])]).unwrap();
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let mut headers = snap_headers(&signature, TIMESTAMP);
        headers.client_key = "P";
        assert_eq!(
            verify(&partners, &headers, PATH, BODY.as_bytes(), now(), TOLERANCE),
            Ok(())
        );

        let error = |pem: &[u8]| {
            BncPartners::from_pems([("P", vec![pem.to_vec()])])
                .unwrap_err()
                .message
        };
        let message = error(private);
        assert!(message.contains("private key"), "{message}");
        let small = Rsa::generate(1024).unwrap().public_key_to_pem().unwrap();
        let message = error(&small);
        assert!(message.contains("1024-bit"), "{message}");
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let message = error(&ec.public_key_to_pem().unwrap());
        assert!(message.contains("not an RSA key"), "{message}");
        let ed = PKey::generate_ed25519()
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        assert!(error(&ed).contains("not an RSA key"));
        let message = error(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
        assert!(message.contains("not a valid PEM"), "{message}");
        assert!(!message.contains("AAAA"), "no key material in errors");
        assert!(error(b"hello").contains("no PEM"));

        let twice =
            BncPartners::from_pems([("P", vec![public.clone()]), ("P", vec![public.clone()])]);
        assert!(twice.unwrap_err().message.contains("configured twice"));
        let long = BncPartners::from_pems([("K".repeat(33), vec![public.clone()])]);
        assert_eq!(long.unwrap_err().key, "partners[0].client_key");
        let none = BncPartners::from_pems([("P", Vec::<Vec<u8>>::new())]);
        assert!(none.is_err());
        assert!(
            !format!("{partners:?}").contains("MII"),
            "Debug shows no key"
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API, not ours
    fn settings_load_key_files_relative_to_the_configuration() {
        use figment::providers::{Format as _, Toml};

        let (_, public) = key_pair(0);
        let (_, other) = key_pair(1);
        figment::Jail::expect_with(|jail| {
            jail.create_dir("keys")?;
            std::fs::write(jail.directory().join("keys/old.pem"), public)
                .map_err(|e| e.to_string())?;
            std::fs::write(jail.directory().join("keys/new.pem"), other)
                .map_err(|e| e.to_string())?;
            jail.create_file(
                "bnc.toml",
                r#"
                timestamp_tolerance_secs = 120
                [[partners]]
                client_key = "BNC_PARTNER_1"
                public_key_files = ["keys/old.pem", "keys/new.pem"]
                "#,
            )?;
            let settings: BncSettings = figment::Figment::from(Toml::file("bnc.toml")).extract()?;
            settings.validate().map_err(|e| e.to_string())?;
            assert_eq!(settings.path, DEFAULT_PATH);
            assert_eq!(settings.timestamp_tolerance(), Duration::from_secs(120));
            let partners = BncPartners::from_settings(&settings).map_err(|e| e.to_string())?;
            assert_eq!(partners.len(), 1);
            assert!(partners.contains("BNC_PARTNER_1"));
            assert!(format!("{partners:?}").contains("keys/new.pem"));

            jail.create_file(
                "missing.toml",
                "[[partners]]\nclient_key = \"P\"\npublic_key_files = [\"keys/none.pem\"]\n",
            )?;
            let settings: BncSettings =
                figment::Figment::from(Toml::file("missing.toml")).extract()?;
            let error = BncPartners::from_settings(&settings).unwrap_err();
            assert_eq!(error.key, "bnc.partners[0].public_key_files[0]");
            assert!(error.message.contains("none.pem"), "{error}");

            jail.create_file("typo.toml", "tolerance = 5\n")?;
            assert!(
                figment::Figment::from(Toml::file("typo.toml"))
                    .extract::<BncSettings>()
                    .is_err()
            );
            Ok(())
        });
        let defaults = BncSettings::default();
        defaults.validate().unwrap();
        let mut bad = defaults.clone();
        bad.path = "callbacks".into();
        assert_eq!(bad.validate().unwrap_err().key, "bnc.path");
        let mut bad = defaults;
        bad.timestamp_tolerance_secs = 0;
        assert_eq!(
            bad.validate().unwrap_err().key,
            "bnc.timestamp_tolerance_secs"
        );
    }

    #[test]
    fn sign_refuses_what_is_not_an_rsa_private_key() {
        let (_, public) = key_pair(0);
        assert!(sign(public, "x").is_err());
        let ec = PKey::generate_ed25519()
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        assert!(sign(&ec, "x").is_err());
    }
}
