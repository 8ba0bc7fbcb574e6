//! Paysafe's proof (DESIGN.md §5): `Signature` is base64(HMAC-SHA256(key, raw body)) under one
//! of the webhook keys configured for the account, compared in constant time. Every key listed
//! is accepted, so a rotation lists the old and the new key side by side. Neither a key nor a
//! signature ever reaches a log line or an error message.

use std::fmt;

use connector_schema::paysafe::webhook_signature_key;

use crate::config::{
    ConfigError, KEY_AS_ID, KeyEncoding, PaysafeSettings, WebhookKey, WebhookKeyEntry,
};

/// The HMAC keys webhooks may be signed with: the bytes of each configured key, with its id.
/// Paysafe's keys have no id of their own, so a key is named by its configured `id`, else by
/// where it is configured (`webhook_keys[0]`, `webhook_key_files[1]`): never anything derived
/// from the secret, which a digest of a low-entropy key would let anyone test guesses against.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    keys: Vec<Vec<u8>>,
    ids: Vec<String>,
}

impl fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // How many, never which.
        write!(f, "WebhookKeys([{} redacted])", self.keys.len())
    }
}

impl WebhookKeys {
    /// Keys given directly, for tests and tools.
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.as_ref().to_vec()).collect();
        let ids = (0..keys.len())
            .map(|i| format!("webhook_keys[{i}]"))
            .collect();
        Self { keys, ids }
    }

    /// The `webhook_keys` entries (inline keys, or files, each decoded by its encoding), then
    /// the raw `webhook_key_files`, each named by [`PaysafeSettings::key_ids`]. A file's
    /// surrounding whitespace is ignored. Errors name the entry and the file, never a key.
    /// Inline keys and ids are checked by [`PaysafeSettings::validate`] too, so a bad one
    /// fails before start-up work.
    pub fn from_settings(settings: &PaysafeSettings) -> Result<Self, ConfigError> {
        let ids = settings.key_ids()?;
        let mut keys = Vec::new();
        for (i, key) in settings.webhook_keys.iter().enumerate() {
            let at = format!("paysafe.webhook_keys[{i}]");
            let inline = |text: &str, encoding: KeyEncoding| {
                encoding
                    .decode(text)
                    .map_err(|message| ConfigError::new(&at, message))
            };
            let bytes = match key {
                WebhookKey::Text(text) => inline(text, KeyEncoding::Raw)?,
                WebhookKey::Entry(WebhookKeyEntry {
                    key: Some(text),
                    key_file: None,
                    encoding,
                    ..
                }) => inline(text, *encoding)?,
                WebhookKey::Entry(WebhookKeyEntry {
                    id,
                    key: None,
                    key_file: Some(file),
                    encoding,
                }) => {
                    let path = file.relative();
                    let fail =
                        |message: String| ConfigError::new(format!("{at}.key_file"), message);
                    let text = read_key_file(&path).map_err(fail)?;
                    if id.as_deref() == Some(text.as_str()) {
                        return Err(ConfigError::new(format!("{at}.id"), KEY_AS_ID));
                    }
                    encoding
                        .decode(&text)
                        .map_err(|message| fail(format!("{}: {message}", path.display())))?
                }
                WebhookKey::Entry(_) => {
                    return Err(ConfigError::new(at, "needs exactly one of key, key_file"));
                }
            };
            keys.push(bytes);
        }
        for (i, file) in settings.webhook_key_files.iter().enumerate() {
            let path = file.relative();
            let text = read_key_file(&path).map_err(|message| {
                ConfigError::new(format!("paysafe.webhook_key_files[{i}]"), message)
            })?;
            keys.push(text.into_bytes());
        }
        Ok(Self { keys, ids })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` is the HMAC of `body` under one of the keys (constant-time).
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        self.verifying_key_id(body, signature).is_some()
    }

    /// The id of the key `signature` is the HMAC of `body` under, if any (constant-time).
    pub fn verifying_key_id(&self, body: &[u8], signature: &str) -> Option<&str> {
        webhook_signature_key(&self.keys, body, signature).map(|i| self.ids[i].as_str())
    }
}

/// A key file's one key, trimmed; the error names the file, never its contents.
fn read_key_file(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("{}: is empty", path.display()));
    }
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use connector_schema::paysafe::webhook_signature;
    use uuid::Uuid;

    use super::*;

    const KEY: &str = "paysafe-test-key";
    const BODY: &str = r#"{"id":"e-1","eventName":"PAYMENT_COMPLETED","resourceId":"p-1"}"#;

    #[test]
    fn keys_from_files_are_trimmed_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("paysafe-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("current"), format!("{KEY}\n")).unwrap();
        std::fs::write(dir.join("blank"), " \n").unwrap();
        let settings = PaysafeSettings {
            webhook_keys: vec!["inline".into()],
            webhook_key_files: vec![dir.join("current").into()],
            ..PaysafeSettings::default()
        };
        let keys = WebhookKeys::from_settings(&settings).unwrap();
        assert_eq!(keys.len(), 2);
        let good = webhook_signature(KEY.as_bytes(), BODY.as_bytes());
        assert!(keys.verify(BODY.as_bytes(), &good));
        // The key that verified is named by where it is configured, never by its bytes.
        assert_eq!(
            keys.verifying_key_id(BODY.as_bytes(), &good),
            Some("webhook_key_files[0]")
        );
        let inline = webhook_signature(b"inline", BODY.as_bytes());
        assert_eq!(
            keys.verifying_key_id(BODY.as_bytes(), &inline),
            Some("webhook_keys[0]")
        );
        assert_eq!(keys.verifying_key_id(b"{}", &good), None);

        for (file, expect) in [("blank", "is empty"), ("missing", "cannot read")] {
            let settings = PaysafeSettings {
                webhook_key_files: vec![dir.join("current").into(), dir.join(file).into()],
                ..PaysafeSettings::default()
            };
            let err = WebhookKeys::from_settings(&settings).unwrap_err();
            assert_eq!(err.key, "paysafe.webhook_key_files[1]");
            assert!(err.message.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_with_an_id_is_named_by_it_wherever_it_is_listed() {
        let dir = std::env::temp_dir().join(format!("paysafe-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("next"), "next-key\n").unwrap();
        let old = WebhookKey::from(KEY).with_id("paysafe-2025");
        let next = WebhookKey::file(dir.join("next"), KeyEncoding::Raw).with_id("paysafe-2026");
        let by_old = webhook_signature(KEY.as_bytes(), BODY.as_bytes());
        let by_next = webhook_signature(b"next-key", BODY.as_bytes());
        let by_plain = webhook_signature(b"plain", BODY.as_bytes());
        // Reordered, and with a key without id added in front: the ids stay.
        for (webhook_keys, plain) in [
            (vec![old.clone(), next.clone()], None),
            (
                vec!["plain".into(), next.clone(), old.clone()],
                Some("webhook_keys[0]"),
            ),
        ] {
            let keys = WebhookKeys::from_settings(&PaysafeSettings {
                webhook_keys,
                ..PaysafeSettings::default()
            })
            .unwrap();
            let id = |signature: &str| keys.verifying_key_id(BODY.as_bytes(), signature);
            assert_eq!(id(&by_old), Some("paysafe-2025"));
            assert_eq!(id(&by_next), Some("paysafe-2026"));
            assert_eq!(id(&by_plain), plain);
        }

        // A repeated id fails the load too (tools load keys without validating first).
        let err = WebhookKeys::from_settings(&PaysafeSettings {
            webhook_keys: vec![old.clone(), "s3cr3t".into(), next.with_id("paysafe-2025")],
            ..PaysafeSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "paysafe.webhook_keys[2].id");

        // A key file whose key is its own id: refused once the file is read, never quoted.
        let err = WebhookKeys::from_settings(&PaysafeSettings {
            webhook_keys: vec![
                WebhookKey::file(dir.join("next"), KeyEncoding::Raw).with_id("next-key"),
            ],
            ..PaysafeSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "paysafe.webhook_keys[0].id");
        assert!(!err.message.contains("next-key"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_base64_key_signs_with_its_decoded_bytes_from_a_file_or_inline() {
        use base64::Engine as _;
        let dir = std::env::temp_dir().join(format!("paysafe-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret: &[u8] = b"\x00\xffbinary-paysafe-key\x10";
        let encoded = base64::engine::general_purpose::STANDARD.encode(secret);
        std::fs::write(dir.join("encoded"), format!("{encoded}\n")).unwrap();
        std::fs::write(dir.join("garbled"), "not base64 at all!\n").unwrap();
        let good = webhook_signature(secret, BODY.as_bytes());
        let over_text = webhook_signature(encoded.as_bytes(), BODY.as_bytes());

        for key in [
            WebhookKey::file(dir.join("encoded"), KeyEncoding::Base64),
            WebhookKey::inline(&encoded, KeyEncoding::Base64),
        ] {
            let keys = WebhookKeys::from_settings(&PaysafeSettings {
                webhook_keys: vec![key],
                ..PaysafeSettings::default()
            })
            .unwrap();
            assert!(keys.verify(BODY.as_bytes(), &good));
            assert!(
                !keys.verify(BODY.as_bytes(), &over_text),
                "not the text's bytes"
            );
        }
        // Raw: the text's bytes, as before encodings existed.
        let raw = WebhookKeys::from_settings(&PaysafeSettings {
            webhook_keys: vec![WebhookKey::file(dir.join("encoded"), KeyEncoding::Raw)],
            ..PaysafeSettings::default()
        })
        .unwrap();
        assert!(raw.verify(BODY.as_bytes(), &over_text));

        let err = WebhookKeys::from_settings(&PaysafeSettings {
            webhook_keys: vec![
                "inline".into(),
                WebhookKey::file(dir.join("garbled"), KeyEncoding::Base64),
            ],
            ..PaysafeSettings::default()
        })
        .unwrap_err();
        assert_eq!(err.key, "paysafe.webhook_keys[1].key_file");
        assert!(
            err.message.contains("base64") && !err.message.contains("not base64 at all"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
