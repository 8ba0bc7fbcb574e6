//! The Paysafe webhook (DESIGN.md §5): the body Paysafe posts to `/webhooks/paysafe`, and the
//! rules that accept it (a body that is not a Paysafe event gets a 400; Paysafe retries non-2xx).
//! Its signature is checked before, in `signature`; what its event name means is `event`'s.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::event::{WebhookEvent, WebhookFact};
use super::members::{amount, currency, merchant_ref, optional_id, parse_paysafe_time};
use crate::json::{self, check_length, optional_string};
use crate::validation::{BodyError, Count, FieldError};

/// The longest event `id` accepted, in bytes.
const MAX_EVENT_ID_BYTES: usize = 128;

/// A Paysafe webhook, validated (§5). The raw body stays the source of truth (it is what was
/// signed and what the intake message carries); this is what the workers read from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaysafeWebhook {
    /// `eventName`, or `eventType`, or `type` (all equal when several are present).
    pub event: WebhookEvent,
    /// The event's own id (`id`), when sent; Paysafe reuses it on a retry.
    pub event_id: Option<String>,
    /// The payment, credit or (for PAYMENT_HANDLE_*) payment-handle id: `resourceId`, else
    /// `payload.id` (equal when both are present).
    pub resource_id: String,
    /// `payload.merchantRefNum`.
    pub merchant_ref_num: Option<String>,
    /// `payload.amount`, in minor units (cents), 0..=i64::MAX.
    pub amount: Option<i64>,
    /// `payload.currencyCode`, ISO 4217 (three upper-case letters).
    pub currency_code: Option<String>,
    /// `payload.status` as sent (a handle's status such as PAYABLE is not a [`super::PaysafeStatus`]);
    /// informational: the event name decides the fact.
    pub payload_status: Option<String>,
    /// `eventDate`: when Paysafe says it happened.
    #[serde(with = "time::serde::rfc3339::option")]
    pub event_date: Option<OffsetDateTime>,
    /// `attemptNumber` (a string or a number on the wire): Paysafe's delivery attempt.
    pub attempt_number: Option<u32>,
    /// `mode` (`test` or `live`), as sent.
    pub mode: Option<String>,
}

impl PaysafeWebhook {
    /// See [`WebhookEvent::fact`].
    pub fn fact(&self) -> WebhookFact {
        self.event.fact()
    }
}

/// Parses and validates a webhook body (§5).
///
/// Required: an event name (`eventName`, `eventType` or `type`; when several are present they
/// must agree) and the resource id (`resourceId` or `payload.id`; equal when both are present).
/// Everything else is optional but must have the right shape when present: an id that is not
/// an id, or an amount that is not whole minor units, is refused rather than guessed at.
/// Unknown members are ignored.
pub fn parse_webhook(body: &[u8]) -> Result<PaysafeWebhook, BodyError> {
    let object = json::parse_object(body)?;
    let mut errors = Vec::new();

    let event = event_name(&object, &mut errors);
    let event_id = optional_string(&object, "id", "id", &mut errors);
    if let Some(id) = &event_id {
        // Counted in bytes, as this check always has; Paysafe's event ids are ASCII.
        check_length(id, 1..=MAX_EVENT_ID_BYTES, Count::Bytes, "id", &mut errors);
    }

    let payload = match object.get("payload") {
        None | Some(Value::Null) => None,
        Some(Value::Object(payload)) => Some(payload),
        Some(_) => {
            errors.push(FieldError::new("payload", "must be a JSON object"));
            None
        }
    };
    let empty = Map::new();
    let payload_or_empty = payload.unwrap_or(&empty);

    let resource_id = optional_id(&object, "resourceId", "resourceId", &mut errors);
    let payload_id = optional_id(payload_or_empty, "id", "payload.id", &mut errors);
    let resource_id = match (resource_id, payload_id) {
        (Some(a), Some(b)) if a != b => {
            errors.push(FieldError::new("payload.id", "must equal resourceId"));
            None
        }
        (Some(id), _) | (None, Some(id)) => Some(id),
        (None, None) => {
            if !errors
                .iter()
                .any(|e| e.field == "resourceId" || e.field == "payload.id")
            {
                errors.push(FieldError::new("resourceId", "is required (or payload.id)"));
            }
            None
        }
    };

    let merchant_ref_num = merchant_ref(
        payload_or_empty,
        "payload.merchantRefNum",
        false,
        &mut errors,
    );
    let amount = amount(payload_or_empty, "payload.amount", false, &mut errors);
    let currency_code = currency(payload_or_empty, "payload.currencyCode", false, &mut errors);
    let payload_status = optional_string(payload_or_empty, "status", "payload.status", &mut errors);

    let event_date = json::optional_date_time(
        &object,
        "eventDate",
        parse_paysafe_time,
        "must be a date-time such as 2021-10-06T13:20:18Z",
        "eventDate",
        &mut errors,
    );

    let attempt_number = match object.get("attemptNumber") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let parsed = match value {
                Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                    s.parse::<u32>().ok()
                }
                Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => None,
            };
            if parsed.is_none() {
                errors.push(FieldError::new(
                    "attemptNumber",
                    "must be a non-negative integer (a number or a string of digits)",
                ));
            }
            parsed
        }
    };
    let mode = optional_string(&object, "mode", "mode", &mut errors);

    match (event, resource_id) {
        (Some(event), Some(resource_id)) if errors.is_empty() => Ok(PaysafeWebhook {
            event,
            event_id,
            resource_id,
            merchant_ref_num,
            amount,
            currency_code,
            payload_status,
            event_date,
            attempt_number,
            mode,
        }),
        _ => Err(BodyError::Invalid(errors)),
    }
}

