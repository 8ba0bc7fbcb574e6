//! Corelink bank callbacks (DESIGN.md §3): the unit and batch bodies, their validation rules
//! (§3.2), and the claims a bank signs (§3.1).
//!
//! Validation walks a `serde_json::Value` by hand instead of deriving `Deserialize`, so that one
//! answer lists every problem with its JSON path rather than serde's first error only.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::validation::{BodyError, FieldError};

/// `reference` and `bank_reference` are at most this many characters (§3.2).
pub const MAX_REFERENCE_CHARS: usize = 64;

/// Default upper bound on the orders of one batch (§3.2, configurable).
pub const DEFAULT_MAX_BATCH_ORDERS: usize = 1000;

/// The status a bank reports for one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Pending,
    Success,
    Failed,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Success => "SUCCESS",
            Self::Failed => "FAILED",
        }
    }

    /// A final status never changes once applied (the bank is the source of truth).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending)
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(Self::Pending),
            "SUCCESS" => Some(Self::Success),
            "FAILED" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// One order's status as the bank reported it, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderStatusUpdate {
    /// Our payment order reference (1..64 characters).
    pub reference: String,
    /// The bank's own reference for the order, when it sends one.
    pub bank_reference: Option<String>,
    pub status: OrderStatus,
    /// Required (non-empty) when `status` is FAILED.
    pub reason_code: Option<String>,
    /// Required (non-empty) when `status` is FAILED.
    pub reason_message: Option<String>,
    /// When the bank processed the order (`processed_at`, or its alias `timestamp`).
    #[serde(with = "time::serde::rfc3339")]
    pub processed_at: OffsetDateTime,
}

/// A batch callback, validated: all of it is accepted or none of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStatusNotification {
    /// When present it equals the request's `X-Idempotency-Key`.
    pub batch_id: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    pub orders: Vec<OrderStatusUpdate>,
}

/// Parses and validates a unit callback body (§3.2).
pub fn parse_unit(body: &[u8]) -> Result<OrderStatusUpdate, BodyError> {
    let value = parse_json(body)?;
    let mut errors = Vec::new();
    let update = match value.as_object() {
        Some(object) => order_from_object(object, "", &mut errors),
        None => {
            errors.push(FieldError::new("$", "must be a JSON object"));
            None
        }
    };
    match update {
        Some(update) if errors.is_empty() => Ok(update),
        _ => Err(BodyError::Invalid(errors)),
    }
}

/// Parses and validates a batch callback body (§3.2). `idempotency_key` is the request's
/// `X-Idempotency-Key`, which `batch_id` must equal when present.
pub fn parse_batch(
    body: &[u8],
    idempotency_key: &str,
    max_orders: usize,
) -> Result<BatchStatusNotification, BodyError> {
    let value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(BodyError::Invalid(vec![FieldError::new(
            "$",
            "must be a JSON object",
        )]));
    };
    let mut errors = Vec::new();

    let batch_id = optional_string(object, "batch_id", "batch_id", &mut errors);
    if let Some(id) = &batch_id
        && id != idempotency_key
    {
        errors.push(FieldError::new(
            "batch_id",
            "must equal the X-Idempotency-Key header",
        ));
    }
    let sent_at = match object.get("sent_at") {
        None | Some(Value::Null) => None,
        Some(value) => timestamp(value, "sent_at", &mut errors),
    };

    let mut orders = Vec::new();
    match object.get("orders") {
        Some(Value::Array(items)) if items.is_empty() => {
            errors.push(FieldError::new("orders", "must hold at least one order"));
        }
        Some(Value::Array(items)) if items.len() > max_orders => {
            errors.push(FieldError::new(
                "orders",
                format!(
                    "holds {} orders; at most {max_orders} are accepted",
                    items.len()
                ),
            ));
        }
        Some(Value::Array(items)) => {
            let mut seen = std::collections::HashMap::new();
            for (index, item) in items.iter().enumerate() {
                let path = format!("orders[{index}].");
                let Some(object) = item.as_object() else {
                    errors.push(FieldError::new(
                        format!("orders[{index}]"),
                        "must be a JSON object",
                    ));
                    continue;
                };
                if let Some(order) = order_from_object(object, &path, &mut errors) {
                    if let Some(first) = seen.insert(order.reference.clone(), index) {
                        errors.push(FieldError::new(
                            format!("{path}reference"),
                            format!("duplicates the reference of orders[{first}]"),
                        ));
                    }
                    orders.push(order);
                }
            }
        }
        Some(_) => errors.push(FieldError::new("orders", "must be an array")),
        None => errors.push(FieldError::new("orders", "is required")),
    }

    if errors.is_empty() {
        Ok(BatchStatusNotification {
            batch_id,
            sent_at,
            orders,
        })
    } else {
        Err(BodyError::Invalid(errors))
    }
}

