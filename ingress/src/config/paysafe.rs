//! The `[paysafe]` section: the webhook route and the HMAC keys it checks (DESIGN.md §5).
//!
//! Paysafe shows an account's webhook HMAC key as text, and for most accounts the HMAC runs
//! over that text's UTF-8 bytes; some accounts issue the key base64-encoded and sign with the
//! decoded bytes. Nothing in a key tells the two apart (many base64 strings are also plausible
//! text keys), so each key says which it is: `encoding = "raw" | "base64"`. A bare string is a
//! raw key, which is what every configuration written before encodings existed meant.
//!
//! Each key is recorded by id with every webhook it verifies (the `key_id` verification fact,
//! kept for years). Paysafe's keys have no id of their own, so a table entry may give one
//! (`id = "paysafe-2025"`); a key without one is named by its position (`webhook_keys[0]`,
//! `webhook_key_files[1]`), which changes meaning when keys are reordered or removed.

use std::fmt;

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use figment::value::magic::RelativePathBuf;
use serde::de::{self, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer};
use serde::{Deserialize, Deserializer, Serialize};

use super::{ConfigError, check_route_path};

/// The Paysafe webhook route's path unless `paysafe.path` says otherwise.
pub const DEFAULT_PAYSAFE_PATH: &str = "/webhooks/paysafe";

/// The Paysafe webhook route. Keys come inline or from files (`webhook_keys`, also from
/// `CONNECTOR_PAYSAFE__WEBHOOK_KEYS`, as a list or a single key) and/or `webhook_key_files`
/// (one raw key per file, surrounding whitespace ignored: Docker or Kubernetes secrets). Every
/// key listed is accepted, so a rotation lists the old and the new key side by side. `Debug`
/// never shows a key. Only `webhook_keys` table entries carry an `id`: `webhook_key_files` are
/// plain paths, named by position (a key file with an id: an entry with `key_file` and `id`).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaysafeSettings {
    /// The route's path.
    pub path: String,
    /// Larger bodies get 413; an event is a few KiB.
    pub max_body_bytes: usize,
    /// HMAC keys: a bare string (raw), or `{ key | key_file, encoding }` with an optional `id`.
    #[serde(deserialize_with = "one_or_many")]
    pub webhook_keys: Vec<WebhookKey>,
    /// Files each holding one raw HMAC key; relative paths resolve against the configuration
    /// file's folder. Read at start-up. (A base64 key in a file: a `webhook_keys` entry with
    /// `key_file` and `encoding = "base64"`.)
    pub webhook_key_files: Vec<RelativePathBuf>,
}

impl Default for PaysafeSettings {
    fn default() -> Self {
        Self {
            path: DEFAULT_PAYSAFE_PATH.into(),
            max_body_bytes: 64 * 1024,
            webhook_keys: Vec::new(),
            webhook_key_files: Vec::new(),
        }
    }
}

impl fmt::Debug for PaysafeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let files: Vec<_> = self
            .webhook_key_files
            .iter()
            .map(|file| file.relative())
            .collect();
        f.debug_struct("PaysafeSettings")
            .field("path", &self.path)
            .field("max_body_bytes", &self.max_body_bytes)
            .field(
                "webhook_keys",
                &format_args!("[{} redacted]", self.webhook_keys.len()),
            )
            .field("webhook_key_files", &files)
            .finish()
    }
}

/// How a configured key's text becomes the HMAC key's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEncoding {
    /// The text's UTF-8 bytes, as written.
    Raw,
    /// Standard base64 (padding optional), decoded.
    Base64,
}

/// Standard alphabet; a key pasted without its trailing `=` is still the same key.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

impl KeyEncoding {
    /// The HMAC key `text` stands for. The error never quotes the text.
    pub fn decode(self, text: &str) -> Result<Vec<u8>, &'static str> {
        let bytes = match self {
            Self::Raw => text.as_bytes().to_vec(),
            Self::Base64 => BASE64.decode(text).map_err(
                |_| "is not valid base64 (standard alphabet), as encoding = \"base64\" says it is",
            )?,
        };
        if bytes.is_empty() {
            return Err("must not be empty");
        }
        Ok(bytes)
    }
}

