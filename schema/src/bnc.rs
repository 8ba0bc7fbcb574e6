//! BNC account-binding callback (DESIGN.md §4, seed `bnc-snap-binding-callback.txt`): the SNAP
//! string to sign, the request headers and body with their validation, and the SNAP answers.
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

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::corelink::parse_json;

/// The SNAP header names, spelled as the seed spells them. Header lookup must be
/// case-insensitive (as `http::HeaderMap` is).
pub mod headers {
    pub const X_TIMESTAMP: &str = "X-TIMESTAMP";
    pub const X_CLIENT_KEY: &str = "X-CLIENT-KEY";
    pub const X_SIGNATURE: &str = "X-SIGNATURE";
    pub const X_EXTERNAL_ID: &str = "X-EXTERNAL-ID";
    pub const CHANNEL_ID: &str = "CHANNEL-ID";
}

/// Header length limits (seed §3.1, DESIGN.md §4), in characters (all are ASCII).
pub const MAX_CLIENT_KEY_CHARS: usize = 32;
pub const MAX_SIGNATURE_CHARS: usize = 2048;
pub const MAX_EXTERNAL_ID_CHARS: usize = 36;
pub const MAX_CHANNEL_ID_CHARS: usize = 5;

/// Body length limits (seed §3.2), counted in Unicode characters like the other validators.
pub const MAX_PARTNER_REFERENCE_NO_CHARS: usize = 22;
pub const MAX_ACCOUNT_NO_CHARS: usize = 16;
pub const MAX_USER_ID_CHARS: usize = 64;
pub const MAX_TOKEN_CHARS: usize = 36;
pub const MAX_BIND_STATUS_CHARS: usize = 2;

/// `accountTransactionLimit` is a decimal(8,2): at most 6 digits before the point and 2 after.
pub const MAX_LIMIT_INTEGER_DIGITS: usize = 6;
pub const MAX_LIMIT_FRACTION_DIGITS: usize = 2;

/// The field named when the body as a whole is unusable: not UTF-8 JSON, not a JSON object, or
/// an object with a repeated member name. The seed has no name for it; `requestBody` follows
/// SNAP's camelCase and reads naturally in "Invalid Field Format requestBody".
pub const BODY_FIELD: &str = "requestBody";

// ---------------------------------------------------------------------------------------------
// Minify and the string to sign
// ---------------------------------------------------------------------------------------------

/// Why a body cannot be minified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MinifyError {
    /// A string opened at this byte offset is never closed: where its end should be is
    /// unknowable, so is which whitespace to drop.
    #[error("unterminated JSON string starting at byte {0}")]
    UnterminatedString(usize),
}

/// Removes the JSON whitespace (space, tab, line feed, carriage return) outside strings, byte
/// for byte, as SNAP's `minify(<Request Body>)` does before hashing.
///
/// Everything else is kept exactly as received: numbers keep their text (`500000.00` stays
/// `500000.00`, `5e5` stays `5e5`), strings keep their spaces and escapes (`\"` and `\\` are
/// recognised so an escaped quote does not end a string), and non-ASCII bytes pass through
/// untouched (UTF-8 continuation bytes can never look like `"` or `\`). This is not a JSON
/// validator: it only needs to know where strings start and end, and leaves judging the JSON
/// to [`parse_account_binding`]. The only error is a string that never ends.
pub fn minify(body: &[u8]) -> Result<Vec<u8>, MinifyError> {
    let mut out = Vec::with_capacity(body.len());
    // Offset of the opening quote of the string we are in, if any.
    let mut string_start: Option<usize> = None;
    let mut escaped = false;
    for (offset, &byte) in body.iter().enumerate() {
        match string_start {
            Some(_) => {
                out.push(byte);
                if escaped {
                    escaped = false;
                } else if byte == b'\\' {
                    escaped = true;
                } else if byte == b'"' {
                    string_start = None;
                }
            }
            None => match byte {
                b' ' | b'\t' | b'\n' | b'\r' => {}
                b'"' => {
                    string_start = Some(offset);
                    out.push(byte);
                }
                _ => out.push(byte),
            },
        }
    }
    match string_start {
        Some(start) => Err(MinifyError::UnterminatedString(start)),
        None => Ok(out),
    }
}

/// Lower-case hex SHA-256 of [`minify`]`(body)`: the third part of the string to sign.
pub fn minified_body_sha256_hex(body: &[u8]) -> Result<String, MinifyError> {
    let digest = Sha256::digest(minify(body)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}

/// The SNAP string to sign:
/// `<METHOD>:<path as sent>:<lowercase hex SHA-256 of minify(body)>:<X-TIMESTAMP>`.
///
/// `path` must be the request path exactly as the partner sent it (not the route pattern, not
/// re-encoded), and `timestamp` the `X-TIMESTAMP` header verbatim (not re-formatted): both are
/// signed as text. The method is upper-cased (HTTP methods are upper case on the wire anyway).
pub fn string_to_sign(
    method: &str,
    path: &str,
    body: &[u8],
    timestamp: &str,
) -> Result<String, MinifyError> {
    Ok(format!(
        "{}:{path}:{}:{timestamp}",
        method.to_ascii_uppercase(),
        minified_body_sha256_hex(body)?
    ))
}

// ---------------------------------------------------------------------------------------------
// Errors and answers
// ---------------------------------------------------------------------------------------------

/// The first problem with a header or body field, named as SNAP names it (`X-TIMESTAMP`,
/// `accountTransactionLimit`, `additionalInfo.token`, or [`BODY_FIELD`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapFieldError {
    /// Present but of the wrong type, too long, or badly formed: SNAP 4000001.
    #[error("Invalid Field Format {0}")]
    InvalidFormat(String),
    /// Missing, `null` or blank although mandatory: SNAP 4000002.
    #[error("Invalid Mandatory Field {0}")]
    InvalidMandatory(String),
}

impl SnapFieldError {
    fn format(field: &str) -> Self {
        Self::InvalidFormat(field.to_owned())
    }

    fn mandatory(field: &str) -> Self {
        Self::InvalidMandatory(field.to_owned())
    }

