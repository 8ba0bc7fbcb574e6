//! The BNC account-binding callback route (DESIGN.md §4): SNAP headers, the SHA256withRSA
//! signature, the body rules, then the durable enqueue, every answer in SNAP form
//! (`responseCode`/`responseMessage`). TLS without a client certificate: the signature is the
//! partner's proof.
//!
//! The body carries the user's card token and account number. They travel to the queue as
//! received (the workers need them) but are never logged: spans carry the partner, the external
//! id and the partner reference only.

use std::fmt;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use tracing::field;
use uuid::Uuid;

use connector_schema::bnc::{
    AccountBindingCallback, SnapFieldError, SnapHeaders, SnapResponse, codes, headers as names,
    parse_account_binding, validate_headers,
};
use connector_schema::{IntakeEnvelope, IntakeKind, Verification, VerificationScheme};

use crate::auth::snap::partners::BncPartners;
use crate::auth::snap::{self, SnapAuthError, verify_signature};
use crate::auth::tls::ClientCertificate;
use crate::routes::body;
use crate::routes::error::ApiError;
use crate::routes::headers::once;
use crate::routes::respond::{Answer, Sender, respond};
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

/// Why [`check_request`] refused a request: a field problem (400) or an authentication
/// failure (401). Kept apart so the route can count and log them differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapRejection {
    #[error(transparent)]
    Field(#[from] SnapFieldError),
    #[error("Unauthorized. {0}")]
    Auth(#[from] SnapAuthError),
}

impl SnapRejection {
    /// The SNAP answer (and, through it, the HTTP status).
    pub fn response(&self) -> SnapResponse {
        match self {
            Self::Field(error) => error.response(),
            Self::Auth(error) => error.response(),
        }
    }
}

/// The whole check of one callback whose body has arrived, in the order the route answers:
/// [`check_headers`], then [`check_body`]. `header` looks a header up case-insensitively
/// (`|name| request.headers().get(name)`). Pure (the clock is an argument), so the shared
/// vectors drive it.
pub fn check_request<'a, V>(
    partners: &BncPartners,
    header: impl Fn(&str) -> Option<&'a V>,
    path_as_sent: &str,
    body: &[u8],
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<(SnapHeaders<'a>, AccountBindingCallback), SnapRejection>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let headers = check_headers(partners, header, now, tolerance)?;
    let (callback, _) = check_body(partners, &headers, path_as_sent, body)?;
    Ok((headers, callback))
}

/// What is judged before the body is read, so a stranger cannot make us hold a connection or
/// memory for a body: the headers' presence and format (400, [`validate_headers`]), then the
/// client key, the timestamp window and the signature's encoding (401,
/// [`snap::check_headers`]).
pub fn check_headers<'a, V>(
    partners: &BncPartners,
    header: impl Fn(&str) -> Option<&'a V>,
    now: OffsetDateTime,
    tolerance: Duration,
) -> Result<SnapHeaders<'a>, SnapRejection>
where
    V: AsRef<[u8]> + ?Sized + 'a,
{
    let headers = validate_headers(header)?;
    snap::check_headers(partners, &headers, now, tolerance)?;
    Ok(headers)
}

/// What needs the body: the signature over it (401, [`verify_signature`]), before the body is
/// judged so that only the partner learns anything about our body rules and a forged request
/// costs no parsing; then the body (400, [`parse_account_binding`]). Returns the callback and
/// the SPKI SHA-256 fingerprint of the partner key that verified it.
pub fn check_body(
    partners: &BncPartners,
    headers: &SnapHeaders<'_>,
    path_as_sent: &str,
    body: &[u8],
) -> Result<(AccountBindingCallback, String), SnapRejection> {
    let key_sha256 = verify_signature(partners, headers, path_as_sent, body)?;
    Ok((parse_account_binding(body)?, key_sha256.to_owned()))
}

/// The 200 answer: the binding is durably enqueued.
#[derive(Debug)]
struct Accepted;

impl IntoResponse for Accepted {
    fn into_response(self) -> Response {
        snap_answer(&SnapResponse::success())
    }
}

impl Answer for Accepted {
    const CODES: &'static [&'static str] = &[codes::SUCCESS];

    fn code(&self) -> &'static str {
        SnapResponse::success().response_code
    }
}

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

/// What the log line says: the SNAP message, which never quotes the request.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.response.response_message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut answer = snap_answer(&self.response);
        if let Some(secs) = self.retry_after_secs {
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.close {
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }
}

impl Answer for Refusal {
    const CODES: &'static [&'static str] = &[
        codes::INVALID_FIELD_FORMAT,
        codes::INVALID_MANDATORY_FIELD,
        codes::UNAUTHORIZED,
        codes::GENERAL_ERROR,
    ];

    fn code(&self) -> &'static str {
        self.response.response_code
    }

    fn is_server_error(&self) -> bool {
        self.response.http_status() >= 500
    }
}

/// A SNAP body with the HTTP status its code implies.
fn snap_answer(response: &SnapResponse) -> Response {
    let status = StatusCode::from_u16(response.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(response)).into_response()
}

/// The route's request counters, at zero (`respond::Answer::CODES` says why), with the
/// refusals of every partner of `settings`.
pub fn export_counters_at_zero(settings: &crate::config::Settings) {
    let partners: Vec<&str> = settings
        .bnc
        .partners
        .iter()
        .map(|p| p.client_key.as_str())
        .collect();
    super::respond::export_at_zero::<Accepted, Refusal>(ROUTE_NAME, &partners);
}

