//! The idle timeout of a connection: closed once it has had no request in flight for
//! `http.idle_timeout_secs`. Counted in requests rather than bytes, so HTTP/2 pings (which keep a
//! dead peer detectable) do not keep an unused connection open, and a connection that never
//! sends a first request (before hyper even knows its protocol) is cut as well.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Requests in flight on one connection, and when that last changed.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_change: Mutex<Instant>,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        })
    }

    /// Counts a request in flight until the guard drops (when its handler has answered).
    pub fn request(self: &Arc<Self>) -> InFlightRequest {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlightRequest(self.clone())
    }

    fn touch(&self) {
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn last_change(&self) -> Instant {
        *self
            .last_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves once the connection has been without a request for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let since = self.last_change();
            tokio::time::sleep_until(since + timeout).await;
            if self.in_flight.load(Ordering::SeqCst) == 0 && self.last_change() == since {
                return;
            }
        }
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_only_after_the_timeout_with_no_request_in_flight() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(200);
        let request = activity.request();
        let busy = tokio::time::timeout(timeout * 3, activity.idle_for(timeout)).await;
        assert!(busy.is_err(), "a request in flight keeps it busy");
        drop(request);
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), activity.idle_for(timeout))
            .await
            .expect("idle once the request is answered");
        assert!(started.elapsed() >= timeout, "counted from the last answer");
    }
}
