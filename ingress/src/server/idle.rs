//! The idle timeout of a connection: closed once it has had no request in flight for
//! `http.idle_timeout_secs`. Counted in requests rather than bytes, so HTTP/2 pings (which keep a
//! dead peer detectable) do not keep an unused connection open, and a connection that never
//! sends a first request (before hyper even knows its protocol) is cut as well.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests in flight on one connection, and when that last changed.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last_change: Mutex<Instant>,
    /// Told when the last request in flight is answered.
    none_left: Notify,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            in_flight: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
            none_left: Notify::new(),
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
            // Waits out a request in flight rather than re-checking a past deadline: that spun
            // (a wake-up per timer tick) for as long as a request outlived the timeout.
            self.none_in_flight().await;
            let since = self.last_change();
            tokio::time::sleep_until(since + timeout).await;
            if self.in_flight.load(Ordering::SeqCst) == 0 && self.last_change() == since {
                return;
            }
        }
    }

    /// Resolves once no request is in flight: at once when none is.
    pub async fn none_in_flight(&self) {
        loop {
            let answered = self.none_left.notified();
            tokio::pin!(answered);
            // Registered before the check, so an answer in between is not missed.
            answered.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            answered.await;
        }
    }
}

/// One request in flight on a connection.
#[derive(Debug)]
pub struct InFlightRequest(Arc<Activity>);

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        let was = self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
        if was == 1 {
            self.0.none_left.notify_waiters();
        }
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

    #[tokio::test]
    async fn a_request_in_flight_past_the_timeout_is_waited_for_without_spinning() {
        let activity = Activity::new();
        let timeout = Duration::from_millis(50);
        let request = activity.request();
        let polls = AtomicUsize::new(0);
        let idle = activity.idle_for(timeout);
        tokio::pin!(idle);
        let counted = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            idle.as_mut().poll(cx)
        });
        let busy = tokio::time::timeout(timeout * 10, counted).await;
        assert!(busy.is_err(), "a request in flight keeps it busy");
        let polls = polls.load(Ordering::SeqCst);
        assert!(polls < 10, "woken {polls} times while nothing changed");
        drop(request);
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle once the request is answered");
    }

    #[tokio::test]
    async fn none_in_flight_waits_for_the_last_answer() {
        let activity = Activity::new();
        activity.none_in_flight().await;
        let first = activity.request();
        let second = activity.request();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            async move { activity.none_in_flight().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one request is still in flight");
        drop(second);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("resolved once the last one is answered")
            .unwrap();
    }
}
