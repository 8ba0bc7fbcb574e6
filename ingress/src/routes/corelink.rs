//! The Corelink callback routes (DESIGN.md §3): headers, authentication, body rules, then the
//! durable enqueue. Checks run cheapest first, and the body is only judged once the bank's
//! signature over it is proven, so an unauthenticated caller learns nothing about our rules.

use axum::Json;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use tracing::field;
use uuid::Uuid;

use connector_schema::corelink::{self, SignedRequestClaims, headers as names};
use connector_schema::envelope::rfc3339;
use connector_schema::{IntakeEnvelope, IntakeKind, Verification, VerificationScheme};

use crate::auth::forwarded::ForwardedCertificateRepeated;
use crate::auth::jws::verify_request_signature;
use crate::auth::keys::ClientRegistry;
use crate::auth::tls::ClientCertificate;
use crate::routes::body;
use crate::routes::error::ApiError;
use crate::routes::headers::{required, single, token};
use crate::routes::respond::{Answer, Sender, respond};
use crate::state::AppState;

/// A unit or a batch callback: what the route implies about the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Callback {
    Unit,
    Batch,
}

impl Callback {
    pub fn kind(self) -> IntakeKind {
        match self {
            Self::Unit => IntakeKind::CorelinkStatus,
            Self::Batch => IntakeKind::CorelinkStatusBatch,
        }
    }

    /// The `route` label of the metrics: aliases count with their canonical route.
    pub fn route_name(self) -> &'static str {
        match self {
            Self::Unit => "corelink_status",
            Self::Batch => "corelink_status_batch",
        }
    }
}

/// Every Corelink route with its alias (§3). The router is built from this table, and the
/// OpenAPI test checks the description against the router built from it.
pub const ROUTES: [(&str, Callback); 4] = [
    ("/callbacks/orders/status", Callback::Unit),
    ("/callbacks/payment-status", Callback::Unit),
    ("/callbacks/orders/status/batch", Callback::Batch),
    ("/callbacks/batch-status", Callback::Batch),
];

/// Longest accepted `X-Signature`: an RSA-4096 JWS with a generous payload is under 2 KiB.
const MAX_SIGNATURE_LEN: usize = 16 * 1024;

/// The 200 body.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub status: &'static str,
    pub idempotency_key: String,
    pub orders: usize,
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

/// Both Corelink routes' request counters, at zero (`respond::Answer::CODES` says why), with
/// the refusals of every bank of `settings`.
pub fn export_counters_at_zero(settings: &crate::config::Settings) {
    let banks: Vec<&str> = settings
        .corelink
        .clients
        .iter()
        .map(|c| c.id.as_str())
        .collect();
    for callback in [Callback::Unit, Callback::Batch] {
        super::respond::export_at_zero::<Accepted, ApiError>(callback.route_name(), &banks);
    }
}

/// The contract's request headers, checked for presence, uniqueness and form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorelinkHeaders {
    pub client_id: String,
    /// As sent: the signature covers the text, not the parsed instant.
    pub timestamp: String,
    pub timestamp_at: OffsetDateTime,
    pub nonce: String,
    pub idempotency_key: String,
    pub content_type: String,
    pub signature: String,
}

impl CorelinkHeaders {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let client_id = token(headers, "X-Client-Id")?;
        let timestamp = required(headers, "X-Timestamp")?;
        let timestamp_at = corelink::parse_request_timestamp(timestamp)
            .ok_or(ApiError::InvalidHeader {
            header: "X-Timestamp",
            reason:
                "must be an RFC 3339 UTC date-time such as 2025-11-19T07:15:00Z (or with +00:00)"
                    .into(),
        })?;
        let nonce = token(headers, "X-Nonce")?;
        let idempotency_key = token(headers, "X-Idempotency-Key")?;
        let content_type = required(headers, "Content-Type")?;
        let signature = match single(headers, "X-Signature")? {
            None | Some("") => {
                return Err(ApiError::SignatureMissing {
                    header: "X-Signature",
                    reason: "is required",
                });
            }
            Some(s) if s.len() > MAX_SIGNATURE_LEN => {
                return Err(ApiError::InvalidHeader {
                    header: "X-Signature",
                    reason: format!("must be at most {MAX_SIGNATURE_LEN} characters"),
                });
            }
            Some(s) => s,
        };
        Ok(Self {
            client_id: client_id.to_owned(),
            timestamp: timestamp.to_owned(),
            timestamp_at,
            nonce: nonce.to_owned(),
            idempotency_key: idempotency_key.to_owned(),
            content_type: content_type.to_owned(),
            signature: signature.to_owned(),
        })
    }

    /// The headers as the envelope records them, for audit and re-verification.
    fn recorded(&self) -> Vec<(String, String)> {
        [
            (names::CONTENT_TYPE, &self.content_type),
            (names::CLIENT_ID, &self.client_id),
            (names::TIMESTAMP, &self.timestamp),
            (names::NONCE, &self.nonce),
            (names::IDEMPOTENCY_KEY, &self.idempotency_key),
            (names::SIGNATURE, &self.signature),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect()
    }
}

