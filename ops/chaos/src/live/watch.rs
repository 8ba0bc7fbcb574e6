//! The alerts Prometheus fires, sampled twice a second for the whole run: each scenario reads
//! from this one timeline when its alerts started firing and when they cleared, so that a
//! scenario left to clear in the background is judged the same way as one waited for.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::prometheus::Api;

type Samples = Arc<Mutex<Vec<(Instant, BTreeSet<String>)>>>;

#[derive(Debug, Clone)]
pub struct Watch {
    samples: Samples,
}

impl Watch {
    /// Starts sampling `/api/v1/alerts` (a failed read is skipped, not taken for "nothing").
    pub fn start(api: Api) -> (Self, tokio::task::JoinHandle<()>) {
        let samples: Samples = Arc::default();
        let writer = Arc::clone(&samples);
        let task = tokio::spawn(async move {
            loop {
                if let Ok(firing) = api.firing().await {
                    let set = firing.into_iter().collect();
                    writer
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((Instant::now(), set));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        (Self { samples }, task)
    }

    /// The first sample at or after `since` where `alert` fires.
    pub fn fired_after(&self, alert: &str, since: Instant) -> Option<Instant> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .find(|(at, set)| *at >= since && set.contains(alert))
            .map(|(at, _)| *at)
    }

    /// The first sample at or after `since` where `alert` does not fire.
    pub fn clear_after(&self, alert: &str, since: Instant) -> Option<Instant> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .iter()
            .find(|(at, set)| *at >= since && !set.contains(alert))
            .map(|(at, _)| *at)
    }

    /// Whether `alert` fires in the latest sample.
    pub fn firing_now(&self, alert: &str) -> bool {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples.last().is_some_and(|(_, set)| set.contains(alert))
    }

    /// Every alert firing in the latest sample.
    pub fn now(&self) -> BTreeSet<String> {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .last()
            .map(|(_, set)| set.clone())
            .unwrap_or_default()
    }

    /// Waits until `found` returns a time for every alert, or `within` passes; returns
    /// what it found, per alert.
    pub async fn wait_all(
        &self,
        alerts: &[&str],
        within: Duration,
        found: impl Fn(&Self, &str) -> Option<Instant>,
    ) -> Vec<Option<Instant>> {
        let deadline = Instant::now() + within;
        loop {
            let times: Vec<Option<Instant>> = alerts.iter().map(|a| found(self, a)).collect();
            if times.iter().all(Option::is_some) || Instant::now() > deadline {
                return times;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}
