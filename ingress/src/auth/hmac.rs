//! Paysafe's proof (DESIGN.md §5): `Signature` is base64(HMAC-SHA256(key, raw body)) under one
//! of the webhook keys configured for the account, compared in constant time. Every key listed
//! is accepted, so a rotation lists the old and the new key side by side. Neither a key nor a
//! signature ever reaches a log line or an error message.

use std::fmt;

use connector_schema::paysafe::verify_webhook_signature;

use crate::config::{ConfigError, PaysafeSettings};

/// The HMAC keys webhooks may be signed with: the UTF-8 bytes of each configured key.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    keys: Vec<Vec<u8>>,
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
        Self {
            keys: keys.into_iter().map(|k| k.as_ref().to_vec()).collect(),
        }
    }

    /// The inline keys, then one key per file (surrounding whitespace ignored). Errors name
    /// the file, never its contents. The inline keys are checked by
    /// [`PaysafeSettings::validate`].
    pub fn from_settings(settings: &PaysafeSettings) -> Result<Self, ConfigError> {
        let mut keys: Vec<Vec<u8>> = settings
            .webhook_keys
            .iter()
            .map(|key| key.as_bytes().to_vec())
            .collect();
        for (i, file) in settings.webhook_key_files.iter().enumerate() {
            let path = file.relative();
            let fail = |message: String| {
                ConfigError::new(
                    format!("paysafe.webhook_key_files[{i}]"),
                    format!("{}: {message}", path.display()),
                )
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
            let key = text.trim();
            if key.is_empty() {
                return Err(fail("is empty".into()));
            }
            keys.push(key.as_bytes().to_vec());
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` is the HMAC of `body` under one of the keys (constant-time).
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        verify_webhook_signature(&self.keys, body, signature)
    }
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
}
