//! What a console request can end in besides its page, each with its status and an explanation
//! an operator can act on. Unexpected failures are logged whole and shown without detail.

use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::console::page;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No session, or an expired one: the browser goes to the sign-in page.
    #[error("sign in first")]
    SignInNeeded,
    /// The account's role does not allow the action.
    #[error("{0}")]
    Forbidden(String),
    /// A form without the session's CSRF token, or sent from another site.
    #[error(
        "refused: the form's CSRF token is missing or wrong, or it came from another site; reload the page and try again"
    )]
    CsrfRejected,
    #[error("{0}")]
    NotFound(String),
    /// The request itself is wrong (a missing comment, an unknown filter value).
    #[error("{0}")]
    BadRequest(String),
    /// The action was refused or failed for a reason the operator should read (the message is
    /// no longer held, its seal does not match, the broker refused the publish).
    #[error("{0}")]
    ActionFailed(String),
    #[error("the console failed unexpectedly; the workers' log has the details")]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ConsoleError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.into())
    }
}

impl ConsoleError {
    fn status(&self) -> StatusCode {
        match self {
            Self::SignInNeeded => StatusCode::SEE_OTHER,
            Self::Forbidden(_) | Self::CsrfRejected => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::ActionFailed(_) => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let Self::SignInNeeded = self {
            return (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
        }
        if let Self::Internal(error) = &self {
            tracing::error!(error = %format!("{error:#}"), "console request failed");
        }
        let status = self.status();
        let body = html! {
            div.flash.error id="error" { (self.to_string()) }
            p { a href="/" { "Back to the console" } }
        };
        (
            status,
            page::anonymous(status.canonical_reason().unwrap_or("Error"), body),
        )
            .into_response()
    }
}
