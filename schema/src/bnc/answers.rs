//! The SNAP answers of the BNC callback (DESIGN.md §4): the response codes and messages, the
//! HTTP status each is sent with, and the field errors that become a 400.
//!
//! SNAP answers with one problem only, so a field error is a single value, not a list.

use serde::Serialize;

/// The first problem with a header or body field, named as SNAP names it (`X-TIMESTAMP`,
/// `accountTransactionLimit`, `additionalInfo.token`, or [`super::BODY_FIELD`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapFieldError {
    /// Present but of the wrong type, too long, or badly formed: SNAP 4000001.
    #[error("Invalid Field Format {0}")]
    InvalidFormat(String),
    /// Missing, `null` or blank although mandatory: SNAP 4000002.
    #[error("Invalid Mandatory Field {0}")]
    InvalidMandatory(String),
}

impl SnapFieldError {
    pub(super) fn format(field: &str) -> Self {
        Self::InvalidFormat(field.to_owned())
    }

    pub(super) fn mandatory(field: &str) -> Self {
        Self::InvalidMandatory(field.to_owned())
    }

    /// The offending field's SNAP name.
    pub fn field(&self) -> &str {
        match self {
            Self::InvalidFormat(field) | Self::InvalidMandatory(field) => field,
        }
    }

    /// The 400 answer for this problem.
    pub fn response(&self) -> SnapResponse {
        match self {
            Self::InvalidFormat(field) => SnapResponse::invalid_format(field),
            Self::InvalidMandatory(field) => SnapResponse::invalid_mandatory(field),
        }
    }
}

impl From<SnapFieldError> for SnapResponse {
    fn from(error: SnapFieldError) -> Self {
        error.response()
    }
}

/// SNAP response codes used by this callback (HTTP status, service code `00`, case).
pub mod codes {
    pub const SUCCESS: &str = "2000000";
    pub const INVALID_FIELD_FORMAT: &str = "4000001";
    pub const INVALID_MANDATORY_FIELD: &str = "4000002";
    pub const UNAUTHORIZED: &str = "4010000";
    pub const GENERAL_ERROR: &str = "5000000";
}

/// The body of every answer to the partner, SNAP style:
/// `{"responseCode":"2000000","responseMessage":"Successful"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapResponse {
    /// Seven digits: HTTP status (3), service code (2, `00` here: the callback has none), case.
    pub response_code: &'static str,
    pub response_message: String,
}

impl SnapResponse {
    /// 200: the callback is durably enqueued.
    pub fn success() -> Self {
        Self::new(codes::SUCCESS, "Successful".into())
    }

    /// 400 4000001 `Invalid Field Format <field>`.
    pub fn invalid_format(field: &str) -> Self {
        Self::new(
            codes::INVALID_FIELD_FORMAT,
            format!("Invalid Field Format {field}"),
        )
    }

    /// 400 4000002 `Invalid Mandatory Field <field>`.
    pub fn invalid_mandatory(field: &str) -> Self {
        Self::new(
            codes::INVALID_MANDATORY_FIELD,
            format!("Invalid Mandatory Field {field}"),
        )
    }

    /// 401 4010000 `Unauthorized. <reason>`. The reason must say what failed (unknown client
    /// key, stale timestamp, bad signature), never echo key material.
    pub fn unauthorized(reason: &str) -> Self {
        Self::new(codes::UNAUTHORIZED, format!("Unauthorized. {reason}"))
    }

    /// 5000000 `General Error`: the request was valid but could not be enqueued, so the partner
    /// must retry; answered with HTTP 503 (see [`Self::http_status`]).
    pub fn general_error() -> Self {
        Self::new(codes::GENERAL_ERROR, "General Error".into())
    }

    fn new(response_code: &'static str, response_message: String) -> Self {
        Self {
            response_code,
            response_message,
        }
    }

    /// The HTTP status to answer with. Usually the code's first three digits, except
    /// 5000000: the connector only says "General Error" when the callback was *not* enqueued
    /// (broker down or slow), which is 503 so that the partner and any proxy treat it as
    /// retryable.
    pub fn http_status(&self) -> u16 {
        match self.response_code {
            codes::SUCCESS => 200,
            codes::INVALID_FIELD_FORMAT | codes::INVALID_MANDATORY_FIELD => 400,
            codes::UNAUTHORIZED => 401,
            codes::GENERAL_ERROR => 503,
            other => other
                .get(..3)
                .and_then(|status| status.parse().ok())
                .unwrap_or(500),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_serialise_snap_style_with_their_http_status() {
        let cases = [
            (
                SnapResponse::success(),
                200,
                r#"{"responseCode":"2000000","responseMessage":"Successful"}"#,
            ),
            (
                SnapResponse::invalid_format("additionalInfo.token"),
                400,
                r#"{"responseCode":"4000001","responseMessage":"Invalid Field Format additionalInfo.token"}"#,
            ),
            (
                SnapResponse::invalid_mandatory("X-TIMESTAMP"),
                400,
                r#"{"responseCode":"4000002","responseMessage":"Invalid Mandatory Field X-TIMESTAMP"}"#,
            ),
            (
                SnapResponse::unauthorized("Invalid signature"),
                401,
                r#"{"responseCode":"4010000","responseMessage":"Unauthorized. Invalid signature"}"#,
            ),
            (
                SnapResponse::general_error(),
                503,
                r#"{"responseCode":"5000000","responseMessage":"General Error"}"#,
            ),
        ];
        for (response, status, json) in cases {
            assert_eq!(serde_json::to_string(&response).unwrap(), json);
            assert_eq!(response.http_status(), status);
        }
        let error = SnapFieldError::InvalidMandatory("accountNo".into());
        assert_eq!(error.field(), "accountNo");
        assert_eq!(error.to_string(), "Invalid Mandatory Field accountNo");
        assert_eq!(
            SnapResponse::from(error),
            SnapResponse::invalid_mandatory("accountNo")
        );
    }
}
