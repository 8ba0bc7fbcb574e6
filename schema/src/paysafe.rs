//! Paysafe Interac e-Transfer (DESIGN.md §5): the webhook body and its HMAC signature, the
//! `paysafe.track` command, the statuses of a payment or standalone credit, and the answers of
//! Paysafe's GET API (a transaction, or Paysafe's error body).
//!
//! The webhook and track-command validators walk a `serde_json::Value` by hand, like
//! [`crate::corelink`], so one answer lists every problem with its JSON path. The GET answers are
//! plain serde types: they come from Paysafe, and a poller must not choke on members it does not
//! know, so every member but `id` and `status` is optional.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use crate::corelink::parse_json;
use crate::validation::{BodyError, FieldError};

/// The webhook signature header (§5): base64 of HMAC-SHA256 over the raw body.
pub const SIGNATURE_HEADER: &str = "Signature";

/// Longest Paysafe id accepted (payment, credit, payment handle). Paysafe ids are UUIDs (36
/// characters); the bound leaves room and keeps a hostile id out of URLs and logs.
pub const MAX_ID_CHARS: usize = 64;

/// Paysafe's own limit on `merchantRefNum`.
pub const MAX_MERCHANT_REF_CHARS: usize = 255;

// Paysafe error codes. The seed shows no error body; these come from Paysafe's public API error
// reference ("Common Errors"), which the simulator reproduces. Pollers decide on the HTTP status
// (429 and 5xx back off, 401/403 alert); the code is for logs and alerts.

/// HTTP 429: "The API call has been denied as it has exceeded the permissible call rate limit."
pub const ERROR_CODE_RATE_LIMITED: &str = "1200";
/// HTTP 401: the API key (Basic credentials) is missing or invalid.
pub const ERROR_CODE_INVALID_CREDENTIALS: &str = "5279";
/// HTTP 404: "The ID(s) specified in the URL do not correspond to the values in the system."
pub const ERROR_CODE_NOT_FOUND: &str = "5269";
/// HTTP 500: "An internal error occurred."
pub const ERROR_CODE_INTERNAL: &str = "1000";

/// The status of a Paysafe payment or standalone credit (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaysafeStatus {
    Received,
    Initiated,
    Processing,
    Pending,
    Held,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl PaysafeStatus {
    pub const ALL: [PaysafeStatus; 9] = [
        Self::Received,
        Self::Initiated,
        Self::Processing,
        Self::Pending,
        Self::Held,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "RECEIVED",
            Self::Initiated => "INITIATED",
            Self::Processing => "PROCESSING",
            Self::Pending => "PENDING",
            Self::Held => "HELD",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
        }
    }

    /// COMPLETED, FAILED, CANCELLED, EXPIRED: polling stops and a ledger event is due. A
    /// standalone credit may still move COMPLETED → FAILED/CANCELLED (a reversal, §5).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Cancelled | Self::Expired
        )
    }

    /// `None` for anything Paysafe may add later: callers treat an unknown status as non-final
    /// (keep polling, never invent a final status).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|status| status.as_str() == s)
    }
}

impl fmt::Display for PaysafeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the connector tracks at Paysafe: a payment (money in) or a standalone credit (money
/// out, a withdrawal). They have different endpoints, deadlines and ledger events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackedKind {
    Payment,
    StandaloneCredit,
}

impl TrackedKind {
    /// The wire name in a `paysafe.track` command: `payment` or `standalone_credit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::StandaloneCredit => "standalone_credit",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "payment" => Some(Self::Payment),
            "standalone_credit" => Some(Self::StandaloneCredit),
            _ => None,
        }
    }

    /// The collection segment of the GET API: `/paymenthub/v1/{segment}/{id}`.
    pub fn api_segment(self) -> &'static str {
        match self {
            Self::Payment => "payments",
            Self::StandaloneCredit => "standalonecredits",
        }
    }

    /// `/paymenthub/v1/payments/{id}` or `/paymenthub/v1/standalonecredits/{id}`. The id must
    /// have passed [`is_valid_id`] (the validators guarantee it), so it needs no escaping.
    pub fn api_path(self, id: &str) -> String {
        format!("/paymenthub/v1/{}/{id}", self.api_segment())
    }
}

