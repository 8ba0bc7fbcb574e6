//! The unit notifications of a group that share no key with any other member, applied
//! together: one statement per table for all of them instead of eight round trips each
//! (savepoint, claim, lock, order, history, outbox, audit record, release), which is what
//! bounded the unit path (ops/BENCHMARKS.md, "Where the apply's time goes").
//!
//! Same outcomes as one by one. Under the group's advisory locks nobody else writes their
//! nonces, keys or orders, so what is read first still holds when the rows are written: a
//! message is taken here only when that read says it would be applied alone (a new nonce; its
//! key new or bound to its own order; its order new or the same client's, and the transition
//! allowed). Every other one (a replay, a key reused, a final-status conflict, another client's
//! order, one that cannot be read) is left to the one-by-one path, which gives it its own
//! outcome; sharing no key with the rest of the group, it is independent of the order in which
//! the two paths run.

use std::collections::HashMap;

use sqlx::PgConnection;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::IntakeEnvelope;
use connector_schema::corelink::{OrderStatus, OrderStatusUpdate};
use connector_schema::events::LedgerEvent;

use crate::corelink::Read;
use crate::corelink::decode::Notification;
use crate::corelink::orders::{
    Effect, OrderColumns, lock_orders, order_event, parse_status, transition,
};
use crate::corelink::statements;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::{headers_json, verification_json};
use crate::{audit, outbox};

/// A unit notification this path can apply, with what applying it does.
struct Unit<'a> {
    position: usize,
    envelope: &'a IntakeEnvelope,
    n: &'a Notification,
    /// Whether its idempotency key is new (else bound to its own order already).
    new_key: bool,
    previous: Option<OrderStatus>,
    effect: Effect,
}

impl Unit<'_> {
    fn order(&self) -> &OrderStatusUpdate {
        &self.n.orders[0]
    }
}

/// Applies what it can of `envelopes` (unit Corelink messages sharing no key with any other
/// member of the group) on `conn`, inside the group's transaction: the outcome of each one
/// applied, `None` for each left to the one-by-one path. On `Err` the caller rolls back what
/// this wrote and applies every one of them one by one.
pub async fn apply_together(
    conn: &mut PgConnection,
    envelopes: &[&IntakeEnvelope],
) -> Result<Vec<Option<Outcome>>, ApplyError> {
    let reads: Vec<Read> = envelopes.iter().map(|e| Read::of(e)).collect();
    let members: Vec<(&IntakeEnvelope, &Read)> = envelopes.iter().copied().zip(&reads).collect();
    apply_read_together(conn, &members).await
}

/// [`apply_together`], each message read already.
pub async fn apply_read_together(
    conn: &mut PgConnection,
    members: &[(&IntakeEnvelope, &Read)],
) -> Result<Vec<Option<Outcome>>, ApplyError> {
    let mut outcomes = vec![None; members.len()];
    let decoded: Vec<(usize, &IntakeEnvelope, &Notification)> = members
        .iter()
        .enumerate()
        .filter_map(|(position, (envelope, read))| {
            let n = read.0.as_ref().ok()?;
            (n.batch.is_none() && n.orders.len() == 1).then_some((position, *envelope, n))
        })
        .collect();
    let units = admissible(conn, sharing_nothing(decoded)).await?;
    if units.is_empty() {
        return Ok(outcomes);
    }
    claim(conn, &units).await?;
    write_orders(conn, &units).await?;
    let events = write_history_and_events(conn, &units).await?;
    record_messages(conn, &units, &events).await?;
    for (unit, event) in units.iter().zip(&events) {
        outcomes[unit.position] = Some(applied(event.is_some()));
    }
    Ok(outcomes)
}

/// Those of `decoded` whose order, nonce and key no other one has: the caller's promise,
/// checked, since two writes of one row in one statement would not fail but merge.
fn sharing_nothing<'a>(
    decoded: Vec<(usize, &'a IntakeEnvelope, &'a Notification)>,
) -> Vec<(usize, &'a IntakeEnvelope, &'a Notification)> {
    fn keys(n: &Notification) -> [(&str, &str, &str); 3] {
        let client = n.client_id.as_str();
        [
            ("order", "", n.orders[0].reference.as_str()),
            ("nonce", client, n.nonce.as_str()),
            ("key", client, n.idempotency_key.as_str()),
        ]
    }
    let mut seen: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for (_, _, n) in &decoded {
        for key in keys(n) {
            *seen.entry(key).or_default() += 1;
        }
    }
    let alone: Vec<bool> = decoded
        .iter()
        .map(|(_, _, n)| keys(n).iter().all(|key| seen[key] == 1))
        .collect();
    decoded
        .into_iter()
        .zip(alone)
        .filter_map(|(unit, alone)| alone.then_some(unit))
        .collect()
}