/// Authenticates a request as of `now`: known client, the connection's client certificate
/// (when TLS is on) one of that client's, timestamp within `tolerance`, and a signature by one
/// of that client's keys over exactly this request. Returns the `kid`. Pure (the clock is an
/// argument), so the interoperability vectors can drive it.
#[allow(clippy::too_many_arguments)] // each is one fact about the request
pub fn authenticate(
    clients: &ClientRegistry,
    certificate: Option<&ClientCertificate>,
    headers: &CorelinkHeaders,
    method: &str,
    signed_path: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: std::time::Duration,
) -> Result<String, ApiError> {
    let client = clients
        .client(&headers.client_id)
        .ok_or(ApiError::UnknownClient)?;
    if let Some(certificate) = certificate
        && !client.owns_certificate(&certificate.sha256)
    {
        return Err(ApiError::ClientMismatch);
    }
    let skew = (now - headers.timestamp_at).whole_seconds();
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(ApiError::TimestampOutOfWindow {
            skew_secs: skew,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    let claims = SignedRequestClaims {
        method: method.to_owned(),
        path: signed_path.to_owned(),
        client_id: headers.client_id.clone(),
        timestamp: headers.timestamp.clone(),
        nonce: headers.nonce.clone(),
        idempotency_key: headers.idempotency_key.clone(),
        content_type: headers.content_type.clone(),
        body_sha256: corelink::body_sha256(body),
    };
    Ok(verify_request_signature(
        client,
        &claims,
        &headers.signature,
    )?)
}

/// The handler of every Corelink route: [`accept`], answered through [`respond`].
pub async fn handle(state: AppState, callback: Callback, request: Request) -> Response {
    let span = tracing::info_span!(
        "corelink_callback",
        route = callback.route_name(),
        client_id = field::Empty,
        idempotency_key = field::Empty,
        message_id = field::Empty,
        orders = field::Empty,
    );
    let sender = Sender::default();
    respond(
        callback.route_name(),
        span,
        &sender,
        accept(&state, callback, request, &sender),
    )
    .await
}

async fn accept(
    state: &AppState,
    callback: Callback,
    request: Request,
    sender: &Sender,
) -> Result<Accepted, ApiError> {
    let received_at = state.clock.now();
    let limit = state.max_body_bytes;
    let (parts, request_body) = request.into_parts();
    if let Some(repeated) = parts.extensions.get::<ForwardedCertificateRepeated>() {
        return Err(ApiError::ForwardedCertificateRepeated(
            repeated.header.to_string(),
        ));
    }
    let certificate = parts.extensions.get::<ClientCertificate>();
    if state.mtls && certificate.is_none() {
        return Err(ApiError::ClientCertRequired);
    }
    body::check_declared_length(&parts.headers, limit)?;

    let headers = CorelinkHeaders::from_headers(&parts.headers)?;
    if state.keys.current().client(&headers.client_id).is_some() {
        sender.named(&headers.client_id);
    }
    let span = tracing::Span::current();
    span.record("client_id", headers.client_id.as_str());
    span.record("idempotency_key", headers.idempotency_key.as_str());
    if !corelink::is_json_content_type(&headers.content_type) {
        return Err(ApiError::UnsupportedMediaType);
    }

    let received_path = body::target_as_sent(&parts.uri);
    let body::ReadBody { bytes: body, held } =
        body::read(request_body, limit, state.body_timeout, &state.body_budget).await?;
    let signed_path = format!("{}{received_path}", state.corelink.external_path_prefix);
    let clients = state.keys.current();
    let kid = authenticate(
        &clients,
        certificate,
        &headers,
        parts.method.as_str(),
        &signed_path,
        &body,
        received_at,
        state.corelink.timestamp_tolerance(),
    )?;
    // The registry that verified, not a reloaded one: the facts name the key actually used.
    let verification = Verification {
        scheme: VerificationScheme::Jws,
        key_sha256: clients
            .client(&headers.client_id)
            .and_then(|client| client.key(&kid))
            .map(|key| key.spki_sha256.clone()),
        key_id: kid,
        client_cert_sha256: certificate.map(|c| c.sha256.clone()),
        signed_path: Some(signed_path),
    };
    drop(clients);
    state
        .rate_limiter
        .check(&headers.client_id)
        .map_err(|wait| ApiError::RateLimited {
            // Whole seconds, rounded up: never invite a retry that would be refused again.
            retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        })?;

    if !state.replay.first_use(&headers.client_id, &headers.nonce) {
        return Err(ApiError::NonceReplayed);
    }
    let received = Received {
        path: received_path,
        body,
        at: received_at,
        verification,
    };
    let result = validate_and_enqueue(state, callback, &headers, received).await;
    if result.is_err() {
        // Not accepted: the same request may come again as is.
        state.replay.forget(&headers.client_id, &headers.nonce);
    }
    // The body's bytes stay counted until it is published or refused.
    drop(held);
    result
}

/// An authenticated request, as the envelope will record it.
struct Received {
    path: String,
    body: bytes::Bytes,
    at: OffsetDateTime,
    verification: Verification,
}

async fn validate_and_enqueue(
    state: &AppState,
    callback: Callback,
    headers: &CorelinkHeaders,
    received: Received,
) -> Result<Accepted, ApiError> {
    let Received {
        path: received_path,
        body,
        at: received_at,
        verification,
    } = received;
    let orders = match callback {
        Callback::Unit => corelink::parse_unit(&body).map(|_| 1)?,
        Callback::Batch => corelink::parse_batch(
            &body,
            &headers.idempotency_key,
            state.corelink.max_batch_orders,
        )
        .map(|batch| batch.orders.len())?,
    };

    let envelope = IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: callback.kind(),
        received_at,
        client_id: Some(headers.client_id.clone()),
        request_path: Some(received_path),
        headers: headers.recorded(),
        body,
        verification: Some(verification),
    };
    let span = tracing::Span::current();
    span.record("message_id", field::display(envelope.message_id));
    state
        .publisher
        .publish(&envelope)
        .await
        .map_err(|_| ApiError::EnqueueUnavailable {
            retry_after_secs: state.retry_after_secs,
        })?;
    span.record("orders", orders);
    Ok(Accepted {
        status: "ACCEPTED",
        idempotency_key: headers.idempotency_key.clone(),
        orders,
        received_at: rfc3339(received_at),
    })
}