/// The event name from `eventName`, `eventType` and `type`; every spelling present must agree.
fn event_name(object: &Map<String, Value>, errors: &mut Vec<FieldError>) -> Option<WebhookEvent> {
    let mut found: Option<(&str, String)> = None;
    let mut ok = true;
    for member in ["eventName", "eventType", "type"] {
        let Some(name) = optional_string(object, member, member, errors) else {
            if object.get(member).is_some_and(|v| !v.is_null()) {
                ok = false;
            }
            continue;
        };
        match &found {
            Some((first, first_name)) if *first_name != name => {
                errors.push(FieldError::new(member, format!("disagrees with {first}")));
                ok = false;
            }
            Some(_) => {}
            None => found = Some((member, name)),
        }
    }
    let Some((member, name)) = found else {
        if ok {
            errors.push(FieldError::new(
                "eventName",
                "is required (or its alias type / eventType)",
            ));
        }
        return None;
    };
    match WebhookEvent::parse(&name) {
        Some(event) if ok => Some(event),
        Some(_) => None,
        None => {
            errors.push(FieldError::new(
                member,
                "must be a Paysafe event name such as PAYMENT_COMPLETED",
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;

    use super::*;
    use crate::paysafe::{PaysafeStatus, TrackedKind};

    const VECTORS: &str = include_str!("../../../ingress/tests/vectors/paysafe-webhook.json");

    fn fields(error: BodyError) -> Vec<String> {
        match error {
            BodyError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect(),
            BodyError::Malformed(reason) => panic!("expected Invalid, got Malformed({reason})"),
        }
    }

    fn webhook(value: Value) -> Result<PaysafeWebhook, BodyError> {
        parse_webhook(value.to_string().as_bytes())
    }

    #[test]
    fn shared_vector_body_parses() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let body = file["vectors"][0]["body"].as_str().unwrap();
        let hook = parse_webhook(body.as_bytes()).unwrap();
        assert_eq!(hook.event, WebhookEvent::PaymentCompleted);
        assert_eq!(hook.resource_id, "568530f0-262a-453f-b681-1088195d9439");
        assert_eq!(
            hook.event_id.as_deref(),
            Some("7f3c2a1e-0000-4000-8000-000000000001")
        );
        assert_eq!(
            hook.merchant_ref_num.as_deref(),
            Some("b9405251-5ede-4439-b844-73ff553144a5")
        );
        assert_eq!(hook.amount, Some(546));
        assert_eq!(hook.currency_code.as_deref(), Some("CAD"));
        assert_eq!(hook.payload_status.as_deref(), Some("COMPLETED"));
        assert_eq!(hook.attempt_number, Some(1));
        assert_eq!(hook.mode.as_deref(), Some("test"));
        assert_eq!(
            hook.event_date,
            Some(OffsetDateTime::parse("2021-10-06T13:20:18Z", &Rfc3339).unwrap())
        );
        assert_eq!(
            hook.fact(),
            WebhookFact::Status {
                kind: TrackedKind::Payment,
                status: PaysafeStatus::Completed
            }
        );
    }

    #[test]
    fn event_name_spellings() {
        for member in ["eventName", "type", "eventType"] {
            let hook =
                webhook(json!({member: "SA_CREDIT_COMPLETED", "resourceId": "c-1"})).unwrap();
            assert_eq!(hook.event, WebhookEvent::SaCreditCompleted, "{member}");
        }
        let both = webhook(
            json!({"eventName": "PAYMENT_FAILED", "type": "PAYMENT_FAILED",
            "eventType": "PAYMENT_FAILED", "resourceId": "p"}),
        )
        .unwrap();
        assert_eq!(both.event, WebhookEvent::PaymentFailed);

        let disagree = webhook(
            json!({"eventName": "PAYMENT_FAILED", "type": "PAYMENT_COMPLETED",
            "resourceId": "p"}),
        );
        assert_eq!(fields(disagree.unwrap_err()), ["type"]);
        let disagree = webhook(
            json!({"eventType": "PAYMENT_FAILED", "eventName": "PAYMENT_COMPLETED",
            "resourceId": "p"}),
        );
        assert_eq!(fields(disagree.unwrap_err()), ["eventType"]);
    }

    #[test]
    fn webhook_resource_id_rules() {
        let from_payload =
            webhook(json!({"eventName": "PAYMENT_PENDING", "payload": {"id": "p-2"}})).unwrap();
        assert_eq!(from_payload.resource_id, "p-2");

        let missing = webhook(json!({"eventName": "PAYMENT_PENDING", "payload": {}}));
        assert_eq!(fields(missing.unwrap_err()), ["resourceId"]);

        let differ = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "a",
            "payload": {"id": "b"}}));
        assert_eq!(fields(differ.unwrap_err()), ["payload.id"]);

        let hostile = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "../admin"}));
        assert_eq!(fields(hostile.unwrap_err()), ["resourceId"]);
        let long = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "a".repeat(65)}));
        assert_eq!(fields(long.unwrap_err()), ["resourceId"]);
    }

    #[test]
    fn webhook_lists_every_problem() {
        let error = webhook(json!({
            "type": 7,
            "id": "",
            "attemptNumber": "one",
            "eventDate": "yesterday",
            "mode": false,
            "payload": {
                "id": 12,
                "merchantRefNum": "",
                "amount": 5.46,
                "currencyCode": "cad",
                "status": 3
            }
        }))
        .unwrap_err();
        let mut got = fields(error);
        got.sort();
        assert_eq!(
            got,
            [
                "attemptNumber",
                "eventDate",
                "id",
                "mode",
                "payload.amount",
                "payload.currencyCode",
                "payload.id",
                "payload.merchantRefNum",
                "payload.status",
                "type",
            ]
        );
    }

    #[test]
    fn webhook_missing_event_and_malformed_bodies() {
        assert_eq!(
            fields(webhook(json!({"resourceId": "p"})).unwrap_err()),
            ["eventName"]
        );
        assert_eq!(
            fields(webhook(json!({"eventName": "not an event", "resourceId": "p"})).unwrap_err()),
            ["eventName"]
        );
        assert_eq!(fields(webhook(json!([1, 2])).unwrap_err()), ["$"]);
        assert_eq!(
            fields(
                webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "p", "payload": []}))
                    .unwrap_err()
            ),
            ["payload"]
        );
        assert!(matches!(
            parse_webhook(b"{not json"),
            Err(BodyError::Malformed(_))
        ));
        let duplicate =
            br#"{"eventName":"PAYMENT_FAILED","eventName":"PAYMENT_COMPLETED","resourceId":"p"}"#;
        assert!(matches!(
            parse_webhook(duplicate),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn webhook_optional_members_and_attempt_number_forms() {
        let minimal = webhook(
            json!({"eventName": "PAYMENT_HANDLE_PAYABLE", "resourceId": "h-1",
            "unknownMember": {"x": 1}}),
        )
        .unwrap();
        assert_eq!(minimal.fact(), WebhookFact::PaymentHandle);
        assert_eq!(minimal.amount, None);
        assert_eq!(minimal.event_date, None);

        for (attempt, expected) in [
            (json!(3), Some(3)),
            (json!("12"), Some(12)),
            (json!(null), None),
        ] {
            let hook = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "p",
                "attemptNumber": attempt}))
            .unwrap();
            assert_eq!(hook.attempt_number, expected);
        }
        for bad in [
            json!(-1),
            json!("-1"),
            json!(1.5),
            json!("99999999999"),
            json!(""),
        ] {
            let error = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "p",
                "attemptNumber": bad}))
            .unwrap_err();
            assert_eq!(fields(error), ["attemptNumber"]);
        }
        let compact = webhook(json!({"eventName": "PAYMENT_PENDING", "resourceId": "p",
            "eventDate": "2021-10-06T13:18:58.000+0000", "payload": {"amount": "546"}}))
        .unwrap();
        assert_eq!(
            compact.event_date,
            Some(OffsetDateTime::parse("2021-10-06T13:18:58Z", &Rfc3339).unwrap())
        );
        assert_eq!(compact.amount, Some(546));
    }
}
