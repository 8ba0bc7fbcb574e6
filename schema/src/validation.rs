//! The error shapes and text rules shared by every validator (DESIGN.md §3.3, §4, §5), so the
//! ingress can answer a precise, machine-readable list of problems whatever the source
//! (Corelink, BNC, Paysafe), and one rule is written once whoever applies it.
//!
//! Everything here judges a `&str`; reading it out of a JSON body is the `json` module's job.

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

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

/// How a length limit counts a string. The contract's limits on text are in characters (a
/// 64-character reference may be 64 `é`); a few long-standing checks count bytes, and keep
/// doing so because the contract pins their answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Chars,
    Bytes,
}

impl Count {
    /// The length of `s` in this unit.
    pub fn of(self, s: &str) -> usize {
        match self {
            Self::Chars => s.chars().count(),
            Self::Bytes => s.len(),
        }
    }
}

/// Empty or only whitespace: what a mandatory text member must not be.
pub fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// Shaped like an ISO 4217 code: three upper-case ASCII letters (`CAD`, `IDR`).
pub fn is_currency_code(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase())
}

/// An RFC 3339 date-time with its offset (`2025-11-19T07:09:30Z`, `2022-09-06T13:00:00+07:00`):
/// the grammar of Corelink's body times and the base of both sources' request timestamps.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}
