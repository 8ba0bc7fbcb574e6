//! Operators' commands (DESIGN.md §7): quarantined messages (list, show, release, discard),
//! dead-letter queues (list, replay) and an order's timeline. Each returns the text to print,
//! so the tests check exactly what an operator sees.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;
use connector_schema::{IntakeEnvelope, IntakeKind, Topology};

use crate::broker;

/// Which dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeadLetterQueue {
    /// Intake messages that could not be read or kept failing; replayed to the intake exchange.
    Intake,
    /// Ledger events no consumer could take; replayed to the ledger exchange.
    Ledger,
}

impl DeadLetterQueue {
    fn queue(self, topology: &Topology) -> &str {
        match self {
            Self::Intake => &topology.intake_dead_letter_queue,
            Self::Ledger => &topology.ledger_dead_letter_queue,
        }
    }

    fn exchange(self, topology: &Topology) -> &str {
        match self {
            Self::Intake => &topology.intake_exchange,
            Self::Ledger => &topology.ledger_exchange,
        }
    }
}

type QuarantineRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    OffsetDateTime,
    String,
);

/// One quarantined message with its raw request.
#[derive(Debug, sqlx::FromRow)]
struct HeldMessage {
    reason: String,
    detail: String,
    state: String,
    kind: String,
    client_id: Option<String>,
    request_path: Option<String>,
    received_at: OffsetDateTime,
    quarantined_at: OffsetDateTime,
    resolution_note: Option<String>,
    headers: serde_json::Value,
    body: Vec<u8>,
}

async fn held_message(pool: &PgPool, message_id: Uuid) -> anyhow::Result<HeldMessage> {
    sqlx::query_as(
        "SELECT reason, detail, state, kind, client_id, request_path, received_at, quarantined_at,
                resolution_note, headers, body
         FROM quarantined_messages WHERE message_id = $1",
    )
    .bind(message_id)
    .fetch_optional(pool)
    .await?
    .with_context(|| format!("no quarantined message {message_id}"))
}

pub async fn quarantine_list(pool: &PgPool, all: bool) -> anyhow::Result<String> {
    let rows: Vec<QuarantineRow> = sqlx::query_as(
        "SELECT message_id, reason, detail, kind, client_id, idempotency_key, quarantined_at, state
         FROM quarantined_messages WHERE $1 OR state = 'held' ORDER BY quarantined_at",
    )
    .bind(all)
    .fetch_all(pool)
    .await?;
    let mut out = format!(
        "{} quarantined message(s){}\n",
        rows.len(),
        if all { "" } else { " held" }
    );
    for (id, reason, detail, kind, client, key, at, state) in rows {
        let _ = writeln!(
            out,
            "{id}  {state:<9} {reason:<24} {kind:<22} client={} key={} at={}\n    {detail}",
            client.unwrap_or_default(),
            key.unwrap_or_default(),
            rfc3339(at),
        );
    }
    Ok(out)
}

pub async fn quarantine_show(pool: &PgPool, message_id: Uuid) -> anyhow::Result<String> {
    let m = held_message(pool, message_id).await?;
    let mut out = format!(
        "message   {message_id}\nstate     {}\nreason    {}\ndetail    {}\nkind      {}\npath      {}\nreceived  {}\nheld at   {}\n",
        m.state,
        m.reason,
        m.detail,
        m.kind,
        m.request_path.unwrap_or_default(),
        rfc3339(m.received_at),
        rfc3339(m.quarantined_at)
    );
    if let Some(note) = m.resolution_note {
        let _ = writeln!(out, "note      {note}");
    }
    // A BNC body holds a card token and an account number: operators see a redacted copy.
    let body = if m.kind == IntakeKind::BncAccountBinding.routing_key() {
        connector_schema::bnc::redact_body(&m.body)
    } else {
        m.body
    };
    let _ = writeln!(
        out,
        "headers   {}\nbody\n{}",
        m.headers,
        String::from_utf8_lossy(&body)
    );
    Ok(out)
}

