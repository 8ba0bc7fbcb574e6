//! The sign-in page, sign-in and sign-out. The sign-in form is itself protected against CSRF
//! (a token both in a cookie and in the form), so no other site can sign a browser in as
//! someone else.

use axum::Form;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::{AppendHeaders, IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use crate::console::ConsoleState;
use crate::console::audit::{self, Entry};
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::session::{self, SESSION_COOKIE, SIGN_IN_COOKIE, SignedIn};

/// Longer names are cut to this in the audit trail and the failure counts.
const MAX_ACCOUNT_NAME: usize = 128;

pub async fn form() -> Response {
    let token = session::random_token();
    let body = html! {
        form.act method="post" action="/login" id="sign-in" {
            input type="hidden" name="csrf" value=(token);
            p { label { "Account " input type="text" name="account" autocomplete="username" required; } }
            p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
            button type="submit" { "Sign in" }
        }
    };
    (
        [(SET_COOKIE, session::sign_in_cookie(&token))],
        page::anonymous("Sign in", body),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    account: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

pub async fn submit(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, ConsoleError> {
    let expected = session::cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::constant_time_eq(expected.as_bytes(), form.csrf.as_bytes())
    {
        return Err(ConsoleError::CsrfRejected);
    }
    // A name is recorded (audit, failure counts) as typed, up to a length no account exceeds.
    let account: String = form.account.chars().take(MAX_ACCOUNT_NAME).collect();
    let signed_in = session::sign_in(&state, &account, &form.password).await;
    let outcome = match &signed_in {
        Ok(_) => "ok".to_owned(),
        Err(error) => format!("refused: {error}"),
    };
    audit::record(
        &state.pool,
        Entry {
            account: &account,
            role: signed_in.as_ref().ok().map(|(_, who)| who.role),
            action: "sign-in",
            target: None,
            comment: None,
            outcome: &outcome,
        },
    )
    .await?;
    let (token, _) = signed_in?;
    Ok((
        AppendHeaders([
            (
                SET_COOKIE,
                session::session_cookie(&token, state.settings.session_ttl_secs),
            ),
            // The sign-in form's token has done its job.
            (SET_COOKIE, session::cleared_cookie(SIGN_IN_COOKIE)),
        ]),
        Redirect::to("/quarantine"),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, ConsoleError> {
    who.check_csrf(&form.csrf)?;
    session::sign_out(&state, &who).await?;
    audit::record(&state.pool, Entry::by(&who, "sign-out", None, None, "ok")).await?;
    Ok((
        [(SET_COOKIE, session::cleared_cookie(SESSION_COOKIE))],
        Redirect::to("/login"),
    )
        .into_response())
}
