//! The raw broker baseline: the same messages published straight to RabbitMQ the way the
//! ingress publishes them (persistent, mandatory, one awaited confirm each, round-robin over
//! confirm channels), so the ingress's own cost can be read off as a ratio. Each message has
//! the size of the ingress's: the same body and the same AMQP properties (the envelope's
//! headers, with the request's six headers), built before the clock starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use time::OffsetDateTime;

use connector_ingress::config::BrokerSettings;
use connector_schema::corelink::headers as names;
use connector_schema::topology::QueueOptions;
use connector_schema::{IntakeEnvelope, Topology};

use crate::prepare::Prepared;
use crate::stats::{ACCEPTED, RunStats, WorkerStats};

/// The throw-away queues expire on their own this long after the tool stops using them, in
/// case it dies before deleting them.
const QUEUE_EXPIRES: Duration = Duration::from_secs(120);

/// Publishes every prepared body once to a throw-away intake topology, then deletes it.
pub async fn run(
    amqp_url: &str,
    prepared: Arc<[Prepared]>,
    concurrency: usize,
) -> anyhow::Result<RunStats> {
    let connection = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("corelink-load-baseline".into()),
    )
    .await
    .with_context(|| format!("connecting to the broker at {}", redact(amqp_url)))?;
    let topology = Topology::with_prefix(
        &format!("load-baseline-{}", uuid::Uuid::new_v4()),
        QueueOptions {
            expires: Some(QUEUE_EXPIRES),
            ..QueueOptions::default()
        },
    );
    let setup = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    let declared = topology
        .declare_intake(&setup)
        .await
        .context("declaring the baseline topology");
    let result = match declared {
        Ok(()) => publish_all(&connection, &topology, prepared, concurrency).await,
        Err(error) => Err(error),
    };
    // Nothing is left on the broker.
    let cleanup = async { topology.delete(&connection.create_channel().await?).await }
        .await
        .context("deleting the baseline topology");
    connection.close(200, "baseline done".into()).await.ok();
    let stats = result?;
    cleanup?;
    Ok(stats)
}

/// The timed part: `concurrency` tasks, each publishing the next body and awaiting its confirm.
async fn publish_all(
    connection: &Connection,
    topology: &Topology,
    messages: Arc<[Prepared]>,
    concurrency: usize,
) -> anyhow::Result<RunStats> {
    let concurrency = concurrency.max(1);
    // As many confirm channels as the ingress opens by default.
    let channel_count = BrokerSettings::default().publish_channels.max(1);
    let mut channels = Vec::with_capacity(channel_count);
    for _ in 0..channel_count {
        let channel = connection
            .create_channel()
            .await
            .context("opening a channel")?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .context("enabling publisher confirms")?;
        channels.push(channel);
    }
    let channels: Arc<[Channel]> = channels.into();
    let exchange: Arc<str> = topology.intake_exchange.as_str().into();
    // The envelope the ingress would publish for each request, built before the clock.
    let properties: Arc<[BasicProperties]> = messages.iter().map(envelope_properties).collect();
    let next = Arc::new(AtomicUsize::new(0));
    let next_channel = Arc::new(AtomicUsize::new(0));

    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let channels = channels.clone();
        let messages = messages.clone();
        let properties = properties.clone();
        let exchange = exchange.clone();
        let next = next.clone();
        let next_channel = next_channel.clone();
        tasks.push(tokio::spawn(async move {
            let mut stats = WorkerStats::new()?;
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let (Some(message), Some(properties)) =
                    (messages.get(index), properties.get(index))
                else {
                    break;
                };
                let channel =
                    &channels[next_channel.fetch_add(1, Ordering::Relaxed) % channels.len()];
                let sent = Instant::now();
                match publish(channel, &exchange, message, properties.clone()).await {
                    Ok(outcome) => stats.record(sent.elapsed(), outcome, message.orders),
                    Err(error) => {
                        stats.record_transport_error(sent.elapsed(), "amqp", error.to_string())
                    }
                }
            }
            anyhow::Ok(stats)
        }));
    }
    let mut workers = Vec::with_capacity(concurrency);
    for task in tasks {
        workers.push(task.await.context("a publishing task failed")??);
    }
    let elapsed = started.elapsed();
    RunStats::from_workers(
        "raw broker: publish -> confirm (same bodies)",
        concurrency,
        elapsed,
        workers,
    )
}

/// The AMQP properties the ingress would publish `message` with (persistent).
fn envelope_properties(message: &Prepared) -> BasicProperties {
    let h = &message.headers;
    IntakeEnvelope {
        message_id: uuid::Uuid::now_v7(),
        kind: message.kind,
        received_at: OffsetDateTime::now_utc(),
        client_id: Some(h.client_id.clone()),
        request_path: Some(message.path.to_owned()),
        headers: [
            (names::CONTENT_TYPE, &h.content_type),
            (names::CLIENT_ID, &h.client_id),
            (names::TIMESTAMP, &h.timestamp),
            (names::NONCE, &h.nonce),
            (names::IDEMPOTENCY_KEY, &h.idempotency_key),
            (names::SIGNATURE, &h.signature),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect(),
        body: message.body.clone(),
        verification: None,
    }
    .amqp_properties()
}

/// Publishes one message persistent and mandatory and awaits its confirm; the outcome is
/// [`ACCEPTED`] for a plain ack.
async fn publish(
    channel: &Channel,
    exchange: &str,
    message: &Prepared,
    properties: BasicProperties,
) -> lapin::Result<String> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            message.kind.routing_key().into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &message.body,
            properties,
        )
        .await?;
    Ok(match confirm.await? {
        Confirmation::Ack(None) => ACCEPTED.to_owned(),
        Confirmation::Ack(Some(_)) | Confirmation::Nack(Some(_)) => "returned (unroutable)".into(),
        Confirmation::Nack(None) => "nack".into(),
        Confirmation::NotRequested => "no confirm".into(),
    })
}

/// Empties `queue` (the ingress's intake queue, which nothing consumes during a load run), so
/// that long or repeated runs do not pile messages up on the broker. Returns how many it held.
pub async fn purge_queue(amqp_url: &str, queue: &str) -> anyhow::Result<u32> {
    let connection = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name("corelink-load-purge".into()),
    )
    .await
    .with_context(|| format!("connecting to the broker at {}", redact(amqp_url)))?;
    let channel = connection
        .create_channel()
        .await
        .context("opening a channel")?;
    let purged = channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await
        .with_context(|| format!("purging queue {queue}"));
    connection.close(200, "purged".into()).await.ok();
    purged
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_the_password() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }
}