    /// The offending field's SNAP name.
    pub fn field(&self) -> &str {
        match self {
            Self::InvalidFormat(field) | Self::InvalidMandatory(field) => field,
        }
    }

    /// The 400 answer for this problem.
    pub fn response(&self) -> SnapResponse {
        match self {
            Self::InvalidFormat(field) => SnapResponse::invalid_format(field),
            Self::InvalidMandatory(field) => SnapResponse::invalid_mandatory(field),
        }
    }
}

impl From<SnapFieldError> for SnapResponse {
    fn from(error: SnapFieldError) -> Self {
        error.response()
    }
}

/// SNAP response codes used by this callback (HTTP status, service code `00`, case).
pub mod codes {
    pub const SUCCESS: &str = "2000000";
    pub const INVALID_FIELD_FORMAT: &str = "4000001";
    pub const INVALID_MANDATORY_FIELD: &str = "4000002";
    pub const UNAUTHORIZED: &str = "4010000";
    pub const GENERAL_ERROR: &str = "5000000";
}

/// The body of every answer to the partner, SNAP style:
/// `{"responseCode":"2000000","responseMessage":"Successful"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapResponse {
    /// Seven digits: HTTP status (3), service code (2, `00` here: the callback has none), case.
    pub response_code: &'static str,
    pub response_message: String,
}

impl SnapResponse {
    /// 200: the callback is durably enqueued.
    pub fn success() -> Self {
        Self::new(codes::SUCCESS, "Successful".into())
    }

    /// 400 4000001 `Invalid Field Format <field>`.
    pub fn invalid_format(field: &str) -> Self {
        Self::new(
            codes::INVALID_FIELD_FORMAT,
            format!("Invalid Field Format {field}"),
        )
    }

    /// 400 4000002 `Invalid Mandatory Field <field>`.
    pub fn invalid_mandatory(field: &str) -> Self {
        Self::new(
            codes::INVALID_MANDATORY_FIELD,
            format!("Invalid Mandatory Field {field}"),
        )
    }

    /// 401 4010000 `Unauthorized. <reason>`. The reason must say what failed (unknown client
    /// key, stale timestamp, bad signature), never echo key material.
    pub fn unauthorized(reason: &str) -> Self {
        Self::new(codes::UNAUTHORIZED, format!("Unauthorized. {reason}"))
    }

    /// 5000000 `General Error`: the request was valid but could not be enqueued, so the partner
    /// must retry; answered with HTTP 503 (see [`Self::http_status`]).
    pub fn general_error() -> Self {
        Self::new(codes::GENERAL_ERROR, "General Error".into())
    }

    fn new(response_code: &'static str, response_message: String) -> Self {
        Self {
            response_code,
            response_message,
        }
    }

    /// The HTTP status to answer with. Usually the code's first three digits, except
    /// 5000000: the connector only says "General Error" when the callback was *not* enqueued
    /// (broker down or slow), which is 503 so that the partner and any proxy treat it as
    /// retryable.
    pub fn http_status(&self) -> u16 {
        match self.response_code {
            codes::SUCCESS => 200,
            codes::INVALID_FIELD_FORMAT | codes::INVALID_MANDATORY_FIELD => 400,
            codes::UNAUTHORIZED => 401,
            codes::GENERAL_ERROR => 503,
            other => other
                .get(..3)
                .and_then(|status| status.parse().ok())
                .unwrap_or(500),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------------------------

/// The five SNAP headers, validated. Borrowed from the request: the signature check needs
/// `timestamp` exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapHeaders<'a> {
    /// `X-TIMESTAMP` verbatim; it is signed as text, so never re-format it.
    pub timestamp: &'a str,
    /// `X-TIMESTAMP` parsed (ISO-8601 / RFC 3339 with an offset), for the freshness window.
    pub sent_at: OffsetDateTime,
    /// `X-CLIENT-KEY`: selects the partner and its public keys.
    pub client_key: &'a str,
    /// `X-SIGNATURE`: base64 of the RSA signature (decoded by the verifier).
    pub signature: &'a str,
    /// `X-EXTERNAL-ID`: the partner's request id; with the client key, the dedupe key.
    pub external_id: &'a str,
    /// `CHANNEL-ID`.
    pub channel_id: &'a str,
}

/// Reads and validates the five SNAP headers, stopping at the first problem in the seed's
/// order.
///
/// `get` looks a header up by the name in [`headers`] and must be case-insensitive; with axum
/// it is simply `|name| request.headers().get(name)` (a `HeaderValue` is `AsRef<[u8]>`), in
/// tests `|name| map.get(name).copied()` over `&str`s. A header sent twice should be refused by
/// the caller before this (a closure returns one value).
///
/// Rules: every header is mandatory (absent or empty: 4000002) and must be visible ASCII
/// (4000001 otherwise). `X-TIMESTAMP` is RFC 3339 with an explicit offset (`Z` or `+07:00`;
/// fractional seconds allowed, so the seed's 25 characters are not enforced as a maximum);
/// `X-CLIENT-KEY` ≤ 32; `X-SIGNATURE` ≤ 2048 and only base64 characters (whether it decodes
/// is the verifier's call and answered 401); `X-EXTERNAL-ID` ≤ 36; `CHANNEL-ID` ≤ 5.
pub fn validate_headers<'a, V>(
    get: impl Fn(&str) -> Option<&'a V>,
) -> Result<SnapHeaders<'a>, SnapFieldError>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let text = |name: &str, max: usize| -> Result<&'a str, SnapFieldError> {
        let bytes = get(name).map(AsRef::as_ref).unwrap_or_default();
        if bytes.is_empty() {
            return Err(SnapFieldError::mandatory(name));
        }
        let visible = bytes.len() <= max && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
        match std::str::from_utf8(bytes) {
            Ok(value) if visible => Ok(value),
            _ => Err(SnapFieldError::format(name)),
        }
    };