impl fmt::Display for TrackedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Paysafe id as the connector accepts it: 1..=64 of `A-Z a-z 0-9 - _`. Paysafe ids are
/// UUIDs; the restriction lets an id go into a URL path and a log line as it is.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A webhook event name (§5), from `eventName`, `eventType` or `type`.
///
/// Names the connector does not know are kept as [`WebhookEvent::Other`] rather than refused:
/// the body is signed by Paysafe, so refusing it would only make Paysafe retry; the workers
/// record it and change nothing, and the poller still finds the truth.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    /// `PAYMENT_HANDLE_PAYABLE`, `_COMPLETED`, `_EXPIRED`, `_FAILED`, ...: the whole family (the
    /// full name is kept). About the payment handle (a single-use token), not about a payment.
    PaymentHandle(String),
    PaymentProcessing,
    PaymentPending,
    PaymentCompleted,
    SettlementCompleted,
    PaymentFailed,
    PaymentErrored,
    SettlementFailed,
    /// Named by the seed ("Vous recevrez SA_CREDIT_PROCESSING immédiatement"), not by §5.
    SaCreditProcessing,
    SaCreditPending,
    SaCreditCompleted,
    SaCreditFailed,
    SaCreditCancelled,
    SaCreditErrored,
    /// A well-formed name this build does not know.
    Other(String),
}

/// What a webhook tells the workers, whatever its spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookFact {
    /// The payment or credit `resourceId` has this status. A final status here is applied as
    /// if the poller had read it (one ledger event per final status).
    Status {
        kind: TrackedKind,
        status: PaysafeStatus,
    },
    /// A `PAYMENT_HANDLE_*` event: its `resourceId` is a payment handle, not a tracked payment
    /// or credit, and the seed shows a payment may still complete after its handle expired or
    /// failed. Workers record it (history/audit) and change no status.
    PaymentHandle,
    /// An unknown event name: record and count it, change no status.
    Unrecognised,
}

const PAYMENT_HANDLE_PREFIX: &str = "PAYMENT_HANDLE_";

