//! The PostgreSQL cluster's faults under load (`--postgres-ha`): the primary lost (its
//! PostgreSQL or its Patroni SIGKILLed), a planned switchover, the DCS cut. Each is timed as
//! the workers see it: from the fault to the first commit on the new primary, seen through
//! HAProxy as the count of applied messages growing once Patroni names the new leader; the
//! workers' readiness and the relay are watched meanwhile (`failover_watch`). The round then
//! waits until the cluster is whole again (a synchronous standby streaming), so that no fault
//! lands on a cluster still missing its standby.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;

use crate::failover_watch::{Seen, Watch};
use crate::harness::Harness;

/// How long the primary's Patroni stays dead, and the DCS stays cut: beyond the leader key's
/// TTL (10 s), so that the key expires.
const DOWN: Duration = Duration::from_secs(12);
/// How long the standby's WAL receiver is stopped before the primary is killed.
const BEHIND: Duration = Duration::from_secs(1);
/// A failover not done within this is reported as such (the run goes on; the checks decide).
const FIRST_COMMIT_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterFault {
    KillPrimary,
    /// The primary killed after its WAL sender was stopped for a second.
    KillPrimaryAheadOfStandby,
    KillPrimaryPatroni,
    Switchover,
    CutDcs,
}

/// What one cluster fault did, for the round line and the summary.
#[derive(Debug, Clone)]
pub struct Failover {
    pub fault: ClusterFault,
    pub from: String,
    pub to: String,
    /// From the fault (for the DCS cut: from the DCS's return) to the first commit seen on the
    /// primary after it; `None` when none came within `FIRST_COMMIT_WITHIN`.
    pub first_commit: Option<Duration>,
    /// From the fault until the cluster was whole again.
    pub whole: Duration,
    /// The workers' readiness and the relay meanwhile.
    pub seen: Seen,
}

impl Failover {
    /// Whether the primary changed hands.
    pub fn primary_lost(&self) -> bool {
        self.from != self.to
    }

    pub fn line(&self) -> String {
        format!(
            "primary {} -> {}: first commit {} after the {}, cluster whole after {:.1} s; {}",
            self.from,
            self.to,
            self.first_commit.map_or_else(
                || "NOT SEEN".into(),
                |d| format!("{:.1} s", d.as_secs_f64())
            ),
            match self.fault {
                ClusterFault::CutDcs => "DCS came back",
                _ => "fault",
            },
            self.whole.as_secs_f64(),
            self.seen.line()
        )
    }
}

/// Injects `fault` on the harness's Patroni cluster and times the way back.
pub async fn fail_over(harness: &mut Harness, fault: ClusterFault) -> anyhow::Result<Failover> {
    let db = harness.db()?.clone();
    let from = harness
        .pg_cluster()?
        .wait_healthy(Duration::from_secs(120))
        .await?;
    let watch = Watch::start(
        harness.workers_ready_urls(),
        harness.inspect_connection().await?,
        harness.topology().ledger_queue.clone(),
    )
    .await?;
    let started = Instant::now();
    let cluster = harness.pg_cluster()?;
    let mut measured_from = started;
    match fault {
        ClusterFault::KillPrimary => {
            cluster.kill_primary_postgres().await?;
        }
        ClusterFault::KillPrimaryAheadOfStandby => {
            cluster.kill_primary_ahead_of_standby(BEHIND).await?;
        }
        ClusterFault::KillPrimaryPatroni => {
            cluster.kill_primary_patroni().await?;
        }
        ClusterFault::Switchover => {
            cluster.switchover().await?;
        }
        ClusterFault::CutDcs => {
            cluster.stop_dcs().await;
            harness.tick(DOWN).await;
            harness.pg_cluster()?.start_dcs()?;
            measured_from = Instant::now();
        }
    }
    let first_commit_at = first_commit_after(harness, &db, &from, fault).await?;
    let first_commit = first_commit_at.map(|at| at - measured_from);
    if fault == ClusterFault::KillPrimaryPatroni {
        // Its Patroni back: it demotes and rewinds the old primary, which becomes the standby.
        let since = started.elapsed();
        if since < DOWN {
            harness.tick(DOWN - since).await;
        }
        harness.pg_cluster()?.start_stopped_patroni()?;
    }
    let to = harness
        .pg_cluster()?
        .wait_healthy(Duration::from_secs(180))
        .await
        .context("after the fault")?;
    let whole = started.elapsed();
    Ok(Failover {
        fault,
        from,
        to,
        first_commit,
        whole,
        seen: watch.finish(started, first_commit_at).await,
    })
}

/// When a commit was first seen after `fault`: once Patroni names a leader, the applied
/// messages counted through HAProxy, every 100 ms, until the count grows. Where the old primary
/// can still commit for a while (a switchover, an orphaned primary until HAProxy cuts it),
/// only a new leader counts; a primary whose PostgreSQL was killed may also be restarted in
/// place by Patroni (when it finds the standby too far behind), and then its first commit
/// counts.
async fn first_commit_after(
    harness: &mut Harness,
    db: &PgPool,
    from: &str,
    fault: ClusterFault,
) -> anyhow::Result<Option<Instant>> {
    let deadline = Instant::now() + FIRST_COMMIT_WITHIN;
    let must_change = matches!(
        fault,
        ClusterFault::Switchover | ClusterFault::KillPrimaryPatroni
    );
    let mut baseline = None;
    while Instant::now() < deadline {
        harness.tick(Duration::from_millis(100)).await;
        let Some(state) = harness.pg_cluster()?.state().await else {
            continue;
        };
        let Some(leader) = state.leader else {
            continue;
        };
        if must_change && leader == from {
            continue;
        }
        let Some(count) = applied(db).await else {
            continue;
        };
        match baseline {
            None => baseline = Some(count),
            Some(first) if count > first => return Ok(Some(Instant::now())),
            Some(_) => {}
        }
    }
    Ok(None)
}

/// Messages applied so far, or `None` while the database does not answer.
async fn applied(db: &PgPool) -> Option<i64> {
    let query = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM received_messages");
    tokio::time::timeout(Duration::from_secs(1), query.fetch_one(db))
        .await
        .ok()?
        .ok()
}
