//! The Paysafe webhook route (DESIGN.md §5): the body, then the `Signature` header, then the body
//! rules, then the durable enqueue (§2.1). TLS without a client certificate: the HMAC is
//! Paysafe's proof.
//!
//! `Signature` is base64(HMAC-SHA256(key, raw body)), compared in constant time against every
//! configured key (several during a rotation). The body is only judged once the signature over
//! it is proven, so an unauthenticated caller gets 401 and learns nothing about our rules.
//!
//! Content-Type: Paysafe sends `application/json`. A request without one is accepted (the body
//! is judged as JSON whatever its label, and the signature already proves it is Paysafe's); one
//! that declares another media type gets 415 `UNSUPPORTED_MEDIA_TYPE`, after the signature, as a
//! clear sign of a misconfigured sender.
//!
//! Neither the keys nor the signature ever reach a log line or an error message: spans carry the
//! event name, the resource id, the event id and the attempt number only. The signature travels
//! to the queue with the body (audit, re-verification), like every intake's headers.

use std::fmt;
use std::time::Instant;

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tracing::{Instrument, field};
use uuid::Uuid;

use connector_schema::envelope::rfc3339;
use connector_schema::paysafe::{
    PaysafeWebhook, SIGNATURE_HEADER, parse_webhook, verify_webhook_signature,
};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::config::{ConfigError, PaysafeSettings};
use crate::error::ApiError;
use crate::metrics::{self, InFlight};
use crate::state::AppState;

/// The `route` label of the metrics.
pub const ROUTE_NAME: &str = "paysafe_webhook";

/// The route's path unless `paysafe.path` says otherwise.
pub const DEFAULT_PATH: &str = "/webhooks/paysafe";

/// The HMAC keys webhooks may be signed with: the UTF-8 bytes of each configured key.
#[derive(Clone, Default)]
pub struct WebhookKeys {
    keys: Vec<Vec<u8>>,
}

impl fmt::Debug for WebhookKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // How many, never which.
        write!(f, "WebhookKeys([{} redacted])", self.keys.len())
    }
}

impl WebhookKeys {
    /// Keys given directly, for tests and tools.
    pub fn new<K: AsRef<[u8]>>(keys: impl IntoIterator<Item = K>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| k.as_ref().to_vec()).collect(),
        }
    }

    /// The inline keys, then one key per file (surrounding whitespace ignored). Errors name
    /// the file, never its contents. The inline keys are checked by
    /// [`PaysafeSettings::validate`].
    pub fn from_settings(settings: &PaysafeSettings) -> Result<Self, ConfigError> {
        let mut keys: Vec<Vec<u8>> = settings
            .webhook_keys
            .iter()
            .map(|key| key.as_bytes().to_vec())
            .collect();
        for (i, file) in settings.webhook_key_files.iter().enumerate() {
            let path = file.relative();
            let fail = |message: String| {
                ConfigError::new(
                    format!("paysafe.webhook_key_files[{i}]"),
                    format!("{}: {message}", path.display()),
                )
            };
            let text =
                std::fs::read_to_string(&path).map_err(|e| fail(format!("cannot read: {e}")))?;
            let key = text.trim();
            if key.is_empty() {
                return Err(fail("is empty".into()));
            }
            keys.push(key.as_bytes().to_vec());
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `signature` is the HMAC of `body` under one of the keys (constant-time).
    pub fn verify(&self, body: &[u8], signature: &str) -> bool {
        verify_webhook_signature(&self.keys, body, signature)
    }
}

/// The 200 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub status: &'static str,
    pub received_at: String,
}

/// A webhook whose signature is proven and whose body is a Paysafe event.
#[derive(Debug)]
pub struct VerifiedWebhook {
    pub webhook: PaysafeWebhook,
    /// As the intake envelope records them: `content-type` (when sent) and `signature`.
    pub headers: Vec<(String, String)>,
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
    if !keys.verify(body, signature) {
        return Err(ApiError::HmacMismatch(SIGNATURE_HEADER));
    }
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
    })
}

