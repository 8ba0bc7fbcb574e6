//! Group commit for the poller: the answers in hand recorded in ONE transaction, each inside
//! its own savepoint, so that a group costs one commit (one WAL flush) however many answers it
//! holds, while every item ends as it would have alone:
//!
//! - an answer with a status → the item's row locked, the answer observed (status, history,
//!   outbox event) and the next poll scheduled, unless the item stopped being polled meanwhile
//!   (a webhook made it final: that fact stands);
//! - no answer to apply (429, 5xx, 404, timeout, ...) → the item's backoff recorded;
//! - a non-transient database error → that item alone rolled back to its savepoint: its lease
//!   expires and it is polled again, nothing is lost;
//! - a transient failure (connection lost, deadlock, lock timeout) aborts the whole transaction:
//!   the group fails as a whole and the caller decides what to retry.
//!
//! See [`group`] for the lock order.

use std::time::Duration;

use sqlx::{Connection as _, PgConnection, PgPool};

use connector_schema::paysafe::{PaysafeStatus, PaysafeTransaction};

use super::{Claimed, PollOutcome, attempts};
use crate::config::PaysafeSettings;
use crate::group_transaction::{self, GroupFailure, GroupKeys};
use crate::outcome::ApplyError;
use crate::paysafe::{Effect, FactSource, Observation, Observed, observe, poll_delay};

/// What one call to Paysafe left to record about its item.
#[derive(Debug)]
pub(super) enum Answer {
    /// Paysafe answered with a status we know: applied. (Boxed: a transaction is far larger
    /// than a backoff.)
    Status {
        status: PaysafeStatus,
        transaction: Box<PaysafeTransaction>,
    },
    /// Nothing to apply: polled again after `delay`, with `outcome` as the last poll's.
    Backoff {
        delay: Duration,
        outcome: PollOutcome,
        count_attempt: bool,
    },
}

/// A claimed item and Paysafe's answer about it, waiting for its group.
#[derive(Debug)]
pub(super) struct Polled {
    pub item: Claimed,
    pub answer: Answer,
}

/// What a committed group did to one item, to report now that it is durable.
#[derive(Debug)]
pub(super) enum Recorded {
    Applied {
        status: PaysafeStatus,
        observed: Observed,
    },
    BackedOff,
    /// No longer polled when its row was locked: the answer is dropped.
    NotPolling,
    /// Rolled back to its savepoint, alone: the lease brings it back.
    Failed(String),
}

/// Records `members` in one transaction and commits it; returns each member's result, in the
/// order of `members`. On `Err` nothing was written.
///
/// Lock order: pollers never hold the same item (claims are leases taken with `SKIP LOCKED`),
/// but the apply role can write a member's row concurrently (a webhook or a track command about
/// it) in a group of its own. Both take the items' locks first, in one global order
/// (`crate::group_transaction`), so they wait for each other and never deadlock.
pub(super) async fn group(
    pool: &PgPool,
    settings: &PaysafeSettings,
    members: &[Polled],
) -> Result<Vec<Recorded>, GroupFailure> {
    let mut keys = GroupKeys::default();
    for polled in members {
        keys.paysafe_item(&polled.item.id);
    }
    let mut tx = group_transaction::begin(pool, "BEGIN".to_owned(), keys).await?;
    let mut recorded = Vec::with_capacity(members.len());
    for polled in members {
        recorded.push(one(&mut tx, settings, polled).await?);
    }
    tx.commit().await.map_err(|e| GroupFailure::database(&e))?;
    Ok(recorded)
}

/// One member inside the group's transaction, in a savepoint of its own. `Err` only for what
/// fails the whole group.
async fn one(
    conn: &mut PgConnection,
    settings: &PaysafeSettings,
    polled: &Polled,
) -> Result<Recorded, GroupFailure> {
    let mut savepoint = conn.begin().await.map_err(|e| GroupFailure::database(&e))?;
    let result = match &polled.answer {
        Answer::Status {
            status,
            transaction,
        } => apply(&mut savepoint, settings, &polled.item, *status, transaction).await,
        Answer::Backoff {
            delay,
            outcome,
            count_attempt,
        } => back_off(
            &mut savepoint,
            &polled.item,
            *delay,
            *outcome,
            *count_attempt,
        )
        .await
        .map(|()| Recorded::BackedOff)
        .map_err(ApplyError::from),
    };
    Ok(group_transaction::end_savepoint(savepoint, result)
        .await?
        .unwrap_or_else(|error| Recorded::Failed(error.to_string())))
}

/// Applies Paysafe's answer, unless the item stopped being polled meanwhile (a webhook made it
/// final: that fact stands).
async fn apply(
    conn: &mut PgConnection,
    settings: &PaysafeSettings,
    item: &Claimed,
    status: PaysafeStatus,
    transaction: &PaysafeTransaction,
) -> Result<Recorded, ApplyError> {
    let tracking: Option<String> =
        sqlx::query_scalar("SELECT tracking FROM paysafe_items WHERE id = $1 FOR UPDATE")
            .bind(&item.id)
            .fetch_optional(&mut *conn)
            .await?;
    if tracking.as_deref() != Some("polling") {
        return Ok(Recorded::NotPolling);
    }
    let observation = Observation {
        kind: item.kind,
        id: &item.id,
        status,
        status_at: transaction.status_changed_at(),
        merchant_ref_num: transaction.merchant_ref_num.as_deref(),
        amount: transaction.amount,
        currency_code: transaction.currency_code.as_deref(),
        source: FactSource::Poll,
        event_name: None,
        message_id: None,
    };
    let observed = match observe(&mut *conn, &observation, settings).await {
        Ok(observed) => observed,
        Err(ApplyError::Quarantine { detail, .. }) => {
            // Cannot happen while the item is polled (non-final); kept loud if it does.
            tracing::error!(id = %item.id, %detail, "Paysafe answer contradicts what we know");
            Observed {
                effect: Effect::Unchanged,
                amount_mismatch: false,
            }
        }
        Err(error) => return Err(error),
    };
    if !status.is_final() {
        sqlx::query(
            "UPDATE paysafe_items
             SET poll_attempts = poll_attempts + 1, last_polled_at = now(), last_poll_outcome = 'pending',
                 next_poll_at = now() + $2 * interval '1 millisecond'
             WHERE id = $1",
        )
        .bind(&item.id)
        .bind(poll_delay(settings, attempts(item) + 1).as_millis() as f64)
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query(
            "UPDATE paysafe_items SET last_polled_at = now(), last_poll_outcome = 'final' WHERE id = $1",
        )
        .bind(&item.id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Recorded::Applied { status, observed })
}

/// Schedules the next poll of an item still polled.
async fn back_off(
    conn: &mut PgConnection,
    item: &Claimed,
    delay: Duration,
    outcome: PollOutcome,
    count_attempt: bool,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE paysafe_items
         SET next_poll_at = now() + $2 * interval '1 millisecond', last_polled_at = now(),
             last_poll_outcome = $3, poll_attempts = poll_attempts + $4
         WHERE id = $1 AND tracking = 'polling'",
    )
    .bind(&item.id)
    .bind(delay.as_millis() as f64)
    .bind(outcome.as_str())
    .bind(i32::from(count_attempt))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
