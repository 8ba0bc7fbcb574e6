//! Fingerprints of public keys: lower-case hex SHA-256 of the key's SubjectPublicKeyInfo DER.
//!
//! Every message records which key verified it (the evidence a bank dispute needs). A key id
//! alone is a name a configuration can reuse; the SPKI fingerprint names the key itself, the
//! same whichever form (PEM, JWK, JWK set) the key was configured in, and anyone holding the
//! bank's public key can recompute it (`openssl pkey -pubin -outform DER | sha256sum`). It is
//! computed once, when a key is loaded.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

use connector_schema::verification::sha256_hex;

/// The fingerprint of a public key.
pub fn of_key(key: &PKey<Public>) -> Result<String, String> {
    let der = key
        .public_key_to_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(sha256_hex(&der))
}

/// The fingerprint of a SubjectPublicKeyInfo PEM (`-----BEGIN PUBLIC KEY-----`), of the SPKI
/// as written: an RSA key restricted to RSASSA-PSS keeps its own algorithm identifier, so its
/// fingerprint differs from the same modulus as a JWK (which cannot express the restriction).
pub fn of_pem(pem: &[u8]) -> Result<String, String> {
    let key = PKey::public_key_from_pem(pem).map_err(|e| format!("not a public key PEM: {e}"))?;
    of_key(&key)
}

/// The fingerprint of a public JWK: RSA (`n`, `e`), EC P-256 (`x`, `y`) or OKP Ed25519/Ed448
/// (`x`), the key types the JWS algorithms we accept use.
pub fn of_jwk(jwk: &Jwk) -> Result<String, String> {
    let member = |name: &str| match jwk.parameter(name) {
        Some(serde_json::Value::String(value)) => URL_SAFE_NO_PAD
            .decode(value)
            .map_err(|_| format!("member `{name}` is not base64url")),
        _ => Err(format!("member `{name}` is missing")),
    };
    let crv = jwk.curve().unwrap_or_default();
    let key = match (jwk.key_type(), crv) {
        ("RSA", _) => {
            let (n, e) = (member("n")?, member("e")?);
            let rsa = BigNum::from_slice(&n)
                .and_then(|n| Ok((n, BigNum::from_slice(&e)?)))
                .and_then(|(n, e)| Rsa::from_public_components(n, e))
                .map_err(|e| format!("not an RSA public key: {e}"))?;
            PKey::from_rsa(rsa).map_err(|e| e.to_string())?
        }
        ("EC", "P-256") => {
            let (x, y) = (member("x")?, member("y")?);
            let point = [&[0x04][..], &x, &y].concat();
            let ec = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)
                .and_then(|group| {
                    let mut ctx = BigNumContext::new()?;
                    let point = EcPoint::from_bytes(&group, &point, &mut ctx)?;
                    EcKey::from_public_key(&group, &point)
                })
                .map_err(|e| format!("not a P-256 public key: {e}"))?;
            PKey::from_ec_key(ec).map_err(|e| e.to_string())?
        }
        ("OKP", "Ed25519" | "Ed448") => {
            let id = if crv == "Ed25519" {
                Id::ED25519
            } else {
                Id::ED448
            };
            PKey::public_key_from_raw_bytes(&member("x")?, id)
                .map_err(|e| format!("not an {crv} public key: {e}"))?
        }
        (kty, crv) => return Err(format!("no fingerprint for key type `{kty}` `{crv}`")),
    };
    of_key(&key)
}

#[cfg(test)]
mod tests {
    use josekit::jws::{ES256, EdDSA, RS256};

    use super::*;

    /// The JWK and the PEM of one key have one fingerprint, and it is the SHA-256 of the DER
    /// inside the PEM (what `openssl pkey -pubin -outform DER | sha256sum` prints).
    #[test]
    fn a_key_has_one_fingerprint_whatever_its_form() {
        let es = ES256.generate_key_pair().unwrap();
        let rs = RS256.generate_key_pair(2048).unwrap();
        let ed = EdDSA
            .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
            .unwrap();
        let pairs = [
            (es.to_jwk_public_key(), es.to_pem_public_key()),
            (rs.to_jwk_public_key(), rs.to_pem_public_key()),
            (ed.to_jwk_public_key(), ed.to_pem_public_key()),
        ];
        for (jwk, pem) in pairs {
            let from_jwk = of_jwk(&jwk).unwrap();
            let text = String::from_utf8(pem.clone()).unwrap();
            let base64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(base64)
                .unwrap();
            assert_eq!(from_jwk, sha256_hex(&der), "{}", jwk.key_type());
            assert_eq!(of_pem(&pem).unwrap(), from_jwk, "{}", jwk.key_type());
        }
    }

    #[test]
    fn a_key_without_its_members_has_no_fingerprint() {
        let jwk = Jwk::from_bytes(br#"{"kty":"EC","crv":"P-256","x":"AAAA"}"#).unwrap();
        assert!(of_jwk(&jwk).unwrap_err().contains("`y`"));
        let jwk = Jwk::from_bytes(br#"{"kty":"oct","k":"c2VjcmV0"}"#).unwrap();
        assert!(of_jwk(&jwk).is_err());
        assert!(of_pem(b"not a pem").is_err());
    }
}