impl WebhookEvent {
    /// `None` when the text is not shaped like a Paysafe event name (1..=64 of `A-Z 0-9 _`,
    /// starting with a letter).
    pub fn parse(name: &str) -> Option<Self> {
        let well_formed = name.len() <= 64
            && name.bytes().next().is_some_and(|b| b.is_ascii_uppercase())
            && name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return None;
        }
        Some(match name {
            "PAYMENT_PROCESSING" => Self::PaymentProcessing,
            "PAYMENT_PENDING" => Self::PaymentPending,
            "PAYMENT_COMPLETED" => Self::PaymentCompleted,
            "SETTLEMENT_COMPLETED" => Self::SettlementCompleted,
            "PAYMENT_FAILED" => Self::PaymentFailed,
            "PAYMENT_ERRORED" => Self::PaymentErrored,
            "SETTLEMENT_FAILED" => Self::SettlementFailed,
            "SA_CREDIT_PROCESSING" => Self::SaCreditProcessing,
            "SA_CREDIT_PENDING" => Self::SaCreditPending,
            "SA_CREDIT_COMPLETED" => Self::SaCreditCompleted,
            "SA_CREDIT_FAILED" => Self::SaCreditFailed,
            "SA_CREDIT_CANCELLED" => Self::SaCreditCancelled,
            "SA_CREDIT_ERRORED" => Self::SaCreditErrored,
            _ if name.len() > PAYMENT_HANDLE_PREFIX.len()
                && name.starts_with(PAYMENT_HANDLE_PREFIX) =>
            {
                Self::PaymentHandle(name.to_owned())
            }
            _ => Self::Other(name.to_owned()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::PaymentHandle(name) | Self::Other(name) => name,
            Self::PaymentProcessing => "PAYMENT_PROCESSING",
            Self::PaymentPending => "PAYMENT_PENDING",
            Self::PaymentCompleted => "PAYMENT_COMPLETED",
            Self::SettlementCompleted => "SETTLEMENT_COMPLETED",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::PaymentErrored => "PAYMENT_ERRORED",
            Self::SettlementFailed => "SETTLEMENT_FAILED",
            Self::SaCreditProcessing => "SA_CREDIT_PROCESSING",
            Self::SaCreditPending => "SA_CREDIT_PENDING",
            Self::SaCreditCompleted => "SA_CREDIT_COMPLETED",
            Self::SaCreditFailed => "SA_CREDIT_FAILED",
            Self::SaCreditCancelled => "SA_CREDIT_CANCELLED",
            Self::SaCreditErrored => "SA_CREDIT_ERRORED",
        }
    }

    /// The fact the event reports.
    ///
    /// - PAYMENT_COMPLETED and SETTLEMENT_COMPLETED are one fact, payment COMPLETED (seed: "comme
    ///   il s'agit de settlewithauth= true, nous pouvons supposer que les deux sont
    ///   identiques"), so they produce one ledger event.
    /// - PAYMENT_FAILED, PAYMENT_ERRORED and SETTLEMENT_FAILED are payment FAILED: FAILED is
    ///   "le PSP en aval a renvoyé une erreur (état http 402)", ERRORED is "une erreur non liée
    ///   à un état http 402", SETTLEMENT_FAILED is the settlement (identical to the payment
    ///   under settleWithAuth) becoming FAILED or ERRORED. ERRORED is not a status of §5; all
    ///   three are Paysafe saying the payment did not go through, and the event name is kept
    ///   in the history and the ledger event's data.
    /// - SA_CREDIT_ERRORED is credit FAILED for the same reason.
    pub fn fact(&self) -> WebhookFact {
        use PaysafeStatus as S;
        use TrackedKind::{Payment, StandaloneCredit};
        let (kind, status) = match self {
            Self::PaymentHandle(_) => return WebhookFact::PaymentHandle,
            Self::Other(_) => return WebhookFact::Unrecognised,
            Self::PaymentProcessing => (Payment, S::Processing),
            Self::PaymentPending => (Payment, S::Pending),
            Self::PaymentCompleted | Self::SettlementCompleted => (Payment, S::Completed),
            Self::PaymentFailed | Self::PaymentErrored | Self::SettlementFailed => {
                (Payment, S::Failed)
            }
            Self::SaCreditProcessing => (StandaloneCredit, S::Processing),
            Self::SaCreditPending => (StandaloneCredit, S::Pending),
            Self::SaCreditCompleted => (StandaloneCredit, S::Completed),
            Self::SaCreditFailed | Self::SaCreditErrored => (StandaloneCredit, S::Failed),
            Self::SaCreditCancelled => (StandaloneCredit, S::Cancelled),
        };
        WebhookFact::Status { kind, status }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for WebhookEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for WebhookEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Self::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("`{name}` is not an event name")))
    }
}

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
    /// `payload.status` as sent (a handle's status such as PAYABLE is not a [`PaysafeStatus`]);
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
    let value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(invalid_root());
    };
    let mut errors = Vec::new();

    let event = event_name(object, &mut errors);
    let event_id = optional_string(object, "id", "id", &mut errors);
    if event_id
        .as_deref()
        .is_some_and(|id| id.is_empty() || id.len() > 128)
    {
        errors.push(FieldError::new("id", "must be 1..=128 characters"));
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

    let resource_id = optional_id(object, "resourceId", "resourceId", &mut errors);
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

    let event_date = match object.get("eventDate") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_str().and_then(parse_paysafe_time) {
            Some(t) => Some(t),
            None => {
                errors.push(FieldError::new(
                    "eventDate",
                    "must be a date-time such as 2021-10-06T13:20:18Z",
                ));
                None
            }
        },
    };

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
    let mode = optional_string(object, "mode", "mode", &mut errors);

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

/// The `paysafe.track` command (§5): the merchant's payment service asks the connector to
/// follow a payment or credit that Paysafe answered PROCESSING (non-final) to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackCommand {
    pub kind: TrackedKind,
    /// The Paysafe payment or credit id (see [`is_valid_id`]).
    pub id: String,
    pub merchant_ref_num: String,
    /// Minor units (cents), 0..=i64::MAX.
    pub amount: i64,
    /// ISO 4217, three upper-case letters.
    pub currency_code: String,
}

