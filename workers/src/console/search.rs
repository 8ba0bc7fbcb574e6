//! Search: "what happened to X", for an order reference, a Paysafe id or merchant reference,
//! a BNC partner reference or a message id. Each match shows the timeline the admin commands
//! print (every notification, state change, event and its publish state).

use axum::extract::{Query, State};
use maud::{Markup, html};
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;

use crate::admin;
use crate::console::ConsoleState;
use crate::console::error::ConsoleError;
use crate::console::page;
use crate::console::session::SignedIn;

#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// One thing found: what it is, and its timeline as text.
struct Found {
    title: String,
    timeline: String,
}

pub async fn search(
    State(state): State<ConsoleState>,
    who: SignedIn,
    Query(query): Query<SearchQuery>,
) -> Result<Markup, ConsoleError> {
    let q = query.q.trim();
    let found = if q.is_empty() {
        Vec::new()
    } else {
        find(&state, q).await?
    };
    let body = html! {
        form method="get" action="/search" id="search" {
            input type="search" name="q" value=(q) size="48" autofocus
                placeholder="order reference, Paysafe id, BNC partner reference or message id";
            " " button type="submit" { "Search" }
        }
        @if !q.is_empty() && found.is_empty() {
            p id="nothing" { "Nothing found for " code { (q) } "." }
        }
        @for item in &found {
            h2 { (item.title) }
            pre.timeline { (item.timeline) }
        }
    };
    Ok(page::layout("Search", &who, body))
}

async fn find(state: &ConsoleState, q: &str) -> anyhow::Result<Vec<Found>> {
    let pool = &state.pool;
    let mut found = Vec::new();
    let order: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE reference = $1)")
            .bind(q)
            .fetch_one(pool)
            .await?;
    if order {
        found.push(Found {
            title: format!("Order {q}"),
            timeline: admin::order_timeline(pool, q).await?,
        });
    }
    let paysafe: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM paysafe_items WHERE id = $1 OR merchant_ref_num = $1 ORDER BY id LIMIT 20",
    )
    .bind(q)
    .fetch_all(pool)
    .await?;
    for id in paysafe {
        found.push(Found {
            title: format!("Paysafe item {id}"),
            timeline: admin::paysafe_show(pool, &id).await?,
        });
    }
    if let Some(binding) = bnc_binding(state, q).await? {
        found.push(binding);
    }
    if let Ok(message_id) = q.parse::<Uuid>() {
        found.extend(message(state, message_id).await?);
    }
    Ok(found)
}

type BindingRow = (
    String,
    String,
    String,
    String,
    Uuid,
    OffsetDateTime,
    OffsetDateTime,
);

/// A BNC binding's public facts (never its token; the account number as masked).
async fn bnc_binding(state: &ConsoleState, q: &str) -> anyhow::Result<Option<Found>> {
    let row: Option<BindingRow> = sqlx::query_as(
        "SELECT client_key, external_id, account_no_masked, bind_status, message_id, received_at, created_at
         FROM bnc_account_bindings WHERE partner_reference_no = $1",
    )
    .bind(q)
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|(client, external, account, status, message, received, created)| Found {
        title: format!("BNC binding {q}"),
        timeline: format!(
            "partner {client}, external id {external}, account {account}, bind status {status}\n  received {}, applied {} (message {message})\n",
            rfc3339(received),
            rfc3339(created)
        ),
    }))
}

type ReceivedRow = (
    String,
    Option<String>,
    String,
    OffsetDateTime,
    OffsetDateTime,
    Option<String>,
);

/// What became of one intake message: received (and with which outcome), quarantined.
async fn message(state: &ConsoleState, message_id: Uuid) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    let received: Vec<ReceivedRow> = sqlx::query_as(
        "SELECT kind, client_id, outcome, received_at, processed_at, request_path
         FROM received_messages WHERE message_id = $1 ORDER BY processed_at",
    )
    .bind(message_id)
    .fetch_all(&state.pool)
    .await?;
    for (kind, client, outcome, received_at, processed_at, path) in received {
        found.push(Found {
            title: format!("Message {message_id}"),
            timeline: format!(
                "{kind} from {} on {}: {outcome}\n  received {}, processed {}\n",
                client.unwrap_or_else(|| "-".into()),
                path.unwrap_or_else(|| "-".into()),
                rfc3339(received_at),
                rfc3339(processed_at)
            ),
        });
    }
    let held: Option<String> =
        sqlx::query_scalar("SELECT state FROM quarantined_messages WHERE message_id = $1")
            .bind(message_id)
            .fetch_optional(&state.pool)
            .await?;
    if held.is_some() {
        found.push(Found {
            title: format!("Quarantined message {message_id}"),
            timeline: admin::quarantine_show(&state.pool, message_id).await?,
        });
    }
    Ok(found)
}
