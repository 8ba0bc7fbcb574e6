//! BNC account-binding callback (DESIGN.md §4, seed `bnc-snap-binding-callback.txt`): the SNAP
//! string to sign, the request headers and body with their validation, and the SNAP answers.
//!
//! BNC calls the connector once a user has bound a bank account through BNC's web binding. The
//! call is signed SNAP style (SHA256withRSA over a string to sign), answered SNAP style (one
//! seven-digit code, one problem), and carries two secrets: the card token and the account
//! number.
//!
//! Everything here is pure (no keys, no clock, no I/O) so the ingress, the workers and the
//! tools share one definition; the RSA check itself lives in `connector_ingress::snap`.
//!
//! # Order of the checks
//!
//! SNAP answers with one problem only, so every check here stops at the first one, in a fixed
//! order: the headers in the seed's order (`X-TIMESTAMP`, `X-CLIENT-KEY`, `X-SIGNATURE`,
//! `X-EXTERNAL-ID`, `CHANNEL-ID`), then the body members in the seed's order
//! (`partnerReferenceNo`, `accountNo`, `accountTransactionLimit`, `additionalInfo`,
//! `additionalInfo.userId`, `additionalInfo.token`, `additionalInfo.bindStatus`) and last
//! `accountCurrency`, which only the seed's sample shows. A missing, `null` or blank mandatory
//! value is [`SnapFieldError::InvalidMandatory`]; a wrong type, an over-long value or a bad
//! format is [`SnapFieldError::InvalidFormat`].
//!
//! # Exact bytes
//!
//! The signature covers the SHA-256 of the *minified* body: the body exactly as received with
//! only the whitespace outside strings removed ([`minify`]). Re-serialising the body would
//! change `500000.00` into `500000.0` and break every signature, so nothing here ever goes
//! through a JSON serialiser for signing, and the amount is read from its text, never through
//! a float.
//!
//! # Where things are
//!
//! - `headers`: the five SNAP headers, their names, limits and validation;
//! - `body`: the callback body, its rules, and the redaction of its secrets;
//! - `limit`: `accountTransactionLimit`, an exact decimal(8,2);
//! - `json_scan`: the byte-level scanner behind [`minify`] and the limit's raw text;
//! - `signing`: the string to sign;
//! - `answers`: SNAP's response codes and messages, and the field errors that lead to them.

mod answers;
mod body;
pub mod headers;
mod json_scan;
mod limit;
mod signing;

pub use answers::{SnapFieldError, SnapResponse, codes};
pub use body::{
    AccountBindingCallback, BODY_FIELD, BindingAdditionalInfo, MAX_ACCOUNT_NO_CHARS,
    MAX_BIND_STATUS_CHARS, MAX_PARTNER_REFERENCE_NO_CHARS, MAX_TOKEN_CHARS, MAX_USER_ID_CHARS,
    fields, parse_account_binding, redact_body,
};
pub use headers::{
    MAX_CHANNEL_ID_CHARS, MAX_CLIENT_KEY_CHARS, MAX_EXTERNAL_ID_CHARS, MAX_SIGNATURE_CHARS,
    SnapHeaders, validate_headers,
};
pub use json_scan::{MinifyError, minify};
pub use limit::{MAX_LIMIT_FRACTION_DIGITS, MAX_LIMIT_INTEGER_DIGITS, TransactionLimit};
pub use signing::{minified_body_sha256_hex, string_to_sign};
