//! Webhook delivery as Paysafe does it: a JSON event signed with HMAC-SHA256 over the raw body
//! (header `Signature`), POSTed to the merchant's URL, retried on a non-2xx answer when asked.

use std::time::Duration;

use anyhow::{Context as _, bail};
use connector_schema::paysafe::{
    SIGNATURE_HEADER, TrackedKind, WebhookEvent, WebhookFact, webhook_signature,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::script::ItemScript;
use crate::state::paysafe_time;

/// Most deliveries of one webhook (`maxAttempts`).
pub const MAX_ATTEMPTS: u32 = 20;

/// Which member carries the event name: Paysafe's documentation uses `eventName` and `type`;
/// the shared vector carries `eventType` and `eventName`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventNameSpelling {
    #[default]
    #[serde(rename = "eventName")]
    EventName,
    #[serde(rename = "type")]
    Type,
    #[serde(rename = "eventType")]
    EventType,
    /// `eventType` and `eventName`, like the shared vector.
    #[serde(rename = "eventTypeAndEventName")]
    EventTypeAndEventName,
}

/// How the webhook is signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignatureMode {
    /// With the configured key.
    #[default]
    Valid,
    /// With another key (the receiver must answer 401).
    WrongKey,
    /// No `Signature` header.
    Missing,
    /// A `Signature` header that is not base64.
    Garbage,
}

/// A webhook to send (`POST /__sim/webhooks`, or [`crate::SimHandle::send_webhook`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookRequest {
    /// The scripted item it is about (its kind, merchantRefNum, amount and currency fill the
    /// payload). Not needed with `rawBody`.
    #[serde(default)]
    pub id: Option<String>,
    /// Any text, sent as is (PAYMENT_COMPLETED, SA_CREDIT_CANCELLED, PAYMENT_HANDLE_EXPIRED, ...).
    #[serde(default)]
    pub event_name: Option<String>,
    #[serde(default)]
    pub spelling: EventNameSpelling,
    /// `payload.status`; by default the status the event name implies, else the item's current.
    #[serde(default)]
    pub status: Option<String>,
    /// The event's `id`; by default a fresh UUID (send the same one twice for a duplicate).
    #[serde(default)]
    pub event_id: Option<String>,
    /// `resourceId` and `payload.id`; by default the item id (a payment handle event names the
    /// handle instead).
    #[serde(default)]
    pub resource_id: Option<String>,
    #[serde(default)]
    pub signature: SignatureMode,
    /// Send exactly these bytes (signed per `signature`) instead of building a body.
    #[serde(default)]
    pub raw_body: Option<String>,
    /// Overrides the configured webhook URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Deliver again while the answer is not 2xx, up to this many times in all (default 1),
    /// with `attemptNumber` counting up, as Paysafe retries.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Pause between attempts (default 200 ms).
    #[serde(default)]
    pub retry_delay_ms: Option<u64>,
}

