//! The poller role (DESIGN.md §5): asks Paysafe about items still non-final, applies the
//! answers, and reschedules the rest with exponential backoff and jitter.
//!
//! - Claims are one statement, `FOR UPDATE SKIP LOCKED` plus a lease (the next poll time pushed
//!   out), committed before any HTTP call: any number of pollers share the work, no item is
//!   polled by two at once, and no transaction stays open across a call to Paysafe.
//! - A per-process rate limit caps calls to Paysafe. 429, 5xx, timeouts and network errors
//!   back off; 401/403 pause all polling (our credentials are wrong: say so, and alert).
//! - At its deadline a non-final item becomes STALE: counted and alerted, never given an
//!   invented final status. A webhook that made the item final stops its polling.
//! - Answers are recorded by groups as they arrive, one transaction per group
//!   (`paysafe.record_group_size` answers at most; see [`record`]).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::StatusCode;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use connector_schema::paysafe::{PaysafeStatus, PaysafeTransaction, TrackedKind};

use crate::config::PaysafeSettings;
use crate::paysafe::poll_delay;
use crate::{Step, metrics};

mod record;

use record::{Answer, Polled, Recorded};

/// How one call to Paysafe went, the `outcome` label of the poll metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollOutcome {
    /// Answered with a non-final status: polled again later.
    Pending,
    /// Answered with a final status: done.
    Final,
    RateLimited,
    ServerError,
    Timeout,
    Network,
    /// The TLS handshake with the API failed: most often its certificate is not trusted
    /// (`paysafe.ca_file`), expired, or not for the host in `paysafe.base_url`.
    Tls,
    /// 401/403: our API key is refused.
    Unauthorized,
    /// 404: Paysafe does not know the id (yet, or a wrong id in a track command).
    NotFound,
    /// Any other answer, or a body we cannot read.
    Unexpected,
}

impl PollOutcome {
    pub const ALL: [PollOutcome; 10] = [
        Self::Pending,
        Self::Final,
        Self::RateLimited,
        Self::ServerError,
        Self::Timeout,
        Self::Network,
        Self::Tls,
        Self::Unauthorized,
        Self::NotFound,
        Self::Unexpected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Final => "final",
            Self::RateLimited => "rate_limited",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Network => "network",
            Self::Tls => "tls",
            Self::Unauthorized => "unauthorized",
            Self::NotFound => "not_found",
            Self::Unexpected => "unexpected",
        }
    }
}

#[derive(Debug, Clone)]
struct Claimed {
    id: String,
    kind: TrackedKind,
    attempts: i32,
}

#[derive(Debug)]
pub struct Poller {
    pool: PgPool,
    settings: PaysafeSettings,
    http: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    /// Set by a 401/403: no call to Paysafe before this instant.
    paused_until: Mutex<Option<Instant>>,
    shutdown: CancellationToken,
}

