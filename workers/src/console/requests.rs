//! Four eyes: a release or discard an operator asks for waits, as a `console_requests` row,
//! until an approver (never the same account) confirms it; either may withdraw it. Also where
//! every release and discard of the console is carried out, through the admin commands.

use axum::Form;
use axum::extract::{Path, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::admin;
use crate::config::ConsoleRole;
use crate::console::ConsoleState;
use crate::console::audit::{self, Entry};
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::session::SignedIn;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Release,
    Discard,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Discard => "discard",
        }
    }

    /// The `?done=` of the message's page after it.
    pub fn done(self) -> &'static str {
        match self {
            Self::Release => "released",
            Self::Discard => "discarded",
        }
    }

    fn parse(action: &str) -> Option<Self> {
        [Self::Release, Self::Discard]
            .into_iter()
            .find(|a| a.as_str() == action)
    }
}

#[derive(Debug, sqlx::FromRow)]
pub struct Request {
    id: i64,
    action: String,
    message_id: Uuid,
    requested_by: String,
    requested_at: OffsetDateTime,
    comment: String,
    state: String,
    decided_by: Option<String>,
    decision_comment: Option<String>,
}

const COLUMNS: &str = "id, action, message_id, requested_by, requested_at, comment, state, decided_by, decision_comment";

pub async fn pending_for(pool: &PgPool, message_id: Uuid) -> anyhow::Result<Option<Request>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM console_requests WHERE message_id = $1 AND state = 'pending'"
    ))
    .bind(message_id)
    .fetch_optional(pool)
    .await?)
}

/// An open request, with the confirm and withdraw forms the account may use.
pub fn pending_box(who: &SignedIn, request: &Request) -> Markup {
    let can_confirm = who.role >= ConsoleRole::Approver && who.account != request.requested_by;
    let can_withdraw = who.role >= ConsoleRole::Approver || who.account == request.requested_by;
    html! {
        div.flash.ok id="pending" {
            strong { (request.action) } " requested by " strong { (request.requested_by) }
            " " (page::age(request.requested_at)) " ago: " em { (request.comment) }
            @if who.account == request.requested_by && who.role >= ConsoleRole::Approver {
                br; span.muted { "Another approver must confirm your own request." }
            }
        }
        @if can_confirm {
            form.act method="post" action={ "/requests/" (request.id) "/confirm" } id="confirm-form" {
                (page::csrf_field(who))
                label { "Comment (optional)" textarea name="comment" {} }
                button type="submit" id="confirm" { "Confirm " (request.action) }
            }
        }
        @if can_withdraw {
            form.act method="post" action={ "/requests/" (request.id) "/withdraw" } id="withdraw-form" {
                (page::csrf_field(who))
                button type="submit" id="withdraw" { "Withdraw the request" }
            }
        }
    }
}

/// Records `action` on `message_id` as waiting for an approver.
pub async fn open(
    state: &ConsoleState,
    who: &SignedIn,
    action: Action,
    message_id: Uuid,
    comment: &str,
) -> Result<(), ConsoleError> {
    let target = message_id.to_string();
    let opened: Result<i64, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO console_requests (action, message_id, requested_by, comment)
         SELECT $1, $2, $3, $4 FROM quarantined_messages WHERE message_id = $2 AND state = 'held'
         RETURNING id",
    )
    .bind(action.as_str())
    .bind(message_id)
    .bind(&who.account)
    .bind(comment)
    .fetch_one(&state.pool)
    .await;
    let (outcome, result) = match opened {
        Ok(id) => (format!("pending as request {id}"), Ok(())),
        Err(sqlx::Error::RowNotFound) => {
            let refusal = format!("refused: {message_id} is not held");
            (refusal.clone(), Err(ConsoleError::ActionFailed(refusal)))
        }
        Err(sqlx::Error::Database(error)) if error.is_unique_violation() => {
            let refusal = format!("refused: a request for {message_id} is already pending");
            (refusal.clone(), Err(ConsoleError::ActionFailed(refusal)))
        }
        Err(error) => return Err(error.into()),
    };
    audit::record(
        &state.pool,
        Entry::by(
            who,
            &format!("request-{}", action.as_str()),
            Some(&target),
            Some(comment),
            &outcome,
        ),
    )
    .await?;
    result
}

/// Releases or discards the message through the admin commands, and audits the outcome.
/// `confirmed_by` is the approver of a four-eyes request, who is then the account acting.
pub async fn carry_out(
    state: &ConsoleState,
    who: &SignedIn,
    action: Action,
    message_id: Uuid,
    comment: &str,
    requested_by: Option<&str>,
) -> Result<(), ConsoleError> {
    let note = match requested_by {
        Some(requester) => format!(
            "{comment} (console: requested by {requester}, confirmed by {})",
            who.account
        ),
        None => format!("{comment} (console: {})", who.account),
    };
    let done = match action {
        Action::Release => release(state, message_id, &note).await,
        Action::Discard => admin::quarantine_discard(&state.pool, message_id, &note).await,
    };
    let outcome = match &done {
        Ok(report) => format!("ok: {}", report.trim()),
        Err(error) => format!("failed: {error:#}"),
    };
    audit::record(
        &state.pool,
        Entry::by(
            who,
            action.as_str(),
            Some(&message_id.to_string()),
            Some(&note),
            &outcome,
        ),
    )
    .await?;
    done.map(drop)
        .map_err(|error| ConsoleError::ActionFailed(format!("{error:#}")))
}

