//! The Paysafe webhook route (DESIGN.md §5): the `Signature` header's presence and form, then
//! the body (at most `paysafe.max_body_bytes`), then the signature over it, then the body
//! rules, then the durable enqueue (§2.1). TLS without a client certificate: the HMAC is
//! Paysafe's proof.
//!
//! `Signature` is base64(HMAC-SHA256(key, raw body)), checked against every configured key
//! ([`WebhookKeys`]). The body is only judged once the signature over it is proven, so an
//! unauthenticated caller gets 401 and learns nothing about our rules.
//!
//! Content-Type: Paysafe sends `application/json`. A request without one is accepted (the body
//! is judged as JSON whatever its label, and the signature already proves it is Paysafe's); one
//! that declares another media type gets 415 `UNSUPPORTED_MEDIA_TYPE`, after the signature, as a
//! clear sign of a misconfigured sender.
//!
//! Neither the keys nor the signature ever reach a log line or an error message: spans carry the
//! event name, the resource id, the event id and the attempt number only. The signature travels
//! to the queue with the body (audit, re-verification), like every intake's headers.

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use tracing::field;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;
use connector_schema::paysafe::{PaysafeWebhook, SIGNATURE_HEADER, parse_webhook};
use connector_schema::{IntakeEnvelope, IntakeKind, Verification, VerificationScheme};

use crate::auth::hmac::WebhookKeys;
use crate::auth::tls::ClientCertificate;
use crate::routes::body;
use crate::routes::error::ApiError;
use crate::routes::headers::{SentTwice, once};
use crate::routes::respond::{Answer, Sender, respond};
use crate::state::AppState;

/// The `route` label of the metrics.
pub const ROUTE_NAME: &str = "paysafe_webhook";

/// The 200 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub status: &'static str,
    pub received_at: String,
}

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

impl Answer for Accepted {
    const CODES: &'static [&'static str] = &["ACCEPTED"];

    fn code(&self) -> &'static str {
        "ACCEPTED"
    }
}

/// The route's request counters, at zero (`respond::Answer::CODES` says why).
pub fn export_counters_at_zero() {
    super::respond::export_at_zero::<Accepted, ApiError>(ROUTE_NAME, &["paysafe"]);
}

/// A webhook whose signature is proven and whose body is a Paysafe event.
#[derive(Debug)]
pub struct VerifiedWebhook {
    pub webhook: PaysafeWebhook,
    /// As the intake envelope records them: `content-type` (when sent) and `signature`.
    pub headers: Vec<(String, String)>,
    /// The id of the webhook key the signature verified under.
    pub key_id: String,
}