/// The handler of the route: [`accept`], answered through [`respond`].
pub async fn handle(state: AppState, request: Request) -> Response {
    let span = tracing::info_span!(
        "bnc_callback",
        client_key = field::Empty,
        external_id = field::Empty,
        partner_reference_no = field::Empty,
        message_id = field::Empty,
    );
    let sender = Sender::default();
    respond(ROUTE_NAME, span, &sender, accept(&state, request, &sender)).await
}

async fn accept(state: &AppState, request: Request, sender: &Sender) -> Result<Accepted, Refusal> {
    let received_at = state.clock.now();
    let (parts, request_body) = request.into_parts();
    if let Some(client_key) = parts
        .headers
        .get("x-client-key")
        .and_then(|key| key.to_str().ok())
        .filter(|key| state.bnc_partners.contains(key))
    {
        sender.named(client_key);
    }
    // A header sent twice is ambiguous (which one was signed?): refused, like Corelink's.
    if let Some(twice) = SNAP_HEADERS
        .into_iter()
        .find(|name| once(&parts.headers, *name).is_err())
    {
        return Err(SnapResponse::invalid_format(twice).into());
    }
    let headers = check_headers(
        &state.bnc_partners,
        |name| parts.headers.get(name),
        received_at,
        state.bnc.timestamp_tolerance(),
    )
    .map_err(|rejection| Refusal::from(rejection.response()))?;
    let path_as_sent = body::target_as_sent(&parts.uri);
    let body::ReadBody { bytes: body, held } = body::read(
        request_body,
        state.bnc.max_body_bytes,
        state.body_timeout,
        &state.body_budget,
    )
    .await
    .map_err(|error| match error {
        ApiError::Overloaded { retry_after_secs } => Refusal {
            response: SnapResponse::general_error(),
            retry_after_secs: Some(retry_after_secs),
            close: false,
        },
        error => Refusal {
            response: SnapResponse::invalid_format(connector_schema::bnc::BODY_FIELD),
            retry_after_secs: None,
            close: matches!(error, ApiError::RequestTimeout(_)),
        },
    })?;
    let (callback, key_sha256) = check_body(&state.bnc_partners, &headers, &path_as_sent, &body)
        .map_err(|rejection| Refusal::from(rejection.response()))?;
    let span = tracing::Span::current();
    span.record("client_key", headers.client_key);
    span.record("external_id", headers.external_id);
    span.record(
        "partner_reference_no",
        callback.partner_reference_no.as_str(),
    );

    // BNC keys have no id of their own: the partner's client key names them, the
    // fingerprint tells its rotating keys apart. The signature covers the path as sent.
    let verification = Verification {
        scheme: VerificationScheme::SnapRsa,
        key_id: headers.client_key.to_owned(),
        key_sha256: Some(key_sha256),
        client_cert_sha256: parts
            .extensions
            .get::<ClientCertificate>()
            .map(|c| c.sha256.clone()),
        signed_path: Some(path_as_sent.clone()),
    };
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
        verification: Some(verification),
    };
    span.record("message_id", field::display(envelope.message_id));
    state
        .publisher
        .publish(&envelope)
        .await
        .map_err(|_| Refusal {
            response: SnapResponse::general_error(),
            retry_after_secs: Some(state.retry_after_secs),
            close: false,
        })?;
    drop(held);
    Ok(Accepted)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::auth::snap::tests::{
        BODY, PATH, TIMESTAMP, TOLERANCE, key_pair, now, partners, signed,
    };

    #[test]
    fn check_request_answers_in_order_headers_authentication_body() {
        let (private, public) = key_pair(0);
        let partners = partners(&[public]);
        let signature = signed(private, PATH, BODY.as_bytes(), TIMESTAMP);
        let mut map: HashMap<&str, String> = HashMap::from([
            ("X-TIMESTAMP", TIMESTAMP.to_owned()),
            ("X-CLIENT-KEY", "BNC_PARTNER_1".to_owned()),
            ("X-SIGNATURE", signature),
            ("X-EXTERNAL-ID", "77778042022091500001".to_owned()),
            ("CHANNEL-ID", "95221".to_owned()),
        ]);
        let run = |map: &HashMap<&str, String>, body: &[u8]| {
            check_request(
                &partners,
                |name| map.get(name).map(String::as_str),
                PATH,
                body,
                now(),
                TOLERANCE,
            )
            .map(|(headers, callback)| (headers.external_id.to_owned(), callback))
            .map_err(|rejection| rejection.response())
        };
        let (external_id, callback) = run(&map, BODY.as_bytes()).unwrap();
        assert_eq!(external_id, "77778042022091500001");
        assert_eq!(callback.account_transaction_limit.as_str(), "500000.00");

        // A signed body that breaks the contract is 400, once authenticated.
        let invalid = r#"{"partnerReferenceNo":"BEL2210170001"}"#;
        let mut signed_invalid = map.clone();
        signed_invalid.insert(
            "X-SIGNATURE",
            signed(private, PATH, invalid.as_bytes(), TIMESTAMP),
        );
        assert_eq!(
            run(&signed_invalid, invalid.as_bytes()),
            Err(SnapResponse::invalid_mandatory("accountNo"))
        );
        // The same body unsigned is 401: strangers learn nothing about the body rules.
        assert_eq!(
            run(&map, invalid.as_bytes()),
            Err(SnapResponse::unauthorized("Invalid signature"))
        );
        map.insert("X-CLIENT-KEY", "NOBODY".into());
        let unknown = run(&map, BODY.as_bytes()).unwrap_err();
        assert_eq!(unknown.http_status(), 401);
        assert_eq!(unknown.response_message, "Unauthorized. Unknown client key");
        map.remove("CHANNEL-ID");
        assert_eq!(
            run(&map, BODY.as_bytes()),
            Err(SnapResponse::invalid_mandatory("CHANNEL-ID"))
        );
    }
}
