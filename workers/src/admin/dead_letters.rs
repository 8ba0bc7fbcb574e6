//! The dead-letter commands: list and replay. A message lands in a dead-letter queue when it
//! could not be read or kept failing (intake), or when no consumer could take it (ledger); the
//! operator looks without removing, then moves messages back once the cause is fixed.

use clap::ValueEnum;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection};

use time::OffsetDateTime;

use connector_schema::seal::SealKeys;
use connector_schema::{IntakeKind, Topology};

use crate::admin::publish::publish_confirmed;
use crate::intake::{self, Refusal};

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
        lines.push(format!(
            "{}  type={} reason={} bytes={}",
            short_text(properties.message_id()),
            short_text(properties.kind()),
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
/// on the dead-letter queue only after the republish is confirmed). An intake message is first
/// read as the apply role reads it (`intake::admit`: its kind, the ingress's seal): a forged one
/// stays in the dead-letter queue, and is reported, since replaying it could at best
/// dead-letter it again and at worst apply what no ingress accepted. (An unreadable one goes
/// back: a newer build may read it, and at worst it is dead-lettered again.)
pub async fn dead_letters_replay(
    connection: &Connection,
    topology: &Topology,
    seal: &SealKeys,
    which: DeadLetterQueue,
    limit: usize,
) -> anyhow::Result<String> {
    dead_letters_replay_matching(
        connection,
        topology,
        seal,
        which,
        &ReplayFilter::default(),
        limit,
    )
    .await
}

/// Which dead letters a replay takes; the others stay where they are. Empty: all of them.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub message_id: Option<String>,
    /// The routing key the message had before it was dead-lettered (`corelink.status`).
    pub routing_key: Option<String>,
    /// Dead-lettered at or after / before (RabbitMQ's `x-death` time).
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
}

impl ReplayFilter {
    fn matches(&self, properties: &BasicProperties, routing_key: &str) -> bool {
        let at = death_time(properties);
        self.message_id
            .as_deref()
            .is_none_or(|id| short_text(properties.message_id()) == id)
            && self
                .routing_key
                .as_deref()
                .is_none_or(|key| key == routing_key)
            && self
                .since
                .is_none_or(|since| at.is_some_and(|at| at >= since))
            && self
                .until
                .is_none_or(|until| at.is_some_and(|at| at < until))
    }
}

/// [`dead_letters_replay`] of the messages `filter` matches only.
pub async fn dead_letters_replay_matching(
    connection: &Connection,
    topology: &Topology,
    seal: &SealKeys,
    which: DeadLetterQueue,
    filter: &ReplayFilter,
    limit: usize,
) -> anyhow::Result<String> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let queue = which.queue(topology);
    let mut replayed = 0;
    // Held unacknowledged until the end, so the next `basic_get` takes the message after them;
    // then returned to the dead-letter queue. (`None`: left by the filter, not reported.)
    let mut kept = Vec::new();
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
        if !filter.matches(&delivery.properties, &routing_key) {
            kept.push((None, delivery));
            continue;
        }
        if which == DeadLetterQueue::Intake
            && let Err(refusal @ Refusal::Forged { .. }) =
                intake::admit(&routing_key, &delivery.properties, &delivery.data, seal)
        {
            kept.push((
                Some(format!(
                    "{} kept: {refusal}",
                    short_text(delivery.properties.message_id())
                )),
                delivery,
            ));
            continue;
        }
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
    let mut report = format!(
        "replayed {replayed} message(s) from {queue} to {}\n",
        which.exchange(topology)
    );
    for (line, delivery) in kept {
        delivery
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await?;
        if let Some(line) = line {
            report.push_str(&line);
            report.push('\n');
        }
    }
    channel.close(200, "replayed".into()).await?;
    Ok(report)
}

/// One dead letter as an operator inspects it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    /// The routing key it had before it was dead-lettered.
    pub routing_key: String,
    /// Why RabbitMQ dead-lettered it (`rejected`, `expired`, `maxlen`, `delivery_limit`).
    pub reason: String,
    pub dead_lettered_at: Option<OffsetDateTime>,
    /// The body's size in bytes.
    pub bytes: usize,
    /// The body as an operator may read it: BNC bodies redacted, unknown kinds not shown.
    pub readable_body: String,
}

/// Up to `limit` messages of a dead-letter queue, read and returned to it (as
/// [`dead_letters_list`] does), with what an operator needs to decide on each.
pub async fn dead_letters_peek(
    connection: &Connection,
    topology: &Topology,
    which: DeadLetterQueue,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let channel = connection.create_channel().await?;
    let queue = which.queue(topology);
    let mut letters = Vec::new();
    while letters.len() < limit {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        let delivery = &message.delivery;
        let properties = &delivery.properties;
        let routing_key =
            original_routing_key(properties).unwrap_or_else(|| delivery.routing_key.to_string());
        letters.push(DeadLetter {
            message_id: short_text(properties.message_id()),
            reason: death_reason(properties),
            dead_lettered_at: death_time(properties),
            bytes: delivery.data.len(),
            readable_body: readable_body(which, &routing_key, &delivery.data),
            routing_key,
        });
    }
    channel.close(200, "listed".into()).await?;
    Ok(letters)
}

/// What of a dead letter's body an operator sees: a BNC body holds a card token and an account
/// number (redacted), a body of a kind we do not know may hold anything (not shown).
fn readable_body(which: DeadLetterQueue, routing_key: &str, body: &[u8]) -> String {
    const SHOWN: usize = 4096;
    let readable = match (which, IntakeKind::from_routing_key(routing_key)) {
        (DeadLetterQueue::Intake, Some(IntakeKind::BncAccountBinding)) => {
            connector_schema::bnc::redact_body(body)
        }
        (DeadLetterQueue::Intake, None) => {
            return format!(
                "(not shown: unknown kind `{routing_key}`, {} bytes)",
                body.len()
            );
        }
        _ => body.to_vec(),
    };
    let text = String::from_utf8_lossy(&readable);
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], body.len()),
        None => text.into_owned(),
    }
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

/// When RabbitMQ dead-lettered it.
fn death_time(properties: &BasicProperties) -> Option<OffsetDateTime> {
    match last_death(properties)?.inner().get("time")? {
        AMQPValue::Timestamp(secs) => {
            OffsetDateTime::from_unix_timestamp(i64::try_from(*secs).ok()?).ok()
        }
        _ => None,
    }
}

fn death_reason(properties: &BasicProperties) -> String {
    last_death(properties)
        .and_then(|death| death.inner().get("reason"))
        .and_then(text_value)
        .unwrap_or_else(|| "-".into())
}

/// Where the message was going before it was dead-lettered: the routing key `x-death`
/// recorded (the one that decides an intake message's kind), else its `type` (our envelopes and
/// events carry their routing key there). The delivery's own routing key is the dead-letter
/// queue's, which is of no use.
fn original_routing_key(properties: &BasicProperties) -> Option<String> {
    let recorded =
        last_death(properties).and_then(|death| match death.inner().get("routing-keys") {
            Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(text_value),
            _ => None,
        });
    recorded.or_else(|| properties.kind().as_ref().map(ToString::to_string))
}

fn short_text(value: &Option<lapin::types::ShortString>) -> String {
    value.as_ref().map(ToString::to_string).unwrap_or_default()
}
