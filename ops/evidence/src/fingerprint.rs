//! The fingerprint of a public key as the ingress records it in `verification.key_sha256`:
//! lower-case hex SHA-256 of its SubjectPublicKeyInfo DER. Comparing it proves that the key
//! used today to re-verify is the very key that was in force when the request arrived.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use josekit::jwk::Jwk;
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

use connector_schema::evidence::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("the JWK has no usable `{0}`")]
    Member(&'static str),
    #[error("unsupported key type `{0}`")]
    KeyType(String),
    #[error("not a public key: {0}")]
    Key(#[from] openssl::error::ErrorStack),
}

/// Hex SHA-256 of the SPKI DER of a public JWK (EC P-256, RSA, OKP Ed25519).
pub fn spki_sha256_of_jwk(jwk: &Jwk) -> Result<String, FingerprintError> {
    let member = |name: &'static str| -> Result<Vec<u8>, FingerprintError> {
        jwk.parameter(name)
            .and_then(|v| v.as_str())
            .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
            .ok_or(FingerprintError::Member(name))
    };
    let key: PKey<Public> = match jwk.key_type() {
        "EC" => {
            let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            let mut ctx = BigNumContext::new()?;
            let point = [&[0x04][..], &member("x")?, &member("y")?].concat();
            let point = EcPoint::from_bytes(&group, &point, &mut ctx)?;
            PKey::from_ec_key(EcKey::from_public_key(&group, &point)?)?
        }
        "RSA" => {
            let n = BigNum::from_slice(&member("n")?)?;
            let e = BigNum::from_slice(&member("e")?)?;
            PKey::from_rsa(Rsa::from_public_components(n, e)?)?
        }
        "OKP" => PKey::public_key_from_raw_bytes(&member("x")?, Id::ED25519)?,
        other => return Err(FingerprintError::KeyType(other.to_owned())),
    };
    Ok(sha256_hex(&key.public_key_to_der()?))
}

/// Hex SHA-256 of the SPKI DER of a PEM public key (`PUBLIC KEY` or `RSA PUBLIC KEY`).
pub fn spki_sha256_of_pem(pem: &[u8]) -> Result<String, FingerprintError> {
    let key = match PKey::public_key_from_pem(pem) {
        Ok(key) => key,
        Err(_) => PKey::from_rsa(Rsa::public_key_from_pem_pkcs1(pem)?)?,
    };
    Ok(sha256_hex(&key.public_key_to_der()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jwk_and_its_pem_have_one_fingerprint() {
        let ec =
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap();
        let key = PKey::from_ec_key(ec.clone()).unwrap();
        let pem = key.public_key_to_pem().unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        let jwk = Jwk::from_bytes(
            serde_json::json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x.to_vec_padded(32).unwrap()),
                "y": URL_SAFE_NO_PAD.encode(y.to_vec_padded(32).unwrap()),
            })
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            spki_sha256_of_jwk(&jwk).unwrap(),
            spki_sha256_of_pem(&pem).unwrap()
        );
    }

    #[test]
    fn an_unusable_jwk_is_an_error() {
        let jwk = Jwk::from_bytes(r#"{"kty":"EC","crv":"P-256","x":"AA"}"#).unwrap();
        assert!(spki_sha256_of_jwk(&jwk).is_err());
        let jwk = Jwk::from_bytes(r#"{"kty":"oct","k":"AA"}"#).unwrap();
        assert!(matches!(
            spki_sha256_of_jwk(&jwk),
            Err(FingerprintError::KeyType(_))
        ));
    }
}
