//! Layered configuration: built-in defaults, then a TOML file, then `CONNECTOR_*` environment
//! variables (`CONNECTOR_BROKER__URL` overrides `broker.url`).

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration key `{key}`: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Loads `T` from its defaults, the TOML file at `path` (if any) and the environment.
///
/// Only variables of the process's own top-level `sections` are read: the ingress and the
/// workers share the `CONNECTOR_` prefix (so one environment can set the `[topology]` they must
/// agree on), and a variable meant for the other process is not an error here. Unknown keys in
/// the file are errors (`T` denies them), and relative paths in it resolve against its folder.
pub fn load<T>(path: Option<&Path>, sections: &[&str]) -> Result<T, ConfigError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = path {
        let path = path.canonicalize().map_err(|e| {
            ConfigError::new("(file)", format!("cannot open {}: {e}", path.display()))
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    let sections: Vec<String> = sections.iter().map(|s| (*s).to_owned()).collect();
    figment = figment.merge(Env::prefixed("CONNECTOR_").split("__").filter(move |key| {
        let section = key.as_str().split('.').next().unwrap_or_default();
        sections
            .iter()
            .any(|known| known.eq_ignore_ascii_case(section))
    }));
    figment.extract().map_err(|e| {
        let key = e.path.join(".");
        ConfigError::new(
            if key.is_empty() { "(root)".into() } else { key },
            e.kind.to_string(),
        )
    })
}
