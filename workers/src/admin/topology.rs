//! Deleting a throw-away broker topology, the end of a local check or preview environment,
//! refused for any topology that could be production's.

use anyhow::{Context as _, bail};
use lapin::Connection;

use connector_schema::Topology;

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
