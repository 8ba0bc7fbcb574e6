//! Dead-letter pages: each queue's messages (read and returned, never removed by looking),
//! one message's body (BNC secrets redacted), and replay of one message or of all those a
//! filter matches (routing key, time window), through the admin command's checks (a forged
//! intake message is never replayed).

use axum::Form;
use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::admin::{self, DeadLetterQueue, ReplayFilter};
use crate::config::ConsoleRole;
use crate::console::ConsoleState;
use crate::console::audit::{self, Entry};
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::session::SignedIn;

/// Shown per page; a queue holding more says so.
const SHOWN: usize = 100;
/// A replay of "all matching" moves at most this many at once.
const REPLAY_AT_MOST: usize = 10_000;

#[derive(Debug, Default, Deserialize)]
pub struct Which {
    #[serde(default)]
    queue: String,
}

fn queue(name: &str) -> Result<DeadLetterQueue, ConsoleError> {
    match name {
        "" | "intake" => Ok(DeadLetterQueue::Intake),
        "ledger" => Ok(DeadLetterQueue::Ledger),
        other => Err(ConsoleError::BadRequest(format!(
            "unknown dead-letter queue {other}: intake or ledger"
        ))),
    }
}

fn queue_name(which: DeadLetterQueue) -> &'static str {
    match which {
        DeadLetterQueue::Intake => "intake",
        DeadLetterQueue::Ledger => "ledger",
    }
}

pub async fn list(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Query(which): Query<Which>,
) -> Result<Markup, ConsoleError> {
    let which = queue(&which.queue)?;
    let connection = crate::broker::connect(&state.broker_url, "console")
        .await
        .map_err(|error| ConsoleError::ActionFailed(format!("the broker: {error:#}")))?;
    let letters = admin::dead_letters_peek(&connection, &state.topology, which, SHOWN).await;
    let _ = connection.close(200, "listed".into()).await;
    let letters = letters?;
    let name = queue_name(which);
    let can_act = who.role >= ConsoleRole::Operator;
    let body = html! {
        p {
            a href="/dead-letters?queue=intake" { "intake" } " · " a href="/dead-letters?queue=ledger" { "ledger" }
        }
        p.muted { (letters.len()) " message(s) shown" @if letters.len() == SHOWN { " (the first " (SHOWN) "; there may be more)" } }
        table id="dead-letters" {
            tr { th { "Message" } th { "Routing key" } th { "Reason" } th { "Dead-lettered" } th { "Bytes" } th { "Body" } @if can_act { th {} } }
            @for letter in &letters {
                tr {
                    td { (letter.message_id) } td { (letter.routing_key) } td { (letter.reason) }
                    td { (letter.dead_lettered_at.map(page::at).unwrap_or_default()) } td { (letter.bytes) }
                    td { details { summary { "inspect" } pre { (letter.readable_body) } } }
                    @if can_act {
                        td {
                            form method="post" action="/dead-letters/replay" {
                                (page::csrf_field(&who))
                                input type="hidden" name="queue" value=(name);
                                input type="hidden" name="message_id" value=(letter.message_id);
                                input type="text" name="comment" placeholder="comment (required)" required;
                                button type="submit" class="replay-one" { "Replay" }
                            }
                        }
                    }
                }
            }
        }
        @if can_act {
            h2 { "Replay all matching" }
            form.act method="post" action="/dead-letters/replay" id="replay-matching" {
                (page::csrf_field(&who))
                input type="hidden" name="queue" value=(name);
                p { label { "Routing key " input type="text" name="routing_key" placeholder="any"; } }
                p { label { "Dead-lettered from (UTC) " input type="datetime-local" name="since"; } " "
                    label { "until " input type="datetime-local" name="until"; } }
                p { label { "Comment (required, audited)" textarea name="comment" required {} } }
                button type="submit" id="replay-all" { "Replay all matching" }
            }
        }
    };
    Ok(page::layout(&format!("Dead letters: {name}"), &who, body))
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    #[serde(default)]
    csrf: String,
    queue: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    comment: String,
}

pub async fn replay(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Form(form): Form<ReplayForm>,
) -> Result<Markup, ConsoleError> {
    who.check_csrf(&form.csrf)?;
    let which = queue(&form.queue)?;
    let target = format!("dead letters {}: {}", queue_name(which), describe(&form));
    let comment = form.comment.trim();
    let text = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let time = |s: &str| text(s).map(|t| utc_time(&t)).transpose();
    let checked = who
        .require(ConsoleRole::Operator, "replay")
        .and_then(|()| {
            if comment.is_empty() {
                Err(ConsoleError::BadRequest(
                    "say why: a replay needs a comment (it is audited)".into(),
                ))
            } else {
                Ok(())
            }
        })
        .and_then(|()| {
            Ok(ReplayFilter {
                message_id: text(&form.message_id),
                routing_key: text(&form.routing_key),
                since: time(&form.since)?,
                until: time(&form.until)?,
            })
        });
    let replayed = match checked {
        Err(refusal) => Err(refusal),
        Ok(filter) => {
            let limit = if filter.message_id.is_some() {
                1
            } else {
                REPLAY_AT_MOST
            };
            match crate::broker::connect(&state.broker_url, "console").await {
                Err(error) => Err(error),
                Ok(connection) => {
                    let done = admin::dead_letters_replay_matching(
                        &connection,
                        &state.topology,
                        &state.seal,
                        which,
                        &filter,
                        limit,
                    )
                    .await;
                    let _ = connection.close(200, "replayed".into()).await;
                    done
                }
            }
            .map_err(|error| ConsoleError::ActionFailed(format!("{error:#}")))
        }
    };
    let outcome = match &replayed {
        Ok(report) => format!("ok: {}", report.trim()),
        Err(error) => format!("refused: {error}"),
    };
    audit::record(
        &state.pool,
        Entry::by(&who, "replay", Some(&target), Some(comment), &outcome),
    )
    .await?;
    let report = replayed?;
    Ok(page::layout(
        "Dead letters replayed",
        &who,
        html! {
            div.flash.ok id="flash" { pre { (report) } }
            p { a href={ "/dead-letters?queue=" (queue_name(which)) } { "Back to the queue" } }
        },
    ))
}

/// The filter as the operator gave it, for the audit trail.
fn describe(form: &ReplayForm) -> String {
    let parts: Vec<String> = [
        ("message", &form.message_id),
        ("routing key", &form.routing_key),
        ("from", &form.since),
        ("until", &form.until),
    ]
    .into_iter()
    .filter(|(_, value)| !value.trim().is_empty())
    .map(|(name, value)| format!("{name} {}", value.trim()))
    .collect();
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

/// A browser's `datetime-local` value (taken as UTC) or an RFC 3339 time.
fn utc_time(value: &str) -> Result<OffsetDateTime, ConsoleError> {
    let local = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let local_secs = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(value, &local)
        .or_else(|_| PrimitiveDateTime::parse(value, &local_secs))
        .map(PrimitiveDateTime::assume_utc)
        .or_else(|_| OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339))
        .map_err(|_| ConsoleError::BadRequest(format!("not a time: {value}")))
}
