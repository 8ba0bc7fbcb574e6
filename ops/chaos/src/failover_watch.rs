//! What the rest of the connector shows while a failover lasts, sampled every 100 ms: whether
//! each workers process's `/readyz` says the database is reachable, and how many ledger events
//! the relays have published (the ledger queue's depth: nothing consumes it during the rounds).
//! From them, for the round line and the summary: how long readiness said "database not
//! reachable", whether it was reachable again at the end, and how long after the first commit
//! the relay published again. A process that does not answer (killed by another fault of the
//! round, restarting) says nothing about the database and is left out of that sample.

use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const EVERY: Duration = Duration::from_millis(100);
/// The compose health check's timeout: a `/readyz` slower than this counts as not ready.
const READYZ_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Workers processes whose `/readyz` answered `"database": false`.
    not_ready: usize,
    /// Ledger events on the ledger queue, when the broker answered.
    ledger: Option<u32>,
}

/// The sampler, running until [`Watch::finish`].
#[derive(Debug)]
pub struct Watch {
    stop: watch::Sender<bool>,
    task: JoinHandle<Vec<Sample>>,
}

impl Watch {
    /// Samples `ready_urls` (each workers process's `/readyz`) and the depth of `ledger_queue`
    /// over `connection`, which the watch closes at the end.
    pub async fn start(
        ready_urls: Vec<String>,
        connection: Connection,
        ledger_queue: String,
    ) -> anyhow::Result<Self> {
        let channel = connection.create_channel().await?;
        let http = reqwest::Client::builder().timeout(READYZ_TIMEOUT).build()?;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !*stopped.borrow() {
                let at = Instant::now();
                let (not_ready, ledger) = tokio::join!(
                    not_ready(&http, &ready_urls),
                    depth(&channel, &ledger_queue)
                );
                samples.push(Sample {
                    at,
                    not_ready,
                    ledger,
                });
                tokio::select! {
                    () = tokio::time::sleep(EVERY.saturating_sub(at.elapsed())) => {}
                    _ = stopped.changed() => {}
                }
            }
            let _ = connection.close(200, "failover watched".into()).await;
            samples
        });
        Ok(Self { stop, task })
    }

    /// Stops sampling and reads the samples relative to the fault and the first commit.
    pub async fn finish(self, fault_at: Instant, first_commit: Option<Instant>) -> Seen {
        let _ = self.stop.send(true);
        let samples = self.task.await.unwrap_or_default();
        Seen::from_samples(&samples, fault_at, first_commit)
    }
}

async fn not_ready(http: &reqwest::Client, urls: &[String]) -> usize {
    let answers =
        futures_util::future::join_all(urls.iter().map(|url| database_reachable(http, url))).await;
    answers.into_iter().filter(|a| *a == Some(false)).count()
}

/// The `database` field of one `/readyz` answer (200 or 503); `None` when none came.
async fn database_reachable(http: &reqwest::Client, url: &str) -> Option<bool> {
    let answer: serde_json::Value = http.get(url).send().await.ok()?.json().await.ok()?;
    answer["database"].as_bool()
}

async fn depth(channel: &Channel, queue: &str) -> Option<u32> {
    let declare = channel.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    );
    match tokio::time::timeout(Duration::from_secs(1), declare).await {
        Ok(Ok(queue)) => Some(queue.message_count()),
        _ => None,
    }
}

/// What the samples say about one failover.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// From the fault to the first and to the last sample where a workers process's `/readyz`
    /// said the database is not reachable; `None` when none did.
    pub not_ready: Option<(Duration, Duration)>,
    /// Whether no workers process said so at the last sample.
    pub ready_at_end: bool,
    /// From the first commit to the first sample with more ledger events than before it.
    pub relay_after_commit: Option<Duration>,
}

impl Seen {
    fn from_samples(samples: &[Sample], fault_at: Instant, first_commit: Option<Instant>) -> Self {
        let not_ready: Vec<Duration> = samples
            .iter()
            .filter(|s| s.not_ready > 0)
            .map(|s| s.at.saturating_duration_since(fault_at))
            .collect();
        let relay_after_commit = first_commit.and_then(|commit| {
            let before = samples
                .iter()
                .filter(|s| s.at <= commit)
                .filter_map(|s| s.ledger)
                .next_back()?;
            samples
                .iter()
                .filter(|s| s.at > commit && s.ledger.is_some_and(|n| n > before))
                .map(|s| s.at - commit)
                .next()
        });
        Self {
            not_ready: not_ready
                .first()
                .zip(not_ready.last())
                .map(|(a, b)| (*a, *b)),
            ready_at_end: samples.last().is_some_and(|s| s.not_ready == 0),
            relay_after_commit,
        }
    }

    /// For the round line.
    pub fn line(&self) -> String {
        let readiness = match self.not_ready {
            Some((from, to)) => format!(
                "/readyz database unreachable from +{:.1} s to +{:.1} s{}",
                from.as_secs_f64(),
                to.as_secs_f64(),
                if self.ready_at_end {
                    ", then reachable"
                } else {
                    ", STILL UNREACHABLE"
                }
            ),
            None => "/readyz database reachable throughout".into(),
        };
        let relay = match self.relay_after_commit {
            Some(after) => format!(
                "relay publishing {:.1} s after the first commit",
                after.as_secs_f64()
            ),
            None => "no ledger event published after the first commit".into(),
        };
        format!("{readiness}; {relay}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(start: Instant, millis: u64, not_ready: usize, ledger: Option<u32>) -> Sample {
        Sample {
            at: start + Duration::from_millis(millis),
            not_ready,
            ledger,
        }
    }

    #[test]
    fn the_outage_and_the_relays_return_are_read_from_the_samples() {
        let fault = Instant::now();
        let samples = [
            sample(fault, 0, 0, Some(10)),
            sample(fault, 100, 1, Some(12)),
            sample(fault, 200, 2, None),
            sample(fault, 300, 0, Some(12)),
            sample(fault, 400, 1, Some(12)),
            sample(fault, 500, 0, Some(12)),
            sample(fault, 600, 0, Some(15)),
        ];
        let seen = Seen::from_samples(&samples, fault, Some(fault + Duration::from_millis(350)));
        assert_eq!(
            seen.not_ready,
            Some((Duration::from_millis(100), Duration::from_millis(400)))
        );
        assert!(seen.ready_at_end);
        assert_eq!(seen.relay_after_commit, Some(Duration::from_millis(250)));
    }

    #[test]
    fn no_commit_or_no_publish_reads_as_none() {
        let fault = Instant::now();
        let samples = [sample(fault, 0, 0, Some(3)), sample(fault, 100, 1, Some(3))];
        let seen = Seen::from_samples(&samples, fault, Some(fault + Duration::from_millis(50)));
        assert_eq!(seen.relay_after_commit, None);
        assert!(!seen.ready_at_end);
        assert_eq!(
            Seen::from_samples(&samples, fault, None).relay_after_commit,
            None
        );
    }
}
