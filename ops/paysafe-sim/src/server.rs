//! The HTTP side: Paysafe's GET API and the `/__sim/` control API.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use connector_schema::paysafe::{
    ERROR_CODE_INTERNAL, ERROR_CODE_INVALID_CREDENTIALS, ERROR_CODE_NOT_FOUND,
    ERROR_CODE_RATE_LIMITED, PaysafeErrorBody, TrackedKind, is_valid_id,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SimConfig;
use crate::script::{Fault, ItemScript};
use crate::state::SimState;
use crate::webhook::{self, MAX_ATTEMPTS, SignatureMode, WebhookOutcome, WebhookRequest};

/// The header in which Paysafe repeats an error's code.
const APPLICATION_STATUS_CODE: &str = "x-application-status-code";

/// The simulator's state and configuration, shared by the handlers and the [`crate::SimHandle`].
pub(crate) struct Shared {
    pub(crate) state: SimState,
    username: String,
    password: String,
    webhook_url: Mutex<Option<String>>,
    webhook_key: Option<Vec<u8>>,
    client: reqwest::Client,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field(
                "webhook_key",
                &self.webhook_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(config: SimConfig) -> anyhow::Result<Self> {
        let state = SimState::default();
        for item in config.items {
            state.set_script(item)?;
        }
        state.set_global_faults(config.global_faults)?;
        Ok(Self {
            state,
            username: config.username,
            password: config.password,
            webhook_url: Mutex::new(config.webhook_url),
            webhook_key: config.webhook_key,
            client: webhook::client(config.webhook_ca_pem.as_deref())?,
        })
    }

    pub(crate) fn set_webhook_url(&self, url: Option<String>) {
        *self
            .webhook_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = url;
    }

    fn webhook_url(&self) -> Option<String> {
        self.webhook_url
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the `Authorization` header is Basic with the configured credentials. The
    /// comparison does not stop at the first differing byte.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, encoded)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return false;
        }
        let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|b| *b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let user_ok = same(user, self.username.as_bytes());
        let password_ok = same(password, self.password.as_bytes());
        user_ok & password_ok
    }

    pub(crate) async fn send_webhook(
        &self,
        request: WebhookRequest,
    ) -> anyhow::Result<WebhookOutcome> {
        let item = request.id.as_deref().and_then(|id| self.state.script(id));
        if let Some(id) = &request.id
            && item.is_none()
            && request.raw_body.is_none()
        {
            anyhow::bail!("no scripted item `{id}`");
        }
        let current_status = request
            .id
            .as_deref()
            .and_then(|id| self.state.stats(id).current_status);
        let url = request
            .url
            .clone()
            .or_else(|| self.webhook_url())
            .context("no webhook URL is configured (--webhook-url, or url in the request)")?;
        let max_attempts = request.max_attempts.unwrap_or(1).clamp(1, MAX_ATTEMPTS);
        let pause = Duration::from_millis(request.retry_delay_ms.unwrap_or(200).min(60_000));
        let event_id = request
            .event_id
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());

        let mut attempts = Vec::new();
        let mut sent_body = None;
        let mut last = (0, String::new());
        for attempt in 1..=max_attempts {
            let body = webhook::build_body(
                &request,
                item.as_ref(),
                current_status.as_deref(),
                &event_id,
                attempt,
                OffsetDateTime::now_utc(),
            )?;
            let signature = webhook::signature_header(
                request.signature,
                self.webhook_key.as_deref(),
                body.as_bytes(),
            )?;
            sent_body.get_or_insert_with(|| body.clone());
            match webhook::post(&self.client, &url, body, signature).await {
                Ok((status, text)) => {
                    attempts.push(status);
                    last = (status, text);
                    if (200..300).contains(&status) {
                        break;
                    }
                }
                Err(error) if attempt == max_attempts => return Err(error),
                Err(error) => {
                    tracing::warn!(attempt, error = %error, "webhook attempt failed");
                    attempts.push(0);
                }
            }
            if attempt < max_attempts {
                tokio::time::sleep(pause).await;
            }
        }
        tracing::info!(
            id = request.id.as_deref().unwrap_or("-"),
            event = request.event_name.as_deref().unwrap_or("-"),
            event_id,
            attempts = ?attempts,
            "webhook delivered"
        );
        Ok(WebhookOutcome {
            status: last.0,
            body: last.1,
            attempts,
            sent_body: sent_body.unwrap_or_default(),
        })
    }
}

