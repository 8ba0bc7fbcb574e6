//! The operator console: a small server-rendered web application for the daily work of ops
//! (README "Operator console"). Served by a workers process on its own listener
//! (`console.listen`, off by default), to signed-in accounts of the configuration:
//!
//! - quarantine: list, open, release or discard with a comment (with `four_eyes`, an operator
//!   asks and an approver confirms: `requests`);
//! - dead letters: list, inspect, replay one or all matching a filter;
//! - search: an order's, a Paysafe item's or a message's timeline;
//! - banks: each bank's traffic, quarantine and open orders;
//! - audit: every sign-in and action, with its comment.
//!
//! Routes only read requests and render pages; what an action does is the admin commands'
//! (`crate::admin`), so the console and the command line release, discard and replay alike.

mod audit;
mod banks;
mod dead_letters;
mod error;
mod page;
mod quarantine;
mod requests;
mod search;
mod session;
mod sign_in;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::response::Redirect;
use axum::routing::{get, post};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use connector_schema::Topology;
use connector_schema::seal::SealKeys;

pub use crate::config::{ConsoleAccount, ConsoleRole, ConsoleSettings};
pub use session::hash_password;

/// What every console request may use.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    pool: PgPool,
    settings: Arc<ConsoleSettings>,
    broker_url: Arc<str>,
    topology: Arc<Topology>,
    /// A release re-checks the ingress's seal, as `quarantine release` does.
    seal: Arc<SealKeys>,
    sign_in_limiter: Arc<session::SignInLimiter>,
    /// Verified against when the account name is unknown, so that timing does not tell.
    decoy_hash: String,
}

impl ConsoleState {
    pub fn new(
        pool: PgPool,
        settings: ConsoleSettings,
        broker_url: &str,
        topology: Topology,
        seal: SealKeys,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            settings: Arc::new(settings),
            broker_url: broker_url.into(),
            topology: Arc::new(topology),
            seal: Arc::new(seal),
            sign_in_limiter: Arc::default(),
            decoy_hash: hash_password(&session::random_token())?,
        })
    }

    fn account(&self, name: &str) -> Option<&ConsoleAccount> {
        self.settings.accounts.iter().find(|a| a.name == name)
    }
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/quarantine") }))
        .route("/login", get(sign_in::form).post(sign_in::submit))
        .route("/logout", post(sign_in::sign_out))
        .route("/quarantine", get(quarantine::list))
        .route("/quarantine/{message_id}", get(quarantine::show))
        .route(
            "/quarantine/{message_id}/release",
            post(quarantine::release),
        )
        .route(
            "/quarantine/{message_id}/discard",
            post(quarantine::discard),
        )
        .route("/requests", get(requests::list))
        .route("/requests/{id}/confirm", post(requests::confirm))
        .route("/requests/{id}/withdraw", post(requests::withdraw))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/search", get(search::search))
        .route("/banks", get(banks::overview))
        .route("/audit", get(audit_page))
        .layer(axum::middleware::from_fn(session::same_origin_posts))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Pages that load nothing from elsewhere, run no script, post only to the console, are never
/// framed (clickjacking) and never cached (they show payment data).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; connect-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::HeaderValue;
    use axum::http::header;
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The console's listener, bound at build time so a taken port fails the start.
#[derive(Debug)]
pub struct Console {
    listener: TcpListener,
    state: ConsoleState,
}

impl Console {
    pub async fn bind(addr: SocketAddr, state: ConsoleState) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding console.listen {addr}"))?;
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    pub async fn run_until_stopped(self, stop: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(listen = %self.local_addr()?, "operator console listening");
        axum::serve(self.listener, router(self.state))
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .context("serving the operator console")
    }
}

async fn audit_page(
    axum::extract::State(state): axum::extract::State<ConsoleState>,
    who: session::SignedIn,
) -> Result<maud::Markup, error::ConsoleError> {
    let rows = audit::recent(&state.pool, None, 500).await?;
    Ok(page::layout(
        "Audit",
        &who,
        maud::html! {
            p.muted { "Every sign-in and action through the console, newest first (latest 500)." }
            table id="audit" {
                tr { th { "When" } th { "Account" } th { "Role" } th { "Action" } th { "Target" } th { "Comment" } th { "Outcome" } }
                @for row in &rows {
                    tr {
                        td { (page::at(row.at)) }
                        td { (row.account) }
                        td { (row.role.as_deref().unwrap_or("-")) }
                        td { (row.action) }
                        td { (row.target.as_deref().unwrap_or("")) }
                        td { (row.comment.as_deref().unwrap_or("")) }
                        td { (row.outcome) }
                    }
                }
            }
        },
    ))
}