/// One configured webhook key.
#[derive(Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum WebhookKey {
    /// A bare string: a raw key (its UTF-8 bytes).
    Text(String),
    /// A key with its encoding said explicitly, inline or in a file.
    Entry(WebhookKeyEntry),
}

/// `{ key = "...", encoding = "base64" }` or `{ key_file = "...", encoding = "raw" }`, each
/// with an optional `id`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookKeyEntry {
    /// The stable name recorded with every webhook this key verifies: 1 to 64 of
    /// `A-Z a-z 0-9 . _ -`, unique. Without it, the key is named by its position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// One key in the file, surrounding whitespace ignored; relative paths resolve against
    /// the configuration file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<RelativePathBuf>,
    /// Required in this form: the point of the form is to say it.
    pub encoding: KeyEncoding,
}

impl WebhookKey {
    /// An inline key in `encoding`, for tests and tools.
    pub fn inline(key: &str, encoding: KeyEncoding) -> Self {
        Self::Entry(WebhookKeyEntry {
            id: None,
            key: Some(key.to_owned()),
            key_file: None,
            encoding,
        })
    }

    /// A key file in `encoding`.
    pub fn file(path: impl Into<RelativePathBuf>, encoding: KeyEncoding) -> Self {
        Self::Entry(WebhookKeyEntry {
            id: None,
            key: None,
            key_file: Some(path.into()),
            encoding,
        })
    }

    /// This key with an explicit `id` (a bare string becomes a raw entry).
    pub fn with_id(self, id: &str) -> Self {
        let mut entry = match self {
            Self::Text(text) => WebhookKeyEntry {
                id: None,
                key: Some(text),
                key_file: None,
                encoding: KeyEncoding::Raw,
            },
            Self::Entry(entry) => entry,
        };
        entry.id = Some(id.to_owned());
        Self::Entry(entry)
    }

    /// The explicit id, if the entry gives one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Self::Text(_) => None,
            Self::Entry(entry) => entry.id.as_deref(),
        }
    }
}

impl From<&str> for WebhookKey {
    fn from(key: &str) -> Self {
        Self::Text(key.to_owned())
    }
}

impl PaysafeSettings {
    /// Checks what the types cannot express (errors name `paysafe.<key>`, and never quote a
    /// key). Key files are read and checked when the keys are loaded at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_route_path("paysafe.path", &self.path, DEFAULT_PAYSAFE_PATH)?;
        for (i, key) in self.webhook_keys.iter().enumerate() {
            let at = format!("paysafe.webhook_keys[{i}]");
            let (text, encoding) = match key {
                WebhookKey::Text(text) => (text, KeyEncoding::Raw),
                WebhookKey::Entry(entry) => match (&entry.key, &entry.key_file) {
                    (Some(text), None) => (text, entry.encoding),
                    (None, Some(_)) => continue,
                    _ => {
                        return Err(ConfigError::new(at, "needs exactly one of key, key_file"));
                    }
                },
            };
            if text.trim() != text {
                return Err(ConfigError::new(
                    at,
                    "has leading or trailing whitespace (a copy-paste slip?); Paysafe's keys have none",
                ));
            }
            encoding
                .decode(text)
                .map_err(|message| ConfigError::new(at, message))?;
        }
        self.key_ids().map(drop)
    }

    /// The id each key is recorded under, in the order the keys are loaded (`webhook_keys`,
    /// then `webhook_key_files`): the explicit id, else the position. Errors name the entry's
    /// `id` and never quote it: an id is not a secret, but one pasted in the wrong field may be.
    pub fn key_ids(&self) -> Result<Vec<String>, ConfigError> {
        let mut ids: Vec<String> = Vec::new();
        // Where each id came from, to name the first holder of a repeated one.
        let mut sources: Vec<String> = Vec::new();
        for (i, key) in self.webhook_keys.iter().enumerate() {
            let Some(id) = key.id() else {
                // A positional name has brackets, which no explicit id may: they cannot collide.
                ids.push(format!("webhook_keys[{i}]"));
                sources.push(format!("paysafe.webhook_keys[{i}]"));
                continue;
            };
            let at = format!("paysafe.webhook_keys[{i}].id");
            check_key_id(id).map_err(|message| ConfigError::new(&at, message))?;
            if let WebhookKey::Entry(WebhookKeyEntry {
                key: Some(text), ..
            }) = key
                && text == id
            {
                return Err(ConfigError::new(at, KEY_AS_ID));
            }
            if let Some(first) = ids.iter().position(|other| other == id) {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "is the same as {}.id: each key needs its own, so a recorded id names one key",
                        sources[first]
                    ),
                ));
            }
            ids.push(id.to_owned());
            sources.push(format!("paysafe.webhook_keys[{i}]"));
        }
        ids.extend((0..self.webhook_key_files.len()).map(|i| format!("webhook_key_files[{i}]")));
        Ok(ids)
    }
}

