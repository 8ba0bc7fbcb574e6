//! The banks allowed to push callbacks and their public signature keys, loaded once from
//! configuration and looked up by `X-Client-Id`, then by the JWS `kid`.
//!
//! Each key is pinned to one algorithm: a signature is accepted only with the algorithm the
//! bank registered for that key, which closes algorithm-confusion attacks (RFC 8725 §3.1).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use josekit::jwk::{Jwk, JwkSet};
use josekit::jws::{ES256, EdDSA, JwsVerifier, PS256, RS256};
use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Public};

use crate::auth::key_decoding::one_at_a_time;
use crate::config::{ClientSettings, ConfigError, KeySettings, Settings};

/// The asymmetric algorithms §3.1 allows. HMAC and `none` are deliberately absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    Es256,
    Ps256,
    Rs256,
    EdDsa,
}

impl JwsAlgorithm {
    pub const ALL: [JwsAlgorithm; 4] = [Self::Es256, Self::Ps256, Self::Rs256, Self::EdDsa];

    /// The JOSE name, as in the `alg` header.
    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Ps256 => "PS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    /// Exact, case-sensitive match on the JOSE name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    fn verifier_from_jwk(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Self::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
            Self::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            Self::Rs256 => Box::new(RS256.verifier_from_jwk(jwk)?),
            Self::EdDsa => Box::new(EdDSA.verifier_from_jwk(jwk)?),
        })
    }

    fn verifier_from_pem(self, pem: &[u8]) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Self::Es256 => Box::new(ES256.verifier_from_pem(pem)?),
            Self::Ps256 => Box::new(PS256.verifier_from_pem(pem)?),
            Self::Rs256 => Box::new(RS256.verifier_from_pem(pem)?),
            Self::EdDsa => Box::new(EdDSA.verifier_from_pem(pem)?),
        })
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One public key of a bank.
pub struct VerifyingKey {
    pub kid: String,
    pub alg: JwsAlgorithm,
    /// Lower-case hex SHA-256 of the key's SubjectPublicKeyInfo DER, computed at load: what
    /// each accepted message records as the key that verified it.
    pub spki_sha256: String,
    verifier: Box<dyn JwsVerifier>,
    /// ES256 keys: the same public key as an OpenSSL EC key, loaded once, so a request's
    /// signature is checked with one `ECDSA_do_verify` over its SHA-256 digest. josekit's
    /// verifier (kept for the other algorithms, and for a key this could not be derived for)
    /// builds an EVP verification context, DER-encodes the signature and allocates an error
    /// chain on every call, which under OpenSSL 3 cost about as much again as the
    /// verification itself (see ops/BENCHMARKS.md). Same curve, hash and checks: the result
    /// is the same for every signature.
    p256: Option<EcKey<Public>>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("spki_sha256", &self.spki_sha256)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A key from a public JWK. The JWK's own `kid` and `alg`, when present, must agree.
    pub fn from_jwk(kid: &str, alg: JwsAlgorithm, jwk: &Jwk) -> Result<Self, String> {
        if jwk.parameter("d").is_some() {
            return Err("is a private key; configure the public key only".into());
        }
        if let Some(own) = jwk.key_id()
            && own != kid
        {
            return Err(format!("has kid `{own}`, configured as `{kid}`"));
        }
        let (verifier, spki_sha256, p256) = one_at_a_time(|| {
            let verifier = alg.verifier_from_jwk(jwk).map_err(|e| e.to_string())?;
            let spki_sha256 = crate::auth::spki::of_jwk(jwk)?;
            // Only once josekit has accepted the JWK (kty, crv, use, key_ops, alg, the point).
            let p256 = (alg == JwsAlgorithm::Es256)
                .then(|| p256_from_jwk(jwk))
                .flatten();
            Ok::<_, String>((verifier, spki_sha256, p256))
        })?;
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            spki_sha256,
            verifier,
            p256,
        })
    }

    pub fn from_pem(kid: &str, alg: JwsAlgorithm, pem: &[u8]) -> Result<Self, String> {
        let (verifier, spki_sha256, p256) = one_at_a_time(|| {
            let verifier = alg.verifier_from_pem(pem).map_err(|e| e.to_string())?;
            let spki_sha256 = crate::auth::spki::of_pem(pem)?;
            let p256 = (alg == JwsAlgorithm::Es256)
                .then(|| p256_from_pem(pem))
                .flatten();
            Ok::<_, String>((verifier, spki_sha256, p256))
        })?;
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            spki_sha256,
            verifier,
            p256,
        })
    }

    /// Checks `signature` over the JWS signing input (`header.payload`, ASCII).
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.p256 {
            Some(key) => verify_es256(key, signing_input, signature),
            None => self.verifier.verify(signing_input, signature).is_ok(),
        }
    }
}

