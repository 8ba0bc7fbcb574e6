//! Broker connections of the worker roles, and the retry schedule they share.

use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use crate::config::BrokerSettings;

/// Bound on the TCP + AMQP handshake, so a black-holed broker does not stall a role.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects, naming the connection after the role so the broker's UI says who is who.
pub async fn connect(url: &str, role: &str) -> anyhow::Result<Connection> {
    let properties =
        ConnectionProperties::default().with_connection_name(format!("connector-{role}").into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => anyhow::bail!("connecting to the broker timed out after {CONNECT_TIMEOUT:?}"),
    }
}

/// Sleeps for `delay` unless `shutdown` comes first; `false` means stop.
pub async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
    }
}

/// After a failed broker session: logs why, waits the next delay of `retries`, and says whether
/// to start another session (`false` at shutdown).
pub async fn back_off(
    role: &str,
    error: &anyhow::Error,
    retries: &mut ExponentialBackoff,
    settings: &BrokerSettings,
    shutdown: &CancellationToken,
) -> bool {
    let delay = retries
        .next_backoff()
        .unwrap_or_else(|| settings.retry_max());
    tracing::warn!(role, error = %format!("{error:#}"), ?delay, "broker session interrupted; starting another");
    pause(delay, shutdown).await
}

/// Exponential backoff with jitter and no overall deadline: an outage is waited out. The
/// `backoff` crate computes the delays (it is unmaintained, RUSTSEC-2025-0012, but named by
/// the product owner; only its delay arithmetic is used).
pub fn retry_schedule(settings: &BrokerSettings) -> ExponentialBackoff {
    ExponentialBackoffBuilder::new()
        .with_initial_interval(settings.retry_initial())
        .with_max_interval(settings.retry_max())
        .with_max_elapsed_time(None)
        .build()
}