    // Generous bound: the longest RFC 3339 text with nanoseconds is 35 characters.
    let timestamp = text(headers::X_TIMESTAMP, 64)?;
    let sent_at = OffsetDateTime::parse(timestamp, &Rfc3339)
        .map_err(|_| SnapFieldError::format(headers::X_TIMESTAMP))?;
    let client_key = text(headers::X_CLIENT_KEY, MAX_CLIENT_KEY_CHARS)?;
    let signature = text(headers::X_SIGNATURE, MAX_SIGNATURE_CHARS)?;
    if !signature
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
    {
        return Err(SnapFieldError::format(headers::X_SIGNATURE));
    }
    let external_id = text(headers::X_EXTERNAL_ID, MAX_EXTERNAL_ID_CHARS)?;
    let channel_id = text(headers::CHANNEL_ID, MAX_CHANNEL_ID_CHARS)?;
    Ok(SnapHeaders {
        timestamp,
        sent_at,
        client_key,
        signature,
        external_id,
        channel_id,
    })
}

// ---------------------------------------------------------------------------------------------
// The amount
// ---------------------------------------------------------------------------------------------

/// `accountTransactionLimit`: a non-negative decimal(8,2), kept exact. Holds the normalised
/// text (`"500000.00"`: no leading zeros, exactly two decimals) and the same value in minor
/// units (`50000000`); never a float.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionLimit {
    text: String,
    minor_units: i64,
}

impl TransactionLimit {
    /// Parses the limit's text: digits, optionally `.` and one or two digits. Refused: a sign,
    /// an exponent (`1e5`: a signer may have minified it differently and the value is not a
    /// decimal(8,2) literal), a third decimal place (even a zero: `1.230`), a bare `.5` or
    /// `5.`, surrounding spaces, and more than 6 significant integer digits. Leading zeros are
    /// accepted and dropped.
    pub fn parse(text: &str) -> Option<Self> {
        let (integer, fraction) = match text.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (text, None),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(integer) {
            return None;
        }
        if let Some(fraction) = fraction
            && (!all_digits(fraction) || fraction.len() > MAX_LIMIT_FRACTION_DIGITS)
        {
            return None;
        }
        let integer = integer.trim_start_matches('0');
        if integer.len() > MAX_LIMIT_INTEGER_DIGITS {
            return None;
        }
        let integer = if integer.is_empty() { "0" } else { integer };
        let mut fraction = fraction.unwrap_or_default().to_owned();
        while fraction.len() < MAX_LIMIT_FRACTION_DIGITS {
            fraction.push('0');
        }
        let minor_units = format!("{integer}{fraction}").parse::<i64>().ok()?;
        Some(Self {
            text: format!("{integer}.{fraction}"),
            minor_units,
        })
    }

    /// The normalised decimal text, such as `500000.00`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value in hundredths (`500000.00` → `50000000`).
    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }
}

impl fmt::Display for TransactionLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Serialised as its normalised string (`"500000.00"`), so it survives any JSON reader.
impl Serialize for TransactionLimit {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

/// Reads a string (what [`Serialize`] writes) or an integer. A JSON number with a fraction is
/// refused here because serde would already have turned it into a float; bodies as received
/// go through [`parse_account_binding`], which reads the number's text.
impl<'de> Deserialize<'de> for TransactionLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LimitVisitor;
        impl serde::de::Visitor<'_> for LimitVisitor {
            type Value = TransactionLimit;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal(8,2) as a string such as \"500000.00\", or an integer")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                TransactionLimit::parse(v)
                    .ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                self.visit_str(&v.to_string())
            }
        }
        deserializer.deserialize_any(LimitVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// The body
// ---------------------------------------------------------------------------------------------

/// Wire names of the body members (seed §3.2).
pub mod fields {
    pub const PARTNER_REFERENCE_NO: &str = "partnerReferenceNo";
    pub const ACCOUNT_NO: &str = "accountNo";
    pub const ACCOUNT_TRANSACTION_LIMIT: &str = "accountTransactionLimit";
    pub const ACCOUNT_CURRENCY: &str = "accountCurrency";
    pub const ADDITIONAL_INFO: &str = "additionalInfo";
    pub const USER_ID: &str = "userId";
    pub const TOKEN: &str = "token";
    pub const BIND_STATUS: &str = "bindStatus";
}

/// A validated account-binding callback body. Members the seed does not list (such as a
/// `note`) are accepted and dropped.
///
/// `account_no` and `additional_info.token` are secrets (DESIGN.md §4): `Debug` redacts them,
/// but the serialised form carries them (the workers need them), so never log that.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "BindingWire")]
pub struct AccountBindingCallback {
    /// Merchant transaction reference, ≤ 22 characters; the workers dedupe on it.
    pub partner_reference_no: String,
    /// The account number as the bank sent it (masked, e.g. `585945******2348`), ≤ 16.
    pub account_no: String,
    pub account_transaction_limit: TransactionLimit,
    /// ISO 4217 code (three upper-case letters) when sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_currency: Option<String>,
    pub additional_info: BindingAdditionalInfo,
}

/// `additionalInfo` of the callback.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingAdditionalInfo {
    /// Merchant generated user id, ≤ 64.
    pub user_id: String,
    /// The user's bank card token, ≤ 36. Secret.
    pub token: String,
    /// Binding status, ≤ 2 (the seed only ever shows `"1"`).
    pub bind_status: String,
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for AccountBindingCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountBindingCallback")
            .field("partner_reference_no", &self.partner_reference_no)
            .field("account_no", &format_args!("{REDACTED}"))
            .field("account_transaction_limit", &self.account_transaction_limit)
            .field("account_currency", &self.account_currency)
            .field("additional_info", &self.additional_info)
            .finish()
    }
}

impl fmt::Debug for BindingAdditionalInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BindingAdditionalInfo")
            .field("user_id", &self.user_id)
            .field("token", &format_args!("{REDACTED}"))
            .field("bind_status", &self.bind_status)
            .finish()
    }
}