/// Parses and validates a track command: every member is required. An amount may be a JSON
/// integer or a string of digits (Paysafe's own requests spell it `"amount":"546"`).
pub fn parse_track_command(body: &[u8]) -> Result<TrackCommand, BodyError> {
    let value = parse_json(body)?;
    let Some(object) = value.as_object() else {
        return Err(invalid_root());
    };
    let mut errors = Vec::new();

    let kind = match object.get("kind") {
        None | Some(Value::Null) => {
            errors.push(FieldError::new("kind", "is required"));
            None
        }
        Some(value) => {
            let kind = value.as_str().and_then(TrackedKind::parse);
            if kind.is_none() {
                errors.push(FieldError::new(
                    "kind",
                    "must be \"payment\" or \"standalone_credit\"",
                ));
            }
            kind
        }
    };
    let id = optional_id(object, "id", "id", &mut errors);
    if id.is_none() && !errors.iter().any(|e| e.field == "id") {
        errors.push(FieldError::new("id", "is required"));
    }
    let merchant_ref_num = merchant_ref(object, "merchantRefNum", true, &mut errors);
    let amount = amount(object, "amount", true, &mut errors);
    let currency_code = currency(object, "currencyCode", true, &mut errors);

    match (kind, id, merchant_ref_num, amount, currency_code) {
        (Some(kind), Some(id), Some(merchant_ref_num), Some(amount), Some(currency_code))
            if errors.is_empty() =>
        {
            Ok(TrackCommand {
                kind,
                id,
                merchant_ref_num,
                amount,
                currency_code,
            })
        }
        _ => Err(BodyError::Invalid(errors)),
    }
}

fn invalid_root() -> BodyError {
    BodyError::Invalid(vec![FieldError::new("$", "must be a JSON object")])
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

fn optional_id(
    object: &Map<String, Value>,
    name: &str,
    path: &str,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let id = optional_string(object, name, path, errors)?;
    if is_valid_id(&id) {
        Some(id)
    } else {
        errors.push(FieldError::new(
            path,
            format!("must be 1..={MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '-' and '_'"),
        ));
        None
    }
}

fn merchant_ref(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let before = errors.len();
    match optional_string(object, name, path, errors) {
        Some(s) if s.is_empty() || s.chars().count() > MAX_MERCHANT_REF_CHARS => {
            errors.push(FieldError::new(
                path,
                format!("must be 1..={MAX_MERCHANT_REF_CHARS} characters"),
            ));
            None
        }
        Some(s) => Some(s),
        None => {
            if required && errors.len() == before {
                errors.push(FieldError::new(path, "is required"));
            }
            None
        }
    }
}

/// Whole minor units: a non-negative JSON integer or a string of digits, at most i64::MAX.
fn amount(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<i64> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let parsed = match object.get(name) {
        None | Some(Value::Null) => {
            if required {
                errors.push(FieldError::new(path, "is required"));
            }
            return None;
        }
        Some(Value::Number(n)) => n.as_i64().filter(|n| *n >= 0),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().ok()
        }
        Some(_) => None,
    };
    if parsed.is_none() {
        errors.push(FieldError::new(
            path,
            "must be a non-negative integer amount in minor units (546 for 5.46)",
        ));
    }
    parsed
}

fn currency(
    object: &Map<String, Value>,
    path: &str,
    required: bool,
    errors: &mut Vec<FieldError>,
) -> Option<String> {
    let name = path.rsplit('.').next().unwrap_or(path);
    let before = errors.len();
    match optional_string(object, name, path, errors) {
        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_uppercase()) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(
                path,
                "must be an ISO 4217 code of three upper-case letters, such as CAD",
            ));
            None
        }
        None => {
            if required && errors.len() == before {
                errors.push(FieldError::new(path, "is required"));
            }
            None
        }
    }
}

/// Paysafe's date-times: RFC 3339 (`2021-10-06T13:18:58Z`), or the offset without a colon that
/// some of its objects use (`2021-10-06T13:18:58.000+0000`, in the seed's `settlements`).
pub fn parse_paysafe_time(s: &str) -> Option<OffsetDateTime> {
    let compact_offset = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]][offset_hour sign:mandatory][offset_minute]"
    );
    OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| OffsetDateTime::parse(s, compact_offset))
        .ok()
}

/// The GET answer of `/paymenthub/v1/payments/{id}` and `/paymenthub/v1/standalonecredits/{id}`
/// (the members of the seed's "Exemple de réponse à un paiement" / "pour retrait" that the
/// connector uses; the others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaysafeTransaction {
    pub id: String,
    /// As sent: parse it with [`PaysafeTransaction::parsed_status`], since Paysafe may add
    /// statuses and a poller must not fail on one it does not know.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merchant_ref_num: Option<String>,
    /// Minor units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency_code: Option<String>,
    /// `INTERAC_ETRANSFER` in the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_response: Option<GatewayResponse>,
    /// Why a FAILED transaction failed, when Paysafe says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<PaysafeError>,
}

