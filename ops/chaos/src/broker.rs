//! What the harness itself asks of its RabbitMQ nodes, straight and not through the proxy:
//! forming the cluster, declaring the topology and publishing the poison messages, reading
//! queue listings (`rabbitmqctl`), and taking every message off a queue at the end. Each takes
//! the nodes as they are, so that a node that is down is skipped rather than waited for.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::bail;
use futures_util::StreamExt as _;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use connector_schema::topology::Topology;

use crate::configs::PREFIX;
use crate::console::out;
use crate::services::RabbitNode;

/// Messages published straight to the intake exchange that no worker can read: they must end
/// up in the intake dead-letter queue, and nothing else may.
const POISON_MESSAGES: usize = 3;

/// Joins every node after the first to the first, and checks that all three run.
pub async fn form_cluster(nodes: &[RabbitNode]) -> anyhow::Result<()> {
    let Some((first, others)) = nodes.split_first() else {
        bail!("no RabbitMQ node to form a cluster of");
    };
    for node in others {
        node.ctl_run(&["stop_app"]).await?;
        node.ctl_run(&["join_cluster", &first.name]).await?;
        node.ctl_run(&["start_app"]).await?;
    }
    let status = first
        .ctl_run(&["cluster_status", "--formatter", "json"])
        .await?;
    let running =
        serde_json::from_str::<serde_json::Value>(status.lines().last().unwrap_or_default())
            .ok()
            .and_then(|v| v["running_nodes"].as_array().map(Vec::len))
            .unwrap_or(0);
    if running != 3 {
        bail!("the cluster did not form: {status}");
    }
    out(format!("rabbitmq: cluster of {running} running nodes"));
    Ok(())
}

/// Declares the topology on the (formed) cluster and publishes the poison messages; returns
/// their message ids.
pub async fn prepare(
    nodes: &[RabbitNode],
    topology: &Topology,
    cluster: bool,
) -> anyhow::Result<HashSet<String>> {
    let connection = connect(nodes).await?;
    let channel = connection.create_channel().await?;
    topology.declare_intake(&channel).await?;
    topology.declare_ledger(&channel).await?;
    if cluster {
        let queues = nodes[0]
            .ctl_run(&["list_queues", "-q", "name", "type", "members"])
            .await?;
        for line in queues.lines().filter(|l| l.contains(PREFIX)) {
            out(format!("  queue {line}"));
        }
        let members = nodes[0]
            .ctl_run(&["list_queues", "-q", "name", "members"])
            .await?;
        let intake_line = members
            .lines()
            .find(|l| l.split_whitespace().next() == Some(topology.intake_queue.as_str()))
            .unwrap_or_default();
        if nodes.iter().any(|n| !intake_line.contains(&n.name)) {
            bail!("the intake queue is not replicated on every node: {intake_line}");
        }
    }
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut poison = HashSet::new();
    for i in 0..POISON_MESSAGES {
        let id = format!("chaos-poison-{i}");
        let confirm = channel
            .basic_publish(
                topology.intake_exchange.as_str().into(),
                "corelink.status".into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                b"not an intake envelope",
                BasicProperties::default()
                    .with_message_id(id.as_str().into())
                    .with_delivery_mode(2),
            )
            .await?
            .await?;
        if !confirm.is_ack() {
            bail!("poison message {id} not confirmed");
        }
        poison.insert(id);
    }
    let _ = connection.close(200, "prepared".into()).await;
    Ok(poison)
}

/// A connection straight to a running node (not through the proxy).
pub async fn connect(nodes: &[RabbitNode]) -> anyhow::Result<Connection> {
    let mut last = None;
    for node in nodes.iter().filter(|n| n.is_running()) {
        let url = format!("amqp://guest:guest@{}/%2f", node.addr());
        match Connection::connect(&url, ConnectionProperties::default()).await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
    }
    bail!("no RabbitMQ node of ours answers: {last:?}")
}

/// One column (`leader`, `online`, ...) of `rabbitmqctl list_queues` for `queue`, asked of a
/// running node.
pub async fn queue_info(nodes: &[RabbitNode], queue: &str, item: &str) -> Option<String> {
    let node = nodes.iter().find(|n| n.is_running())?;
    let listing = node
        .ctl_run(&["list_queues", "-q", "name", item])
        .await
        .ok()?;
    listing.lines().find_map(|line| {
        let (name, value) = line.split_once(char::is_whitespace)?;
        (name == queue).then(|| value.trim().to_owned())
    })
}

/// Messages on `queue`, ready and unacknowledged.
pub async fn queue_messages(nodes: &[RabbitNode], queue: &str) -> Option<u64> {
    let node = nodes.iter().find(|n| n.is_running())?;
    let listing = node
        .ctl_run(&["list_queues", "-q", "name", "messages"])
        .await
        .ok()?;
    listing.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next() == Some(queue))
            .then(|| fields.next()?.parse().ok())
            .flatten()
    })
}

/// Every message on `queue`, taken (acknowledged) until it is empty: a consumer with a large
/// prefetch for the bulk (one `basic.get` per message would take minutes for 150 000 events),
/// then `basic.get` until the queue answers empty.
pub async fn take_all(
    channel: &Channel,
    queue: &str,
) -> anyhow::Result<Vec<(BasicProperties, Vec<u8>)>> {
    let expected = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count() as usize;
    let mut messages = Vec::with_capacity(expected);
    if expected > 0 {
        channel.basic_qos(1000, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                "fault-harness-check".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        while messages.len() < expected {
            match tokio::time::timeout(Duration::from_secs(5), consumer.next()).await {
                Ok(Some(Ok(delivery))) => messages.push((delivery.properties, delivery.data)),
                Ok(Some(Err(error))) => return Err(error.into()),
                Ok(None) | Err(_) => break,
            }
        }
        channel
            .basic_cancel("fault-harness-check".into(), BasicCancelOptions::default())
            .await?;
    }
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await?
    {
        let delivery = message.delivery;
        messages.push((delivery.properties, delivery.data));
    }
    Ok(messages)
}
