//! The dead-letter commands: list and replay. A message lands in a dead-letter queue when it
//! could not be read or kept failing (intake), or when no consumer could take it (ledger); the
//! operator looks without removing, then moves messages back once the cause is fixed.

use clap::ValueEnum;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Connection};

use connector_schema::Topology;

use crate::admin::publish::publish_confirmed;

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
