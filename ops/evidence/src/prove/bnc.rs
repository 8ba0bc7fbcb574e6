//! BNC (SNAP RSA): the partner signs `POST:<path>:<hex SHA-256 of minify(body)>:<timestamp>`.
//! The archive holds a redacted copy of the body (no card token, no account number) and the
//! SHA-256 of the body as sent, so the signature can be re-verified exactly when the body was
//! sent minified (its digest is then the signed one); otherwise it says why it cannot.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::{Padding, Rsa};
use openssl::sign::Verifier;

use connector_ingress::config::{ConfigError, Settings as IngressSettings};
use connector_schema::evidence::ArchiveEntry;

use super::{Proof, Verdict};

pub fn prove_bnc(entry: &ArchiveEntry, settings: &IngressSettings) -> Result<Proof, ConfigError> {
    let header = |name: &str| entry.header(name).unwrap_or_default().to_owned();
    let client_key = header("x-client-key");
    let timestamp = header("x-timestamp");
    let path = entry.request_path.clone().unwrap_or_default();
    let mut details = vec![
        ("partner (X-CLIENT-KEY)", client_key.clone()),
        ("signed timestamp", timestamp.clone()),
    ];
    let Some(partner) = settings
        .bnc
        .partners
        .iter()
        .find(|p| p.client_key == client_key)
    else {
        return Ok(Proof::not_proven(
            format!("partner `{client_key}` is not in the ingress configuration"),
            details,
        ));
    };
    let Ok(signature) = STANDARD.decode(entry.signature.as_deref().unwrap_or_default()) else {
        return Ok(Proof::not_proven("X-SIGNATURE is not base64", details));
    };
    let Ok(digest) = URL_SAFE_NO_PAD.decode(&entry.body_sha256) else {
        return Ok(Proof::not_proven(
            "the recorded body_sha256 is not base64url",
            details,
        ));
    };
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let signed = format!("POST:{path}:{hex}:{timestamp}");
    for (i, file) in partner.public_key_files.iter().enumerate() {
        let at = format!("bnc.partners[].public_key_files[{i}]");
        let pem = std::fs::read(file.relative())
            .map_err(|e| ConfigError::new(&at, format!("cannot read: {e}")))?;
        let key = PKey::public_key_from_pem(&pem)
            .or_else(|_| Rsa::public_key_from_pem_pkcs1(&pem).and_then(PKey::from_rsa))
            .map_err(|e| ConfigError::new(&at, e.to_string()))?;
        let verifies = Verifier::new(MessageDigest::sha256(), &key)
            .and_then(|mut v| {
                v.set_rsa_padding(Padding::PKCS1)?;
                v.verify_oneshot(&signature, signed.as_bytes())
            })
            .unwrap_or(false);
        if verifies {
            details.push(("key", file.relative().display().to_string()));
            details.push((
                "signature",
                "verified (SHA256withRSA over the recorded digest: the body was sent minified)"
                    .into(),
            ));
            return Ok(Proof {
                verdict: Verdict::Proven,
                details,
            });
        }
    }
    Ok(Proof::not_proven(
        "cannot re-verify from the archive: SNAP signs the SHA-256 of the minified original \
         body; the archive keeps a redacted copy (card token and account number removed) and \
         the SHA-256 of the body as sent, which is the signed digest only if the partner sent \
         it minified. No configured key verifies the signature over that digest: the body was \
         sent with whitespace outside strings, or the signature is not the partner's",
        details,
    ))
}