/// Parses JSON, refusing a member name repeated in one object: parsers disagree on which
/// occurrence wins, and the bank's signer may have read the other one.
pub fn parse_json(body: &[u8]) -> Result<Value, BodyError> {
    serde_json::from_slice::<StrictValue>(body)
        .map(|strict| strict.0)
        .map_err(|e| BodyError::Malformed(e.to_string()))
}

/// A `serde_json::Value` whose objects have unique member names.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(serde::de::Error::custom(format!(
                    "member `{name}` appears twice"
                )));
            }
            let StrictValue(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(Value::Object(object))
    }
}

/// Validates one order object; pushes every problem into `errors` with `prefix` on its path.
fn order_from_object(
    object: &Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<OrderStatusUpdate> {
    let before = errors.len();
    let field = |name: &str| format!("{prefix}{name}");

    let reference = match object.get("reference") {
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(FieldError::new(field("reference"), "must not be empty"));
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_REFERENCE_CHARS => {
            errors.push(FieldError::new(
                field("reference"),
                format!("must be at most {MAX_REFERENCE_CHARS} characters"),
            ));
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field("reference"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field("reference"), "must be a string"));
            None
        }
    };

    let bank_reference =
        optional_string(object, "bank_reference", &field("bank_reference"), errors);
    if let Some(s) = &bank_reference
        && s.chars().count() > MAX_REFERENCE_CHARS
    {
        errors.push(FieldError::new(
            field("bank_reference"),
            format!("must be at most {MAX_REFERENCE_CHARS} characters"),
        ));
    }

    let status = match object.get("status") {
        Some(Value::String(s)) => match OrderStatus::parse(s) {
            Some(status) => Some(status),
            None => {
                errors.push(FieldError::new(
                    field("status"),
                    "must be one of PENDING, SUCCESS, FAILED",
                ));
                None
            }
        },
        None | Some(Value::Null) => {
            errors.push(FieldError::new(field("status"), "is required"));
            None
        }
        Some(_) => {
            errors.push(FieldError::new(field("status"), "must be a string"));
            None
        }
    };

    let reason_code = optional_string(object, "reasonCode", &field("reasonCode"), errors);
    let reason_message = optional_string(object, "reasonMessage", &field("reasonMessage"), errors);
    if status == Some(OrderStatus::Failed) {
        for (name, value) in [
            ("reasonCode", &reason_code),
            ("reasonMessage", &reason_message),
        ] {
            if value.as_deref().is_none_or(|s| s.trim().is_empty()) {
                errors.push(FieldError::new(
                    field(name),
                    "is required when status is FAILED",
                ));
            }
        }
    }

    // `timestamp` is the seed's spelling of `processed_at`; the explicit name wins.
    let processed_at = match (object.get("processed_at"), object.get("timestamp")) {
        (Some(value), _) if !value.is_null() => timestamp(value, &field("processed_at"), errors),
        (_, Some(value)) if !value.is_null() => timestamp(value, &field("timestamp"), errors),
        _ => {
            errors.push(FieldError::new(
                field("processed_at"),
                "is required (or its alias timestamp)",
            ));
            None
        }
    };

    if errors.len() != before {
        return None;
    }
    Some(OrderStatusUpdate {
        reference: reference?,
        bank_reference,
        status: status?,
        reason_code,
        reason_message,
        processed_at: processed_at?,
    })
}