/// ES256 (RFC 7518 §3.4): the signature is R || S, 32 bytes each, over SHA-256 of the input.
fn verify_es256(key: &EcKey<Public>, signing_input: &[u8], signature: &[u8]) -> bool {
    if signature.len() != 64 {
        return false;
    }
    let (r, s) = signature.split_at(32);
    let (Ok(r), Ok(s)) = (BigNum::from_slice(r), BigNum::from_slice(s)) else {
        return false;
    };
    let Ok(signature) = EcdsaSig::from_private_components(r, s) else {
        return false;
    };
    // sha2 (SHA-NI where the CPU has it): OpenSSL 3's one-shot digest fetches the algorithm
    // from its provider on every call.
    let digest = <sha2::Sha256 as sha2::Digest>::digest(signing_input);
    // Err (OpenSSL could not evaluate it, e.g. r or s out of range) is a refusal too.
    signature.verify(&digest, key).unwrap_or(false)
}

/// The P-256 point of a public JWK, decoded as josekit does (0x04 || x || y).
fn p256_from_jwk(jwk: &Jwk) -> Option<EcKey<Public>> {
    use base64::Engine as _;
    let coordinate = |name: &str| match jwk.parameter(name) {
        Some(serde_json::Value::String(value)) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(value)
            .ok(),
        _ => None,
    };
    let (x, y) = (coordinate("x")?, coordinate("y")?);
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).ok()?;
    let mut ctx = BigNumContext::new().ok()?;
    let point = EcPoint::from_bytes(&group, &[&[0x04][..], &x, &y].concat(), &mut ctx).ok()?;
    let key = EcKey::from_public_key(&group, &point).ok()?;
    key.check_key().ok()?;
    Some(key)
}

/// The P-256 key of a SubjectPublicKeyInfo PEM.
fn p256_from_pem(pem: &[u8]) -> Option<EcKey<Public>> {
    let key = PKey::public_key_from_pem(pem).ok()?.ec_key().ok()?;
    if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
        return None;
    }
    key.check_key().ok()?;
    Some(key)
}

/// A bank allowed to push callbacks.
#[derive(Debug)]
pub struct BankClient {
    pub id: String,
    keys: HashMap<String, VerifyingKey>,
    /// Fingerprints of its client certificates (lower-case hex SHA-256).
    certificates: std::collections::HashSet<String>,
}

impl BankClient {
    pub fn new(id: impl Into<String>, keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            id: id.into(),
            keys: keys.into_iter().map(|k| (k.kid.clone(), k)).collect(),
            certificates: Default::default(),
        }
    }

    /// Binds the bank to client certificates by fingerprint.
    pub fn with_certificates(mut self, fingerprints: impl IntoIterator<Item = String>) -> Self {
        self.certificates.extend(fingerprints);
        self
    }

    /// Whether the certificate with this fingerprint is one of the bank's.
    pub fn owns_certificate(&self, sha256: &str) -> bool {
        self.certificates.contains(sha256)
    }

    pub fn key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid)
    }
}

