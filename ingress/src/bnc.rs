//! The BNC account-binding callback route (DESIGN.md §4): SNAP headers, the SHA256withRSA
//! signature, the body rules, then the durable enqueue, every answer in SNAP form
//! (`responseCode`/`responseMessage`). TLS without a client certificate: the signature is the
//! partner's proof.
//!
//! The body carries the user's card token and account number. They travel to the queue as
//! received (the workers need them) but are never logged: spans carry the partner, the external
//! id and the partner reference only.

use std::time::Instant;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, field};
use uuid::Uuid;

use connector_schema::bnc::{SnapResponse, headers as names};
use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::error::ApiError;
use crate::metrics::{self, InFlight};
use crate::snap::check_request;
use crate::state::AppState;

/// The `route` label of the metrics.
pub const ROUTE_NAME: &str = "bnc_account_binding";

/// The SNAP headers, in the order they are checked and recorded.
const SNAP_HEADERS: [&str; 5] = [
    names::X_TIMESTAMP,
    names::X_CLIENT_KEY,
    names::X_SIGNATURE,
    names::X_EXTERNAL_ID,
    names::CHANNEL_ID,
];

/// Why a callback was not accepted, with the SNAP answer it gets.
#[derive(Debug)]
struct Refusal {
    response: SnapResponse,
    /// Set for 503: when to try again.
    retry_after_secs: Option<u64>,
    /// Set when the body never arrived in time: the connection is closed after the answer.
    close: bool,
}

impl From<SnapResponse> for Refusal {
    fn from(response: SnapResponse) -> Self {
        Self {
            response,
            retry_after_secs: None,
            close: false,
        }
    }
}

pub async fn handle(state: AppState, request: Request) -> Response {
    let started = Instant::now();
    let _in_flight = InFlight::start();
    let span = tracing::info_span!(
        "bnc_callback",
        client_key = field::Empty,
        external_id = field::Empty,
        partner_reference_no = field::Empty,
        message_id = field::Empty,
    );
    let result = accept(&state, request).instrument(span.clone()).await;
    let response = match &result {
        Ok(()) => SnapResponse::success(),
        Err(refusal) => refusal.response.clone(),
    };
    metrics::record_request(ROUTE_NAME, response.response_code, started.elapsed());
    span.in_scope(|| match &result {
        Ok(()) => tracing::info!("accepted"),
        Err(refusal) => tracing::info!(
            code = refusal.response.response_code,
            message = %refusal.response.response_message,
            "rejected"
        ),
    });
    let status = StatusCode::from_u16(response.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut answer = (status, Json(&response)).into_response();
    if let Err(refusal) = result {
        if let Some(secs) = refusal.retry_after_secs {
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if refusal.close {
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    answer
}

async fn accept(state: &AppState, request: Request) -> Result<(), Refusal> {
    let received_at = state.clock.now();
    let (parts, body) = request.into_parts();
    // A header sent twice is ambiguous (which one was signed?): refused, like Corelink's.
    if let Some(twice) = SNAP_HEADERS
        .into_iter()
        .find(|name| parts.headers.get_all(*name).iter().nth(1).is_some())
    {
        return Err(SnapResponse::invalid_format(twice).into());
    }
    let body = crate::body::read(body, state.max_body_bytes, state.body_timeout)
        .await
        .map_err(|error| Refusal {
            response: SnapResponse::invalid_format(connector_schema::bnc::BODY_FIELD),
            retry_after_secs: None,
            close: matches!(error, ApiError::RequestTimeout(_)),
        })?;
    let path_as_sent = crate::body::target_as_sent(&parts.uri);
    let (headers, callback) = check_request(
        &state.bnc_partners,
        |name| parts.headers.get(name),
        &path_as_sent,
        &body,
        received_at,
        state.bnc.timestamp_tolerance(),
    )
    .map_err(|rejection| Refusal::from(rejection.response()))?;
    let span = tracing::Span::current();
    span.record("client_key", headers.client_key);
    span.record("external_id", headers.external_id);
    span.record(
        "partner_reference_no",
        callback.partner_reference_no.as_str(),
    );

    let envelope = IntakeEnvelope {
        message_id: Uuid::now_v7(),
        kind: IntakeKind::BncAccountBinding,
        received_at,
        client_id: Some(headers.client_key.to_owned()),
        request_path: Some(path_as_sent),
        headers: [
            (names::X_TIMESTAMP, headers.timestamp),
            (names::X_CLIENT_KEY, headers.client_key),
            (names::X_SIGNATURE, headers.signature),
            (names::X_EXTERNAL_ID, headers.external_id),
            (names::CHANNEL_ID, headers.channel_id),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.to_owned()))
        .collect(),
        body,
    };
    span.record("message_id", field::display(envelope.message_id));
    state.publisher.publish(&envelope).await.map_err(|error| {
        tracing::warn!(%error, "durable enqueue failed");
        Refusal {
            response: SnapResponse::general_error(),
            retry_after_secs: Some(state.retry_after_secs),
            close: false,
        }
    })
}