/// Judges a webhook whose body has arrived, in the route's order: exactly one non-empty
/// `Signature`, the HMAC of `body` under one of `keys`; then the content type (absent or JSON);
/// then the body (`MALFORMED_JSON`, `VALIDATION_FAILED`). Pure, so the shared vectors drive it.
pub fn check(
    keys: &WebhookKeys,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<VerifiedWebhook, ApiError> {
    let signature = signature(headers)?;
    let key_id = keys
        .verifying_key_id(body, signature)
        .ok_or(ApiError::HmacMismatch(SIGNATURE_HEADER))?
        .to_owned();
    let content_type = content_type(headers)?;
    let webhook = parse_webhook(body).map_err(ApiError::from)?;
    let mut recorded = Vec::with_capacity(2);
    if let Some(content_type) = content_type {
        recorded.push(("content-type".to_owned(), content_type.to_owned()));
    }
    recorded.push((SIGNATURE_HEADER.to_ascii_lowercase(), signature.to_owned()));
    Ok(VerifiedWebhook {
        webhook,
        headers: recorded,
        key_id,
    })
}

/// What [`check`] would refuse without the body: no `Signature` (once, non-empty), or one that
/// cannot be an HMAC-SHA256 (not base64 of 32 bytes).
pub fn check_before_body(headers: &HeaderMap) -> Result<(), ApiError> {
    let signature = signature(headers)?;
    match STANDARD.decode(signature.trim()) {
        Ok(mac) if mac.len() == HMAC_SHA256_LEN => Ok(()),
        _ => Err(ApiError::HmacMismatch(SIGNATURE_HEADER)),
    }
}

/// Bytes in an HMAC-SHA256.
const HMAC_SHA256_LEN: usize = 32;

fn signature(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = |reason| ApiError::SignatureMissing {
        header: SIGNATURE_HEADER,
        reason,
    };
    let value = once(headers, SIGNATURE_HEADER)
        .map_err(|SentTwice| missing("must be sent exactly once"))?
        .ok_or_else(|| missing("is required"))?;
    // Not visible ASCII: cannot be base64, so cannot be a signature.
    let value = value
        .to_str()
        .map_err(|_| ApiError::HmacMismatch(SIGNATURE_HEADER))?;
    if value.trim().is_empty() {
        return Err(missing("is empty"));
    }
    Ok(value)
}

/// The `Content-Type` as sent: none, or one JSON media type (parameters such as a charset
/// allowed).
fn content_type(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) =
        once(headers, CONTENT_TYPE).map_err(|SentTwice| ApiError::UnsupportedMediaType)?
    else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .filter(|text| {
            let media_type = text.split(';').next().unwrap_or_default().trim();
            media_type.eq_ignore_ascii_case("application/json")
        })
        .map(Some)
        .ok_or(ApiError::UnsupportedMediaType)
}

/// The handler of the webhook route: [`accept`], answered through [`respond`].
pub async fn handle(state: AppState, request: Request) -> Response {
    let span = tracing::info_span!(
        "paysafe_webhook",
        event_name = field::Empty,
        resource_id = field::Empty,
        event_id = field::Empty,
        attempt_number = field::Empty,
        message_id = field::Empty,
    );
    // One sender: whoever signs with a Paysafe key (or fails to) is counted as Paysafe.
    let sender = Sender::default();
    sender.named("paysafe");
    respond(ROUTE_NAME, span, &sender, accept(&state, request)).await
}