/// The refusal of an id equal to its key: the id is recorded with every webhook, the key never.
pub(crate) const KEY_AS_ID: &str =
    "is the key itself; the id is recorded with every webhook, so it must not be the secret";

/// An id's rules. Its characters are safe in any log, report or file name, and exclude the
/// brackets of a positional name (`webhook_keys[0]`), so the two can never collide.
fn check_key_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("must not be empty (leave `id` out to name the key by its position)");
    }
    if id.len() > MAX_KEY_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("must be at most 64 characters, each a letter, a digit, `.`, `_` or `-`");
    }
    Ok(())
}

const MAX_KEY_ID_LEN: usize = 64;

/// A single key is a list of one: `CONNECTOR_PAYSAFE__WEBHOOK_KEYS=key` works as well as
/// `CONNECTOR_PAYSAFE__WEBHOOK_KEYS='["old","new"]'` or `'{key="...", encoding="base64"}'`
/// (with or without `id="..."`).
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<WebhookKey>, D::Error> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<WebhookKey>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
            Ok(vec![WebhookKey::Text(key.to_owned())])
        }

        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }

        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }

        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }

        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(E::custom(EXPECTED))
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            Ok(vec![WebhookKey::Entry(WebhookKeyEntry::deserialize(
                MapAccessDeserializer::new(map),
            )?)])
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(key) = seq.next_element::<WebhookKey>()? {
                keys.push(key);
            }
            Ok(keys)
        }
    }
    deserializer.deserialize_any(Keys)
}

/// Not serde's generic "invalid type: integer `12345`": say what is expected, without echoing
/// a key.
const EXPECTED: &str = "a key or a list of keys, each a string (quote a key that looks like a number) or { key | key_file, encoding = \"raw\" | \"base64\", optional id }";

/// A string or a table, by hand rather than `untagged`: an untagged enum buffers the value,
/// which loses figment's resolution of `key_file` against the configuration file's folder.
impl<'de> Deserialize<'de> for WebhookKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Key;
        impl<'de> Visitor<'de> for Key {
            type Value = WebhookKey;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
                Ok(WebhookKey::Text(key.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom(EXPECTED))
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Err(E::custom(EXPECTED))
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Err(E::custom(EXPECTED))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Err(E::custom(EXPECTED))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                WebhookKeyEntry::deserialize(MapAccessDeserializer::new(map)).map(WebhookKey::Entry)
            }
        }
        deserializer.deserialize_any(Key)
    }
}

/// Which form and encoding, never the key.
impl fmt::Debug for WebhookKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(_) => f.write_str("WebhookKey(<redacted>, raw)"),
            Self::Entry(entry) => entry.fmt(f),
        }
    }
}

impl fmt::Debug for WebhookKeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookKeyEntry")
            .field("id", &self.id)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .field(
                "key_file",
                &self.key_file.as_ref().map(|file| file.relative()),
            )
            .field("encoding", &self.encoding)
            .finish()
    }
}
