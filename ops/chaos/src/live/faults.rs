//! The faults the alerts are for, each caused on the running stack, and its alerts waited for:
//! firing in Prometheus's `/api/v1/alerts`, then, once the fault is removed, cleared. A
//! foreground fault is caused, waited for and removed before the next; a background one (an
//! event whose alert clears only when its window has passed: a conflict, a STALE item, an
//! amount mismatch) is caused early and judged at the end, from the same timeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::console::out;
use crate::panels::{self, PanelQuery, Pass};
use crate::prometheus::Api;
use crate::stack::{APPLY, RELAY, Stack};
use crate::traffic::{Traffic, publish_to_intake};
use crate::watch::Watch;

/// How long an alert may take to fire, and to clear, once its fault is there or gone.
const FIRE_WITHIN: Duration = Duration::from_secs(90);
const CLEAR_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    AuthFailures,
    ApplyStopped,
    RelayStopped,
    BrokerStopped,
    DatabaseStopped,
    PaysafeUnauthorized,
    DeadLetters,
    LedgerQueueFull,
    Conflict,
    Stale,
    AmountMismatch,
}

impl Fault {
    pub const FOREGROUND: [Fault; 8] = [
        Fault::AuthFailures,
        Fault::DeadLetters,
        Fault::PaysafeUnauthorized,
        Fault::LedgerQueueFull,
        Fault::RelayStopped,
        Fault::DatabaseStopped,
        Fault::ApplyStopped,
        Fault::BrokerStopped,
    ];
    pub const BACKGROUND: [Fault; 3] = [Fault::Conflict, Fault::Stale, Fault::AmountMismatch];

    pub fn describe(self) -> &'static str {
        match self {
            Fault::AuthFailures => {
                "refused requests, ~4 rounds/s (Corelink: bad signature, stale, unknown client, replayed nonce; BNC: bad signature)"
            }
            Fault::ApplyStopped => "apply workers stopped (SIGTERM), orders sent",
            Fault::RelayStopped => {
                "relay+lifecycle workers stopped, orders applied, their events backdated 6 min"
            }
            Fault::BrokerStopped => "RabbitMQ stopped under traffic",
            Fault::DatabaseStopped => "PostgreSQL stopped, orders sent",
            Fault::PaysafeUnauthorized => "the simulator answers 401 to every poll",
            Fault::DeadLetters => "unreadable and forged messages published to the intake exchange",
            Fault::LedgerQueueFull => {
                "policy max-length 0 on connector.ledger.events (publishes nacked)"
            }
            Fault::Conflict => "SUCCESS then FAILED for one order",
            Fault::Stale => "a payment PROCESSING past its deadline",
            Fault::AmountMismatch => "Paysafe's amount differs from the track command's",
        }
    }

    /// The alerts this fault must fire (and then clear).
    pub fn alerts(self) -> &'static [&'static str] {
        match self {
            Fault::AuthFailures => &["ConnectorIngressAuthFailureSpike"],
            Fault::ApplyStopped => &["ConnectorIntakeStalled", "ConnectorProcessDown"],
            Fault::RelayStopped => &[
                "ConnectorOutboxEventTooOld",
                "ConnectorLifecycleStalled",
                "ConnectorProcessDown",
            ],
            Fault::BrokerStopped => &[
                "ConnectorBrokerDisconnected",
                "ConnectorIngress503s",
                "ConnectorProcessDown",
            ],
            Fault::DatabaseStopped => &["ConnectorDatabaseUnreachable"],
            Fault::PaysafeUnauthorized => &["ConnectorPaysafeUnauthorized"],
            Fault::DeadLetters => &[
                "ConnectorDeadLetterQueueNotEmpty",
                "ConnectorForgedIntakeMessages",
            ],
            Fault::LedgerQueueFull => &["ConnectorRelayFailing"],
            Fault::Conflict => &["ConnectorQuarantineGrowing"],
            Fault::Stale => &["ConnectorPaysafeStaleItems"],
            Fault::AmountMismatch => &["ConnectorPaysafeAmountMismatch"],
        }
    }
}

/// The alerts of alerts.yml this run does not cause, and why.
pub const NOT_DRIVEN: [(&str, &str); 3] = [
    (
        "ConnectorPaysafeProcessingTooLong",
        "its threshold is a day of PROCESSING (a week for credits); the overlay scales windows, not thresholds, and a tracked item goes STALE at its deadline first (promtool unit test: alerts.test.yml)",
    ),
    (
        "ConnectorPartitionsNotCreatedAhead",
        "needs a table without future partitions while no lifecycle cycle recreates them; each workers process sets the gauge at start only (promtool unit test: alerts.test.yml)",
    ),
    (
        "ConnectorRawRequestsNotArchived",
        "needs a raw-request partition past its retention (minutes of partition rolling) with the archive failing (promtool unit test: alerts.test.yml; e2e evidence_archive)",
    ),
];

