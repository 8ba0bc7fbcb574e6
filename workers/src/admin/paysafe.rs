//! The Paysafe commands: track (publish the `paysafe.track` command by hand, as the merchant's
//! payment service does) and show (an item's state, every fact received and its ledger events),
//! to start following a payment and to see where it stands (§5).

use std::fmt::Write as _;

use anyhow::bail;
use lapin::{BasicProperties, Channel};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;
use connector_schema::{IntakeKind, Topology};

use crate::admin::publish::publish_confirmed;
use crate::outbox;

/// Publishes a `paysafe.track` command exactly as the merchant's payment service does after
/// `POST /payments` or `/standalonecredits` answered PROCESSING: the JSON body alone,
/// persistent, mandatory, confirmed. Validated first, so a typo is refused here.
pub async fn paysafe_track(
    channel: &Channel,
    topology: &Topology,
    command: &connector_schema::paysafe::TrackCommand,
) -> anyhow::Result<String> {
    let body = serde_json::to_vec(command)?;
    connector_schema::paysafe::parse_track_command(&body)
        .map_err(|e| anyhow::anyhow!("not a valid track command: {e:?}"))?;
    let message_id = Uuid::now_v7();
    let properties = BasicProperties::default()
        .with_delivery_mode(connector_schema::envelope::PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(message_id.to_string().into())
        .with_app_id("connector-workers-cli".into())
        .with_timestamp(OffsetDateTime::now_utc().unix_timestamp().max(0) as u64);
    publish_confirmed(
        channel,
        &topology.intake_exchange,
        IntakeKind::PaysafeTrack.routing_key(),
        &body,
        properties,
    )
    .await?;
    Ok(format!(
        "tracking {} {} (message {message_id})\n",
        command.kind.as_str(),
        command.id
    ))
}

type PaysafeItemRow = (
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    i32,
    Option<OffsetDateTime>,
    OffsetDateTime,
    OffsetDateTime,
);
type PaysafeHistoryRow = (
    OffsetDateTime,
    String,
    Option<String>,
    String,
    Option<String>,
    String,
    Option<String>,
);

/// A tracked Paysafe item: its state and every fact received about it.
pub async fn paysafe_show(pool: &PgPool, id: &str) -> anyhow::Result<String> {
    let item: Option<PaysafeItemRow> = sqlx::query_as(
        "SELECT kind, status, tracking, merchant_ref_num, amount, currency_code,
                    merchant_amount, merchant_currency_code, poll_attempts,
                    next_poll_at, deadline_at, created_at
             FROM paysafe_items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some((
        kind,
        status,
        tracking,
        merchant_ref,
        amount,
        currency,
        claimed_amount,
        claimed_currency,
        attempts,
        next_poll,
        deadline,
        created,
    )) = item
    else {
        bail!("no Paysafe item {id}");
    };
    let mut out = format!(
        "{kind} {id}: {status} ({tracking}), merchantRefNum {}, amount {} {} (Paysafe's), {} {} (track command)\n  tracked since {}, deadline {}, {attempts} poll(s){}\n\nhistory:\n",
        merchant_ref.unwrap_or_default(),
        amount.map_or("unknown".into(), |a| a.to_string()),
        currency.unwrap_or_default(),
        claimed_amount.map_or("none".into(), |a| a.to_string()),
        claimed_currency.unwrap_or_default(),
        rfc3339(created),
        rfc3339(deadline),
        next_poll
            .map(|t| format!(", next poll {}", rfc3339(t)))
            .unwrap_or_default(),
    );
    let history: Vec<PaysafeHistoryRow> = sqlx::query_as(
        "SELECT recorded_at, source, event_name, status, previous_status, effect, detail
         FROM paysafe_item_history WHERE item_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for (at, source, event, status, previous, effect, detail) in history {
        let _ = writeln!(
            out,
            "  {}  {source:<8} {:<22} {} -> {status} {effect}{}",
            rfc3339(at),
            event.unwrap_or_default(),
            previous.unwrap_or_else(|| "(new)".into()),
            detail.map(|d| format!("  {d}")).unwrap_or_default(),
        );
    }
    let events = outbox::events_of(pool, id).await?;
    out.push_str("\nledger events:\n");
    for event in events {
        let outbox::RecordedEvent {
            event_type,
            event_id,
            published_at: published,
            ..
        } = event;
        let _ = writeln!(
            out,
            "  {event_type} {event_id} {}",
            published.map_or("not yet published".into(), |t| format!(
                "published {}",
                rfc3339(t)
            ))
        );
    }
    Ok(out)
}