/// One column of `units`, for an `UNNEST` parameter.
fn column<'u, 'a: 'u, T>(
    units: impl IntoIterator<Item = &'u Unit<'a>>,
    value: impl Fn(&'u Unit<'a>) -> T,
) -> Vec<T> {
    units.into_iter().map(value).collect()
}

fn applied(event: bool) -> Outcome {
    Outcome::Applied {
        items: 1,
        events: usize::from(event),
    }
}

/// The notifications that would be applied alone: two reads (nonces and keys; the orders,
/// locked), then the transition table.
async fn admissible<'a>(
    conn: &mut PgConnection,
    decoded: Vec<(usize, &'a IntakeEnvelope, &'a Notification)>,
) -> Result<Vec<Unit<'a>>, ApplyError> {
    if decoded.is_empty() {
        return Ok(Vec::new());
    }
    let clients: Vec<&str> = decoded
        .iter()
        .map(|(_, _, n)| n.client_id.as_str())
        .collect();
    let nonces: Vec<&str> = decoded.iter().map(|(_, _, n)| n.nonce.as_str()).collect();
    let keys: Vec<&str> = decoded
        .iter()
        .map(|(_, _, n)| n.idempotency_key.as_str())
        .collect();
    let seen: Vec<(bool, Option<String>, Option<String>)> = sqlx::query_as(statements::UNITS_SEEN)
        .bind(&clients)
        .bind(&nonces)
        .bind(&keys)
        .fetch_all(&mut *conn)
        .await?;
    let fresh: Vec<(usize, &IntakeEnvelope, &Notification, bool)> = decoded
        .into_iter()
        .zip(seen)
        .filter_map(
            |((position, envelope, n), (nonce_seen, scope, reference))| {
                let new_key = match (scope.as_deref(), reference) {
                    (None, _) => true,
                    // More news of the same order under its key: applied as usual.
                    (Some("unit"), Some(bound)) if bound == n.orders[0].reference => false,
                    // A key reused: quarantined by the one-by-one path.
                    _ => return None,
                };
                (!nonce_seen).then_some((position, envelope, n, new_key))
            },
        )
        .collect();
    if fresh.is_empty() {
        return Ok(Vec::new());
    }
    let references: Vec<&str> = fresh
        .iter()
        .map(|(_, _, n, _)| n.orders[0].reference.as_str())
        .collect();
    let current = lock_orders(conn, &references).await?;
    Ok(fresh
        .into_iter()
        .filter_map(|(position, envelope, n, new_key)| {
            let order = &n.orders[0];
            let previous = match current.get(&order.reference) {
                // Another client's order: quarantined by the one-by-one path.
                Some((client, _)) if *client != n.client_id => return None,
                Some((_, status)) => Some(parse_status(status).ok()?),
                None => None,
            };
            // A final-status conflict: quarantined by the one-by-one path.
            let effect = transition(previous, order.status).ok()?;
            Some(Unit {
                position,
                envelope,
                n,
                new_key,
                previous,
                effect,
            })
        })
        .collect())
}