impl Poller {
    pub fn new(
        pool: PgPool,
        settings: PaysafeSettings,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.request_timeout_ms))
            .user_agent(concat!("connector-workers/", env!("CARGO_PKG_VERSION")));
        // Added to the built-in roots, which stay trusted.
        for certificate in settings.ca_certificates()? {
            http = http.add_root_certificate(
                reqwest::Certificate::from_der(&certificate)
                    .context("paysafe.ca_file: a certificate the HTTP client refuses")?,
            );
        }
        let http = http.build().context("building the Paysafe HTTP client")?;
        let per_second = NonZeroU32::new(settings.rate_limit_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            pool,
            http,
            limiter: RateLimiter::direct(Quota::per_second(per_second)),
            settings,
            paused_until: Mutex::new(None),
            shutdown,
        })
    }

    /// One round: marks items past their deadline STALE, then claims the due items (up to
    /// `claim_batch`) and polls them. `Idle` when nothing was due (or polling is paused).
    pub async fn run_once(&self) -> anyhow::Result<Step> {
        let expired = self.expire_overdue().await?;
        // What the round did when it polls nothing: only the expiry, if any.
        let expired_only = if expired > 0 {
            Step::Processed
        } else {
            Step::Idle
        };
        if self.paused() {
            return Ok(expired_only);
        }
        let claimed = self.claim().await?;
        if claimed.is_empty() {
            return Ok(expired_only);
        }
        // The calls feed a channel that the recorder drains by groups of what is in hand: a
        // slow call never holds back answers already received, and calls go on while a group
        // commits (`ready_chunks` on the same stream would pause them). The channel holds every
        // claimed item, so a send never waits.
        let (answers, mut in_hand) = tokio::sync::mpsc::channel(claimed.len());
        let polls = async move {
            futures_util::stream::iter(claimed)
                .map(|item| self.poll(item))
                .buffer_unordered(self.settings.concurrency)
                .for_each(|polled| {
                    let answers = &answers;
                    async move {
                        // Cannot fail: the receiver outlives this block.
                        let _ = answers.send(polled).await;
                    }
                })
                .await;
            // `answers` is dropped here: the recorder drains what is left, then stops.
        };
        let record = async {
            // Validated > 0; a zero limit would make `recv_many` return 0 and drop answers.
            let size = self.settings.record_group_size.max(1);
            let mut group = Vec::with_capacity(size);
            while in_hand.recv_many(&mut group, size).await > 0 {
                self.record_group(std::mem::take(&mut group)).await;
            }
        };
        tokio::join!(polls, record);
        Ok(Step::Processed)
    }

    /// The poller's counters, at zero (`metrics::at_zero` says why): polls by kind and
    /// outcome, STALE items by kind, amount mismatches.
    pub fn export_counters_at_zero() {
        for kind in TrackedKind::ALL {
            for outcome in PollOutcome::ALL {
                let labels = [("kind", kind.as_str()), ("outcome", outcome.as_str())];
                metrics::at_zero(metrics::PAYSAFE_POLLS_TOTAL, &labels);
            }
            metrics::at_zero(metrics::PAYSAFE_STALE_TOTAL, &[("kind", kind.as_str())]);
        }
        metrics::at_zero(metrics::PAYSAFE_AMOUNT_MISMATCHES_TOTAL, &[]);
    }

    /// Polls until `shutdown`, refreshing the tracking gauges as it goes.
    pub async fn run(self) {
        tracing::info!(base_url = %self.settings.base_url, "poller running");
        metrics::paysafe_auth_failed(false);
        let mut gauges_at = Instant::now() - Duration::from_secs(3600);
        while !self.shutdown.is_cancelled() {
            if gauges_at.elapsed() >= Duration::from_secs(10) {
                if let Err(error) = self.refresh_gauges().await {
                    tracing::warn!(%error, "tracking gauges not refreshed");
                }
                gauges_at = Instant::now();
            }
            let idle = match self.run_once().await {
                Ok(Step::Processed) => false,
                Ok(Step::Idle) => true,
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "poller round failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = self.shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(self.settings.idle_interval_ms)) => {}
                }
            }
        }
        tracing::info!("poller stopped");
    }

    fn paused(&self) -> bool {
        let mut paused = self.paused_until.lock().unwrap_or_else(|e| e.into_inner());
        match *paused {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                *paused = None;
                metrics::paysafe_auth_failed(false);
                tracing::info!("retrying Paysafe after the authentication pause");
                false
            }
            None => false,
        }
    }

    /// Items still non-final at their deadline become STALE (never given a final status).
    async fn expire_overdue(&self) -> anyhow::Result<usize> {
        let expired: Vec<(String, String, String)> = sqlx::query_as(
            "WITH expired AS (
                 UPDATE paysafe_items SET tracking = 'stale', next_poll_at = NULL, updated_at = now()
                 WHERE tracking = 'polling' AND deadline_at <= now()
                 RETURNING id, kind, status
             ), history AS (
                 INSERT INTO paysafe_item_history (item_id, source, status, previous_status, effect)
                 SELECT id, 'deadline', status, status, 'expired' FROM expired
             )
             SELECT id, kind, status FROM expired",
        )
        .fetch_all(&self.pool)
        .await
        .context("expiring overdue items")?;
        for (id, kind, status) in &expired {
            tracing::warn!(%id, %kind, %status, "deadline reached while non-final: item is STALE, review it");
            metrics::paysafe_stale(kind.clone());
        }
        Ok(expired.len())
    }

    async fn claim(&self) -> anyhow::Result<Vec<Claimed>> {
        let rows: Vec<(String, String, i32)> = sqlx::query_as(
            "WITH due AS (
                 SELECT id FROM paysafe_items
                 WHERE tracking = 'polling' AND next_poll_at <= now()
                 ORDER BY next_poll_at
                 LIMIT $1
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE paysafe_items p SET next_poll_at = now() + $2 * interval '1 second'
             FROM due WHERE p.id = due.id
             RETURNING p.id, p.kind, p.poll_attempts",
        )
        .bind(self.settings.claim_batch)
        .bind(self.settings.claim_lease_secs as f64)
        .fetch_all(&self.pool)
        .await
        .context("claiming due items")?;
        rows.into_iter()
            .map(|(id, kind, attempts)| {
                let kind = TrackedKind::parse(&kind)
                    .with_context(|| format!("stored kind {kind} of {id} is unknown"))?;
                Ok(Claimed { id, kind, attempts })
            })
            .collect()
    }

    /// Calls Paysafe about one claimed item: what is left to record about it.
    async fn poll(&self, item: Claimed) -> Polled {
        self.limiter.until_ready().await;
        let started = Instant::now();
        let url = format!(
            "{}{}",
            self.settings.base_url.trim_end_matches('/'),
            item.kind.api_path(&item.id)
        );
        let answer = self
            .http
            .get(&url)
            .basic_auth(
                &self.settings.api_username,
                Some(&self.settings.api_password),
            )
            .send()
            .await;
        let (outcome, transaction, retry_after) = match answer {
            Err(error) if error.is_timeout() => (PollOutcome::Timeout, None, None),
            Err(error) if is_tls_failure(&error) => (PollOutcome::Tls, None, None),
            Err(_) => (PollOutcome::Network, None, None),
            Ok(response) => classify(response).await,
        };
        metrics::paysafe_poll(item.kind.as_str(), outcome.as_str(), started.elapsed());
        let status = transaction
            .as_ref()
            .and_then(PaysafeTransaction::parsed_status);
        let answer = match (outcome, transaction, status) {
            (PollOutcome::Pending | PollOutcome::Final, Some(transaction), Some(status)) => {
                Answer::Status {
                    status,
                    transaction: Box::new(transaction),
                }
            }
            (PollOutcome::Unauthorized, _, _) => {
                let pause = Duration::from_secs(self.settings.auth_pause_secs);
                *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + pause);
                metrics::paysafe_auth_failed(true);
                tracing::error!(
                    id = %item.id,
                    ?pause,
                    "Paysafe refused our API key (401/403): polling paused; check paysafe.api_username and paysafe.api_password"
                );
                Answer::Backoff {
                    delay: pause,
                    outcome,
                    count_attempt: false,
                }
            }
            (outcome, _, _) => {
                let delay = poll_delay(&self.settings, attempts(&item))
                    .max(retry_after.unwrap_or_default());
                if outcome == PollOutcome::Tls {
                    tracing::error!(id = %item.id, outcome = outcome.as_str(), ?delay, "TLS with the Paysafe API failed (its certificate is not trusted, expired or not for that host); backing off: check paysafe.base_url and paysafe.ca_file");
                } else {
                    tracing::warn!(id = %item.id, outcome = outcome.as_str(), ?delay, "poll failed; backing off");
                }
                Answer::Backoff {
                    delay,
                    outcome,
                    count_attempt: true,
                }
            }
        };
        Polled { item, answer }
    }

    /// Records a group of answers in one transaction (see [`record`]), then reports each.
    ///
    /// When the group fails as a whole for a transient reason (most likely the database going
    /// away), its answers are recorded again one item per transaction: they cost a call to
    /// Paysafe each. The first lone item that fails transiently too means the database is away: the
    /// rest are left to their leases (polled again when those expire), as are the items of a
    /// group failing for another reason (the commit refused).
    async fn record_group(&self, group: Vec<Polled>) {
        match record::group(&self.pool, &self.settings, &group).await {
            Ok(recorded) => report(&group, recorded),
            Err(failure) if failure.transient && group.len() > 1 => {
                tracing::warn!(items = group.len(), error = %failure.error, "poll group not recorded; recording its items one at a time");
                for polled in group {
                    let alone = std::slice::from_ref(&polled);
                    match record::group(&self.pool, &self.settings, alone).await {
                        Ok(recorded) => report(alone, recorded),
                        Err(failure) => {
                            tracing::warn!(id = %polled.item.id, error = %failure.error, "poll not recorded; its lease brings it back");
                            if failure.transient {
                                break;
                            }
                        }
                    }
                }
            }
            Err(failure) => {
                // The leases expire and the items are polled again: nothing is lost.
                for polled in &group {
                    tracing::warn!(id = %polled.item.id, error = %failure.error, "poll not recorded; its lease brings it back");
                }
            }
        }
    }

    /// Items by kind and tracking state, and the oldest still polled, for the dashboards.
    pub async fn refresh_gauges(&self) -> anyhow::Result<()> {
        // Every combination, zeros included, so a gauge falls back to 0 when its last item
        // moves on instead of keeping its old value.
        let statuses: Vec<&str> = PaysafeStatus::ALL.iter().map(|s| s.as_str()).collect();
        let counts: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT k.kind, t.tracking, s.status, count(p.id)
             FROM (VALUES ('payment'), ('standalone_credit')) AS k(kind)
             CROSS JOIN (VALUES ('polling'), ('final'), ('stale')) AS t(tracking)
             CROSS JOIN UNNEST($1::text[]) AS s(status)
             LEFT JOIN paysafe_items p
                    ON p.kind = k.kind AND p.tracking = t.tracking AND p.status = s.status
             GROUP BY k.kind, t.tracking, s.status",
        )
        .bind(&statuses)
        .fetch_all(&self.pool)
        .await?;
        for (kind, tracking, status, count) in counts {
            metrics::paysafe_items(kind, tracking, status, count);
        }
        let oldest: Vec<(String, Option<f64>)> = sqlx::query_as(
            "SELECT k.kind, EXTRACT(EPOCH FROM now() - min(p.created_at))::float8
             FROM (VALUES ('payment'), ('standalone_credit')) AS k(kind)
             LEFT JOIN paysafe_items p ON p.kind = k.kind AND p.tracking = 'polling'
             GROUP BY k.kind",
        )
        .fetch_all(&self.pool)
        .await?;
        for (kind, age) in oldest {
            metrics::paysafe_oldest_polling_age(kind, age.unwrap_or(0.0));
        }
        Ok(())
    }
}