fn signature(headers: &HeaderMap) -> Result<&str, ApiError> {
    let missing = |reason| ApiError::SignatureMissing {
        header: SIGNATURE_HEADER,
        reason,
    };
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let Some(value) = values.next() else {
        return Err(missing("is required"));
    };
    if values.next().is_some() {
        return Err(missing("must be sent exactly once"));
    }
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
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    let json = value.to_str().ok().filter(|text| {
        let media_type = text.split(';').next().unwrap_or_default().trim();
        media_type.eq_ignore_ascii_case("application/json")
    });
    match (json, values.next()) {
        (Some(text), None) => Ok(Some(text)),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// The handler of the webhook route: runs [`accept`], then records the outcome.
pub async fn handle(state: AppState, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start();
    let span = tracing::info_span!(
        "paysafe_webhook",
        event_name = field::Empty,
        resource_id = field::Empty,
        event_id = field::Empty,
        attempt_number = field::Empty,
        message_id = field::Empty,
    );
    let result = accept(&state, request).instrument(span.clone()).await;
    let code = match &result {
        Ok(_) => "ACCEPTED",
        Err(error) => error.code(),
    };
    metrics::record_request(ROUTE_NAME, code, started.elapsed());
    span.in_scope(|| match &result {
        Ok(_) => tracing::info!("accepted"),
        Err(error) if error.status().is_server_error() => {
            tracing::warn!(code, %error, "not accepted")
        }
        Err(error) => tracing::info!(code, %error, "rejected"),
    });
    match result {
        Ok(accepted) => Json(accepted).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn accept(state: &AppState, request: Request) -> Result<Accepted, ApiError> {
    let received_at = state.clock.now();
    let limit = state.max_body_bytes;
    let (parts, body) = request.into_parts();
    let declared_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let body = crate::body::read(body, limit, state.body_timeout).await?;

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

    let request_path = crate::body::target_as_sent(&parts.uri);
    let envelope = IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: IntakeKind::PaysafeWebhook,
        received_at,
        client_id: None,
        request_path: Some(request_path),
        headers: verified.headers,
        body,
    };
    span.record("message_id", field::display(envelope.message_id));
    state.publisher.publish(&envelope).await.map_err(|error| {
        tracing::warn!(%error, "durable enqueue failed");
        ApiError::EnqueueUnavailable {
            retry_after_secs: state.retry_after_secs,
        }
    })?;
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
    use crate::clock::SystemClock;
    use crate::config::{BrokerSettings, CorelinkSettings};
    use crate::keys::{ClientRegistry, KeyStore};
    use crate::publisher::IntakePublisher;
    use crate::replay::ReplayCache;
    use crate::snap::{BncPartners, BncSettings};
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

    #[test]
    fn keys_from_files_are_trimmed_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("paysafe-keys-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("current"), format!("{KEY}\n")).unwrap();
        std::fs::write(dir.join("blank"), " \n").unwrap();
        let settings = PaysafeSettings {
            webhook_keys: vec!["inline".into()],
            webhook_key_files: vec![dir.join("current").into()],
            ..PaysafeSettings::default()
        };
        let keys = WebhookKeys::from_settings(&settings).unwrap();
        assert_eq!(keys.len(), 2);
        let good = webhook_signature(KEY.as_bytes(), BODY.as_bytes());
        assert!(keys.verify(BODY.as_bytes(), &good));

        for (file, expect) in [("blank", "is empty"), ("missing", "cannot read")] {
            let settings = PaysafeSettings {
                webhook_key_files: vec![dir.join("current").into(), dir.join(file).into()],
                ..PaysafeSettings::default()
            };
            let err = WebhookKeys::from_settings(&settings).unwrap_err();
            assert_eq!(err.key, "paysafe.webhook_key_files[1]");
            assert!(err.message.contains(expect), "{err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
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
            max_body_bytes,
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

        // Too large: refused before any signature check.
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
