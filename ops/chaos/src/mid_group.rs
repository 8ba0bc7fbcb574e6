//! The mid-group kill: a workers process SIGKILLed while one of its group transactions is
//! provably open, several messages into its group, and proven afterwards to have been rolled
//! back.
//!
//! The apply role writes a group in ONE transaction, one savepoint per message. Each savepoint
//! that writes gets a transaction id of its own, which PostgreSQL keeps as a lock of the
//! transaction once the savepoint is released (and drops when it is rolled back). So
//! `pg_locks` tells how many messages of the group have their rows in the open transaction.
//! The harness polls `pg_stat_activity` and `pg_locks` for a transaction of the target
//! process (by its `application_name`) with rows written and at least [`MIN_MESSAGES`] such
//! savepoints, SIGKILLs the process at once, and then requires `txid_status` of that
//! transaction to read `aborted`: it was open at the kill, and none of it committed. Its
//! deliveries, acknowledged only after a commit, come back from the broker; the end-of-run
//! checks prove each was applied exactly once.
//!
//! Nothing is locked or slowed down: an earlier version held `LOCK TABLE received_messages
//! IN SHARE MODE` to freeze the groups, but any hold long enough to also read the broker
//! (`rabbitmqctl` takes 1 to 5 s here under load) outlasts the harness's 2 s consumer
//! timeout: it cost 144 consumer timeouts and 209 messages dead-lettered past the delivery
//! limit in one run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::PgPool;

use crate::configs::workers_application_name;
use crate::harness::{Harness, Role};

/// Savepoints with writes the open transaction must hold: the group's first message written,
/// the next one under way, so that the kill falls inside the group, not at its start.
const MIN_MESSAGES: i64 = 2;
/// How long the harness keeps trying (the workers may still be reconnecting after the
/// round's infrastructure fault) before the kill counts as unproven.
const PROVE_WITHIN: Duration = Duration::from_secs(20);
/// How long the killed transaction may take to end.
const END_WITHIN: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// The open transactions of one process with rows written, the most messages first: the
/// backend, its transaction id (with its epoch, for `txid_status`), and how many transaction
/// ids it holds beyond its own (one per savepoint with writes).
const OPEN_GROUPS: &str = "SELECT a.pid,
            ((txid_snapshot_xmax(txid_current_snapshot()) >> 32) << 32) + a.backend_xid::text::bigint,
            (SELECT count(*) FROM pg_locks l
              WHERE l.pid = a.pid AND l.locktype = 'transactionid' AND l.granted
                AND l.mode = 'ExclusiveLock') - 1
       FROM pg_stat_activity a
      WHERE a.application_name = $1
        AND a.xact_start IS NOT NULL
        AND a.backend_xid IS NOT NULL
      ORDER BY 3 DESC";

/// What one mid-group kill proved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// Messages of the group with their rows in the open transaction at the kill.
    pub messages: i64,
    /// Other open transactions of the process with rows written at the kill.
    pub others: usize,
    /// Processes killed to get there (a transaction that committed first does not count).
    pub attempts: usize,
}

impl Proof {
    /// The round line's account of it.
    pub fn line(&self) -> String {
        format!(
            "mid-group: {} messages written in the open transaction at the kill, rolled back (+{} other open transactions; attempt {})",
            self.messages, self.others, self.attempts
        )
    }
}

/// SIGKILLs workers process `index` mid-group (see the module) and restarts it; returns the
/// proof, or why it could not be given (the process was still killed: the round has its
/// fault).
pub async fn kill_mid_group(
    harness: &mut Harness,
    index: usize,
) -> anyhow::Result<Result<Proof, String>> {
    let db = harness.db()?.clone();
    let name = workers_application_name(index);
    let started = Instant::now();
    let mut attempts = 0;
    let mut last = format!("no transaction of {name} with {MIN_MESSAGES} messages written");
    loop {
        let open = loop {
            let open = open_groups(&db, &name).await?;
            if open.first().is_some_and(|(_, _, n)| *n >= MIN_MESSAGES)
                || started.elapsed() >= PROVE_WITHIN
            {
                break open;
            }
            tokio::time::sleep(POLL).await;
        };
        attempts += 1;
        harness.kill_process(Role::Workers, index).await;
        let outcome = match open.first() {
            Some((_, xid, messages)) if *messages >= MIN_MESSAGES => {
                match ended_aborted(&db, *xid).await? {
                    Ok(()) => Ok(Proof {
                        messages: *messages,
                        others: open.len() - 1,
                        attempts,
                    }),
                    Err(problem) => Err(problem),
                }
            }
            _ => Err(last.clone()),
        };
        harness.tick(Duration::from_secs(1)).await;
        harness.start_process(Role::Workers, index)?;
        match outcome {
            Ok(proof) => return Ok(Ok(proof)),
            Err(problem) if started.elapsed() >= PROVE_WITHIN => {
                return Ok(Err(format!(
                    "workers-{} mid-group kill not proven within {PROVE_WITHIN:?} ({attempts} kills; last: {problem})",
                    index + 1
                )));
            }
            Err(problem) => last = problem,
        }
    }
}

async fn open_groups(db: &PgPool, name: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    sqlx::query_as(OPEN_GROUPS)
        .bind(name)
        .fetch_all(db)
        .await
        .context("reading pg_stat_activity and pg_locks")
}

/// Waits until the killed transaction has ended; `Err` says why it proves nothing: it
/// committed (it finished before the kill landed), or it is still open.
async fn ended_aborted(db: &PgPool, xid: i64) -> anyhow::Result<Result<(), String>> {
    let started = Instant::now();
    loop {
        let status: Option<String> = sqlx::query_scalar("SELECT txid_status($1)")
            .bind(xid)
            .fetch_one(db)
            .await
            .context("reading the killed transaction's status")?;
        match status.as_deref() {
            Some("aborted") => return Ok(Ok(())),
            Some("committed") => {
                return Ok(Err(format!(
                    "transaction {xid} committed before the kill landed"
                )));
            }
            _ if started.elapsed() >= END_WITHIN => {
                return Ok(Err(format!(
                    "transaction {xid} still open {END_WITHIN:?} after the kill"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}