/// Sends a held message back to the intake exchange, for another try once its cause is
/// fixed. It is marked released only after the broker confirmed it.
pub async fn quarantine_release(
    pool: &PgPool,
    channel: &Channel,
    topology: &Topology,
    message_id: Uuid,
    note: &str,
) -> anyhow::Result<String> {
    let m = held_message(pool, message_id).await?;
    if m.state != "held" {
        bail!("message {message_id} is {}, not held", m.state);
    }
    let kind = IntakeKind::from_routing_key(&m.kind)
        .with_context(|| format!("unknown kind {}", m.kind))?;
    let headers = m
        .headers
        .as_object()
        .map(|h| {
            h.iter()
                .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    let envelope = IntakeEnvelope {
        message_id,
        kind,
        received_at: m.received_at,
        client_id: m.client_id,
        request_path: m.request_path,
        headers,
        body: m.body.into(),
    };
    publish_confirmed(
        channel,
        &topology.intake_exchange,
        kind.routing_key(),
        &envelope.body,
        envelope.amqp_properties(),
    )
    .await?;
    sqlx::query(
        "UPDATE quarantined_messages SET state = 'released', resolved_at = now(), resolution_note = $2
         WHERE message_id = $1 AND state = 'held'",
    )
    .bind(message_id)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(format!(
        "released {message_id} to {}\n",
        topology.intake_exchange
    ))
}

/// Closes a held message without applying it; the row (and raw request) stays for audit.
pub async fn quarantine_discard(
    pool: &PgPool,
    message_id: Uuid,
    note: &str,
) -> anyhow::Result<String> {
    if note.trim().is_empty() {
        bail!("say why with --note: the discard is audited");
    }
    let updated = sqlx::query(
        "UPDATE quarantined_messages SET state = 'discarded', resolved_at = now(), resolution_note = $2
         WHERE message_id = $1 AND state = 'held'",
    )
    .bind(message_id)
    .bind(note)
    .execute(pool)
    .await?
    .rows_affected();
    if updated == 0 {
        bail!("no held quarantined message {message_id}");
    }
    Ok(format!("discarded {message_id}\n"))
}

/// Lists up to `limit` messages of a dead-letter queue without removing them (they are read
/// unacknowledged, then returned to the queue when the channel closes).
pub async fn dead_letters_list(
    connection: &Connection,
    topology: &Topology,
    which: DeadLetterQueue,
    limit: usize,
) -> anyhow::Result<String> {
    let channel = connection.create_channel().await?;
    let queue = which.queue(topology);
    let mut lines = Vec::new();
    while lines.len() < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let properties = &message.delivery.properties;
        let text = |v: &Option<lapin::types::ShortString>| {
            v.as_ref().map(ToString::to_string).unwrap_or_default()
        };
        lines.push(format!(
            "{}  type={} reason={} bytes={}",
            text(properties.message_id()),
            text(properties.kind()),
            death_reason(properties),
            message.delivery.data.len()
        ));
    }
    channel.close(200, "listed".into()).await?;
    Ok(format!(
        "{}: {} message(s) shown\n{}",
        queue,
        lines.len(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>()
    ))
}

/// Moves up to `limit` messages from a dead-letter queue back to their exchange (each acked
/// on the dead-letter queue only after the republish is confirmed).
pub async fn dead_letters_replay(
    connection: &Connection,
    topology: &Topology,
    which: DeadLetterQueue,
    limit: usize,
) -> anyhow::Result<String> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = which.queue(topology);
    let mut replayed = 0;
    while replayed < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let routing_key = original_routing_key(&delivery.properties)
            .unwrap_or_else(|| delivery.routing_key.to_string());
        let published = publish_confirmed(
            &channel,
            which.exchange(topology),
            &routing_key,
            &delivery.data,
            delivery.properties.clone(),
        )
        .await;
        if let Err(error) = published {
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?;
            return Err(error.context(format!("replayed {replayed} before failing")));
        }
        delivery.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    channel.close(200, "replayed".into()).await?;
    Ok(format!(
        "replayed {replayed} message(s) from {queue} to {}\n",
        which.exchange(topology)
    ))
}

/// The most recent `x-death` record RabbitMQ added when it dead-lettered the message.
fn last_death(properties: &BasicProperties) -> Option<&lapin::types::FieldTable> {
    match properties.headers().as_ref()?.inner().get("x-death")? {
        AMQPValue::FieldArray(deaths) => match deaths.as_slice().first()? {
            AMQPValue::FieldTable(death) => Some(death),
            _ => None,
        },
        _ => None,
    }
}

fn text_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn death_reason(properties: &BasicProperties) -> String {
    last_death(properties)
        .and_then(|death| death.inner().get("reason"))
        .and_then(text_value)
        .unwrap_or_else(|| "-".into())
}

/// Where the message was going before it was dead-lettered: its `type` (our envelopes and
/// events carry their routing key there), else the routing key `x-death` recorded. The
/// delivery's own routing key is the dead-letter queue's, which is of no use.
fn original_routing_key(properties: &BasicProperties) -> Option<String> {
    if let Some(kind) = properties.kind() {
        return Some(kind.to_string());
    }
    match last_death(properties)?.inner().get("routing-keys")? {
        AMQPValue::FieldArray(keys) => keys.as_slice().first().and_then(text_value),
        _ => None,
    }
}

/// Publishes persistent and mandatory, and waits for the broker's confirm.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> anyhow::Result<()> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            bail!(
                "unroutable: {} {}",
                returned.reply_code,
                returned.reply_text
            )
        }
        Confirmation::Nack(None) | Confirmation::NotRequested => {
            bail!("the broker refused the message")
        }
    }
}

type OrderRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    OffsetDateTime,
    OffsetDateTime,
);
type EventRow = (
    Uuid,
    String,
    OffsetDateTime,
    Option<OffsetDateTime>,
    i32,
    Option<String>,
);
type HistoryRow = (
    OffsetDateTime,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    OffsetDateTime,
    Uuid,
);

