//! Group commit: the admitted messages of a group applied in ONE transaction, each inside its
//! own savepoint, so that a group costs one commit (one WAL flush) however many messages it
//! holds, while every message keeps the outcome it would have had alone:
//!
//! - applied, duplicate, replay or ignored → its savepoint is released;
//! - quarantined → rolled back to its savepoint, then held in quarantine (a savepoint of its
//!   own) in the same transaction;
//! - unreadable → rolled back to its savepoint, dead-lettered once the group is committed;
//! - an unexpected, non-transient database error → rolled back to its savepoint and requeued,
//!   alone;
//! - a transient failure (connection lost, deadlock, serialization failure) aborts the whole
//!   transaction: the group fails as a whole and the caller retries it.
//!
//! Corelink unit notifications that share no key with another member (most of them, under a
//! bank's steady flow) are first applied together, one statement per table for all of them
//! (`corelink::units`): each only when it would be applied alone, the others left to their own
//! savepoints; sharing nothing, they do not depend on the order of the two passes.
//!
//! Messages are applied in delivery order, so two notifications of one order in a group apply
//! as they would one after the other. Before any of them, the transaction locks every key its
//! members can write, in one global order (`crate::group_transaction`): groups sharing an order
//! or a nonce wait for each other instead of deadlocking. Nothing here talks to the broker: the
//! caller settles the deliveries once [`apply`] returned, i.e. after the commit.

use sqlx::{Connection, PgConnection, PgPool};
use tracing::Instrument;

use connector_schema::{IntakeEnvelope, IntakeKind};

use crate::config::PaysafeSettings;
use crate::group_transaction::{self, GroupFailure, GroupKeys};
use crate::intake::Admitted;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::{self, QuarantineReason};
use crate::{bnc, corelink, db, metrics, paysafe};

use super::{Disposition, GROUP_SETTINGS};

/// How often a message meeting a concurrent creation of its order is tried again inside the
/// group before the group as a whole is retried.
const CONTENTION_ATTEMPTS: usize = 3;

/// What a committed group did to one message: its disposition, and what to report about it
/// now that it is durable.
#[derive(Debug)]
struct Done {
    disposition: Disposition,
    quarantined: Option<(QuarantineReason, String)>,
    amount_mismatch: bool,
}

impl Done {
    fn of(disposition: Disposition) -> Self {
        Self {
            disposition,
            quarantined: None,
            amount_mismatch: false,
        }
    }
}

/// The tracing span of one message, as a lone apply had it.
pub(super) fn span(envelope: &IntakeEnvelope) -> tracing::Span {
    tracing::info_span!(
        "apply",
        message_id = %envelope.message_id,
        kind = envelope.kind.routing_key(),
        client_id = envelope.client_id.as_deref().unwrap_or_default(),
        idempotency_key = envelope.header("x-idempotency-key").unwrap_or_default(),
    )
}

/// Applies `members` in one transaction and commits it; returns each message's disposition,
/// in order. On `Err` nothing was written and no message has a disposition yet.
pub(super) async fn apply(
    pool: &PgPool,
    paysafe: &PaysafeSettings,
    members: &[&Admitted],
) -> Result<Vec<Disposition>, GroupFailure> {
    let done = apply_in_savepoints(pool, paysafe, members).await?;
    // Durable now: what a lone apply reported after its commit.
    Ok(members
        .iter()
        .zip(done)
        .map(|(admitted, done)| {
            let _entered = span(&admitted.envelope).entered();
            if done.amount_mismatch {
                metrics::paysafe_amount_mismatch();
            }
            match (&done.disposition, &done.quarantined) {
                (_, Some((reason, detail))) => {
                    tracing::warn!(reason = reason.as_str(), %detail, "quarantined");
                    metrics::quarantined(reason.as_str());
                }
                (Disposition::Ack(outcome), None) => tracing::info!(outcome, "applied"),
                _ => {}
            }
            done.disposition
        })
        .collect())
}