async fn accept(state: &AppState, request: Request) -> Result<Accepted, ApiError> {
    let received_at = state.clock.now();
    let limit = state.paysafe_max_body_bytes;
    let (parts, request_body) = request.into_parts();
    // What needs no body is judged before a byte of it is read: a caller without a signature
    // cannot make us hold a connection or memory for it.
    check_before_body(&parts.headers)?;
    body::check_declared_length(&parts.headers, limit)?;
    let request_path = body::target_as_sent(&parts.uri);
    let body::ReadBody { bytes: body, held } =
        body::read(request_body, limit, state.body_timeout, &state.body_budget).await?;

    let verified = check(&state.paysafe_keys, &parts.headers, &body)?;
    let webhook = &verified.webhook;
    let span = tracing::Span::current();
    span.record("event_name", webhook.event.as_str());
    span.record("resource_id", webhook.resource_id.as_str());
    if let Some(event_id) = &webhook.event_id {
        span.record("event_id", event_id.as_str());
    }
    if let Some(attempt) = webhook.attempt_number {
        span.record("attempt_number", attempt);
    }

    let envelope = IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: IntakeKind::PaysafeWebhook,
        received_at,
        client_id: None,
        request_path: Some(request_path),
        headers: verified.headers,
        body,
        // An HMAC key is a secret: its id only, no fingerprint. The signature covers the body
        // alone, no path.
        verification: Some(Verification {
            scheme: VerificationScheme::PaysafeHmac,
            key_id: verified.key_id,
            key_sha256: None,
            client_cert_sha256: parts
                .extensions
                .get::<ClientCertificate>()
                .map(|c| c.sha256.clone()),
            signed_path: None,
        }),
    };
    span.record("message_id", field::display(envelope.message_id));
    state
        .publisher
        .publish(&envelope)
        .await
        .map_err(|_| ApiError::EnqueueUnavailable {
            retry_after_secs: state.retry_after_secs,
        })?;
    drop(held);
    Ok(Accepted {
        status: "ACCEPTED",
        received_at: rfc3339(received_at),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{HeaderValue, StatusCode, header};
    use connector_schema::paysafe::webhook_signature;
    use connector_schema::topology::TopologySettings;
    use serde_json::Value;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth::keys::{ClientRegistry, KeyStore};
    use crate::auth::replay::ReplayCache;
    use crate::auth::snap::partners::BncPartners;
    use crate::clock::SystemClock;
    use crate::config::{
        BncSettings, BrokerSettings, CorelinkSettings, DEFAULT_PAYSAFE_PATH as DEFAULT_PATH,
    };
    use crate::publisher::IntakePublisher;
    use crate::state::SharedState;

    const KEY: &str = "paysafe-test-key";
    const BODY: &str = r#"{"id":"e-1","eventName":"PAYMENT_COMPLETED","resourceId":"p-1"}"#;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn keys() -> WebhookKeys {
        WebhookKeys::new(["old-key", KEY])
    }

    #[test]
    fn the_signature_is_judged_before_the_body() {
        let good = webhook_signature(KEY.as_bytes(), BODY.as_bytes());
        let verified = check(&keys(), &headers(&[("Signature", &good)]), BODY.as_bytes()).unwrap();
        assert_eq!(verified.webhook.resource_id, "p-1");
        assert_eq!(
            verified.headers,
            [("signature".to_owned(), good.clone())],
            "no content-type sent, none recorded"
        );

        let code = |pairs: &[(&'static str, &str)], body: &str| {
            check(&keys(), &headers(pairs), body.as_bytes())
                .unwrap_err()
                .code()
        };
        assert_eq!(code(&[], "not even json"), "SIGNATURE_MISSING");
        assert_eq!(code(&[("Signature", "")], BODY), "SIGNATURE_MISSING");
        assert_eq!(
            code(&[("Signature", &good), ("Signature", &good)], BODY),
            "SIGNATURE_MISSING"
        );
        let other = webhook_signature(b"not-configured", BODY.as_bytes());
        assert_eq!(code(&[("Signature", &other)], BODY), "SIGNATURE_INVALID");
        assert_eq!(code(&[("Signature", "%%%")], BODY), "SIGNATURE_INVALID");
        assert_eq!(code(&[("Signature", &good)], "{}"), "SIGNATURE_INVALID");

        let sign = |body: &str| webhook_signature(KEY.as_bytes(), body.as_bytes());
        assert_eq!(
            code(&[("Signature", &sign("{oops"))], "{oops"),
            "MALFORMED_JSON"
        );
        assert_eq!(
            code(&[("Signature", &sign(r#"{"a":1}"#))], r#"{"a":1}"#),
            "VALIDATION_FAILED"
        );
        assert_eq!(
            code(
                &[("Signature", &good), ("Content-Type", "text/plain")],
                BODY
            ),
            "UNSUPPORTED_MEDIA_TYPE"
        );
        let json = check(
            &keys(),
            &headers(&[
                ("Signature", &good),
                ("Content-Type", "application/json; charset=utf-8"),
            ]),
            BODY.as_bytes(),
        )
        .unwrap();
        assert_eq!(
            json.headers[0],
            (
                "content-type".to_owned(),
                "application/json; charset=utf-8".to_owned()
            )
        );
    }

    #[test]
    fn no_key_or_signature_in_debug_or_messages() {
        let keys = keys();
        assert_eq!(format!("{keys:?}"), "WebhookKeys([2 redacted])");
        let good = webhook_signature(KEY.as_bytes(), BODY.as_bytes());
        let refusal = check(&keys, &headers(&[("Signature", &good)]), b"{}").unwrap_err();
        let shown = format!("{refusal} {refusal:?}");
        assert!(!shown.contains(&good) && !shown.contains(KEY), "{shown}");
    }

    /// The real router; its publisher points at a closed port, so an accepted webhook gets 503.
    fn router(shutdown: &CancellationToken, max_body_bytes: usize) -> axum::Router {
        let broker = BrokerSettings {
            url: "amqp://127.0.0.1:1/%2f".into(),
            ..BrokerSettings::default()
        };
        let (publisher, _) = IntakePublisher::spawn(
            &broker,
            TopologySettings::default().topology(),
            connector_schema::seal::SealKeys::single("test", &[7; 32]),
            shutdown.clone(),
        );
        crate::startup::public_router(AppState::new(SharedState {
            keys: KeyStore::new(ClientRegistry::default(), None),
            replay: ReplayCache::new(10, Duration::from_secs(300)),
            rate_limiter: crate::rate_limit::ClientRateLimiter::new(0, 0),
            publisher,
            clock: Arc::new(SystemClock),
            mtls: true,
            proxies: None,
            corelink: CorelinkSettings::default(),
            bnc: BncSettings::default(),
            bnc_partners: BncPartners::default(),
            paysafe_path: DEFAULT_PATH.into(),
            paysafe_keys: keys(),
            paysafe_max_body_bytes: max_body_bytes,
            max_body_bytes,
            body_budget: crate::budget::BodyBudget::new(max_body_bytes, 7),
            body_timeout: Duration::from_millis(200),
            retry_after_secs: 7,
        }))
    }

    async fn send(router: &axum::Router, signature: Option<&str>, body: Body) -> Response {
        let mut request = Request::builder()
            .method("POST")
            .uri(DEFAULT_PATH)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(signature) = signature {
            request = request.header("Signature", signature);
        }
        router
            .clone()
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap()
    }

    async fn error_code(response: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        body["error"]["code"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn the_route_answers_in_the_contracts_terms() {
        let shutdown = CancellationToken::new();
        let router = router(&shutdown, 256);
        let good = webhook_signature(KEY.as_bytes(), BODY.as_bytes());

        // Signed and valid, no client certificate although mTLS is on: it reaches the
        // publisher, which has no broker.
        let response = send(&router, Some(&good), Body::from(BODY)).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        assert_eq!(error_code(response).await, "ENQUEUE_UNAVAILABLE");

        let response = send(&router, None, Body::from(BODY)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["error"]["code"], "SIGNATURE_MISSING");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("header Signature ")
        );
        // Named in `details`, as every missing header is.
        assert_eq!(
            body["error"]["details"],
            json!([{"field": "Signature", "message": "is required"}])
        );

        let response = send(&router, Some("bm90IGl0"), Body::from(BODY)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(error_code(response).await, "SIGNATURE_INVALID");

        // Too large: refused before the HMAC is computed.
        let large = format!("{{\"pad\":\"{}\"}}", "x".repeat(300));
        let response = send(&router, Some(&good), Body::from(large)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(response).await, "PAYLOAD_TOO_LARGE");

        // A body that never finishes: 408, and the connection is closed.
        let stalled = Body::from_stream(futures_util::stream::pending::<
            Result<bytes::Bytes, std::io::Error>,
        >());
        let response = send(&router, Some(&good), stalled).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");

        // Without a usable signature nothing is read: 401, not the body's 408.
        for signature in [None, Some("bm90IGl0")] {
            let stalled = Body::from_stream(futures_util::stream::pending::<
                Result<bytes::Bytes, std::io::Error>,
            >());
            let response = send(&router, signature, stalled).await;
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{signature:?}");
        }

        let response = router
            .clone()
            .oneshot(
                Request::builder()
                    .method("GET")
                    .uri(DEFAULT_PATH)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        shutdown.cancel();
    }
}
