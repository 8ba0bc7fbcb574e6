//! BNC's partners and their RSA public keys, by `X-CLIENT-KEY`, loaded from `[[bnc.partners]]`
//! at start-up. Every key is checked as it is loaded (RSA, at least [`MIN_RSA_BITS`], public
//! only), so a bad file stops the start with its configuration key named, never a request.

use std::collections::HashMap;
use std::fmt;

use openssl::pkey::{Id, PKey, Public};
use openssl::rsa::Rsa;

use crate::config::{BncSettings, ConfigError};

/// RSA keys shorter than this are refused: 2048 bits is the floor of current guidance
/// (NIST SP 800-131A) and what SNAP partners issue.
pub const MIN_RSA_BITS: u32 = 2048;

/// One loaded public key; `source` (a file name or a label) is what errors and logs show.
pub(super) struct PartnerKey {
    source: String,
    pub(super) key: PKey<Public>,
    /// Lower-case hex SHA-256 of its SubjectPublicKeyInfo DER, computed at load: what each
    /// accepted callback records as the key that verified it.
    pub(super) spki_sha256: String,
}

impl PartnerKey {
    fn new(source: String, key: PKey<Public>) -> Result<Self, String> {
        let spki_sha256 = crate::auth::spki::of_key(&key)?;
        Ok(Self {
            source,
            key,
            spki_sha256,
        })
    }
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
                keys.push(PartnerKey::new(source.clone(), key).map_err(fail)?);
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
                let fail = |m| ConfigError::new(format!("{at}.keys[{j}]"), m);
                let key = load_public_key(pem.as_ref()).map_err(fail)?;
                keys.push(PartnerKey::new(source, key).map_err(fail)?);
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

    /// The public keys of the partner that sends `client_key`, if it is one.
    pub(super) fn keys(&self, client_key: &str) -> Option<impl Iterator<Item = &PartnerKey>> {
        Some(self.partners.get(client_key)?.iter())
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
    crate::auth::key_decoding::one_at_a_time(|| decode_public_key(pem))
}

fn decode_public_key(pem: &[u8]) -> Result<PKey<Public>, String> {
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