/// One alert's result.
#[derive(Debug)]
pub struct Outcome {
    pub alert: String,
    pub fault: Fault,
    pub fired: Option<Duration>,
    pub cleared: Option<Duration>,
    pub note: Option<String>,
}

/// A loop of requests in the background, until stopped.
#[derive(Debug)]
struct Load {
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl Load {
    fn start(traffic: &Arc<Traffic>, refused: bool) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let (flag, traffic) = (Arc::clone(&running), Arc::clone(traffic));
        let task = tokio::spawn(async move {
            let (mut errors, mut first) = (0, None);
            while flag.load(Ordering::SeqCst) {
                if refused {
                    // Each answer is checked: an unexpected one fails the run.
                    if let Err(error) = traffic.refused().await {
                        errors += 1;
                        first.get_or_insert_with(|| format!("{error:#}"));
                    }
                } else {
                    let reference = traffic.reference("L");
                    let body = connector_chaos::bodies::order_json(&reference, "SUCCESS");
                    // 200 or 503, whatever the broker's state: the alerts judge.
                    let _ = traffic
                        .corelink(
                            crate::traffic::UNIT,
                            &reference,
                            &body,
                            crate::traffic::Send::Valid,
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            first.map(|first| {
                format!("{errors} refused rounds answered unexpectedly; first: {first}")
            })
        });
        Self { running, task }
    }

    /// Stops the loop; what went wrong in it, if anything.
    async fn stop(self) -> Option<String> {
        self.running.store(false, Ordering::SeqCst);
        self.task
            .await
            .unwrap_or_else(|e| Some(format!("the request loop failed: {e}")))
    }
}

#[derive(Debug)]
pub struct Driver {
    pub traffic: Arc<Traffic>,
    pub watch: Watch,
    load: Option<Load>,
    /// When each background fault was caused.
    background: Vec<(Fault, Instant)>,
    /// The panel queries, asked again during each fault (once its alerts fire): a panel that
    /// has data only then (the database pause) gets its chance.
    api: Api,
    queries: Vec<PanelQuery>,
    pub passes: Vec<(String, Pass)>,
    /// Checks that failed on the way (an unexpected answer in a request loop).
    pub problems: Vec<String>,
}

impl Driver {
    pub fn new(traffic: Arc<Traffic>, watch: Watch, api: Api, queries: Vec<PanelQuery>) -> Self {
        Self {
            traffic,
            watch,
            load: None,
            background: Vec::new(),
            api,
            queries,
            passes: Vec::new(),
            problems: Vec::new(),
        }
    }

    async fn stop_load(&mut self, fault: Fault) {
        if let Some(load) = self.load.take()
            && let Some(problem) = load.stop().await
        {
            self.problems
                .push(format!("{}: {problem}", fault.describe()));
        }
    }

    /// Causes the background faults.
    pub async fn start_background(&mut self, stack: &mut Stack) -> anyhow::Result<()> {
        for fault in Fault::BACKGROUND {
            let at = Instant::now();
            self.inject(stack, fault).await?;
            out(format!("  caused (background): {}", fault.describe()));
            self.background.push((fault, at));
        }
        Ok(())
    }

    /// One foreground fault: quiet first, caused, fired, removed, cleared.
    pub async fn foreground(
        &mut self,
        stack: &mut Stack,
        fault: Fault,
    ) -> anyhow::Result<Vec<Outcome>> {
        let alerts = fault.alerts();
        // An alert still firing from the previous fault would prove nothing: it must clear.
        let quiet = self
            .watch
            .wait_all(alerts, Duration::from_secs(60), |w, a| {
                (!w.firing_now(a)).then(Instant::now)
            })
            .await;
        let t0 = Instant::now();
        out(format!("fault: {}", fault.describe()));
        self.inject(stack, fault).await?;
        let fired = self
            .watch
            .wait_all(alerts, FIRE_WITHIN, |w, a| w.fired_after(a, t0))
            .await;
        let pass = panels::ask(&self.api, &self.queries).await;
        self.passes
            .push((format!("during: {}", fault.describe()), pass));
        let t1 = Instant::now();
        self.remove(stack, fault).await?;
        out(format!("  removed after {:.0?}", t1 - t0));
        let cleared = self.wait_cleared(alerts, &fired, t1).await;
        let mut outcomes = Vec::new();
        for (i, alert) in alerts.iter().enumerate() {
            outcomes.push(Outcome {
                alert: (*alert).to_owned(),
                fault,
                fired: fired[i].map(|at| at - t0),
                cleared: cleared[i].map(|at| at - t1),
                note: quiet[i]
                    .is_none()
                    .then(|| "already firing before the fault".to_owned()),
            });
        }
        Ok(outcomes)
    }

    /// The background faults' outcomes: fired since they were caused, cleared on their own.
    pub async fn background_outcomes(&self) -> Vec<Outcome> {
        let mut outcomes = Vec::new();
        for (fault, t0) in &self.background {
            let alerts = fault.alerts();
            let fired = self
                .watch
                .wait_all(alerts, FIRE_WITHIN, |w, a| w.fired_after(a, *t0))
                .await;
            let cleared = self.wait_cleared(alerts, &fired, *t0).await;
            for (i, alert) in alerts.iter().enumerate() {
                outcomes.push(Outcome {
                    alert: (*alert).to_owned(),
                    fault: *fault,
                    fired: fired[i].map(|at| at - *t0),
                    cleared: cleared[i].map(|at| at - *t0),
                    note: None,
                });
            }
        }
        outcomes
    }

    /// For each alert that fired: the first moment after `since` (and after it fired) that it
    /// no longer fires. One that never fired is not waited for.
    async fn wait_cleared(
        &self,
        alerts: &[&str],
        fired: &[Option<Instant>],
        since: Instant,
    ) -> Vec<Option<Instant>> {
        let waited: Vec<&str> = alerts
            .iter()
            .zip(fired)
            .filter(|(_, f)| f.is_some())
            .map(|(a, _)| *a)
            .collect();
        let found = self
            .watch
            .wait_all(&waited, CLEAR_WITHIN, |w, a| {
                let index = alerts.iter().position(|x| *x == a)?;
                w.clear_after(a, since.max(fired[index]?))
            })
            .await;
        alerts
            .iter()
            .map(|a| waited.iter().position(|w| w == a).and_then(|i| found[i]))
            .collect()
    }

    async fn inject(&mut self, stack: &mut Stack, fault: Fault) -> anyhow::Result<()> {
        let traffic = Arc::clone(&self.traffic);
        match fault {
            Fault::AuthFailures => self.load = Some(Load::start(&traffic, true)),
            Fault::ApplyStopped => {
                stack.stop_workers(APPLY).await;
                for _ in 0..5 {
                    traffic.unit(&traffic.reference("S"), "SUCCESS").await?;
                }
            }
            Fault::RelayStopped => {
                stack.stop_workers(RELAY).await;
                for _ in 0..3 {
                    traffic.unit(&traffic.reference("O"), "SUCCESS").await?;
                }
                backdate_unpublished(stack).await?;
            }
            Fault::BrokerStopped => {
                self.load = Some(Load::start(&traffic, false));
                stack.stop_broker().await?;
            }
            Fault::DatabaseStopped => {
                stack.stop_postgres()?;
                for _ in 0..3 {
                    traffic.unit(&traffic.reference("D"), "SUCCESS").await?;
                }
            }
            Fault::PaysafeUnauthorized => {
                // An item being polled, polled once, then every poll refused.
                let id = traffic.reference("pay-auth-");
                sim_item(
                    stack,
                    &id,
                    546,
                    json!([{"status": "PROCESSING", "polls": 2}, {"status": "COMPLETED"}]),
                )
                .await?;
                track(stack, &id, 546).await?;
                wait_polled(stack, &id).await?;
                stack
                    .sim(
                        "/__sim/faults",
                        json!({"faults": [{"fault": "unauthorized"}]}),
                    )
                    .await?;
            }
            Fault::DeadLetters => {
                let exchange = stack.topology.intake_exchange.clone();
                let connection = stack.broker_connection().await?;
                publish_to_intake(&connection, &exchange, None, 2).await?;
                publish_to_intake(&connection, &exchange, Some("bnc.account_binding"), 2).await?;
                let _ = connection.close(200, "done".into()).await;
            }
            Fault::LedgerQueueFull => {
                let pattern = format!("^{}$", stack.topology.ledger_queue.replace('.', "\\."));
                stack
                    .rabbitmqctl(&[
                        "set_policy",
                        "ops-live-ledger-full",
                        &pattern,
                        r#"{"max-length": 0}"#,
                        "--apply-to",
                        "queues",
                    ])
                    .await?;
                for _ in 0..3 {
                    traffic.unit(&traffic.reference("F"), "SUCCESS").await?;
                }
            }
            Fault::Conflict => {
                let reference = traffic.reference("X");
                let body = |status| connector_chaos::bodies::order_json(&reference, status);
                for (status, key) in [("SUCCESS", "s"), ("FAILED", "f")] {
                    traffic
                        .expect(
                            crate::traffic::UNIT,
                            &format!("{reference}-{key}"),
                            &body(status),
                            crate::traffic::Send::Valid,
                            reqwest::StatusCode::OK,
                        )
                        .await?;
                    // Applied in this order: the FAILED one is the conflict.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            Fault::Stale => {
                let id = traffic.reference("pay-stale-");
                sim_item(stack, &id, 546, json!([{"status": "PROCESSING"}])).await?;
                track(stack, &id, 546).await?;
            }
            Fault::AmountMismatch => {
                let id = traffic.reference("pay-amount-");
                sim_item(
                    stack,
                    &id,
                    999,
                    json!([{"status": "PROCESSING", "polls": 1}, {"status": "COMPLETED"}]),
                )
                .await?;
                track(stack, &id, 546).await?;
            }
        }
        Ok(())
    }

    async fn remove(&mut self, stack: &mut Stack, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::AuthFailures => self.stop_load(fault).await,
            Fault::ApplyStopped => stack.start_workers(APPLY).await?,
            Fault::RelayStopped => stack.start_workers(RELAY).await?,
            Fault::BrokerStopped => {
                stack.start_broker().await?;
                // Traffic goes on a little, answered 200 again, then stops.
                tokio::time::sleep(Duration::from_secs(3)).await;
                self.stop_load(fault).await;
            }
            Fault::DatabaseStopped => stack.start_postgres().await?,
            Fault::PaysafeUnauthorized => {
                stack.sim("/__sim/faults", json!({"faults": []})).await?;
            }
            Fault::DeadLetters => {
                let queue = stack.topology.intake_dead_letter_queue.clone();
                stack.rabbitmqctl(&["purge_queue", &queue]).await?;
            }
            Fault::LedgerQueueFull => {
                stack
                    .rabbitmqctl(&["clear_policy", "ops-live-ledger-full"])
                    .await?;
            }
            Fault::Conflict | Fault::Stale | Fault::AmountMismatch => {}
        }
        Ok(())
    }
}

/// The relay has been down for 6 minutes, as the database tells it: the unpublished events'
/// creation time moved back (the age gauge is read from the database). Waits until the apply
/// worker has written them.
async fn backdate_unpublished(stack: &Stack) -> anyhow::Result<()> {
    let db = stack.db()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT count(*) FROM ledger_outbox WHERE published_at IS NULL")
                .fetch_one(db)
                .await?;
        if unpublished > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("no unpublished ledger event 30 s after the orders (apply worker?)");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    sqlx::query(
        "UPDATE ledger_outbox SET created_at = created_at - interval '6 minutes' WHERE published_at IS NULL",
    )
    .execute(db)
    .await
    .context("backdating the unpublished ledger events (a partition boundary within 6 minutes?)")?;
    Ok(())
}

/// A payment in the simulator: `amount` CAD, going through `steps`.
pub async fn sim_item(
    stack: &Stack,
    id: &str,
    amount: u64,
    steps: serde_json::Value,
) -> anyhow::Result<()> {
    stack
        .sim(
            "/__sim/items",
            json!({"kind": "payment", "id": id, "merchantRefNum": format!("ref-{id}"),
                   "amount": amount, "currencyCode": "CAD", "steps": steps}),
        )
        .await
        .map(drop)
}

/// The merchant's track command for payment `id` of `amount` CAD (`connector-workers paysafe
/// track`, as ops/run-local sends it).
pub async fn track(stack: &Stack, id: &str, amount: u64) -> anyhow::Result<()> {
    stack
        .admin(&[
            "paysafe",
            "track",
            "--kind",
            "payment",
            "--id",
            id,
            "--merchant-ref-num",
            &format!("ref-{id}"),
            "--amount",
            &amount.to_string(),
            "--currency-code",
            "CAD",
        ])
        .await
        .map(drop)
}

/// Waits until the simulator has answered a poll of `id`.
async fn wait_polled(stack: &Stack, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats: serde_json::Value = reqwest::get(format!("{}/__sim/items/{id}", stack.sim_url))
            .await?
            .json()
            .await?;
        if stats["stats"]["answered"].as_u64().unwrap_or(0) > 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the poller did not poll {id} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
