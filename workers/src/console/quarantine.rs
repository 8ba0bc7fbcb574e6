//! Quarantine pages: the list (by reason, source, client, state, age), one message (its body
//! and headers, BNC secrets redacted, what a release would do) and the release and discard
//! actions, each with a mandatory comment. With `four_eyes`, an operator's action becomes a
//! request another account confirms (`requests`).

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::response::Redirect;
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::IntakeKind;

use crate::admin;
use crate::config::ConsoleRole;
use crate::console::ConsoleState;
use crate::console::audit::{self, Entry};
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::requests::{self, Action};
use crate::console::session::SignedIn;
use crate::quarantine::QuarantineReason;

/// The sources an operator filters by: the first part of the intake kind.
const SOURCES: [&str; 3] = ["corelink", "bnc", "paysafe"];
const STATES: [&str; 4] = ["held", "released", "discarded", "all"];

#[derive(Debug, Default, Deserialize)]
pub struct ListFilter {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    client: String,
    #[serde(default)]
    state: String,
    /// Held at least this many minutes. A browser sends the form's empty field as
    /// `older_than_minutes=`, which means no minimum.
    #[serde(default, deserialize_with = "empty_as_none")]
    older_than_minutes: Option<u32>,
}

fn empty_as_none<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<u32>, D::Error> {
    let text = String::deserialize(field)?;
    match text.trim() {
        "" => Ok(None),
        minutes => minutes.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[derive(Debug, sqlx::FromRow)]
struct Listed {
    message_id: Uuid,
    state: String,
    reason: String,
    detail: String,
    kind: String,
    client_id: Option<String>,
    quarantined_at: OffsetDateTime,
    pending: Option<String>,
}

pub async fn list(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Query(filter): Query<ListFilter>,
) -> Result<Markup, ConsoleError> {
    let reason = (!filter.reason.is_empty()).then_some(filter.reason.as_str());
    if let Some(reason) = reason
        && !QuarantineReason::ALL.iter().any(|r| r.as_str() == reason)
    {
        return Err(ConsoleError::BadRequest(format!("unknown reason {reason}")));
    }
    let source = (!filter.source.is_empty()).then_some(filter.source.as_str());
    if source.is_some_and(|s| !SOURCES.contains(&s)) {
        return Err(ConsoleError::BadRequest("unknown source".into()));
    }
    let held_state = if filter.state.is_empty() {
        "held"
    } else {
        filter.state.as_str()
    };
    if !STATES.contains(&held_state) {
        return Err(ConsoleError::BadRequest("unknown state".into()));
    }
    let rows: Vec<Listed> = sqlx::query_as(
        "SELECT q.message_id, q.state, q.reason, q.detail, q.kind, q.client_id, q.quarantined_at,
                r.action AS pending
         FROM quarantined_messages q
         LEFT JOIN console_requests r ON r.message_id = q.message_id AND r.state = 'pending'
         WHERE ($1 = 'all' OR q.state = $1)
           AND ($2::text IS NULL OR q.reason = $2)
           AND ($3::text IS NULL OR split_part(q.kind, '.', 1) = $3)
           AND ($4 = '' OR q.client_id = $4)
           AND q.quarantined_at <= now() - make_interval(mins => $5)
         ORDER BY q.quarantined_at DESC LIMIT 500",
    )
    .bind(held_state)
    .bind(reason)
    .bind(source)
    .bind(filter.client.trim())
    .bind(filter.older_than_minutes.unwrap_or(0) as i32)
    .fetch_all(&state.pool)
    .await?;
    let body = html! {
        form method="get" action="/quarantine" id="filter" {
            label { "Reason " select name="reason" {
                option value="" { "any" }
                @for r in QuarantineReason::ALL {
                    option value=(r.as_str()) selected[reason == Some(r.as_str())] { (r.as_str()) }
                }
            } } " "
            label { "Source " select name="source" {
                option value="" { "any" }
                @for s in SOURCES { option value=(s) selected[source == Some(s)] { (s) } }
            } } " "
            label { "Client " input type="text" name="client" size="12" value=(filter.client); } " "
            label { "State " select name="state" {
                @for s in STATES { option value=(s) selected[held_state == s] { (s) } }
            } } " "
            label { "Held ≥ " input type="number" min="0" name="older_than_minutes" size="5"
                value=[filter.older_than_minutes]; " min" } " "
            button type="submit" { "Filter" }
        }
        p.muted { (rows.len()) " message(s), newest first (at most 500)" }
        table id="quarantine" {
            tr { th { "Message" } th { "State" } th { "Reason" } th { "Source" } th { "Client" } th { "Held for" } th { "Detail" } }
            @for row in &rows {
                tr {
                    td { a href={ "/quarantine/" (row.message_id) } { (row.message_id) } }
                    td { (row.state) @if let Some(action) = &row.pending { br; span.muted { (action) " requested" } } }
                    td { (row.reason) }
                    td { (row.kind) }
                    td { (row.client_id.as_deref().unwrap_or("-")) }
                    td { (page::age(row.quarantined_at)) }
                    td { (row.detail) }
                }
            }
        }
    };
    Ok(page::layout("Quarantine", &who, body))
}

#[derive(Debug, Default, Deserialize)]
pub struct Done {
    #[serde(default)]
    done: String,
}

/// The message: what `quarantine show` prints (BNC bodies redacted), what a release would do,
/// any open request, and the forms the account's role allows.
pub async fn show(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Path(message_id): Path<Uuid>,
    Query(done): Query<Done>,
) -> Result<Markup, ConsoleError> {
    let shown = admin::quarantine_show(&state.pool, message_id)
        .await
        .map_err(|error| ConsoleError::NotFound(format!("{error:#}")))?;
    let (held_state, reason, kind): (String, String, String) = sqlx::query_as(
        "SELECT state, reason, kind FROM quarantined_messages WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_one(&state.pool)
    .await?;
    let pending = requests::pending_for(&state.pool, message_id).await?;
    let history = audit::recent(&state.pool, Some(&message_id.to_string()), 50).await?;
    let flash = match done.done.as_str() {
        "released" => Some("Released: the message is back on the intake queue."),
        "discarded" => Some("Discarded: the message is closed; its row stays for audit."),
        "requested" => Some("Requested: an approver (another account) must confirm it."),
        "confirmed" => Some("Confirmed and carried out."),
        "withdrawn" => Some("The request was withdrawn."),
        _ => None,
    };
    let can_act = who.role >= ConsoleRole::Operator && held_state == "held" && pending.is_none();
    let label = |action: Action| match (state.settings.four_eyes, action) {
        (true, action) => format!("Ask to {}", action.as_str()),
        (false, Action::Release) => "Release".to_owned(),
        (false, Action::Discard) => "Discard".to_owned(),
    };
    let body = html! {
        (page::flash(flash, true))
        h2 { "What a release would do" }
        p id="on-release" { (on_release(&reason, &kind)) }
        @if let Some(request) = &pending {
            (requests::pending_box(&who, request))
        }
        @if can_act {
            div.actions { @for action in [Action::Release, Action::Discard] {
                form.act method="post" action={ "/quarantine/" (message_id) "/" (action.as_str()) } id={ (action.as_str()) "-form" } {
                    (page::csrf_field(&who))
                    label { "Comment (required, audited)" textarea name="comment" required {} }
                    button type="submit" id={ (action.as_str()) } { (label(action)) }
                }
            } }
        } @else if held_state == "held" && pending.is_none() {
            p.muted { "Your role (" (who.role.as_str()) ") can read, not act." }
        }
        h2 { "The message" }
        pre id="message" { (shown) }
        h2 { "Console actions on it" }
        table id="message-audit" {
            tr { th { "When" } th { "Account" } th { "Action" } th { "Comment" } th { "Outcome" } }
            @for row in &history {
                tr { td { (page::at(row.at)) } td { (row.account) } td { (row.action) }
                     td { (row.comment.as_deref().unwrap_or("")) } td { (row.outcome) } }
            }
        }
    };
    Ok(page::layout(
        &format!("Quarantined message {message_id}"),
        &who,
        body,
    ))
}

/// What a release does for a message held for `reason`: the operator decides knowing it.
fn on_release(reason: &str, kind: &str) -> String {
    let again = "Released, the message goes back to the intake queue as the ingress sealed it and is applied from the start;";
    let why = match reason {
        "FINAL_STATUS_CONFLICT" => {
            "if the order still has the other final status, it is quarantined again. Release it once the order was corrected with the bank; otherwise discard it."
        }
        "IDEMPOTENCY_KEY_REUSED" => {
            "while its idempotency key is still bound to the other request (until that key's retention ends), it is quarantined again."
        }
        "NONCE_REUSED" => {
            "while the nonce is still recorded for the earlier request (until the nonce retention ends), it is quarantined again."
        }
        "ORDER_OF_ANOTHER_CLIENT" => {
            "the order still belongs to the other bank, so it is quarantined again unless that was corrected."
        }
        "BINDING_CONFLICT" => {
            "while the external id or partner reference is bound to the other binding, it is quarantined again."
        }
        "PAYSAFE_STATUS_CONFLICT" => {
            "if the Paysafe item still has the contradicting final status, it is quarantined again."
        }
        _ => "if its cause is unchanged, it is quarantined again.",
    };
    let source = if kind == IntakeKind::BncAccountBinding.routing_key() {
        " (The release publishes the raw BNC body, kept apart from this redacted copy.)"
    } else {
        ""
    };
    format!(
        "{again} {why} A discard closes it without applying it; the row and the raw request stay for audit.{source}"
    )
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    comment: String,
}

pub async fn release(
    state: State<ConsoleState>,
    who: SignedIn,
    message_id: Path<Uuid>,
    form: Form<ActionForm>,
) -> Result<Redirect, ConsoleError> {
    act(state, who, message_id, form, Action::Release).await
}

pub async fn discard(
    state: State<ConsoleState>,
    who: SignedIn,
    message_id: Path<Uuid>,
    form: Form<ActionForm>,
) -> Result<Redirect, ConsoleError> {
    act(state, who, message_id, form, Action::Discard).await
}

/// Checks the token, the role and the comment (refusals are audited too), then carries the
/// action out, or records it as a request when four eyes are required.
async fn act(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Path(message_id): Path<Uuid>,
    Form(form): Form<ActionForm>,
    action: Action,
) -> Result<Redirect, ConsoleError> {
    who.check_csrf(&form.csrf)?;
    let target = message_id.to_string();
    let comment = form.comment.trim();
    let checked = who
        .require(ConsoleRole::Operator, action.as_str())
        .and_then(|()| {
            if comment.is_empty() {
                Err(ConsoleError::BadRequest(format!(
                    "say why: a {} needs a comment (it is audited)",
                    action.as_str()
                )))
            } else {
                Ok(())
            }
        });
    if let Err(refusal) = checked {
        audit::record(
            &state.pool,
            Entry::by(
                &who,
                action.as_str(),
                Some(&target),
                Some(comment),
                &format!("refused: {refusal}"),
            ),
        )
        .await?;
        return Err(refusal);
    }
    if state.settings.four_eyes {
        requests::open(&state, &who, action, message_id, comment).await?;
        return Ok(Redirect::to(&format!(
            "/quarantine/{message_id}?done=requested"
        )));
    }
    requests::carry_out(&state, &who, action, message_id, comment, None).await?;
    Ok(Redirect::to(&format!(
        "/quarantine/{message_id}?done={}",
        action.done()
    )))
}