/// Every configured bank, by client id.
#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: HashMap<String, BankClient>,
}

impl ClientRegistry {
    pub fn new(clients: impl IntoIterator<Item = BankClient>) -> Self {
        Self {
            clients: clients.into_iter().map(|c| (c.id.clone(), c)).collect(),
        }
    }

    pub fn client(&self, id: &str) -> Option<&BankClient> {
        self.clients.get(id)
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Loads every key file; any problem is an error naming the configuration key.
    pub fn from_settings(settings: &[ClientSettings]) -> Result<Self, ConfigError> {
        let mut clients = Vec::with_capacity(settings.len());
        let mut seen_ids = std::collections::HashSet::new();
        for (i, client) in settings.iter().enumerate() {
            let at = format!("corelink.clients[{i}]");
            if !connector_schema::validation::is_visible_ascii(&client.id, 128) {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    "must be 1..128 visible ASCII characters",
                ));
            }
            if !seen_ids.insert(client.id.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    format!("`{}` is configured twice", client.id),
                ));
            }
            if client.keys.is_empty() {
                return Err(ConfigError::new(
                    format!("{at}.keys"),
                    "needs at least one key",
                ));
            }
            let mut keys = Vec::with_capacity(client.keys.len());
            let mut seen_kids = std::collections::HashSet::new();
            for (j, key) in client.keys.iter().enumerate() {
                let at = format!("{at}.keys[{j}]");
                if key.kid.is_empty() || !seen_kids.insert(key.kid.as_str()) {
                    return Err(ConfigError::new(
                        format!("{at}.kid"),
                        "must be non-empty and unique within the client",
                    ));
                }
                let alg = JwsAlgorithm::from_name(&key.alg).ok_or_else(|| {
                    ConfigError::new(
                        format!("{at}.alg"),
                        format!("`{}` is not one of ES256, PS256, RS256, EdDSA", key.alg),
                    )
                })?;
                let loaded = load_key(key, alg, &at)?;
                keys.push(loaded);
            }
            let mut certificates = Vec::with_capacity(client.certificate_sha256.len());
            for (j, fingerprint) in client.certificate_sha256.iter().enumerate() {
                let hex: String = fingerprint
                    .chars()
                    .filter(|c| *c != ':')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::new(
                        format!("{at}.certificate_sha256[{j}]"),
                        "must be a SHA-256 fingerprint: 64 hex digits, colons allowed",
                    ));
                }
                certificates.push(hex);
            }
            clients.push(BankClient::new(client.id.clone(), keys).with_certificates(certificates));
        }
        Ok(Self::new(clients))
    }
}

