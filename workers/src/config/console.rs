//! `[console]`: where the operator console listens (nowhere by default), its accounts and roles,
//! and whether a release or discard needs a second operator.

use std::net::SocketAddr;

use argon2::PasswordHash;
use serde::{Deserialize, Serialize};

use connector_runtime::config::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Where the console listens; unset (the default), there is no console. Put it on the ops
    /// network, or behind a TLS-terminating proxy: its cookies are `Secure`, so a browser sends
    /// them over https or to a loopback address only.
    pub listen: Option<SocketAddr>,
    /// A release or discard asked for by an operator waits for an approver (another account)
    /// to confirm it.
    pub four_eyes: bool,
    /// How long a sign-in lasts.
    pub session_ttl_secs: u64,
    pub accounts: Vec<ConsoleAccount>,
    /// The Prometheus that scrapes the ingress (`http://prometheus:9090`): the per-bank view
    /// reads each bank's refusals by code from it (the ingress stores no refused request).
    /// Unset: the view says where to look instead.
    pub prometheus_url: Option<String>,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            listen: None,
            four_eyes: false,
            session_ttl_secs: 8 * 3600,
            accounts: Vec::new(),
            prometheus_url: None,
        }
    }
}

/// An operator's account: name, role, and the argon2 hash of the password
/// (`connector-workers console hash-password` makes one); the password itself is never kept.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleAccount {
    pub name: String,
    pub role: ConsoleRole,
    pub password_hash: String,
}

impl std::fmt::Debug for ConsoleAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleAccount")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What an account may do; each role may do everything of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsoleRole {
    /// Reads everything (quarantine, dead letters, timelines, audit); acts on nothing.
    Viewer,
    /// Releases, discards (or asks to, with four eyes) and replays dead letters.
    Operator,
    /// Confirms another operator's request.
    Approver,
}

impl ConsoleRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Approver => "approver",
        }
    }

    pub fn parse(role: &str) -> Option<Self> {
        [Self::Viewer, Self::Operator, Self::Approver]
            .into_iter()
            .find(|r| r.as_str() == role)
    }
}

impl ConsoleSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.is_none() {
            return Ok(());
        }
        if self.session_ttl_secs == 0 {
            return Err(ConfigError::new(
                "console.session_ttl_secs",
                "must be greater than 0",
            ));
        }
        if self.accounts.is_empty() {
            return Err(ConfigError::new(
                "console.accounts",
                "a console needs at least one account",
            ));
        }
        for (i, account) in self.accounts.iter().enumerate() {
            let at = format!("console.accounts[{i}]");
            if account.name.trim().is_empty() {
                return Err(ConfigError::new(format!("{at}.name"), "must not be empty"));
            }
            if self.accounts[..i].iter().any(|a| a.name == account.name) {
                return Err(ConfigError::new(
                    format!("{at}.name"),
                    format!("`{}` is listed twice", account.name),
                ));
            }
            // Checked now, so a typo cannot lock an operator out at the first sign-in.
            match PasswordHash::new(&account.password_hash) {
                Ok(hash) if hash.algorithm.as_str().starts_with("argon2") => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("{at}.password_hash"),
                        "must be an argon2 PHC string ($argon2id$...; `connector-workers console hash-password`)",
                    ));
                }
            }
        }
        if let Some(url) = &self.prometheus_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError::new(
                "console.prometheus_url",
                "must be an http(s) URL",
            ));
        }
        if self.four_eyes
            && !self
                .accounts
                .iter()
                .any(|a| a.role == ConsoleRole::Approver)
        {
            return Err(ConfigError::new(
                "console.four_eyes",
                "needs an account with role \"approver\" to confirm requests",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(name: &str, role: ConsoleRole, hash: &str) -> ConsoleAccount {
        ConsoleAccount {
            name: name.into(),
            role,
            password_hash: hash.into(),
        }
    }

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$3Nq3eVbq7Gq8qJ0h2Y0m2b0XJ3eQ3v3m8cK3c0z1dJ8";

    #[test]
    fn off_by_default_and_checked_when_on() {
        assert!(ConsoleSettings::default().validate().is_ok());
        let on = |accounts, four_eyes| ConsoleSettings {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            four_eyes,
            accounts,
            ..ConsoleSettings::default()
        };
        let key = |s: ConsoleSettings| s.validate().map_err(|e| e.key);
        assert_eq!(key(on(vec![], false)), Err("console.accounts".into()));
        assert_eq!(
            key(on(
                vec![account("ann", ConsoleRole::Operator, "plain")],
                false
            )),
            Err("console.accounts[0].password_hash".into())
        );
        assert_eq!(
            key(on(
                vec![
                    account("ann", ConsoleRole::Operator, HASH),
                    account("ann", ConsoleRole::Viewer, HASH)
                ],
                false
            )),
            Err("console.accounts[1].name".into())
        );
        assert_eq!(
            key(on(vec![account("ann", ConsoleRole::Operator, HASH)], true)),
            Err("console.four_eyes".into())
        );
        assert_eq!(
            key(on(
                vec![
                    account("ann", ConsoleRole::Operator, HASH),
                    account("bob", ConsoleRole::Approver, HASH)
                ],
                true
            )),
            Ok(())
        );
    }
}
