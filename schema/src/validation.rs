//! The error shapes and field rules shared by every validator, so the ingress can answer a
//! precise, machine-readable list of problems whatever the source (Corelink, BNC, Paysafe).

use serde::Serialize;

/// One problem with one field of a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON path of the offending member, such as `orders[3].reasonCode`.
    pub field: String,
    /// What is wrong with it, written for the integrator who has to fix it.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Why a body cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// Not UTF-8 JSON at all (or nested beyond the parser's recursion limit).
    #[error("body is not valid JSON: {0}")]
    Malformed(String),
    /// Well-formed JSON that breaks the contract; every problem found is listed.
    #[error("body failed validation ({} problem(s))", .0.len())]
    Invalid(Vec<FieldError>),
}

/// 1..=`max` characters, each visible ASCII (0x21..=0x7E): what §3 requires of ids, nonces and
/// keys, and what configured client ids must be so a bank can send them.
pub fn is_visible_ascii(s: &str, max: usize) -> bool {
    (1..=max).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}