/// Parses and validates a callback body exactly as received, reporting the first problem in
/// the module's order. Parsing uses the strict [`parse_json`] (a repeated member name is
/// refused: the signer may have read the other occurrence). A body that is not UTF-8 JSON,
/// not an object, or repeats a member is `InvalidFormat(`[`BODY_FIELD`]`)`.
///
/// `accountTransactionLimit` may be a string (`"500000.00"`) or a number (`500000.00`); a
/// number is read from its text in the body, so its decimals are judged as sent.
pub fn parse_account_binding(body: &[u8]) -> Result<AccountBindingCallback, SnapFieldError> {
    let invalid_body = || SnapFieldError::format(BODY_FIELD);
    let value = parse_json(body).map_err(|_| invalid_body())?;
    let object = value.as_object().ok_or_else(invalid_body)?;

    let partner_reference_no = mandatory_string(
        object,
        fields::PARTNER_REFERENCE_NO,
        fields::PARTNER_REFERENCE_NO,
        MAX_PARTNER_REFERENCE_NO_CHARS,
    )?;
    let account_no = mandatory_string(
        object,
        fields::ACCOUNT_NO,
        fields::ACCOUNT_NO,
        MAX_ACCOUNT_NO_CHARS,
    )?;
    let account_transaction_limit = limit(object, body)?;
    let additional_info = match object.get(fields::ADDITIONAL_INFO) {
        None | Some(Value::Null) => return Err(SnapFieldError::mandatory(fields::ADDITIONAL_INFO)),
        Some(Value::Object(info)) => additional_info(info)?,
        Some(_) => return Err(SnapFieldError::format(fields::ADDITIONAL_INFO)),
    };
    let account_currency = currency(object.get(fields::ACCOUNT_CURRENCY))?;

    Ok(AccountBindingCallback {
        partner_reference_no,
        account_no,
        account_transaction_limit,
        account_currency,
        additional_info,
    })
}

fn additional_info(info: &Map<String, Value>) -> Result<BindingAdditionalInfo, SnapFieldError> {
    const USER_ID: &str = "additionalInfo.userId";
    const TOKEN: &str = "additionalInfo.token";
    const BIND_STATUS: &str = "additionalInfo.bindStatus";
    Ok(BindingAdditionalInfo {
        user_id: mandatory_string(info, fields::USER_ID, USER_ID, MAX_USER_ID_CHARS)?,
        token: mandatory_string(info, fields::TOKEN, TOKEN, MAX_TOKEN_CHARS)?,
        bind_status: mandatory_string(
            info,
            fields::BIND_STATUS,
            BIND_STATUS,
            MAX_BIND_STATUS_CHARS,
        )?,
    })
}

/// A mandatory string member: absent, `null`, empty or all-blank → mandatory; not a string →
/// format; then [`check_text`].
fn mandatory_string(
    object: &Map<String, Value>,
    name: &str,
    field: &str,
    max_chars: usize,
) -> Result<String, SnapFieldError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(SnapFieldError::mandatory(field)),
        Some(Value::String(s)) => check_text(s, field, max_chars).map(str::to_owned),
        Some(_) => Err(SnapFieldError::format(field)),
    }
}

/// Blank → mandatory; more than `max_chars` characters or a control character (which has no
/// business in a reference, an account number or a token, and would corrupt logs) → format.
fn check_text<'s>(s: &'s str, field: &str, max_chars: usize) -> Result<&'s str, SnapFieldError> {
    if s.trim().is_empty() {
        Err(SnapFieldError::mandatory(field))
    } else if s.chars().count() > max_chars || s.chars().any(char::is_control) {
        Err(SnapFieldError::format(field))
    } else {
        Ok(s)
    }
}

fn limit(object: &Map<String, Value>, body: &[u8]) -> Result<TransactionLimit, SnapFieldError> {
    const FIELD: &str = fields::ACCOUNT_TRANSACTION_LIMIT;
    let text = match object.get(FIELD) {
        None | Some(Value::Null) => return Err(SnapFieldError::mandatory(FIELD)),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(SnapFieldError::mandatory(FIELD));
        }
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(_)) => {
            // serde_json has already turned the number into a float; take its text instead.
            let minified = minify(body).map_err(|_| SnapFieldError::format(BODY_FIELD))?;
            let raw = raw_top_level_member(&minified, FIELD)
                .ok_or_else(|| SnapFieldError::format(FIELD))?;
            String::from_utf8(raw.to_vec()).map_err(|_| SnapFieldError::format(FIELD))?
        }
        Some(_) => return Err(SnapFieldError::format(FIELD)),
    };
    TransactionLimit::parse(&text).ok_or_else(|| SnapFieldError::format(FIELD))
}

fn currency(value: Option<&Value>) -> Result<Option<String>, SnapFieldError> {
    const FIELD: &str = fields::ACCOUNT_CURRENCY;
    match value {
        // Optional: SNAP senders often write "" for "not applicable".
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => {
            Ok(Some(s.clone()))
        }
        Some(_) => Err(SnapFieldError::format(FIELD)),
    }
}

/// The raw text of member `name` of the top-level object of `minified` (which must be
/// minified, well-formed JSON with unique member names, as [`parse_json`] has checked).
/// Member names are compared decoded, so an escaped spelling of the name still matches.
fn raw_top_level_member<'b>(minified: &'b [u8], name: &str) -> Option<&'b [u8]> {
    let mut i = 0;
    if minified.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        if minified.get(i) != Some(&b'"') {
            return None; // `}` of an object without (more) members
        }
        let key_end = end_of_string(minified, i)?;
        let key: String = serde_json::from_slice(&minified[i..key_end]).ok()?;
        if minified.get(key_end) != Some(&b':') {
            return None;
        }
        let start = key_end + 1;
        let end = end_of_value(minified, start)?;
        if key == name {
            return Some(&minified[start..end]);
        }
        if minified.get(end) != Some(&b',') {
            return None;
        }
        i = end + 1;
    }
}

/// Index just after the string that opens at `start` (which holds `"`).
fn end_of_string(bytes: &[u8], start: usize) -> Option<usize> {
    let mut escaped = false;
    for (offset, &byte) in bytes.get(start + 1..)?.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if byte == b'\\' {
            escaped = true;
        } else if byte == b'"' {
            return Some(start + 1 + offset + 1);
        }
    }
    None
}