impl PaysafeTransaction {
    /// `None` for a status this build does not know: treat it as non-final.
    pub fn parsed_status(&self) -> Option<PaysafeStatus> {
        PaysafeStatus::parse(&self.status)
    }

    /// When the status was reached, as Paysafe says: `statusTime`, else `updatedTime`, else
    /// `txnTime` (the ledger event's `occurred_at`).
    pub fn status_changed_at(&self) -> Option<OffsetDateTime> {
        [&self.status_time, &self.updated_time, &self.txn_time]
            .into_iter()
            .flatten()
            .find_map(|t| parse_paysafe_time(t))
    }
}

/// `gatewayResponse` of a transaction (the processor's view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayResponse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `INTERAC`, `PEOPLE_TRUST`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// Paysafe's error body: `{"error":{"code":"1200","message":…,"details":[…],"fieldErrors":[…]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaysafeErrorBody {
    pub error: PaysafeError,
}

impl PaysafeErrorBody {
    pub fn new(code: &str, message: &str) -> Self {
        Self {
            error: PaysafeError {
                code: code.to_owned(),
                message: message.to_owned(),
                details: Vec::new(),
                field_errors: Vec::new(),
            },
        }
    }
}

/// The `error` object: `code` is a string of digits (also sent in the
/// `X-Application-Status-Code` header).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaysafeError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub field_errors: Vec<PaysafeFieldError>,
}

/// One entry of `fieldErrors`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaysafeFieldError {
    pub field: String,
    pub error: String,
}

type HmacSha256 = Hmac<Sha256>;

