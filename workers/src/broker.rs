//! Broker connections of the worker roles, and the retry schedule they share.

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use backoff::backoff::Backoff as _;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use futures_util::future::maybe_done;
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

/// Runs lapin sends (publishes, acks, rejects) so that every one is queued before any is
/// waited for, and returns their outputs in order. A lapin send queues its frames when first
/// polled, then waits until lapin's I/O thread has written them: awaited one by one, every send
/// costs a round trip to that thread (a wake-up and a write each, 64 for a group of 64 acks).
/// Each is polled once here, in order (the order the frames go out in), and only then are the
/// writes waited for, so the thread writes them together.
pub async fn queued_in_order<F: Future>(sends: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut sends: Vec<_> = sends
        .into_iter()
        .map(|send| Box::pin(maybe_done(send)))
        .collect();
    for send in &mut sends {
        // Polled once, done or not: `maybe_done` keeps the output of one that is.
        std::future::poll_fn(|cx| {
            let _ = send.as_mut().poll(cx);
            Poll::Ready(())
        })
        .await;
    }
    let mut outputs = Vec::with_capacity(sends.len());
    for mut send in sends {
        send.as_mut().await;
        outputs.push(
            send.as_mut()
                .take_output()
                .expect("a send awaited to completion has its output"),
        );
    }
    outputs
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::sync::oneshot;

    use super::queued_in_order;

    /// Each fake send records its first poll (where lapin queues its frames), then waits to be
    /// released, as lapin waits for its I/O thread.
    #[tokio::test]
    async fn every_send_is_queued_in_order_before_any_is_waited_for() {
        let queued = Arc::new(Mutex::new(Vec::new()));
        let mut releases = Vec::new();
        let mut sends = Vec::new();
        for i in 0..40 {
            let (release, written) = oneshot::channel::<()>();
            releases.push(release);
            let queued = queued.clone();
            sends.push(async move {
                queued.lock().unwrap().push(i);
                written.await.unwrap();
                i * 10
            });
        }
        let all = tokio::spawn(queued_in_order(sends));
        // Nothing is written yet, yet every send is queued, in order (awaited one by one, only
        // the first would be).
        let all_queued = async {
            while queued.lock().unwrap().len() < 40 {
                tokio::task::yield_now().await;
            }
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), all_queued).await;
        assert_eq!(*queued.lock().unwrap(), (0..40).collect::<Vec<_>>());
        assert!(!all.is_finished());
        // Written in reverse order: the outputs still come back in the order given.
        for release in releases.into_iter().rev() {
            release.send(()).unwrap();
        }
        assert_eq!(
            all.await.unwrap(),
            (0..40).map(|i| i * 10).collect::<Vec<_>>()
        );
    }

    #[tokio::test]
    async fn a_send_that_is_ready_at_once_keeps_its_output() {
        let outputs = queued_in_order((1..=2).map(|i| async move { i })).await;
        assert_eq!(outputs, vec![1, 2]);
    }
}