impl WebhookRequest {
    /// A webhook about scripted item `id`, signed with the configured key.
    pub fn event(id: &str, event_name: &str) -> Self {
        Self {
            id: Some(id.to_owned()),
            event_name: Some(event_name.to_owned()),
            spelling: EventNameSpelling::default(),
            status: None,
            event_id: None,
            resource_id: None,
            signature: SignatureMode::default(),
            raw_body: None,
            url: None,
            max_attempts: None,
            retry_delay_ms: None,
        }
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOutcome {
    /// The last attempt's HTTP status.
    pub status: u16,
    /// The last attempt's answer body (lossy UTF-8).
    pub body: String,
    /// Every attempt's HTTP status, in order.
    pub attempts: Vec<u16>,
    /// The first attempt's body as sent (resend it with `rawBody` for a byte-exact duplicate).
    pub sent_body: String,
}

/// The body of one delivery attempt.
pub fn build_body(
    request: &WebhookRequest,
    item: Option<&ItemScript>,
    current_status: Option<&str>,
    event_id: &str,
    attempt: u32,
    now: OffsetDateTime,
) -> anyhow::Result<String> {
    if let Some(raw) = &request.raw_body {
        return Ok(raw.clone());
    }
    let Some(item) = item else {
        bail!("a webhook needs the id of a scripted item, or rawBody");
    };
    let Some(event_name) = &request.event_name else {
        bail!("eventName is required (unless rawBody is given)");
    };
    let status = request
        .status
        .clone()
        .or_else(|| implied_status(event_name))
        .or_else(|| current_status.map(str::to_owned));
    let resource_id = request.resource_id.as_deref().unwrap_or(&item.id);
    let mut body = serde_json::Map::new();
    body.insert("id".into(), json!(event_id));
    match request.spelling {
        EventNameSpelling::EventName => {
            body.insert("eventName".into(), json!(event_name));
        }
        EventNameSpelling::Type => {
            body.insert("type".into(), json!(event_name));
        }
        EventNameSpelling::EventType => {
            body.insert("eventType".into(), json!(event_name));
        }
        EventNameSpelling::EventTypeAndEventName => {
            body.insert("eventType".into(), json!(event_name));
            body.insert("eventName".into(), json!(event_name));
        }
    }
    body.insert("attemptNumber".into(), json!(attempt.to_string()));
    body.insert("resourceId".into(), json!(resource_id));
    body.insert("eventDate".into(), json!(paysafe_time(now)));
    body.insert("mode".into(), json!("test"));
    let mut payload = serde_json::Map::new();
    payload.insert("id".into(), json!(resource_id));
    payload.insert("merchantRefNum".into(), json!(item.merchant_ref_num));
    payload.insert("amount".into(), json!(item.amount));
    payload.insert("currencyCode".into(), json!(item.currency_code));
    if let Some(status) = status {
        payload.insert("status".into(), json!(status));
    }
    payload.insert("paymentType".into(), json!("INTERAC_ETRANSFER"));
    let transaction_type = match item.kind {
        TrackedKind::Payment => "PAYMENT",
        TrackedKind::StandaloneCredit => "STANDALONE_CREDIT",
    };
    payload.insert("transactionType".into(), json!(transaction_type));
    body.insert("payload".into(), Value::Object(payload));
    Ok(serde_json::to_string(&Value::Object(body))?)
}

/// The payload status an event implies: the fact's status, or a handle event's suffix.
fn implied_status(event_name: &str) -> Option<String> {
    let event = WebhookEvent::parse(event_name)?;
    match event.fact() {
        WebhookFact::Status { status, .. } => Some(status.as_str().to_owned()),
        WebhookFact::PaymentHandle => event_name
            .strip_prefix("PAYMENT_HANDLE_")
            .map(str::to_owned),
        WebhookFact::Unrecognised => None,
    }
}

/// The `Signature` header for `mode` (`None`: no header).
pub fn signature_header(
    mode: SignatureMode,
    key: Option<&[u8]>,
    body: &[u8],
) -> anyhow::Result<Option<String>> {
    Ok(match mode {
        SignatureMode::Valid => {
            let key = key.context("no webhook key is configured (--webhook-key)")?;
            Some(webhook_signature(key, body))
        }
        SignatureMode::WrongKey => {
            // Derived from the real key when there is one, so it can never equal it.
            let mut wrong = key.map(<[u8]>::to_vec).unwrap_or_default();
            wrong.extend_from_slice(b"-not-the-key");
            Some(webhook_signature(&wrong, body))
        }
        SignatureMode::Missing => None,
        SignatureMode::Garbage => Some("not*base64!".to_owned()),
    })
}

/// One POST; the answer's status and body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    signature: Option<String>,
) -> anyhow::Result<(u16, String)> {
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header(SIGNATURE_HEADER, signature);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("webhook delivery to {url} failed: {}", chain(&e)))?;
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap_or_default();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// The client that delivers webhooks: rustls, trusting the built-in roots plus `ca_pem` (the
/// ingress's development CA).
pub fn client(ca_pem: Option<&[u8]>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30));
    if let Some(pem) = ca_pem {
        for certificate in reqwest::Certificate::from_pem_bundle(pem)
            .context("the webhook CA file is not PEM certificates")?
        {
            builder = builder.add_root_certificate(certificate);
        }
    }
    builder.build().context("building the webhook HTTP client")
}

/// The error and its causes (reqwest's own message omits the cause, such as "connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_schema::paysafe::{WebhookFact, parse_webhook, verify_webhook_signature};

    use crate::script::Step;

    fn credit() -> ItemScript {
        ItemScript::new(
            TrackedKind::StandaloneCredit,
            "c-1",
            "m-1",
            500,
            "CAD",
            vec![Step::new("PROCESSING", None)],
        )
    }

    #[test]
    fn built_bodies_are_valid_paysafe_events() {
        let now = OffsetDateTime::from_unix_timestamp(1_633_526_418).unwrap();
        for spelling in [
            EventNameSpelling::EventName,
            EventNameSpelling::Type,
            EventNameSpelling::EventType,
            EventNameSpelling::EventTypeAndEventName,
        ] {
            let mut request = WebhookRequest::event("c-1", "SA_CREDIT_COMPLETED");
            request.spelling = spelling;
            let body =
                build_body(&request, Some(&credit()), Some("PROCESSING"), "e-1", 2, now).unwrap();
            let hook = parse_webhook(body.as_bytes()).unwrap();
            assert_eq!(hook.resource_id, "c-1");
            assert_eq!(hook.attempt_number, Some(2));
            assert_eq!(hook.payload_status.as_deref(), Some("COMPLETED"));
            assert_eq!(hook.amount, Some(500));
            assert!(matches!(
                hook.fact(),
                WebhookFact::Status {
                    kind: TrackedKind::StandaloneCredit,
                    ..
                }
            ));
        }
        let handle = WebhookRequest::event("c-1", "PAYMENT_HANDLE_EXPIRED");
        let body = build_body(&handle, Some(&credit()), None, "e", 1, now).unwrap();
        assert!(body.contains(r#""status":"EXPIRED""#));
        let unknown = WebhookRequest::event("c-1", "SOMETHING_ELSE");
        let body = build_body(&unknown, Some(&credit()), Some("PROCESSING"), "e", 1, now).unwrap();
        assert!(body.contains(r#""status":"PROCESSING""#));
    }

    #[test]
    fn signature_modes() {
        let key = b"k".as_slice();
        let valid = signature_header(SignatureMode::Valid, Some(key), b"x")
            .unwrap()
            .unwrap();
        assert!(verify_webhook_signature(&[key], b"x", &valid));
        let wrong = signature_header(SignatureMode::WrongKey, Some(key), b"x")
            .unwrap()
            .unwrap();
        assert!(!verify_webhook_signature(&[key], b"x", &wrong));
        assert!(
            signature_header(SignatureMode::Missing, Some(key), b"x")
                .unwrap()
                .is_none()
        );
        assert!(signature_header(SignatureMode::Valid, None, b"x").is_err());
    }
}