/// The `Signature` header Paysafe sends: base64 (standard, padded) of HMAC-SHA256(key, body).
pub fn webhook_signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is the signature of the raw `body` under any of `keys` (several during a
/// key rotation). The comparison is constant-time (`verify_slice`); a header that is not
/// base64, or no key at all, is simply `false`.
pub fn verify_webhook_signature(keys: &[impl AsRef<[u8]>], body: &[u8], header: &str) -> bool {
    let Ok(signature) = STANDARD.decode(header.trim()) else {
        return false;
    };
    keys.iter().any(|key| {
        let Ok(mut mac) = HmacSha256::new_from_slice(key.as_ref()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&signature).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTORS: &str = include_str!("../../ingress/tests/vectors/paysafe-webhook.json");

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
    fn shared_vectors_verify_as_expected() {
        let file: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = file["vectors"].as_array().unwrap();
        assert_eq!(vectors.len(), 2);
        let mut outcomes = Vec::new();
        for vector in vectors {
            // The verifier is configured with the vector's key; "wrong key" carries the valid
            // signature of the same body, so a verifier holding another key must refuse it.
            let key = vector["hmac_key"].as_str().unwrap();
            let body = vector["body"].as_str().unwrap().as_bytes();
            let header = vector["Signature"].as_str().unwrap();
            let expect = vector["expect"].as_str().unwrap();
            let accepted = verify_webhook_signature(&[key], body, header);
            assert_eq!(accepted, expect == "ACCEPT", "{}", vector["name"]);
            // Signing agrees with the independent implementation byte for byte.
            assert_eq!(
                webhook_signature(key.as_bytes(), body) == header,
                accepted,
                "{}",
                vector["name"]
            );
            outcomes.push((vector["name"].as_str().unwrap(), accepted));
        }
        assert_eq!(outcomes, [("valid", true), ("wrong key", false)]);
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
    fn signature_rotation_and_garbage_headers() {
        let body = br#"{"eventName":"PAYMENT_COMPLETED","resourceId":"p1"}"#;
        let old = b"old-key".as_slice();
        let new = b"new-key".as_slice();
        let header = webhook_signature(old, body);
        assert!(verify_webhook_signature(&[new, old], body, &header));
        assert!(!verify_webhook_signature(&[new], body, &header));
        let no_keys: [&[u8]; 0] = [];
        assert!(!verify_webhook_signature(&no_keys, body, &header));
        assert!(!verify_webhook_signature(&[old], b"{}", &header));
        assert!(!verify_webhook_signature(&[old], body, "not base64 !!"));
        assert!(!verify_webhook_signature(&[old], body, ""));
        assert!(!verify_webhook_signature(&[old], body, &header[..20]));
        let vec_keys = vec![b"old-key".to_vec()];
        assert!(verify_webhook_signature(&vec_keys, body, &header));
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
    fn event_mapping() {
        use PaysafeStatus as S;
        use TrackedKind::{Payment, StandaloneCredit};
        let status = |kind, status| WebhookFact::Status { kind, status };
        let cases = [
            ("PAYMENT_PROCESSING", status(Payment, S::Processing)),
            ("PAYMENT_PENDING", status(Payment, S::Pending)),
            ("PAYMENT_COMPLETED", status(Payment, S::Completed)),
            ("SETTLEMENT_COMPLETED", status(Payment, S::Completed)),
            ("PAYMENT_FAILED", status(Payment, S::Failed)),
            ("PAYMENT_ERRORED", status(Payment, S::Failed)),
            ("SETTLEMENT_FAILED", status(Payment, S::Failed)),
            (
                "SA_CREDIT_PROCESSING",
                status(StandaloneCredit, S::Processing),
            ),
            ("SA_CREDIT_PENDING", status(StandaloneCredit, S::Pending)),
            (
                "SA_CREDIT_COMPLETED",
                status(StandaloneCredit, S::Completed),
            ),
            ("SA_CREDIT_FAILED", status(StandaloneCredit, S::Failed)),
            (
                "SA_CREDIT_CANCELLED",
                status(StandaloneCredit, S::Cancelled),
            ),
            ("SA_CREDIT_ERRORED", status(StandaloneCredit, S::Failed)),
            ("PAYMENT_HANDLE_PAYABLE", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_EXPIRED", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_COMPLETED", WebhookFact::PaymentHandle),
            ("PAYMENT_HANDLE_FAILED", WebhookFact::PaymentHandle),
            ("PAYMENT_REFUNDED", WebhookFact::Unrecognised),
            ("PAYMENT_HANDLE_", WebhookFact::Unrecognised),
        ];
        for (name, fact) in cases {
            let event = WebhookEvent::parse(name).unwrap();
            assert_eq!(event.as_str(), name);
            assert_eq!(event.fact(), fact, "{name}");
            let round: WebhookEvent =
                serde_json::from_value(serde_json::to_value(&event).unwrap()).unwrap();
            assert_eq!(round, event);
        }
        for bad in ["", "payment_completed", "1PAYMENT", "PAYMENT COMPLETED"] {
            assert_eq!(WebhookEvent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses() {
        let finals: Vec<_> = PaysafeStatus::ALL
            .into_iter()
            .filter(|s| s.is_final())
            .map(PaysafeStatus::as_str)
            .collect();
        assert_eq!(finals, ["COMPLETED", "FAILED", "CANCELLED", "EXPIRED"]);
        for status in PaysafeStatus::ALL {
            assert_eq!(PaysafeStatus::parse(status.as_str()), Some(status));
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                json!(status.as_str())
            );
        }
        assert_eq!(PaysafeStatus::parse("ERRORED"), None);
        assert_eq!(PaysafeStatus::parse("completed"), None);
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

    #[test]
    fn track_command_valid() {
        let command = parse_track_command(
            br#"{"kind":"standalone_credit","id":"b7759f69-b194-41ad-aab2-164432596c04",
                "merchantRefNum":"4f55a9f1-f19d-4bc7-b52f-7ef7133995a1","amount":500,
                "currencyCode":"CAD","extra":true}"#,
        )
        .unwrap();
        assert_eq!(command.kind, TrackedKind::StandaloneCredit);
        assert_eq!(command.amount, 500);
        assert_eq!(
            command.kind.api_path(&command.id),
            "/paymenthub/v1/standalonecredits/b7759f69-b194-41ad-aab2-164432596c04"
        );
        // Serialises back to the wire shape.
        let round =
            parse_track_command(serde_json::to_string(&command).unwrap().as_bytes()).unwrap();
        assert_eq!(round, command);

        let payment = parse_track_command(
            br#"{"kind":"payment","id":"p1","merchantRefNum":"m","amount":"546","currencyCode":"CAD"}"#,
        )
        .unwrap();
        assert_eq!(payment.kind.api_path("p1"), "/paymenthub/v1/payments/p1");
        assert_eq!(payment.amount, 546);
    }

    #[test]
    fn track_command_invalid() {
        let error = parse_track_command(b"{}").unwrap_err();
        assert_eq!(
            fields(error),
            ["kind", "id", "merchantRefNum", "amount", "currencyCode"]
        );
        let error = parse_track_command(
            br#"{"kind":"refund","id":"a/b","merchantRefNum":7,"amount":-5,"currencyCode":"CA"}"#,
        )
        .unwrap_err();
        assert_eq!(
            fields(error),
            ["kind", "id", "merchantRefNum", "amount", "currencyCode"]
        );
        let too_big = format!(
            r#"{{"kind":"payment","id":"p","merchantRefNum":"{}","amount":18446744073709551615,"currencyCode":"CAD"}}"#,
            "m".repeat(256)
        );
        assert_eq!(
            fields(parse_track_command(too_big.as_bytes()).unwrap_err()),
            ["merchantRefNum", "amount"]
        );
        assert!(matches!(
            parse_track_command(b"[]"),
            Err(BodyError::Invalid(_))
        ));
        assert!(matches!(
            parse_track_command(b""),
            Err(BodyError::Malformed(_))
        ));
    }

    #[test]
    fn get_answer_from_the_seed_parses() {
        // The seed's "Exemple de réponse à un paiement", trimmed of members the connector ignores
        // but keeping some of them to prove they are ignored.
        let answer = r#"{
            "id": "568530f0-262a-453f-b681-1088195d9439",
            "paymentType": "INTERAC_ETRANSFER",
            "merchantRefNum": "b9405251-5ede-4439-b844-73ff553144a5",
            "currencyCode": "CAD",
            "settleWithAuth": true,
            "txnTime": "2021-10-06T13:18:58Z",
            "status": "PROCESSING",
            "amount": 546,
            "updatedTime": "2021-10-06T13:20:18Z",
            "statusTime": "2021-10-06T13:20:18Z",
            "gatewayResponse": {"id": "Io27oxf1xsqOrDIe", "processor": "INTERAC", "status": "AVAILABLE"},
            "settlements": {"txnTime": "2021-10-06T13:18:58.000+0000", "status": "PROCESSING"}
        }"#;
        let txn: PaysafeTransaction = serde_json::from_str(answer).unwrap();
        assert_eq!(txn.parsed_status(), Some(PaysafeStatus::Processing));
        assert_eq!(txn.amount, Some(546));
        assert_eq!(
            txn.gateway_response
                .as_ref()
                .and_then(|g| g.processor.as_deref()),
            Some("INTERAC")
        );
        assert_eq!(
            txn.status_changed_at(),
            Some(OffsetDateTime::parse("2021-10-06T13:20:18Z", &Rfc3339).unwrap())
        );
        let minimal: PaysafeTransaction =
            serde_json::from_str(r#"{"id":"x","status":"SOMETHING_NEW"}"#).unwrap();
        assert_eq!(minimal.parsed_status(), None);
        assert_eq!(minimal.status_changed_at(), None);
        assert_eq!(
            serde_json::to_value(&minimal).unwrap(),
            json!({"id": "x", "status": "SOMETHING_NEW"})
        );
    }

    #[test]
    fn error_body_shape() {
        let mut body = PaysafeErrorBody::new(ERROR_CODE_RATE_LIMITED, "rate limit");
        assert_eq!(
            serde_json::to_value(&body).unwrap(),
            json!({"error": {"code": "1200", "message": "rate limit"}})
        );
        body.error.details.push("slow down".into());
        body.error.field_errors.push(PaysafeFieldError {
            field: "amount".into(),
            error: "invalid".into(),
        });
        let value = serde_json::to_value(&body).unwrap();
        assert_eq!(
            value,
            json!({"error": {"code": "1200", "message": "rate limit", "details": ["slow down"],
                "fieldErrors": [{"field": "amount", "error": "invalid"}]}})
        );
        let parsed: PaysafeErrorBody = serde_json::from_value(json!({"error": {"code": "5279",
            "message": "The authentication credentials are invalid.", "links": []}}))
        .unwrap();
        assert_eq!(parsed.error.code, ERROR_CODE_INVALID_CREDENTIALS);
    }
}
