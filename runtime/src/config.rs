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

/// The top-level `mode` of a process. `production` (the default, so a forgotten setting fails
/// closed) refuses to start with what is fine on a laptop and dangerous anywhere else: the
/// broker's `guest` user, plain HTTP where a secret or a bank's certificate travels, a proxy
/// trusted from too wide a range. `development` (ops/run-local, the tests) allows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Production,
    Development,
}

impl Mode {
    pub fn is_production(self) -> bool {
        self == Self::Production
    }
}

/// In production, the broker user named in `broker.url` (`username`, as the AMQP URI parser
/// read it: `guest` when the URI names none) must not be `guest`: every party gets its own
/// user with only the permissions it needs (README, "Broker users").
pub fn check_broker_user(mode: Mode, username: &str) -> Result<(), ConfigError> {
    if mode.is_production() && username == "guest" {
        return Err(ConfigError::new(
            "broker.url",
            "uses the broker's guest user (named, or implied by a URI without one); mode = \"production\" requires this process's own broker user",
        ));
    }
    Ok(())
}

/// In production, `url` (at `key`) must be `https://`: it carries credentials or decisions
/// that plain HTTP would expose to anyone on the path.
pub fn check_https(mode: Mode, key: &str, url: &str) -> Result<(), ConfigError> {
    if mode.is_production() && !url.starts_with("https://") {
        return Err(ConfigError::new(
            key,
            "must be an https:// URL in mode = \"production\" (plain http would carry the API key in clear)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod mode_tests {
    use super::*;

    #[test]
    fn production_refuses_guest_and_plain_http_and_development_allows_them() {
        let guest = check_broker_user(Mode::Production, "guest").unwrap_err();
        assert_eq!(guest.key, "broker.url");
        assert!(guest.message.contains("guest"), "{guest}");
        check_broker_user(Mode::Production, "connector-ingress").unwrap();
        check_broker_user(Mode::Development, "guest").unwrap();

        let http =
            check_https(Mode::Production, "paysafe.base_url", "http://sim:8090").unwrap_err();
        assert_eq!(http.key, "paysafe.base_url");
        check_https(
            Mode::Production,
            "paysafe.base_url",
            "https://api.paysafe.com",
        )
        .unwrap();
        check_https(
            Mode::Development,
            "paysafe.base_url",
            "http://127.0.0.1:8090",
        )
        .unwrap();
        assert_eq!(Mode::default(), Mode::Production, "fails closed");
    }
}
