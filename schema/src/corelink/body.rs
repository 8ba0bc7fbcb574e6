//! Corelink unit and batch bodies (DESIGN.md §3.2): their shapes and the rules that accept or
//! refuse them. A request is never partly accepted: one invalid order refuses the whole batch
//! (§3.3), so every problem is collected before answering.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::json::{self, check_length, optional_string, required_string};
use crate::validation::{BodyError, Count, FieldError, is_blank, parse_rfc3339};

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
    let object = json::parse_object(body)?;
    let mut errors = Vec::new();
    match order_from_object(&object, "", &mut errors) {
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
    let object = json::parse_object(body)?;
    let mut errors = Vec::new();

    let batch_id = optional_string(&object, "batch_id", "batch_id", &mut errors);
    if let Some(id) = &batch_id
        && id != idempotency_key
    {
        errors.push(FieldError::new(
            "batch_id",
            "must equal the X-Idempotency-Key header",
        ));
    }
    let sent_at = json::optional_date_time(
        &object,
        "sent_at",
        parse_rfc3339,
        RFC3339_EXPECTED,
        "sent_at",
        &mut errors,
    );

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

/// Validates one order object; pushes every problem into `errors` with `prefix` on its path.
fn order_from_object(
    object: &Map<String, Value>,
    prefix: &str,
    errors: &mut Vec<FieldError>,
) -> Option<OrderStatusUpdate> {
    let before = errors.len();
    let field = |name: &str| format!("{prefix}{name}");

    let reference = required_string(object, "reference", &field("reference"), errors).filter(|s| {
        if s.is_empty() {
            errors.push(FieldError::new(field("reference"), "must not be empty"));
            return false;
        }
        check_reference_length(s, &field("reference"), errors)
    });

    let bank_reference =
        optional_string(object, "bank_reference", &field("bank_reference"), errors);
    if let Some(s) = &bank_reference {
        check_reference_length(s, &field("bank_reference"), errors);
    }

    let status = required_string(object, "status", &field("status"), errors).and_then(|s| {
        let status = OrderStatus::parse(&s);
        if status.is_none() {
            errors.push(FieldError::new(
                field("status"),
                "must be one of PENDING, SUCCESS, FAILED",
            ));
        }
        status
    });

    let reason_code = optional_string(object, "reasonCode", &field("reasonCode"), errors);
    let reason_message = optional_string(object, "reasonMessage", &field("reasonMessage"), errors);
    if status == Some(OrderStatus::Failed) {
        for (name, value) in [
            ("reasonCode", &reason_code),
            ("reasonMessage", &reason_message),
        ] {
            if value.as_deref().is_none_or(is_blank) {
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

/// `reference` and `bank_reference`: at most [`MAX_REFERENCE_CHARS`] characters (not bytes).
fn check_reference_length(s: &str, path: &str, errors: &mut Vec<FieldError>) -> bool {
    check_length(s, 0..=MAX_REFERENCE_CHARS, Count::Chars, path, errors)
}

const RFC3339_EXPECTED: &str = "must be an RFC 3339 date-time such as 2025-11-19T07:09:30Z";

fn timestamp(value: &Value, path: &str, errors: &mut Vec<FieldError>) -> Option<OffsetDateTime> {
    json::date_time(value, parse_rfc3339, RFC3339_EXPECTED, path, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::parse_json;

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
}