async fn release(state: &ConsoleState, message_id: Uuid, note: &str) -> anyhow::Result<String> {
    let (connection, channel) = admin::confirm_channel(&state.broker_url).await?;
    let released = admin::quarantine_release(
        &state.pool,
        &channel,
        &state.topology,
        &state.seal,
        message_id,
        note,
    )
    .await;
    let _ = connection.close(200, "released".into()).await;
    released
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

/// An approver confirms another account's request: it is marked confirmed first (so a second
/// confirmation finds nothing), then carried out; a failure marks it failed, with the reason.
pub async fn confirm(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Result<Redirect, ConsoleError> {
    who.check_csrf(&form.csrf)?;
    let comment = form.comment.trim();
    let request: Option<Request> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM console_requests WHERE id = $1 AND state = 'pending'"
    ))
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let request =
        request.ok_or_else(|| ConsoleError::NotFound(format!("no pending request {id}")))?;
    let refusal = match who.require(ConsoleRole::Approver, "confirming a request") {
        Err(refusal) => Some(refusal),
        Ok(()) if request.requested_by == who.account => Some(ConsoleError::Forbidden(
            "refused: four eyes: another approver must confirm your own request".into(),
        )),
        Ok(()) => None,
    };
    let target = request.message_id.to_string();
    if let Some(refusal) = refusal {
        audit::record(
            &state.pool,
            Entry::by(
                &who,
                &format!("confirm-{}", request.action),
                Some(&target),
                Some(comment),
                &format!("refused: {refusal}"),
            ),
        )
        .await?;
        return Err(refusal);
    }
    let claimed = sqlx::query(
        "UPDATE console_requests SET state = 'confirmed', decided_by = $2, decided_at = now(),
                decision_comment = NULLIF($3, '')
         WHERE id = $1 AND state = 'pending'",
    )
    .bind(id)
    .bind(&who.account)
    .bind(comment)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if claimed == 0 {
        return Err(ConsoleError::ActionFailed(format!(
            "request {id} was decided meanwhile"
        )));
    }
    let action = Action::parse(&request.action)
        .ok_or_else(|| anyhow::anyhow!("request {id} has an unknown action"))?;
    let carried = carry_out(
        &state,
        &who,
        action,
        request.message_id,
        &request.comment,
        Some(&request.requested_by),
    )
    .await;
    if let Err(error) = &carried {
        sqlx::query(
            "UPDATE console_requests SET state = 'failed', decision_comment = $2 WHERE id = $1",
        )
        .bind(id)
        .bind(error.to_string())
        .execute(&state.pool)
        .await?;
    }
    carried?;
    Ok(Redirect::to(&format!(
        "/quarantine/{}?done=confirmed",
        request.message_id
    )))
}

pub async fn withdraw(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Result<Redirect, ConsoleError> {
    who.check_csrf(&form.csrf)?;
    let message_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE console_requests SET state = 'withdrawn', decided_by = $2, decided_at = now()
         WHERE id = $1 AND state = 'pending' AND (requested_by = $2 OR $3)
         RETURNING message_id",
    )
    .bind(id)
    .bind(&who.account)
    .bind(who.role >= ConsoleRole::Approver)
    .fetch_optional(&state.pool)
    .await?;
    let message_id = message_id.ok_or_else(|| {
        ConsoleError::Forbidden(format!(
            "refused: request {id} is not pending, or neither yours nor an approver's to withdraw"
        ))
    })?;
    audit::record(
        &state.pool,
        Entry::by(
            &who,
            "withdraw",
            Some(&message_id.to_string()),
            None,
            &format!("request {id} withdrawn"),
        ),
    )
    .await?;
    Ok(Redirect::to(&format!(
        "/quarantine/{message_id}?done=withdrawn"
    )))
}

/// Open requests first, then the latest decided ones.
pub async fn list(
    State(state): State<ConsoleState>,
    who: SignedIn,
) -> Result<Markup, ConsoleError> {
    let rows: Vec<Request> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM console_requests
         ORDER BY state = 'pending' DESC, id DESC LIMIT 200"
    ))
    .fetch_all(&state.pool)
    .await?;
    let body = html! {
        p.muted {
            @if state.settings.four_eyes { "Four eyes: an operator's release or discard waits here for an approver (another account)." }
            @else { "Four eyes is off (console.four_eyes): operators act directly." }
        }
        table id="requests" {
            tr { th { "#" } th { "Action" } th { "Message" } th { "Requested by" } th { "Age" } th { "Comment" } th { "State" } th { "Decided by" } }
            @for r in &rows {
                tr {
                    td { (r.id) } td { (r.action) }
                    td { a href={ "/quarantine/" (r.message_id) } { (r.message_id) } }
                    td { (r.requested_by) } td { (page::age(r.requested_at)) } td { (r.comment) }
                    td { (r.state) }
                    td { (r.decided_by.as_deref().unwrap_or("")) " " span.muted { (r.decision_comment.as_deref().unwrap_or("")) } }
                }
            }
        }
    };
    Ok(page::layout("Requests", &who, body))
}