/// Claims every unit's nonce and every new key.
async fn claim(conn: &mut PgConnection, units: &[Unit<'_>]) -> Result<(), ApplyError> {
    let claimed = sqlx::query(statements::CLAIM_NONCES)
        .bind(column(units, |u| u.n.client_id.as_str()))
        .bind(column(units, |u| u.n.nonce.as_str()))
        .bind(column(units, |u| u.n.fingerprint.as_str()))
        .bind(column(units, |u| u.envelope.message_id))
        .bind(column(units, |u| u.n.request_timestamp))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if claimed != units.len() as u64 {
        return Err(ApplyError::Contention);
    }
    let new: Vec<&Unit<'_>> = units.iter().filter(|u| u.new_key).collect();
    if new.is_empty() {
        return Ok(());
    }
    let bound = sqlx::query(statements::BIND_UNIT_KEYS)
        .bind(column(new.iter().copied(), |u| u.n.client_id.as_str()))
        .bind(column(new.iter().copied(), |u| {
            u.n.idempotency_key.as_str()
        }))
        .bind(column(new.iter().copied(), |u| {
            u.order().reference.as_str()
        }))
        .bind(column(new.iter().copied(), |u| u.envelope.message_id))
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if bound != new.len() as u64 {
        return Err(ApplyError::Contention);
    }
    Ok(())
}

/// Creates the new orders and moves the others, as `orders::apply_orders` does for one.
async fn write_orders(conn: &mut PgConnection, units: &[Unit<'_>]) -> Result<(), ApplyError> {
    let with = |effect: Effect| -> Vec<&Unit<'_>> {
        units.iter().filter(|u| u.effect == effect).collect()
    };
    let created = with(Effect::Created);
    if !created.is_empty() {
        let clients = column(created.iter().copied(), |u| u.n.client_id.as_str());
        let columns = OrderColumns::of(created.iter().map(|u| u.order()));
        let inserted = columns
            .bind(sqlx::query(statements::INSERT_ORDERS_OF_CLIENTS).bind(&clients))
            .execute(&mut *conn)
            .await?
            .rows_affected();
        if inserted != created.len() as u64 {
            return Err(ApplyError::Contention);
        }
    }
    let updated = with(Effect::Applied);
    if !updated.is_empty() {
        OrderColumns::of(updated.iter().map(|u| u.order()))
            .bind(sqlx::query(statements::UPDATE_ORDERS))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Every unit's history row, and the ledger event of each final status reached; answers each
/// unit's event, if any.
async fn write_history_and_events(
    conn: &mut PgConnection,
    units: &[Unit<'_>],
) -> Result<Vec<Option<LedgerEvent>>, ApplyError> {
    let columns = OrderColumns::of(units.iter().map(|u| u.order()));
    let previous: Vec<Option<&str>> = units
        .iter()
        .map(|u| u.previous.map(OrderStatus::as_str))
        .collect();
    let effects: Vec<&str> = units.iter().map(|u| u.effect.as_str()).collect();
    columns
        .bind(sqlx::query(statements::INSERT_UNITS_HISTORY))
        .bind(&previous)
        .bind(&effects)
        .bind(column(units, |u| u.envelope.message_id))
        .bind(column(units, |u| u.n.client_id.as_str()))
        .bind(column(units, |u| u.n.idempotency_key.as_str()))
        .bind(column(units, |u| u.envelope.received_at))
        .execute(&mut *conn)
        .await?;

    let recorded_at = OffsetDateTime::now_utc();
    let events: Vec<Option<LedgerEvent>> = units
        .iter()
        .map(|u| {
            let reached = matches!(u.effect, Effect::Created | Effect::Applied)
                && u.order().status.is_final();
            reached.then(|| order_event(u.order(), u.n, recorded_at))
        })
        .collect();
    let caused: Vec<(&LedgerEvent, Option<Uuid>)> = units
        .iter()
        .zip(&events)
        .filter_map(|(u, event)| Some((event.as_ref()?, Some(u.envelope.message_id))))
        .collect();
    outbox::write_caused(conn, &caused).await?;
    Ok(events)
}

/// Every unit's audit record, as `audit::record` writes one.
async fn record_messages(
    conn: &mut PgConnection,
    units: &[Unit<'_>],
    events: &[Option<LedgerEvent>],
) -> Result<(), ApplyError> {
    sqlx::query(audit::RECORD_RECEIVED_MANY)
        .bind(column(units, |u| u.envelope.message_id))
        .bind(column(units, |u| u.envelope.kind.routing_key()))
        .bind(column(units, |u| u.n.client_id.as_str()))
        .bind(column(units, |u| u.n.idempotency_key.as_str()))
        .bind(column(units, |u| u.n.nonce.as_str()))
        .bind(column(units, |u| u.n.body_sha256.as_str()))
        .bind(
            events
                .iter()
                .map(|event| applied(event.is_some()).label())
                .collect::<Vec<_>>(),
        )
        .bind(column(units, |u| u.envelope.received_at))
        .bind(column(units, |u| u.envelope.request_path.as_deref()))
        .bind(column(units, |u| headers_json(u.envelope)))
        .bind(column(units, |u| u.envelope.body.as_ref()))
        .bind(column(units, |u| verification_json(u.envelope)))
        .execute(&mut *conn)
        .await?;
    Ok(())
}