/// A member that may be absent or null, and is a string otherwise.
fn optional_string(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    match object.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            errors.push(FieldError::new(path, "must be a string"));
            None
        }
    }
}

fn timestamp(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<OffsetDateTime> {
    match value.as_str().map(|s| OffsetDateTime::parse(s, &Rfc3339)) {
        Some(Ok(t)) => Some(t),
        _ => {
            errors.push(FieldError::new(
                path,
                "must be an RFC 3339 date-time such as 2025-11-19T07:09:30Z",
            ));
            None
        }
    }
}

/// The JWS payload a bank signs for each request (§3.1). Every member must equal the request
/// exactly; extra members are ignored by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRequestClaims {
    pub method: String,
    /// The request target as the bank sent it: path plus `?query` if any.
    pub path: String,
    pub client_id: String,
    pub timestamp: String,
    pub nonce: String,
    pub idempotency_key: String,
    pub content_type: String,
    /// [`body_sha256`] of the exact body bytes.
    pub body_sha256: String,
}

impl SignedRequestClaims {
    /// The members in the order §3.1 lists them, as (name, value) pairs, so the verifier and
    /// the signer walk the same list.
    pub fn members(&self) -> [(&'static str, &str); 8] {
        [
            ("method", &self.method),
            ("path", &self.path),
            ("client_id", &self.client_id),
            ("timestamp", &self.timestamp),
            ("nonce", &self.nonce),
            ("idempotency_key", &self.idempotency_key),
            ("content_type", &self.content_type),
            ("body_sha256", &self.body_sha256),
        ]
    }
}

/// Base64url (no padding) of SHA-256 over the exact body bytes, as signed in `body_sha256`.
pub fn body_sha256(body: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(body))
}

/// `X-Timestamp` as §3 accepts it, parsed: RFC 3339 in UTC, exactly
/// `YYYY-MM-DDTHH:MM:SS`, an optional fraction of 1..=9 digits, then `Z` or `+00:00` (the same
/// instant written as an offset). Anything else is `None`: another offset, `-00:00` (RFC 3339's
/// "offset unknown"), a lower-case `t` or `z`, or a date that does not exist. The OpenAPI
/// description gives the same grammar as a pattern.
pub fn parse_request_timestamp(text: &str) -> Option<OffsetDateTime> {
    let date_time = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (seconds, fraction) = match date_time.split_once('.') {
        Some((seconds, fraction)) => (seconds, Some(fraction)),
        None => (date_time, None),
    };
    let shape_ok = seconds.len() == 19
        && seconds.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
        && fraction
            .is_none_or(|f| (1..=9).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit()));
    if !shape_ok {
        return None;
    }
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// `Content-Type` as §3 accepts it: `application/json`, alone or with the one parameter
/// `charset=utf-8` (JSON is UTF-8, RFC 8259), the media type and charset in any case. The
/// signature covers the header as sent, whichever of these the bank chose.
pub fn is_json_content_type(value: &str) -> bool {
    let mut parts = value.split(';');
    let media_type = parts.next().unwrap_or_default().trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return false;
    }
    match (parts.next(), parts.next()) {
        (None, _) => true,
        (Some(parameter), None) => parameter
            .trim()
            .split_once('=')
            .is_some_and(|(name, value)| {
                name.eq_ignore_ascii_case("charset")
                    && ["utf-8", "\"utf-8\""]
                        .iter()
                        .any(|accepted| value.eq_ignore_ascii_case(accepted))
            }),
        _ => false,
    }
}