/// The units sharing nothing together, then every other message in a savepoint of its own, so
/// that one that fails is undone alone.
async fn apply_in_savepoints(
    pool: &PgPool,
    paysafe: &PaysafeSettings,
    members: &[&Admitted],
) -> Result<Vec<Done>, GroupFailure> {
    let (keys, reads): (Vec<GroupKeys>, Vec<Option<corelink::Read>>) =
        members.iter().map(|m| keys_of(&m.envelope)).unzip();
    let mut tx = begin(pool, &keys).await?;
    let together = apply_units_together(&mut tx, members, &keys, &reads).await?;
    let mut done = Vec::with_capacity(members.len());
    for ((admitted, together), read) in members.iter().zip(together).zip(&reads) {
        if let Some(applied) = together {
            done.push(applied);
            continue;
        }
        let span = span(&admitted.envelope);
        done.push(
            apply_one(&mut tx, paysafe, admitted, read.as_ref())
                .instrument(span)
                .await?,
        );
    }
    tx.commit().await.map_err(|e| GroupFailure::database(&e))?;
    Ok(done)
}

/// Opens a group's transaction in the settings of [`GROUP_SETTINGS`], holding the locks of
/// its members' `keys`.
async fn begin(
    pool: &PgPool,
    keys: &[GroupKeys],
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, GroupFailure> {
    let begin = format!("BEGIN; {GROUP_SETTINGS}");
    group_transaction::begin(pool, begin, GroupKeys::merged(keys)).await
}

/// Every key `envelope` can write under; a Corelink message comes with what was read for them,
/// for its apply to reuse.
fn keys_of(envelope: &IntakeEnvelope) -> (GroupKeys, Option<corelink::Read>) {
    let mut keys = GroupKeys::default();
    keys.message(envelope.message_id);
    let mut read = None;
    match envelope.kind {
        IntakeKind::CorelinkStatus | IntakeKind::CorelinkStatusBatch => {
            let message = corelink::Read::of(envelope);
            message.lock_keys(envelope, &mut keys);
            read = Some(message);
        }
        IntakeKind::BncAccountBinding => bnc::lock_keys(envelope, &mut keys),
        IntakeKind::PaysafeWebhook | IntakeKind::PaysafeTrack => {
            paysafe::lock_keys(envelope, &mut keys);
        }
    }
    (keys, read)
}

/// The Corelink unit notifications of the group that share no key with another member,
/// applied together in a savepoint (`corelink::units`): `Some` for each one applied there,
/// `None` for every member left to [`apply_one`]. Should that fail for a reason other than a
/// passing one, it is rolled back and all of them go one by one.
async fn apply_units_together(
    conn: &mut PgConnection,
    members: &[&Admitted],
    keys: &[GroupKeys],
    reads: &[Option<corelink::Read>],
) -> Result<Vec<Option<Done>>, GroupFailure> {
    let mut together: Vec<Option<Done>> = members.iter().map(|_| None).collect();
    let (positions, units): (Vec<usize>, Vec<(&IntakeEnvelope, &corelink::Read)>) =
        GroupKeys::alone(keys)
            .into_iter()
            .zip(reads)
            .enumerate()
            .filter_map(|(i, (alone, read))| {
                let envelope = &members[i].envelope;
                let unit = alone && envelope.kind == IntakeKind::CorelinkStatus;
                Some((i, (envelope, read.as_ref().filter(|_| unit)?)))
            })
            .unzip();
    // One alone gains nothing over its own savepoint.
    if positions.len() < 2 {
        return Ok(together);
    }
    let mut savepoint = conn.begin().await.map_err(|e| GroupFailure::database(&e))?;
    let applied = corelink::units::apply_read_together(&mut savepoint, &units).await;
    match group_transaction::end_savepoint(savepoint, applied).await? {
        Ok(outcomes) => {
            for (position, outcome) in positions.into_iter().zip(outcomes) {
                together[position] = outcome.map(|o| Done::of(Disposition::Ack(o.label())));
            }
        }
        Err(error) => {
            tracing::warn!(%error, units = units.len(), "units not applied together; applying them one by one");
        }
    }
    Ok(together)
}

/// One message inside the group's transaction, in savepoints of its own. `Err` only for what
/// fails the whole group.
async fn apply_one(
    conn: &mut PgConnection,
    paysafe: &PaysafeSettings,
    admitted: &Admitted,
    read: Option<&corelink::Read>,
) -> Result<Done, GroupFailure> {
    let envelope = &admitted.envelope;
    let mut contention = 0;
    let error = loop {
        let mut savepoint = conn.begin().await.map_err(|e| GroupFailure::database(&e))?;
        match dispatch(&mut savepoint, envelope, read, paysafe).await {
            Ok((outcome, amount_mismatch)) => {
                savepoint
                    .commit()
                    .await
                    .map_err(|e| GroupFailure::database(&e))?;
                return Ok(Done {
                    amount_mismatch,
                    ..Done::of(Disposition::Ack(outcome.label()))
                });
            }
            Err(error) => {
                // Whatever it wrote goes; the rest of the group stays.
                savepoint
                    .rollback()
                    .await
                    .map_err(|e| GroupFailure::database(&e))?;
                match error {
                    // Another transaction created one of its orders since our lock query:
                    // that creation is committed, so a new attempt sees it.
                    ApplyError::Contention if contention + 1 < CONTENTION_ATTEMPTS => {
                        contention += 1;
                    }
                    error => break error,
                }
            }
        }
    };
    match error {
        ApplyError::Invalid(reason) => Ok(Done::of(Disposition::DeadLetter(reason))),
        ApplyError::Quarantine { reason, detail } => hold(conn, admitted, reason, detail).await,
        ApplyError::Contention => Err(GroupFailure::transient(
            "concurrent creation of an order".to_owned(),
        )),
        // A deadlock or a lost connection aborts more than this message's savepoint.
        ApplyError::Database(error) if db::is_transient(&error) => {
            Err(GroupFailure::database(&error))
        }
        ApplyError::Database(error) => Ok(Done::of(Disposition::Requeue(error.to_string()))),
    }
}

/// Quarantines the message in the group's transaction, in a savepoint of its own.
async fn hold(
    conn: &mut PgConnection,
    admitted: &Admitted,
    reason: QuarantineReason,
    detail: String,
) -> Result<Done, GroupFailure> {
    let envelope = &admitted.envelope;
    let mut savepoint = conn.begin().await.map_err(|e| GroupFailure::database(&e))?;
    let seal = admitted.seal.as_deref();
    match quarantine::hold(&mut savepoint, envelope, seal, reason, &detail).await {
        Ok(()) => {
            savepoint
                .commit()
                .await
                .map_err(|e| GroupFailure::database(&e))?;
            Ok(Done {
                quarantined: Some((reason, detail)),
                ..Done::of(Disposition::Ack("quarantined"))
            })
        }
        Err(error) if db::is_transient(&error) => Err(GroupFailure::database(&error)),
        Err(error) => {
            savepoint
                .rollback()
                .await
                .map_err(|e| GroupFailure::database(&e))?;
            Ok(Done::of(Disposition::Requeue(format!(
                "quarantining: {error}"
            ))))
        }
    }
}

/// One attempt at applying `envelope`, by its kind: its outcome, and whether it revealed a
/// Paysafe amount mismatch.
async fn dispatch(
    conn: &mut PgConnection,
    envelope: &IntakeEnvelope,
    read: Option<&corelink::Read>,
    paysafe: &PaysafeSettings,
) -> Result<(Outcome, bool), ApplyError> {
    match envelope.kind {
        IntakeKind::CorelinkStatus | IntakeKind::CorelinkStatusBatch => {
            let applied = match read {
                Some(read) => corelink::apply_read(conn, envelope, read).await?,
                None => corelink::apply(conn, envelope).await?,
            };
            Ok((applied, false))
        }
        IntakeKind::BncAccountBinding => Ok((bnc::apply(conn, envelope).await?, false)),
        IntakeKind::PaysafeWebhook | IntakeKind::PaysafeTrack => {
            let applied = paysafe::apply(conn, envelope, paysafe).await?;
            Ok((applied.outcome, applied.amount_mismatch))
        }
    }
}
