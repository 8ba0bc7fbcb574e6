//! Proving one archived request: re-verifying its sender's signature offline, by scheme.
//! Corelink (JWS) with the bank's configured key, BNC (SNAP RSA) when the recorded digest is
//! the signed one, Paysafe (HMAC) only with the shared key given.

mod bnc;
mod corelink;
mod paysafe;

use connector_ingress::config::Settings as IngressSettings;
use connector_schema::evidence::ArchiveEntry;

pub use bnc::prove_bnc;
pub use corelink::prove_corelink;
pub use paysafe::prove_paysafe;

/// What a re-verification established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verifies over what the archive holds.
    Proven,
    /// It does not, or cannot be checked: the reason, precisely.
    NotProven(String),
}

/// The outcome for one entry, with what the report prints.
#[derive(Debug, Clone)]
pub struct Proof {
    pub verdict: Verdict,
    /// `(label, value)` lines: the key used, the signed timestamp, ...
    pub details: Vec<(&'static str, String)>,
}

impl Proof {
    fn not_proven(reason: impl Into<String>, details: Vec<(&'static str, String)>) -> Self {
        Self {
            verdict: Verdict::NotProven(reason.into()),
            details,
        }
    }
}

/// Re-verifies `entry` with the keys of `settings` (and the Paysafe key, if given).
pub fn prove_entry(
    entry: &ArchiveEntry,
    settings: &IngressSettings,
    paysafe_key: Option<&[u8]>,
) -> Result<Proof, connector_ingress::config::ConfigError> {
    match entry.kind.as_str() {
        "corelink.status" | "corelink.status.batch" => prove_corelink(entry, settings),
        "bnc.account_binding" => prove_bnc(entry, settings),
        "paysafe.webhook" => Ok(prove_paysafe(entry, paysafe_key)),
        other => Ok(Proof::not_proven(
            format!("a `{other}` message carries no sender signature to re-verify"),
            Vec::new(),
        )),
    }
}

/// `verification.<member>` as recorded by the ingress, when it was.
fn recorded<'a>(entry: &'a ArchiveEntry, member: &str) -> Option<&'a str> {
    entry.verification.as_ref()?.get(member)?.as_str()
}

#[cfg(test)]
mod tests;