/// Index of the `,` or closing bracket that ends the value starting at `start`.
fn end_of_value(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => {
                i = end_of_string(bytes, i)?;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return Some(i),
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// What `Deserialize` reads before [`TryFrom`] applies the same field rules as
/// [`parse_account_binding`]: a stored callback read back is as valid as when it came in.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BindingWire {
    partner_reference_no: String,
    account_no: String,
    account_transaction_limit: TransactionLimit,
    #[serde(default)]
    account_currency: Option<String>,
    additional_info: BindingAdditionalInfo,
}

impl TryFrom<BindingWire> for AccountBindingCallback {
    type Error = SnapFieldError;

    fn try_from(wire: BindingWire) -> Result<Self, Self::Error> {
        check_text(
            &wire.partner_reference_no,
            fields::PARTNER_REFERENCE_NO,
            MAX_PARTNER_REFERENCE_NO_CHARS,
        )?;
        check_text(&wire.account_no, fields::ACCOUNT_NO, MAX_ACCOUNT_NO_CHARS)?;
        let info = &wire.additional_info;
        check_text(&info.user_id, "additionalInfo.userId", MAX_USER_ID_CHARS)?;
        check_text(&info.token, "additionalInfo.token", MAX_TOKEN_CHARS)?;
        check_text(
            &info.bind_status,
            "additionalInfo.bindStatus",
            MAX_BIND_STATUS_CHARS,
        )?;
        let account_currency = currency(wire.account_currency.map(Value::String).as_ref())?;
        Ok(Self {
            partner_reference_no: wire.partner_reference_no,
            account_no: wire.account_no,
            account_transaction_limit: wire.account_transaction_limit,
            account_currency,
            additional_info: wire.additional_info,
        })
    }
}

/// The body with the card token and the account number replaced by `<redacted>`, for copies
/// kept where they must not be readable (the audit table, admin output). Not byte-exact: the
/// raw body's SHA-256 is what proves what was received. A body that is not a JSON object is
/// replaced entirely.
pub fn redact_body(body: &[u8]) -> Vec<u8> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return REDACTED.as_bytes().to_vec();
    };
    let Some(object) = value.as_object_mut() else {
        return REDACTED.as_bytes().to_vec();
    };
    if let Some(account) = object.get_mut(fields::ACCOUNT_NO) {
        *account = REDACTED.into();
    }
    if let Some(token) = object
        .get_mut(fields::ADDITIONAL_INFO)
        .and_then(|info| info.as_object_mut())
        .and_then(|info| info.get_mut(fields::TOKEN))
    {
        *token = REDACTED.into();
    }
    serde_json::to_vec(&value).unwrap_or_else(|_| REDACTED.as_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const VECTORS: &str = include_str!("../../ingress/tests/vectors/bnc-snap.json");

    const TOKEN: &str = "c9fead3d790f41d4819456ebc13f2910";
    const ACCOUNT: &str = "585945******2348";

    fn valid_body() -> Value {
        serde_json::json!({
            "partnerReferenceNo": "BEL2210170001",
            "accountNo": ACCOUNT,
            "accountTransactionLimit": "500000.00",
            "additionalInfo": {"userId": "8881701", "token": TOKEN, "bindStatus": "1"},
            "accountCurrency": "IDR"
        })
    }

    /// The valid body with `path` (e.g. `additionalInfo.token`) set to `value`, or removed.
    fn body_with(path: &str, value: Option<Value>) -> Vec<u8> {
        let mut body = valid_body();
        let (parent, name) = match path.split_once('.') {
            Some((parent, name)) => (&mut body[parent], name),
            None => (&mut body, path),
        };
        let object = parent.as_object_mut().unwrap();
        match value {
            Some(value) => object.insert(name.to_owned(), value),
            None => object.remove(name),
        };
        serde_json::to_vec(&body).unwrap()
    }

    fn format(field: &str) -> Result<AccountBindingCallback, SnapFieldError> {
        Err(SnapFieldError::InvalidFormat(field.into()))
    }

    fn mandatory(field: &str) -> Result<AccountBindingCallback, SnapFieldError> {
        Err(SnapFieldError::InvalidMandatory(field.into()))
    }

    // --- minify -------------------------------------------------------------------------------

    #[test]
    fn minify_drops_only_whitespace_outside_strings() {
        let body =
            b" {\r\n\t\"a b\" : [ 1 , 2.50 , -0.0e+1 ] ,\n \"c\":{ \"d\" :\"x  y\\t\" } } \n";
        assert_eq!(
            minify(body).unwrap(),
            b"{\"a b\":[1,2.50,-0.0e+1],\"c\":{\"d\":\"x  y\\t\"}}"
        );
    }

    #[test]
    fn minify_understands_escaped_quotes_and_backslashes() {
        // `\"` does not end the string; `\\` does not escape the closing quote.
        let body = br#"{ "q" : "say \"hi  there\" ", "b" : "ends in \\", "n" : 1 }"#;
        assert_eq!(
            minify(body).unwrap(),
            br#"{"q":"say \"hi  there\" ","b":"ends in \\","n":1}"#
        );
        let body = br#"[ "\\\" still  inside" , 2 ]"#;
        assert_eq!(minify(body).unwrap(), br#"["\\\" still  inside",2]"#);
    }

    #[test]
    fn minify_keeps_unicode_and_other_bytes() {
        let body = "{ \"name\" : \"Budi  Śantoso 🙂\" , \"u\" : \"\\u00e9 \" }\u{a0}".as_bytes();
        assert_eq!(
            minify(body).unwrap(),
            "{\"name\":\"Budi  Śantoso 🙂\",\"u\":\"\\u00e9 \"}\u{a0}".as_bytes(),
            "non-breaking space is not JSON whitespace"
        );
        assert_eq!(minify(b"").unwrap(), b"");
        assert_eq!(minify(b" \n\t\r").unwrap(), b"");
    }

    #[test]
    fn minify_refuses_an_unterminated_string() {
        assert_eq!(
            minify(br#"{"a": "open"#),
            Err(MinifyError::UnterminatedString(6))
        );
        assert_eq!(
            minify(br#"{"a": "ends in escape\""#),
            Err(MinifyError::UnterminatedString(6))
        );
        assert!(string_to_sign("POST", "/p", br#"{"a"#, "t").is_err());
    }

    // --- the vectors ----------------------------------------------------------------------------

    #[test]
    fn the_valid_vector_minifies_and_builds_its_string_to_sign_exactly() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let mut checked = 0;
        for vector in file["vectors"].as_array().unwrap() {
            let Some(expected) = vector["minified"].as_str() else {
                continue;
            };
            let body = vector["body"].as_str().unwrap().as_bytes();
            assert_eq!(String::from_utf8(minify(body).unwrap()).unwrap(), expected);
            let signed = string_to_sign(
                vector["method"].as_str().unwrap(),
                vector["path"].as_str().unwrap(),
                body,
                vector["headers"]["X-TIMESTAMP"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(signed, vector["string_to_sign"].as_str().unwrap());

            let callback = parse_account_binding(body).unwrap();
            assert_eq!(callback.account_transaction_limit.as_str(), "500000.00");
            assert_eq!(callback.account_transaction_limit.minor_units(), 50_000_000);
            assert_eq!(callback.account_no, ACCOUNT);
            assert_eq!(callback.additional_info.token, TOKEN);
            assert_eq!(callback.account_currency.as_deref(), Some("IDR"));
            checked += 1;
        }
        assert_eq!(checked, 1);
    }

    #[test]
    fn string_to_sign_upper_cases_the_method_and_keeps_the_rest_verbatim() {
        let signed = string_to_sign("post", "/a%2Fb?x=1", b"{ }", "2022-09-06T13:00:00+07:00");
        // SHA-256("{}")
        assert_eq!(
            signed.unwrap(),
            "POST:/a%2Fb?x=1:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a:2022-09-06T13:00:00+07:00"
        );
    }

    // --- body ----------------------------------------------------------------------------------

    #[test]
    fn a_valid_body_parses_and_extra_members_are_ignored() {
        let mut body = valid_body();
        body["note"] = "two  spaces".into();
        body["additionalInfo"]["extra"] = serde_json::json!({"x": [1, 2]});
        let callback = parse_account_binding(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(callback.partner_reference_no, "BEL2210170001");
        assert_eq!(callback.additional_info.user_id, "8881701");
        assert_eq!(callback.additional_info.bind_status, "1");
    }

    #[test]
    fn each_mandatory_field_missing_null_or_blank() {
        for field in [
            "partnerReferenceNo",
            "accountNo",
            "accountTransactionLimit",
            "additionalInfo",
            "additionalInfo.userId",
            "additionalInfo.token",
            "additionalInfo.bindStatus",
        ] {
            for value in [None, Some(Value::Null)] {
                assert_eq!(
                    parse_account_binding(&body_with(field, value.clone())),
                    mandatory(field),
                    "{field} = {value:?}"
                );
            }
            if field != "additionalInfo" {
                for blank in ["", "  "] {
                    assert_eq!(
                        parse_account_binding(&body_with(field, Some(blank.into()))),
                        mandatory(field),
                        "{field} = {blank:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn each_field_too_long_or_of_the_wrong_type() {
        for (field, max) in [
            ("partnerReferenceNo", 22),
            ("accountNo", 16),
            ("additionalInfo.userId", 64),
            ("additionalInfo.token", 36),
            ("additionalInfo.bindStatus", 2),
        ] {
            let at_limit = "é".repeat(max);
            assert!(
                parse_account_binding(&body_with(field, Some(at_limit.into()))).is_ok(),
                "{field}: {max} characters (not bytes) is fine"
            );
            let too_long = "A".repeat(max + 1);
            assert_eq!(
                parse_account_binding(&body_with(field, Some(too_long.into()))),
                format(field)
            );
            for wrong in [
                serde_json::json!(12),
                serde_json::json!(true),
                serde_json::json!(["x"]),
            ] {
                assert_eq!(
                    parse_account_binding(&body_with(field, Some(wrong))),
                    format(field)
                );
            }
            assert_eq!(
                parse_account_binding(&body_with(field, Some("a\u{0}".into()))),
                format(field),
                "control characters"
            );
        }
        assert_eq!(
            parse_account_binding(&body_with("additionalInfo", Some("x".into()))),
            format("additionalInfo")
        );
        assert_eq!(
            parse_account_binding(&body_with("additionalInfo", Some(serde_json::json!([])))),
            format("additionalInfo")
        );
    }

    #[test]
    fn account_currency_is_optional_but_three_upper_case_letters_when_sent() {
        for absent in [None, Some(Value::Null), Some("".into())] {
            let callback = parse_account_binding(&body_with("accountCurrency", absent)).unwrap();
            assert_eq!(callback.account_currency, None);
        }
        for bad in ["idr", "IDRX", "ID", "I1R", "ÏDR"] {
            assert_eq!(
                parse_account_binding(&body_with("accountCurrency", Some(bad.into()))),
                format("accountCurrency"),
                "{bad}"
            );
        }
        assert_eq!(
            parse_account_binding(&body_with("accountCurrency", Some(360.into()))),
            format("accountCurrency")
        );
    }

    /// The valid body with the limit written as the raw JSON text `limit`.
    fn body_with_raw_limit(limit: &str) -> Vec<u8> {
        format!(
            r#"{{"partnerReferenceNo":"BEL2210170001","accountNo":"{ACCOUNT}",
                "accountTransactionLimit" : {limit} ,
                "additionalInfo":{{"userId":"8881701","token":"{TOKEN}","bindStatus":"1"}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn the_limit_is_exact_whether_string_or_number() {
        for (raw, text, minor) in [
            (r#""500000.00""#, "500000.00", 50_000_000),
            ("500000.00", "500000.00", 50_000_000),
            ("500000.0", "500000.00", 50_000_000),
            ("500000", "500000.00", 50_000_000),
            (r#""500000""#, "500000.00", 50_000_000),
            ("0.05", "0.05", 5),
            ("0", "0.00", 0),
            (r#""000123.4""#, "123.40", 12_340),
            ("999999.99", "999999.99", 99_999_999),
            // A float would round this one.
            ("0.29", "0.29", 29),
        ] {
            let limit = parse_account_binding(&body_with_raw_limit(raw))
                .unwrap_or_else(|e| panic!("{raw}: {e}"))
                .account_transaction_limit;
            assert_eq!(
                (limit.as_str(), limit.minor_units()),
                (text, minor),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_limit_that_is_not_a_decimal_8_2_is_a_format_error() {
        for raw in [
            r#""1.234""#,
            "1.234",
            "1.230",
            "1e5",
            "1E+5",
            "5.0e5",
            r#""1e5""#,
            "-1.00",
            r#""-1.00""#,
            "-0",
            r#""+1.00""#,
            r#"".5""#,
            r#""5.""#,
            r#"" 5.00""#,
            r#""5,00""#,
            r#""500 000""#,
            "1000000",
            r#""1000000.00""#,
            "true",
            "{}",
            r#"["1.00"]"#,
        ] {
            assert_eq!(
                parse_account_binding(&body_with_raw_limit(raw)),
                format("accountTransactionLimit"),
                "{raw}"
            );
        }
    }

    #[test]
    fn the_limit_is_found_by_its_decoded_name_and_not_inside_strings_or_objects() {
        // The same name inside a nested object or a string must not be taken for it.
        let body =
            br#"{"x":{"accountTransactionLimit":1.234},"y":"\"accountTransactionLimit\":9.999",
            "partnerReferenceNo":"P","accountNo":"A",
            "account\u0054ransactionLimit":12.50,
            "additionalInfo":{"userId":"u","token":"t","bindStatus":"1"}}"#;
        let callback = parse_account_binding(body).unwrap();
        assert_eq!(callback.account_transaction_limit.as_str(), "12.50");
    }

    #[test]
    fn an_unusable_body_is_a_format_error_of_the_request_body() {
        for body in [
            &b""[..],
            b"not json",
            b"{\"partnerReferenceNo\":",
            b"[1]",
            b"\"s\"",
            &[0xff, 0xfe, b'{', b'}'],
            br#"{"partnerReferenceNo":"A","partnerReferenceNo":"B"}"#,
        ] {
            assert_eq!(parse_account_binding(body), format(BODY_FIELD), "{body:?}");
        }
    }

    #[test]
    fn the_first_problem_in_seed_order_wins() {
        assert_eq!(
            parse_account_binding(b"{}"),
            mandatory("partnerReferenceNo")
        );
        let body = serde_json::json!({
            "partnerReferenceNo": "P",
            "accountNo": "A".repeat(17),
            "accountTransactionLimit": "1e5",
            "accountCurrency": "x",
        });
        assert_eq!(
            parse_account_binding(&serde_json::to_vec(&body).unwrap()),
            format("accountNo")
        );
        let body = serde_json::json!({
            "partnerReferenceNo": "P", "accountNo": "A", "accountTransactionLimit": "1",
            "accountCurrency": "x",
            "additionalInfo": {"bindStatus": "123", "token": 5},
        });
        assert_eq!(
            parse_account_binding(&serde_json::to_vec(&body).unwrap()),
            mandatory("additionalInfo.userId")
        );
    }

    #[test]
    fn debug_redacts_the_token_and_the_account_number() {
        let callback = parse_account_binding(&serde_json::to_vec(&valid_body()).unwrap()).unwrap();
        let debug = format!("{callback:?}");
        let pretty = format!("{callback:#?}");
        for shown in [&debug, &pretty] {
            assert!(!shown.contains(TOKEN), "{shown}");
            assert!(!shown.contains(ACCOUNT), "{shown}");
            assert!(!shown.contains("2348"), "{shown}");
            assert!(shown.contains("BEL2210170001") && shown.contains(REDACTED));
        }
        assert!(!format!("{:?}", callback.additional_info).contains(TOKEN));
    }

    #[test]
    fn serde_round_trips_with_wire_names_and_the_limit_as_a_string() {
        let callback = parse_account_binding(&body_with_raw_limit("500000.00")).unwrap();
        let json = serde_json::to_value(&callback).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "partnerReferenceNo": "BEL2210170001",
                "accountNo": ACCOUNT,
                "accountTransactionLimit": "500000.00",
                "additionalInfo": {"userId": "8881701", "token": TOKEN, "bindStatus": "1"}
            })
        );
        let back: AccountBindingCallback = serde_json::from_value(json).unwrap();
        assert_eq!(back, callback);

        // Deserialize applies the same rules; a float limit is refused rather than rounded.
        let mut json = serde_json::to_value(&callback).unwrap();
        json["accountNo"] = "A".repeat(17).into();
        assert!(serde_json::from_value::<AccountBindingCallback>(json).is_err());
        let mut json = serde_json::to_value(&callback).unwrap();
        json["accountTransactionLimit"] = serde_json::json!(0.29);
        assert!(serde_json::from_value::<AccountBindingCallback>(json).is_err());
        let mut json = serde_json::to_value(&callback).unwrap();
        json["accountTransactionLimit"] = serde_json::json!(7);
        let back: AccountBindingCallback = serde_json::from_value(json).unwrap();
        assert_eq!(back.account_transaction_limit.as_str(), "7.00");
    }

    // --- headers -------------------------------------------------------------------------------

    fn valid_headers() -> HashMap<&'static str, String> {
        HashMap::from([
            ("X-TIMESTAMP", "2022-09-06T13:00:00+07:00".to_owned()),
            ("X-CLIENT-KEY", "BNC_PARTNER_1".to_owned()),
            ("X-SIGNATURE", "IC8NFuiJ+/w==".to_owned()),
            ("X-EXTERNAL-ID", "77778042022091500001".to_owned()),
            ("CHANNEL-ID", "95221".to_owned()),
        ])
    }

    fn check<'a>(
        headers: &'a HashMap<&'static str, String>,
    ) -> Result<SnapHeaders<'a>, SnapFieldError> {
        validate_headers(|name| headers.get(name).map(String::as_str))
    }

    #[test]
    fn valid_headers_are_borrowed_and_the_timestamp_parsed() {
        let map = valid_headers();
        let headers = check(&map).unwrap();
        assert_eq!(headers.timestamp, "2022-09-06T13:00:00+07:00");
        assert_eq!(headers.sent_at.unix_timestamp(), 1_662_444_000);
        assert_eq!(headers.sent_at.offset().whole_hours(), 7);
        assert_eq!(headers.client_key, "BNC_PARTNER_1");
        assert_eq!(headers.external_id, "77778042022091500001");
        assert_eq!(headers.channel_id, "95221");

        for timestamp in ["2022-09-06T06:00:00Z", "2022-09-06T13:00:00.123+07:00"] {
            let mut map = valid_headers();
            map.insert("X-TIMESTAMP", timestamp.into());
            assert_eq!(check(&map).unwrap().sent_at.unix_timestamp(), 1_662_444_000);
        }
        // Bytes work too (an http::HeaderValue is AsRef<[u8]>).
        let bytes: HashMap<&str, Vec<u8>> = valid_headers()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        assert!(validate_headers(|name| bytes.get(name)).is_ok());
    }

    #[test]
    fn each_header_missing_empty_too_long_or_malformed() {
        for (name, max) in [
            ("X-TIMESTAMP", 0),
            ("X-CLIENT-KEY", 32),
            ("X-SIGNATURE", 2048),
            ("X-EXTERNAL-ID", 36),
            ("CHANNEL-ID", 5),
        ] {
            let mut map = valid_headers();
            map.remove(name);
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidMandatory(name.into()))
            );
            map.insert(name, String::new());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidMandatory(name.into()))
            );
            for bad in ["has space", "tab\t", "é"] {
                map.insert(name, bad.into());
                assert_eq!(
                    check(&map),
                    Err(SnapFieldError::InvalidFormat(name.into())),
                    "{name}: {bad:?}"
                );
            }
            if max > 0 {
                map.insert(name, "A".repeat(max));
                assert!(check(&map).is_ok(), "{name} at {max}");
                map.insert(name, "A".repeat(max + 1));
                assert_eq!(check(&map), Err(SnapFieldError::InvalidFormat(name.into())));
            }
        }
        let bytes: HashMap<&str, Vec<u8>> = valid_headers()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    if k == "CHANNEL-ID" {
                        vec![0xff]
                    } else {
                        v.into_bytes()
                    },
                )
            })
            .collect();
        assert_eq!(
            validate_headers(|name| bytes.get(name)),
            Err(SnapFieldError::InvalidFormat("CHANNEL-ID".into()))
        );
    }

    #[test]
    fn timestamps_need_an_offset_and_signatures_base64_characters() {
        for bad in [
            "2022-09-06T13:00:00",
            "2022-09-06 13:00:00+07:00",
            "2022-09-06T13:00:00+0700",
            "06/09/2022",
            "1662444000",
        ] {
            let mut map = valid_headers();
            map.insert("X-TIMESTAMP", bad.into());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidFormat("X-TIMESTAMP".into())),
                "{bad}"
            );
        }
        for bad in ["abc-_", "abc*", "YWJj\\"] {
            let mut map = valid_headers();
            map.insert("X-SIGNATURE", bad.into());
            assert_eq!(
                check(&map),
                Err(SnapFieldError::InvalidFormat("X-SIGNATURE".into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_are_checked_in_seed_order() {
        let empty: HashMap<&str, String> = HashMap::new();
        assert_eq!(
            check(&empty),
            Err(SnapFieldError::InvalidMandatory("X-TIMESTAMP".into()))
        );
        let mut map = valid_headers();
        map.remove("CHANNEL-ID");
        map.insert("X-CLIENT-KEY", "K".repeat(33));
        map.insert("X-EXTERNAL-ID", String::new());
        assert_eq!(
            check(&map),
            Err(SnapFieldError::InvalidFormat("X-CLIENT-KEY".into()))
        );
    }

    // --- responses -----------------------------------------------------------------------------

    #[test]
    fn responses_serialise_snap_style_with_their_http_status() {
        let cases = [
            (
                SnapResponse::success(),
                200,
                r#"{"responseCode":"2000000","responseMessage":"Successful"}"#,
            ),
            (
                SnapResponse::invalid_format("additionalInfo.token"),
                400,
                r#"{"responseCode":"4000001","responseMessage":"Invalid Field Format additionalInfo.token"}"#,
            ),
            (
                SnapResponse::invalid_mandatory("X-TIMESTAMP"),
                400,
                r#"{"responseCode":"4000002","responseMessage":"Invalid Mandatory Field X-TIMESTAMP"}"#,
            ),
            (
                SnapResponse::unauthorized("Invalid signature"),
                401,
                r#"{"responseCode":"4010000","responseMessage":"Unauthorized. Invalid signature"}"#,
            ),
            (
                SnapResponse::general_error(),
                503,
                r#"{"responseCode":"5000000","responseMessage":"General Error"}"#,
            ),
        ];
        for (response, status, json) in cases {
            assert_eq!(serde_json::to_string(&response).unwrap(), json);
            assert_eq!(response.http_status(), status);
        }
        let error = SnapFieldError::InvalidMandatory("accountNo".into());
        assert_eq!(error.field(), "accountNo");
        assert_eq!(error.to_string(), "Invalid Mandatory Field accountNo");
        assert_eq!(
            SnapResponse::from(error),
            SnapResponse::invalid_mandatory("accountNo")
        );
    }

    #[test]
    fn redaction_removes_the_token_and_account_number_only() {
        let body = br#"{"accountNo":"585945******2348","partnerReferenceNo":"P1",
            "additionalInfo":{"userId":"u1","token":"c9fead3d790f41d4819456ebc13f2910","bindStatus":"1"}}"#;
        let redacted = String::from_utf8(redact_body(body)).unwrap();
        assert!(
            !redacted.contains("c9fead3d790f41d4819456ebc13f2910"),
            "{redacted}"
        );
        assert!(!redacted.contains("2348"), "{redacted}");
        assert!(
            redacted.contains(r#""userId":"u1""#) && redacted.contains("P1"),
            "{redacted}"
        );
        assert_eq!(redact_body(b"not json"), REDACTED.as_bytes());
    }
}