/// Whether rustls refused the connection. reqwest nests its causes (hyper's connect error, an
/// `io::Error` wrapping another wrapping rustls's); `io::Error::source` skips the error it
/// wraps, so the walk goes through `get_ref` there.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<rustls::Error>() {
            return true;
        }
        cause = match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(wrapped) => Some(wrapped),
            None => error.source(),
        };
    }
    false
}

fn attempts(item: &Claimed) -> u32 {
    u32::try_from(item.attempts).unwrap_or(0)
}

/// What a lone poll reported after its commit, for each member of a committed group.
fn report(group: &[Polled], recorded: Vec<Recorded>) {
    for (polled, recorded) in group.iter().zip(recorded) {
        let id = &polled.item.id;
        match recorded {
            Recorded::Applied { status, observed } => {
                if observed.amount_mismatch {
                    metrics::paysafe_amount_mismatch();
                }
                tracing::info!(%id, %status, effect = ?observed.effect, "polled");
            }
            Recorded::BackedOff | Recorded::NotPolling => {}
            // Rolled back alone: the lease expires and the item is polled again.
            Recorded::Failed(error) => {
                tracing::warn!(%id, %error, "poll not recorded; its lease brings it back");
            }
        }
    }
}

/// What an HTTP answer means, with the transaction when there is one and Paysafe's
/// `Retry-After` on a 429.
async fn classify(
    response: reqwest::Response,
) -> (PollOutcome, Option<PaysafeTransaction>, Option<Duration>) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    match status {
        StatusCode::OK => match response.json::<PaysafeTransaction>().await {
            Ok(transaction) => {
                let outcome = match transaction.parsed_status() {
                    Some(status) if status.is_final() => PollOutcome::Final,
                    Some(_) => PollOutcome::Pending,
                    None => PollOutcome::Unexpected,
                };
                (outcome, Some(transaction), None)
            }
            Err(_) => (PollOutcome::Unexpected, None, None),
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => (PollOutcome::Unauthorized, None, None),
        StatusCode::NOT_FOUND => (PollOutcome::NotFound, None, None),
        StatusCode::TOO_MANY_REQUESTS => (PollOutcome::RateLimited, None, retry_after),
        s if s.is_server_error() => (PollOutcome::ServerError, None, None),
        _ => (PollOutcome::Unexpected, None, None),
    }
}