/// Everything known about one order: its state, every notification, every event.
pub async fn order_timeline(pool: &PgPool, reference: &str) -> anyhow::Result<String> {
    let order: Option<OrderRow> = sqlx::query_as(
        "SELECT client_id, status, bank_reference, reason_code, reason_message, created_at, updated_at
         FROM orders WHERE reference = $1",
    )
    .bind(reference)
    .fetch_optional(pool)
    .await?;
    let Some((client, status, bank_reference, reason_code, reason_message, created, updated)) =
        order
    else {
        bail!("no order {reference}");
    };
    let mut out = format!(
        "order {reference}: {status} (client {client}, bank reference {}{})\n  first seen {}, last changed {}\n\nnotifications:\n",
        bank_reference.unwrap_or_else(|| "-".into()),
        reason_code
            .map(|code| format!(", reason {code}: {}", reason_message.unwrap_or_default()))
            .unwrap_or_default(),
        rfc3339(created),
        rfc3339(updated),
    );
    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT recorded_at, status, previous_status, effect, client_id, idempotency_key, batch_id,
                bank_processed_at, message_id
         FROM order_history WHERE reference = $1 ORDER BY id",
    )
    .bind(reference)
    .fetch_all(pool)
    .await?;
    for (recorded, status, previous, effect, client, key, batch, processed, message) in history {
        let _ = writeln!(
            out,
            "  {}  {:<7} -> {:<7} {:<9} from {client} key={key}{} bank time {} message {message}",
            rfc3339(recorded),
            previous.unwrap_or_else(|| "(new)".into()),
            status,
            effect,
            batch.map(|b| format!(" batch={b}")).unwrap_or_default(),
            rfc3339(processed),
        );
    }
    out.push_str("\nledger events:\n");
    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT event_id, event_type, created_at, published_at, attempts, last_error
         FROM ledger_outbox WHERE reference = $1 ORDER BY id",
    )
    .bind(reference)
    .fetch_all(pool)
    .await?;
    for (id, event_type, created, published, attempts, error) in events {
        let _ = writeln!(
            out,
            "  {}  {event_type} {id} {}{}",
            rfc3339(created),
            published.map_or_else(
                || format!("NOT YET PUBLISHED (attempts {attempts})"),
                |at| format!("published {}", rfc3339(at))
            ),
            error
                .map(|e| format!(" last error: {e}"))
                .unwrap_or_default(),
        );
    }
    Ok(out)
}

/// A channel in confirm mode for the commands that publish.
/// Deletes the configured topology's queues (with their messages) and exchanges: the end of a
/// throw-away environment (the local check, a preview). Refused for a topology whose queues do
/// not expire, which is how production is configured, so it cannot empty production by mistake.
pub async fn topology_delete(
    connection: &Connection,
    topology: &Topology,
) -> anyhow::Result<String> {
    if topology.options.expires.is_none() {
        bail!(
            "refused: {} is not a throw-away topology (topology.queue_expires_secs is not set); this command never deletes a long-lived one",
            topology.intake_exchange
        );
    }
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    topology
        .delete(&channel)
        .await
        .with_context(|| format!("deleting the topology of {}", topology.intake_exchange))?;
    channel.close(200, "done".into()).await.ok();
    Ok(format!(
        "deleted {}, {}, {}, {} and their exchanges\n",
        topology.intake_queue,
        topology.intake_dead_letter_queue,
        topology.ledger_queue,
        topology.ledger_dead_letter_queue
    ))
}

pub async fn confirm_channel(url: &str) -> anyhow::Result<(Connection, Channel)> {
    let connection = broker::connect(url, "admin").await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

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
);

/// A tracked Paysafe item: its state and every fact received about it.
pub async fn paysafe_show(pool: &PgPool, id: &str) -> anyhow::Result<String> {
    let item: Option<PaysafeItemRow> = sqlx::query_as(
        "SELECT kind, status, tracking, merchant_ref_num, amount, currency_code, poll_attempts,
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
        attempts,
        next_poll,
        deadline,
        created,
    )) = item
    else {
        bail!("no Paysafe item {id}");
    };
    let mut out = format!(
        "{kind} {id}: {status} ({tracking}), merchantRefNum {}, amount {} {}\n  tracked since {}, deadline {}, {attempts} poll(s){}\n\nhistory:\n",
        merchant_ref.unwrap_or_default(),
        amount.map(|a| a.to_string()).unwrap_or_default(),
        currency.unwrap_or_default(),
        rfc3339(created),
        rfc3339(deadline),
        next_poll
            .map(|t| format!(", next poll {}", rfc3339(t)))
            .unwrap_or_default(),
    );
    let history: Vec<PaysafeHistoryRow> = sqlx::query_as(
        "SELECT recorded_at, source, event_name, status, previous_status, effect
         FROM paysafe_item_history WHERE item_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    for (at, source, event, status, previous, effect) in history {
        let _ = writeln!(
            out,
            "  {}  {source:<8} {:<22} {} -> {status} {effect}",
            rfc3339(at),
            event.unwrap_or_default(),
            previous.unwrap_or_else(|| "(new)".into()),
        );
    }
    let events: Vec<(String, Uuid, Option<OffsetDateTime>)> = sqlx::query_as(
        "SELECT event_type, event_id, published_at FROM ledger_outbox WHERE reference = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    out.push_str("\nledger events:\n");
    for (event_type, event_id, published) in events {
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
