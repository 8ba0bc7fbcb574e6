//! The bank side of §3.1: signs a request the way the ingress verifies it. Used by the
//! `corelink-sign` tool that integrators run, by the local demo and by the tests. Signing goes
//! through josekit's own serializer, so the tests cross-check our hand-written verifier
//! against an independent encoder (as the interoperability vectors do against jwcrypto).

use anyhow::{Context as _, bail};
use josekit::jwk::{Jwk, KeyPair as _};
use josekit::jws::{ES256, EdDSA, JwsHeader, JwsSigner, PS256, RS256};
use rand::RngCore as _;
use time::OffsetDateTime;

use connector_schema::corelink::{SignedRequestClaims, body_sha256};
use connector_schema::envelope::rfc3339;

use crate::auth::key_decoding::one_at_a_time;
use crate::auth::keys::JwsAlgorithm;

/// The content type every Corelink request carries.
pub const JSON: &str = "application/json";

/// A bank's signing key, bound to its client id.
pub struct RequestSigner {
    client_id: String,
    signer: Box<dyn JwsSigner>,
}

impl std::fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("RequestSigner")
            .field("client_id", &self.client_id)
            .field("kid", &self.signer.key_id())
            .finish_non_exhaustive()
    }
}

/// The six headers of a signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub client_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub idempotency_key: String,
    pub content_type: String,
    pub signature: String,
}

impl SignedHeaders {
    pub fn pairs(&self) -> [(&'static str, &str); 6] {
        [
            ("Content-Type", &self.content_type),
            ("X-Client-Id", &self.client_id),
            ("X-Timestamp", &self.timestamp),
            ("X-Nonce", &self.nonce),
            ("X-Idempotency-Key", &self.idempotency_key),
            ("X-Signature", &self.signature),
        ]
    }
}

impl RequestSigner {
    /// From a private JWK that names its `kid` and `alg`.
    pub fn from_private_jwk(client_id: &str, jwk: &Jwk) -> anyhow::Result<Self> {
        if jwk.key_id().is_none() {
            bail!("the private JWK has no `kid`");
        }
        let alg = jwk
            .algorithm()
            .and_then(JwsAlgorithm::from_name)
            .context("the private JWK has no `alg` among ES256, PS256, RS256, EdDSA")?;
        let signer = one_at_a_time(|| -> Result<Box<dyn JwsSigner>, josekit::JoseError> {
            Ok(match alg {
                JwsAlgorithm::Es256 => Box::new(ES256.signer_from_jwk(jwk)?),
                JwsAlgorithm::Ps256 => Box::new(PS256.signer_from_jwk(jwk)?),
                JwsAlgorithm::Rs256 => Box::new(RS256.signer_from_jwk(jwk)?),
                JwsAlgorithm::EdDsa => Box::new(EdDSA.signer_from_jwk(jwk)?),
            })
        })?;
        Ok(Self {
            client_id: client_id.to_owned(),
            signer,
        })
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The compact JWS over `claims`.
    pub fn sign_claims(&self, claims: &SignedRequestClaims) -> anyhow::Result<String> {
        let payload = serde_json::to_vec(claims)?;
        Ok(josekit::jws::serialize_compact(
            &payload,
            &JwsHeader::new(),
            self.signer.as_ref(),
        )?)
    }

    /// Signs a POST of `body` to `path` (the request target as it will be sent).
    pub fn sign(
        &self,
        path: &str,
        body: &[u8],
        idempotency_key: &str,
        at: OffsetDateTime,
        nonce: &str,
    ) -> anyhow::Result<SignedHeaders> {
        let claims = SignedRequestClaims {
            method: "POST".into(),
            path: path.into(),
            client_id: self.client_id.clone(),
            timestamp: rfc3339(at.replace_nanosecond(0).unwrap_or(at)),
            nonce: nonce.into(),
            idempotency_key: idempotency_key.into(),
            content_type: JSON.into(),
            body_sha256: body_sha256(body),
        };
        let signature = self.sign_claims(&claims)?;
        Ok(SignedHeaders {
            client_id: claims.client_id,
            timestamp: claims.timestamp,
            nonce: claims.nonce,
            idempotency_key: claims.idempotency_key,
            content_type: claims.content_type,
            signature,
        })
    }
}

/// 128 random bits, hex: a nonce that never repeats in practice.
pub fn random_nonce() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key pair for `alg`, both halves carrying `kid` and `alg`: (private, public). The
/// private JWK is complete as RFC 7518 §6 and RFC 8037 define it (EC: `crv x y d`, OKP:
/// `crv x d`, RSA: `n e d p q dp dq qi`), so any JOSE library loads it.
pub fn generate_key_pair(alg: JwsAlgorithm, kid: &str) -> anyhow::Result<(Jwk, Jwk)> {
    let (mut private, mut public) = match alg {
        JwsAlgorithm::Es256 => {
            let pair = ES256.generate_key_pair()?;
            (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
        }
        JwsAlgorithm::Ps256 => {
            let pair = PS256.generate_key_pair(2048)?;
            (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
        }
        JwsAlgorithm::Rs256 => {
            let pair = RS256.generate_key_pair(2048)?;
            (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
        }
        JwsAlgorithm::EdDsa => {
            let pair = EdDSA.generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)?;
            (pair.to_jwk_key_pair(), pair.to_jwk_public_key())
        }
    };
    for jwk in [&mut private, &mut public] {
        jwk.set_key_id(kid);
        jwk.set_algorithm(alg.name());
        // josekit adds `use` to some key types only; the members RFC 7517 requires, plus
        // `kid` and `alg`, are what every library writes and reads.
        jwk.set_parameter("use", None)?;
    }
    Ok((private, public))
}

/// How a signing tool prints a request: one `Name: value` line per header, or a ready-to-paste
/// curl command POSTing the body file.
pub fn render_request(
    curl: bool,
    url: &str,
    path: &str,
    tls_options: &str,
    headers: &[(&str, &str)],
    body_file: &std::path::Path,
) -> String {
    if !curl {
        return headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\n"))
            .collect();
    }
    let mut command = format!("curl -sS -i -X POST '{}{path}'", url.trim_end_matches('/'));
    if !tls_options.is_empty() {
        command.push_str(&format!(" \\\n  {tls_options}"));
    }
    for (name, value) in headers {
        command.push_str(&format!(" \\\n  -H '{name}: {value}'"));
    }
    command.push_str(&format!(
        " \\\n  --data-binary @'{}'\n",
        body_file.display()
    ));
    command
}

/// Writes a private key file readable by its owner only (0600 on Unix).
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)
}
