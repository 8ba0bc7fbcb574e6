//! The one path from a request to its answer, shared by every route: the request is counted in
//! flight and timed, its work runs inside the route's span, and its outcome is counted
//! (`route`, `code`), logged once (accepted, rejected, or not accepted when the failure is
//! ours) and turned into the response. Routes differ only in the form of their answers, which
//! [`Answer`] abstracts: the contract's `ApiError` and `ACCEPTED` bodies, or BNC's SNAP codes.

use std::fmt::Display;
use std::future::Future;
use std::sync::OnceLock;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use tracing::{Instrument as _, Span};

use crate::metrics::{self, InFlight};

/// An answer a route gives: an acceptance or a refusal, in the route's own form.
pub trait Answer: IntoResponse {
    /// Every code [`Answer::code`] can give: exported at zero from the start
    /// ([`export_at_zero`]), so that the first refusal of a kind is an increase `rate()` sees.
    const CODES: &'static [&'static str];

    /// The outcome code: the `code` label of the request metrics and of the log line.
    fn code(&self) -> &'static str;

    /// Whether the failure is ours, not the sender's (who should retry): logged as a warning.
    /// An acceptance is not.
    fn is_server_error(&self) -> bool {
        false
    }
}

/// Exports `route`'s request counter at zero for every code its answers `A` and refusals `R`
/// can give, and its refusals of each of `senders` (the configured ones, and `unknown`) for
/// every refusal code: a bank's first refusal is then an increase too.
pub fn export_at_zero<A: Answer, R: Answer>(route: &'static str, senders: &[&str]) {
    for code in A::CODES.iter().chain(R::CODES) {
        metrics::request_at_zero(route, code);
    }
    for sender in senders.iter().copied().chain(["unknown"]) {
        for code in R::CODES {
            metrics::refusal_by_sender_at_zero(route, sender, code);
        }
    }
}

/// Whom a refusal is counted against: the configured bank or partner the request named, set by
/// the route as soon as it has read the name and found it in its configuration. Unset, the
/// refusal is `unknown`'s (a name we do not know is never a label: callers cannot grow the
/// series).
#[derive(Debug, Default)]
pub struct Sender(OnceLock<String>);

impl Sender {
    pub fn named(&self, configured: &str) {
        let _ = self.0.set(configured.to_owned());
    }

    fn label(&self) -> String {
        self.0.get().cloned().unwrap_or_else(|| "unknown".into())
    }
}

/// Runs `accept` (a route's work on one request) inside `span`, then counts, logs and answers
/// its outcome. `route` is the `route` label of the metrics; a refusal is also counted against
/// `sender`.
pub async fn respond<A, R>(
    route: &'static str,
    span: Span,
    sender: &Sender,
    accept: impl Future<Output = Result<A, R>>,
) -> Response
where
    A: Answer,
    R: Answer + Display,
{
    let started = Instant::now();
    let _in_flight = InFlight::start();
    let result = accept.instrument(span.clone()).await;
    let code = match &result {
        Ok(accepted) => accepted.code(),
        Err(refusal) => refusal.code(),
    };
    debug_assert!(
        A::CODES.contains(&code) || R::CODES.contains(&code),
        "code {code} of route {route} not listed in its answers' CODES"
    );
    metrics::record_request(route, code, started.elapsed());
    if result.is_err() {
        metrics::record_refusal_by_sender(route, sender.label(), code);
    }
    span.in_scope(|| match &result {
        Ok(_) => tracing::info!("accepted"),
        Err(error) if error.is_server_error() => tracing::warn!(code, %error, "not accepted"),
        Err(error) => tracing::info!(code, %error, "rejected"),
    });
    match result {
        Ok(accepted) => accepted.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}