/// Equal bytes, comparing every byte whatever the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/paymenthub/v1/payments/{id}",
            get(|state, path, headers| get_item(state, TrackedKind::Payment, path, headers)),
        )
        .route(
            "/paymenthub/v1/standalonecredits/{id}",
            get(|state, path, headers| {
                get_item(state, TrackedKind::StandaloneCredit, path, headers)
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/__sim/items", post(put_item).get(all_stats))
        .route("/__sim/items/{id}", get(item_detail).delete(delete_item))
        .route("/__sim/items/{id}/faults", post(add_item_faults))
        .route("/__sim/faults", post(set_global_faults))
        .route("/__sim/stats", get(all_stats))
        .route("/__sim/reset", post(reset))
        .route("/__sim/webhooks", post(send_webhook))
        .route("/__sim/webhook-url", axum::routing::put(set_webhook_url))
        .fallback(|| async {
            paysafe_error(
                StatusCode::NOT_FOUND,
                ERROR_CODE_NOT_FOUND,
                "The ID(s) specified in the URL do not correspond to the values in the system.",
            )
        })
        .with_state(shared)
}

/// `GET /paymenthub/v1/{payments|standalonecredits}/{id}`.
async fn get_item(
    State(shared): State<Arc<Shared>>,
    kind: TrackedKind,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !shared.authorized(&headers) {
        shared.state.record_unauthorized();
        tracing::info!(kind = kind.as_str(), "GET refused: bad credentials");
        return unauthorized();
    }
    if !is_valid_id(&id) {
        return not_found(&id);
    }
    let _in_flight = shared.state.begin(&id);
    match shared.state.next_fault(&id) {
        Some(Fault::Delay { ms, .. }) => tokio::time::sleep(Duration::from_millis(ms)).await,
        Some(fault) => {
            shared.state.record_faulted(&id);
            tracing::info!(id, fault = ?fault, "GET answered with an injected fault");
            return fault_response(&fault);
        }
        None => {}
    }
    match shared.state.answer(kind, &id) {
        Some(transaction) => {
            tracing::debug!(id, status = transaction.status, "GET answered");
            axum::Json(transaction).into_response()
        }
        None => not_found(&id),
    }
}

fn fault_response(fault: &Fault) -> Response {
    match fault {
        Fault::RateLimit {
            retry_after_secs, ..
        } => {
            let mut response = paysafe_error(
                StatusCode::TOO_MANY_REQUESTS,
                ERROR_CODE_RATE_LIMITED,
                "The API call has been denied as it has exceeded the permissible call rate limit.",
            );
            if let Some(secs) = retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            response
        }
        Fault::ServerError { .. } => paysafe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ERROR_CODE_INTERNAL,
            "An internal error occurred.",
        ),
        Fault::Unauthorized { .. } => unauthorized(),
        Fault::HttpError {
            status,
            code,
            message,
            ..
        } => paysafe_error(
            StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message.as_deref().unwrap_or("Simulated error."),
        ),
        // Delays are served by the handler; never an answer on their own.
        Fault::Delay { .. } => paysafe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            ERROR_CODE_INTERNAL,
            "An internal error occurred.",
        ),
    }
}

fn unauthorized() -> Response {
    let mut response = paysafe_error(
        StatusCode::UNAUTHORIZED,
        ERROR_CODE_INVALID_CREDENTIALS,
        "The authentication credentials are invalid.",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"paysafe-sim\""),
    );
    response
}

fn not_found(id: &str) -> Response {
    let mut body = PaysafeErrorBody::new(
        ERROR_CODE_NOT_FOUND,
        "The ID(s) specified in the URL do not correspond to the values in the system.",
    );
    // The id is echoed only once it is known to be tame (Paysafe ids are UUIDs).
    if is_valid_id(id) {
        body.error.details.push(format!("Id [{id}] does not exist"));
    }
    error_response(StatusCode::NOT_FOUND, &body)
}