/// Loads the one key file `key` names (`at` is its configuration path, for errors).
fn load_key(key: &KeySettings, alg: JwsAlgorithm, at: &str) -> Result<VerifyingKey, ConfigError> {
    let (field, path) = match (&key.jwk_file, &key.jwks_file, &key.pem_file) {
        (Some(path), None, None) => ("jwk_file", path.relative()),
        (None, Some(path), None) => ("jwks_file", path.relative()),
        (None, None, Some(path)) => ("pem_file", path.relative()),
        _ => {
            return Err(ConfigError::new(
                at,
                "set exactly one of jwk_file, jwks_file or pem_file",
            ));
        }
    };
    let at = format!("{at}.{field}");
    let fail = |message: String| ConfigError::new(&at, format!("{}: {message}", path.display()));
    let bytes = std::fs::read(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
    match field {
        "pem_file" => VerifyingKey::from_pem(&key.kid, alg, &bytes).map_err(fail),
        "jwk_file" => {
            let jwk = Jwk::from_bytes(&bytes).map_err(|e| fail(format!("not a JWK: {e}")))?;
            VerifyingKey::from_jwk(&key.kid, alg, &jwk).map_err(fail)
        }
        _ => {
            // A bank's published key set: the key is the one with the configured kid.
            let set =
                JwkSet::from_bytes(&bytes).map_err(|e| fail(format!("not a JWK set: {e}")))?;
            match set.get(&key.kid).as_slice() {
                [jwk] => VerifyingKey::from_jwk(&key.kid, alg, jwk).map_err(fail),
                [] => Err(fail(format!("holds no key with kid `{}`", key.kid))),
                _ => Err(fail(format!("holds several keys with kid `{}`", key.kid))),
            }
        }
    }
}

/// The registry in force, swappable at run time so a bank can rotate keys without a restart:
/// add the new key beside the old one, reload, let the bank switch, remove the old, reload.
/// Requests read it lock-free; a reload that fails keeps the registry in force.
#[derive(Debug)]
pub struct KeyStore {
    current: ArcSwap<ClientRegistry>,
    /// The configuration file a reload reads again; `None` when the settings came from elsewhere.
    source: Option<PathBuf>,
}

impl KeyStore {
    pub fn new(registry: ClientRegistry, source: Option<PathBuf>) -> Self {
        Self {
            current: ArcSwap::from_pointee(registry),
            source,
        }
    }

    /// The registry in force for one request.
    pub fn current(&self) -> Arc<ClientRegistry> {
        self.current.load_full()
    }

    /// Reads the configuration file again (and its environment overrides) and, if every
    /// client and key in it is valid, swaps the registry in. Returns the number of clients.
    /// Only `corelink.clients` changes; other settings need a restart.
    pub fn reload(&self) -> Result<usize, ConfigError> {
        let Some(source) = &self.source else {
            return Err(ConfigError::new(
                "(file)",
                "started without a configuration file: nothing to reload",
            ));
        };
        let settings = Settings::load(Some(source))?;
        let registry = ClientRegistry::from_settings(&settings.corelink.clients)?;
        let clients = registry.len();
        self.current.store(Arc::new(registry));
        Ok(clients)
    }

    /// A digest of the configuration file and of every key file it names, by content, so a
    /// watcher notices an edit however it was made (in place, by rename, by a symlink swap as
    /// Kubernetes does for mounted secrets). `None` without a configuration file.
    pub fn source_digest(&self) -> Option<[u8; 32]> {
        use sha2::{Digest as _, Sha256};
        let source = self.source.as_ref()?;
        let mut digest = Sha256::new();
        let mut add = |path: &std::path::Path| {
            digest.update(path.as_os_str().as_encoded_bytes());
            match std::fs::read(path) {
                Ok(bytes) => {
                    digest.update((bytes.len() as u64).to_be_bytes());
                    digest.update(bytes);
                }
                Err(error) => digest.update(format!("unreadable: {}", error.kind())),
            }
        };
        add(source);
        if let Ok(settings) = Settings::load(Some(source)) {
            for key in settings.corelink.clients.iter().flat_map(|c| &c.keys) {
                for file in [&key.jwk_file, &key.jwks_file, &key.pem_file]
                    .into_iter()
                    .flatten()
                {
                    add(&file.relative());
                }
            }
        }
        Some(digest.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::signing::generate_key_pair;

    fn settings(file: &std::path::Path, kid: &str, field: &str) -> ClientSettings {
        let toml = format!(
            "id = \"BANK_X\"\nkeys = [{{ kid = \"{kid}\", alg = \"ES256\", {field} = \"{}\" }}]",
            file.display()
        );
        use figment::providers::Format as _;
        figment::Figment::from(figment::providers::Toml::string(&toml))
            .extract()
            .unwrap()
    }

    #[test]
    fn a_key_is_taken_by_kid_from_a_published_key_set() {
        let (_, first) = generate_key_pair(JwsAlgorithm::Es256, "k1").unwrap();
        let (_, second) = generate_key_pair(JwsAlgorithm::Es256, "k2").unwrap();
        let set = format!(r#"{{"keys": [{first}, {second}]}}"#);
        let file = std::env::temp_dir().join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, set).unwrap();

        let registry =
            ClientRegistry::from_settings(&[settings(&file, "k2", "jwks_file")]).unwrap();
        let key = registry.client("BANK_X").unwrap().key("k2").unwrap();
        assert_eq!((key.kid.as_str(), key.alg), ("k2", JwsAlgorithm::Es256));

        let error =
            ClientRegistry::from_settings(&[settings(&file, "k3", "jwks_file")]).unwrap_err();
        assert_eq!(error.key, "corelink.clients[0].keys[0].jwks_file");
        assert!(error.message.contains("no key with kid `k3`"), "{error}");
        let error =
            ClientRegistry::from_settings(&[settings(&file, "k1", "jwk_file")]).unwrap_err();
        assert!(
            error.message.contains("not a JWK"),
            "a set is not a single key: {error}"
        );
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn the_es256_fast_path_agrees_with_josekit() {
        use josekit::jws::JwsSigner as _;
        let (private, public) = generate_key_pair(JwsAlgorithm::Es256, "k1").unwrap();
        let key = VerifyingKey::from_jwk("k1", JwsAlgorithm::Es256, &public).unwrap();
        assert!(
            key.p256.is_some(),
            "an ES256 JWK gets the direct OpenSSL key"
        );
        let signer = ES256.signer_from_jwk(&private).unwrap();
        let input = b"eyJhbGciOiJFUzI1NiJ9.eyJhIjoiYiJ9";
        let good = signer.sign(input).unwrap();
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        let mut zero_r = good.clone();
        zero_r[..32].fill(0);
        let mut big_s = good.clone();
        big_s[32..].fill(0xff);
        let cases: [(&[u8], &[u8]); 7] = [
            (input, &good),
            (b"eyJhbGciOiJFUzI1NiJ9.eyJhIjoiYyJ9", &good),
            (input, &flipped),
            (input, &zero_r),
            (input, &big_s),
            (input, &good[..63]),
            (input, &[good.as_slice(), &[0]].concat()),
        ];
        for (i, (message, signature)) in cases.iter().enumerate() {
            let josekit = key.verifier.verify(message, signature).is_ok();
            assert_eq!(key.verify(message, signature), josekit, "case {i}");
            assert_eq!(josekit, i == 0, "case {i}");
        }

        // The same key as a PEM (SubjectPublicKeyInfo).
        let (x, y) = (
            public.parameter("x").unwrap().as_str().unwrap(),
            public.parameter("y").unwrap().as_str().unwrap(),
        );
        use base64::Engine as _;
        let decode = |v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .unwrap()
        };
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let point = EcPoint::from_bytes(
            &group,
            &[&[4][..], &decode(x), &decode(y)].concat(),
            &mut ctx,
        )
        .unwrap();
        let pem = PKey::from_ec_key(EcKey::from_public_key(&group, &point).unwrap())
            .unwrap()
            .public_key_to_pem()
            .unwrap();
        let from_pem = VerifyingKey::from_pem("k1", JwsAlgorithm::Es256, &pem).unwrap();
        assert!(from_pem.p256.is_some());
        assert_eq!(
            from_pem.spki_sha256, key.spki_sha256,
            "one key, one fingerprint"
        );
        assert!(from_pem.verify(input, &good));
        assert!(!from_pem.verify(input, &flipped));
    }

    #[test]
    fn a_private_key_is_refused() {
        let (private, _) = generate_key_pair(JwsAlgorithm::Es256, "k1").unwrap();
        let file = std::env::temp_dir().join(format!("jwk-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&file, private.to_string()).unwrap();
        let error =
            ClientRegistry::from_settings(&[settings(&file, "k1", "jwk_file")]).unwrap_err();
        assert!(error.message.contains("private key"), "{error}");
        std::fs::remove_file(&file).unwrap();
    }
}