/// The canonical names of the Corelink request headers (§3), as the envelope records them.
pub mod headers {
    pub const CLIENT_ID: &str = "x-client-id";
    pub const TIMESTAMP: &str = "x-timestamp";
    pub const NONCE: &str = "x-nonce";
    pub const IDEMPOTENCY_KEY: &str = "x-idempotency-key";
    pub const SIGNATURE: &str = "x-signature";
    pub const CONTENT_TYPE: &str = "content-type";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_fields(err: BodyError) -> Vec<String> {
        match err {
            BodyError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            BodyError::Malformed(m) => panic!("expected invalid, got malformed: {m}"),
        }
    }

    #[test]
    fn seed_unit_example_is_valid_with_timestamp_alias() {
        let body = br#"{"reference": "PAY-2025-0001", "bank_reference": "BNK-778899",
            "status": "SUCCESS", "timestamp": "2025-11-19T07:09:30Z", "extra": 1}"#;
        let update = parse_unit(body).expect("valid");
        assert_eq!(update.reference, "PAY-2025-0001");
        assert_eq!(update.bank_reference.as_deref(), Some("BNK-778899"));
        assert_eq!(update.status, OrderStatus::Success);
        assert_eq!(update.processed_at.unix_timestamp(), 1_763_536_170);
    }

    #[test]
    fn failed_requires_reason_code_and_message() {
        let body = br#"{"reference":"A","status":"FAILED","reasonCode":" ","processed_at":"2025-11-19T07:09:30Z"}"#;
        assert_eq!(
            invalid_fields(parse_unit(body).unwrap_err()),
            ["reasonCode", "reasonMessage"]
        );
    }

    #[test]
    fn every_problem_is_listed_with_its_path() {
        let long = "R".repeat(65);
        let body = format!(
            r#"{{"reference":"{long}","bank_reference":7,"status":"DONE","processed_at":"yesterday"}}"#
        );
        assert_eq!(
            invalid_fields(parse_unit(body.as_bytes()).unwrap_err()),
            ["reference", "bank_reference", "status", "processed_at"]
        );
        assert_eq!(
            invalid_fields(parse_unit(b"{}").unwrap_err()),
            ["reference", "status", "processed_at"]
        );
        assert_eq!(invalid_fields(parse_unit(b"[1]").unwrap_err()), ["$"]);
    }

    #[test]
    fn sixty_four_characters_is_the_limit_counted_in_characters() {
        let reference = "é".repeat(64);
        let body = format!(
            r#"{{"reference":"{reference}","status":"PENDING","processed_at":"2025-11-19T07:09:30+01:00"}}"#
        );
        assert!(parse_unit(body.as_bytes()).is_ok());
    }

    #[test]
    fn a_repeated_member_is_malformed_at_any_depth() {
        let top = br#"{"reference":"A","status":"SUCCESS","status":"FAILED","processed_at":"2025-11-19T07:09:30Z"}"#;
        assert!(
            matches!(parse_unit(top), Err(BodyError::Malformed(m)) if m.contains("`status` appears twice"))
        );
        let nested = br#"{"orders":[{"reference":"A","reference":"B"}]}"#;
        assert!(matches!(
            parse_batch(nested, "K", 10),
            Err(BodyError::Malformed(_))
        ));
        // Numbers keep working, including those beyond i64.
        assert_eq!(
            parse_json(b"[1, -2, 3.5, 18446744073709551615]")
                .unwrap()
                .to_string(),
            "[1,-2,3.5,18446744073709551615]"
        );
        assert!(matches!(
            parse_json(b"[1e400]"),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn not_json_is_malformed() {
        assert!(matches!(
            parse_unit(b"{\"reference\":"),
            Err(BodyError::Malformed(_))
        ));
        assert!(matches!(
            parse_unit(&[0xff, 0xfe]),
            Err(BodyError::Malformed(_))
        ));
        let deep = "[".repeat(10_000);
        assert!(matches!(
            parse_unit(deep.as_bytes()),
            Err(BodyError::Malformed(_))
        ));
    }

    fn order(reference: &str) -> String {
        format!(
            r#"{{"reference":"{reference}","status":"PENDING","processed_at":"2025-11-19T07:09:30Z"}}"#
        )
    }

    #[test]
    fn batch_rules() {
        let ok = format!(
            r#"{{"batch_id":"K","orders":[{},{}]}}"#,
            order("A"),
            order("B")
        );
        let batch = parse_batch(ok.as_bytes(), "K", 1000).expect("valid");
        assert_eq!(batch.orders.len(), 2);

        assert_eq!(
            invalid_fields(parse_batch(ok.as_bytes(), "OTHER", 1000).unwrap_err()),
            ["batch_id"]
        );
        assert_eq!(
            invalid_fields(parse_batch(ok.as_bytes(), "K", 1).unwrap_err()),
            ["orders"]
        );

        let duplicate = format!(r#"{{"orders":[{},{}]}}"#, order("A"), order("A"));
        assert_eq!(
            invalid_fields(parse_batch(duplicate.as_bytes(), "K", 1000).unwrap_err()),
            ["orders[1].reference"]
        );
        assert_eq!(
            invalid_fields(parse_batch(br#"{"orders":[]}"#, "K", 1000).unwrap_err()),
            ["orders"]
        );
        assert_eq!(
            invalid_fields(parse_batch(br#"{"orders":{}}"#, "K", 1000).unwrap_err()),
            ["orders"]
        );
        let bad_inner = format!(r#"{{"orders":[{},{{"reference":"B"}}]}}"#, order("A"));
        assert_eq!(
            invalid_fields(parse_batch(bad_inner.as_bytes(), "K", 1000).unwrap_err()),
            ["orders[1].status", "orders[1].processed_at"]
        );
    }

    #[test]
    fn request_timestamps_are_utc_rfc3339_exactly() {
        for accepted in [
            "2025-11-19T07:15:00Z",
            "2025-11-19T07:15:00+00:00",
            "2025-11-19T07:15:00.5Z",
            "2025-11-19T07:15:00.123456789+00:00",
            "2024-02-29T23:59:59Z",
        ] {
            assert!(parse_request_timestamp(accepted).is_some(), "{accepted}");
        }
        for refused in [
            "2025-11-19T07:15:00+01:00",
            "2025-11-19T07:15:00-00:00",
            "2025-11-19t07:15:00Z",
            "2025-11-19T07:15:00z",
            "2025-11-19 07:15:00Z",
            "2025-11-19T07:15Z",
            "2025-11-19T07:15:00.Z",
            "2025-11-19T07:15:00.1234567890Z",
            "2025-02-30T07:15:00Z",
            "2025-13-01T07:15:00Z",
            "+2025-11-19T07:15:00Z",
            "2025-11-19T07:15:00",
            "",
        ] {
            assert!(parse_request_timestamp(refused).is_none(), "{refused}");
        }
        assert_eq!(
            parse_request_timestamp("2025-11-19T07:15:00+00:00"),
            parse_request_timestamp("2025-11-19T07:15:00Z")
        );
    }

    #[test]
    fn the_json_content_type_with_or_without_its_charset() {
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
        ] {
            assert!(is_json_content_type(accepted), "{accepted}");
        }
        for refused in [
            "text/json",
            "application/json; charset=latin-1",
            "application/json; charset=utf-8; version=2",
            "application/json; version=2",
            "application/jsonx",
            "application/json-patch+json",
            "",
        ] {
            assert!(!is_json_content_type(refused), "{refused}");
        }
    }

    #[test]
    fn body_hash_is_base64url_without_padding() {
        // SHA-256("") = e3b0c442...; base64url of it, no '='.
        assert_eq!(
            body_sha256(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }
}
