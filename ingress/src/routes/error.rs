//! Every way a request can be refused, with its HTTP status and the contract's machine-readable
//! code (DESIGN.md §3.3), rendered as `{"error":{"code","message","details"}}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use connector_schema::validation::{BodyError, FieldError};

use crate::auth::jws::SignatureError;
use crate::routes::respond::Answer;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body does not satisfy the contract")]
    ValidationFailed(Vec<FieldError>),
    #[error("header {0} is required")]
    MissingHeader(&'static str),
    #[error("header {header} is invalid: {reason}")]
    InvalidHeader {
        header: &'static str,
        reason: String,
    },
    /// A trusted proxy forwarded the client certificate header more than once.
    #[error("header {0} (the forwarded client certificate) must appear once")]
    ForwardedCertificateRepeated(String),
    /// No signature header, or an empty one: `reason` says which.
    #[error("header {header} {reason}")]
    SignatureMissing {
        header: &'static str,
        reason: &'static str,
    },
    #[error("{0}")]
    SignatureInvalid(#[from] SignatureError),
    /// A webhook's `Signature` is not the HMAC of its body under any configured key.
    #[error("header {0} is not the HMAC-SHA256 of this body under a configured key")]
    HmacMismatch(&'static str),
    #[error(
        "X-Timestamp is {skew_secs} s away from the connector's clock; at most {tolerance_secs} s is accepted"
    )]
    TimestampOutOfWindow { skew_secs: i64, tolerance_secs: u64 },
    #[error("X-Client-Id names no configured client")]
    UnknownClient,
    #[error("a client certificate is required on this route")]
    ClientCertRequired,
    #[error("the client certificate does not belong to the client named by X-Client-Id")]
    ClientMismatch,
    #[error(
        "this nonce was already used by this client; a retry needs a fresh nonce, timestamp and signature"
    )]
    NonceReplayed,
    #[error("the body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the body did not arrive within {0} s; the connection is closed")]
    RequestTimeout(u64),
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    #[error("this client sends faster than its configured rate; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "the request could not be durably enqueued; retry later with the same X-Idempotency-Key"
    )]
    EnqueueUnavailable { retry_after_secs: u64 },
    /// The in-flight body budget is spent: answered at once, nothing read further or enqueued.
    #[error(
        "the connector holds as many request bodies as it may at once; retry after {retry_after_secs} s"
    )]
    Overloaded { retry_after_secs: u64 },
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_)
            | Self::ValidationFailed(_)
            | Self::MissingHeader(_)
            | Self::InvalidHeader { .. }
            | Self::ForwardedCertificateRepeated(_) => StatusCode::BAD_REQUEST,
            Self::SignatureMissing { .. }
            | Self::SignatureInvalid(_)
            | Self::HmacMismatch(_)
            | Self::TimestampOutOfWindow { .. }
            | Self::UnknownClient
            | Self::ClientCertRequired => StatusCode::UNAUTHORIZED,
            Self::ClientMismatch => StatusCode::FORBIDDEN,
            Self::NonceReplayed => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::EnqueueUnavailable { .. } | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// Every code [`ApiError::code`] gives.
    pub const CODES: [&'static str; 17] = [
        "MALFORMED_JSON",
        "VALIDATION_FAILED",
        "MISSING_HEADER",
        "INVALID_HEADER",
        "SIGNATURE_MISSING",
        "SIGNATURE_INVALID",
        "TIMESTAMP_OUT_OF_WINDOW",
        "UNKNOWN_CLIENT",
        "CLIENT_CERT_REQUIRED",
        "CLIENT_MISMATCH",
        "NONCE_REPLAYED",
        "PAYLOAD_TOO_LARGE",
        "REQUEST_TIMEOUT",
        "UNSUPPORTED_MEDIA_TYPE",
        "RATE_LIMITED",
        "ENQUEUE_UNAVAILABLE",
        "OVERLOADED",
    ];

    /// The contract's error code; also the `code` label of the request metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "MALFORMED_JSON",
            Self::ValidationFailed(_) => "VALIDATION_FAILED",
            Self::MissingHeader(_) => "MISSING_HEADER",
            Self::InvalidHeader { .. } | Self::ForwardedCertificateRepeated(_) => "INVALID_HEADER",
            Self::SignatureMissing { .. } => "SIGNATURE_MISSING",
            Self::SignatureInvalid(_) | Self::HmacMismatch(_) => "SIGNATURE_INVALID",
            Self::TimestampOutOfWindow { .. } => "TIMESTAMP_OUT_OF_WINDOW",
            Self::UnknownClient => "UNKNOWN_CLIENT",
            Self::ClientCertRequired => "CLIENT_CERT_REQUIRED",
            Self::ClientMismatch => "CLIENT_MISMATCH",
            Self::NonceReplayed => "NONCE_REPLAYED",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::RequestTimeout(_) => "REQUEST_TIMEOUT",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::EnqueueUnavailable { .. } => "ENQUEUE_UNAVAILABLE",
            Self::Overloaded { .. } => "OVERLOADED",
        }
    }

    fn details(&self) -> Vec<FieldError> {
        match self {
            Self::ValidationFailed(errors) => errors.clone(),
            Self::MissingHeader(name) => vec![FieldError::new(*name, "is required")],
            Self::SignatureMissing { header, reason } => vec![FieldError::new(*header, *reason)],
            Self::InvalidHeader { header, reason } => {
                vec![FieldError::new(*header, reason.clone())]
            }
            Self::ForwardedCertificateRepeated(header) => {
                vec![FieldError::new(header.clone(), "must appear once")]
            }
            _ => Vec::new(),
        }
    }
}

impl From<BodyError> for ApiError {
    fn from(error: BodyError) -> Self {
        match error {
            BodyError::Malformed(reason) => Self::MalformedJson(reason),
            BodyError::Invalid(errors) => Self::ValidationFailed(errors),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "code": self.code(),
                "message": self.to_string(),
                "details": self.details(),
            }
        });
        let mut response = (self.status(), Json(body)).into_response();
        if let Self::RequestTimeout(_) = self {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let Self::EnqueueUnavailable { retry_after_secs }
        | Self::RateLimited { retry_after_secs }
        | Self::Overloaded { retry_after_secs } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

impl Answer for ApiError {
    const CODES: &'static [&'static str] = &ApiError::CODES;

    fn code(&self) -> &'static str {
        ApiError::code(self)
    }

    fn is_server_error(&self) -> bool {
        self.status().is_server_error()
    }
}