/// Paysafe's error body, with the code repeated in `X-Application-Status-Code`.
fn paysafe_error(status: StatusCode, code: &str, message: &str) -> Response {
    error_response(status, &PaysafeErrorBody::new(code, message))
}

fn error_response(status: StatusCode, body: &PaysafeErrorBody) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(code) = HeaderValue::from_str(&body.error.code) {
        response.headers_mut().insert(APPLICATION_STATUS_CODE, code);
    }
    response
}

/// A control API error: `{"error": "..."}`.
fn control_error(status: StatusCode, message: impl fmt::Display) -> Response {
    (status, axum::Json(json!({"error": message.to_string()}))).into_response()
}

/// A control request body; a 400 answer when it does not parse.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(control_error(StatusCode::BAD_REQUEST, e)))
}

/// `POST /__sim/items`: create or replace a script.
async fn put_item(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let script: ItemScript = match parse(&body) {
        Ok(script) => script,
        Err(response) => return *response,
    };
    let id = script.id.clone();
    match shared.state.set_script(script) {
        Ok(()) => axum::Json(json!({"id": id})).into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error),
    }
}

/// `GET /__sim/items/{id}`: the script and the counters.
async fn item_detail(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let script = shared.state.script(&id);
    let stats = shared.state.stats(&id);
    axum::Json(json!({"script": script, "stats": stats})).into_response()
}

async fn delete_item(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    if shared.state.remove_script(&id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        control_error(StatusCode::NOT_FOUND, format!("no item `{id}`"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Faults {
    faults: Vec<Fault>,
}

/// `POST /__sim/items/{id}/faults`: append to an item's fault queue.
async fn add_item_faults(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let faults: Faults = match parse(&body) {
        Ok(faults) => faults,
        Err(response) => return *response,
    };
    if shared.state.script(&id).is_none() {
        return control_error(StatusCode::NOT_FOUND, format!("no item `{id}`"));
    }
    match shared.state.add_faults(&id, faults.faults) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error),
    }
}

/// `POST /__sim/faults`: replace the global fault queue.
async fn set_global_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match parse(&body) {
        Ok(faults) => faults,
        Err(response) => return *response,
    };
    match shared.state.set_global_faults(faults.faults) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => control_error(StatusCode::BAD_REQUEST, error),
    }
}

/// `GET /__sim/stats` (and `GET /__sim/items`).
async fn all_stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.state.global_stats()).into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.state.reset();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookUrl {
    url: Option<String>,
}

async fn set_webhook_url(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse::<WebhookUrl>(&body) {
        Ok(target) => {
            shared.set_webhook_url(target.url);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(response) => *response,
    }
}

/// `POST /__sim/webhooks`: 200 with the receiver's answer, 400 for a request that cannot be
/// built, 502 when the receiver could not be reached.
async fn send_webhook(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let request: WebhookRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return *response,
    };
    let can_build = request.raw_body.is_some()
        || (request.event_name.is_some()
            && request
                .id
                .as_deref()
                .is_some_and(|id| shared.state.script(id).is_some()));
    if !can_build {
        return control_error(
            StatusCode::BAD_REQUEST,
            "give eventName and the id of a scripted item, or rawBody",
        );
    }
    if request.signature == SignatureMode::Valid && shared.webhook_key.is_none() {
        return control_error(
            StatusCode::BAD_REQUEST,
            "no webhook key is configured (--webhook-key)",
        );
    }
    if request.url.is_none() && shared.webhook_url().is_none() {
        return control_error(
            StatusCode::BAD_REQUEST,
            "no webhook URL is configured (--webhook-url, PUT /__sim/webhook-url, or url)",
        );
    }
    match shared.send_webhook(request).await {
        Ok(outcome) => axum::Json(outcome).into_response(),
        Err(error) => control_error(StatusCode::BAD_GATEWAY, format!("{error:#}")),
    }
}
