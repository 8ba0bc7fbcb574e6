//! The orders of one Corelink notification, inside its transaction: locked in reference order,
//! moved by the §3.4 transition table, written with their history, and a ledger event for each
//! final status reached. A final-status conflict or another bank's order quarantines the whole
//! message: none of it is applied.

use std::collections::HashMap;

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, Postgres};
use time::OffsetDateTime;

use connector_schema::IntakeEnvelope;
use connector_schema::corelink::{OrderStatus, OrderStatusUpdate};
use connector_schema::events::{EventType, LedgerEvent, Source};

use crate::corelink::decode::Notification;
use crate::corelink::statements;
use crate::outbox;
use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::QuarantineReason;

/// What one order's notification does, decided under its row lock.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Created,
    Applied,
    Unchanged,
    Stale,
}

impl Effect {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Stale => "stale",
        }
    }
}

/// The §3.4 transition table; `Err` is a final-status conflict.
#[doc(hidden)]
pub fn transition(
    current: Option<OrderStatus>,
    incoming: OrderStatus,
) -> Result<Effect, OrderStatus> {
    match current {
        None => Ok(Effect::Created),
        Some(OrderStatus::Pending) if incoming == OrderStatus::Pending => Ok(Effect::Unchanged),
        Some(OrderStatus::Pending) => Ok(Effect::Applied),
        Some(current) if current == incoming => Ok(Effect::Unchanged),
        Some(_) if incoming == OrderStatus::Pending => Ok(Effect::Stale),
        Some(current) => Err(current),
    }
}

/// Locks, transitions and writes every order of the notification, with history and events.
pub(super) async fn apply_orders(
    tx: &mut PgConnection,
    envelope: &IntakeEnvelope,
    n: &Notification,
) -> Result<Outcome, ApplyError> {
    let references: Vec<&str> = n.orders.iter().map(|o| o.reference.as_str()).collect();
    let current = lock_orders(tx, &references).await?;

    let mut effects = Vec::with_capacity(n.orders.len());
    let mut conflicts = Vec::new();
    for order in &n.orders {
        let previous = match current.get(&order.reference) {
            Some((client, _)) if *client != n.client_id => {
                return Err(ApplyError::Quarantine {
                    reason: QuarantineReason::OrderOfAnotherClient,
                    detail: format!("order {} is reported by another client", order.reference),
                });
            }
            Some((_, status)) => Some(parse_status(status)?),
            None => None,
        };
        match transition(previous, order.status) {
            Ok(effect) => effects.push((order, previous, effect)),
            Err(applied) => conflicts.push(format!(
                "{} is {} and cannot become {}",
                order.reference,
                applied.as_str(),
                order.status.as_str()
            )),
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Quarantine {
            reason: QuarantineReason::FinalStatusConflict,
            detail: conflicts.join("; "),
        });
    }

    let created: Vec<&OrderStatusUpdate> = effects
        .iter()
        .filter(|(_, _, e)| *e == Effect::Created)
        .map(|(o, _, _)| *o)
        .collect();
    let updated: Vec<&OrderStatusUpdate> = effects
        .iter()
        .filter(|(_, _, e)| *e == Effect::Applied)
        .map(|(o, _, _)| *o)
        .collect();
    insert_orders(tx, &n.client_id, &created).await?;
    update_orders(tx, &updated).await?;
    insert_history(tx, envelope, n, &effects).await?;

    let recorded_at = OffsetDateTime::now_utc();
    let events: Vec<LedgerEvent> = effects
        .iter()
        .filter(|(order, _, effect)| {
            matches!(effect, Effect::Created | Effect::Applied) && order.status.is_final()
        })
        .map(|(order, _, _)| order_event(order, n, recorded_at))
        .collect();
    outbox::write(tx, &events, Some(envelope.message_id)).await?;
    Ok(Outcome::Applied {
        items: n.orders.len(),
        events: events.len(),
    })
}

/// Locks the existing orders among `references` (in reference order, `statements::LOCK_ORDERS`):
/// each one's client and stored status.
pub(super) async fn lock_orders(
    conn: &mut PgConnection,
    references: &[&str],
) -> sqlx::Result<HashMap<String, (String, String)>> {
    Ok(
        sqlx::query_as::<_, (String, String, String)>(statements::LOCK_ORDERS)
            .bind(references)
            .fetch_all(conn)
            .await?
            .into_iter()
            .map(|(reference, client, status)| (reference, (client, status)))
            .collect(),
    )
}

pub(super) fn parse_status(status: &str) -> Result<OrderStatus, ApplyError> {
    serde_json::from_value(serde_json::Value::String(status.to_owned()))
        .map_err(|_| ApplyError::Invalid(format!("stored order status {status} is unknown")))
}

/// Column arrays of `orders`, for one `UNNEST` statement whatever the batch size.
pub(super) struct OrderColumns {
    reference: Vec<String>,
    status: Vec<&'static str>,
    bank_reference: Vec<Option<String>>,
    reason_code: Vec<Option<String>>,
    reason_message: Vec<Option<String>>,
    processed_at: Vec<OffsetDateTime>,
}

impl OrderColumns {
    pub(super) fn of<'a>(orders: impl IntoIterator<Item = &'a OrderStatusUpdate>) -> Self {
        let mut columns = Self {
            reference: Vec::new(),
            status: Vec::new(),
            bank_reference: Vec::new(),
            reason_code: Vec::new(),
            reason_message: Vec::new(),
            processed_at: Vec::new(),
        };
        for order in orders {
            columns.reference.push(order.reference.clone());
            columns.status.push(order.status.as_str());
            columns.bank_reference.push(order.bank_reference.clone());
            columns.reason_code.push(order.reason_code.clone());
            columns.reason_message.push(order.reason_message.clone());
            columns.processed_at.push(order.processed_at);
        }
        columns
    }

    /// Binds the six columns, in this order, as the next parameters of `query` (the order the
    /// statements of `statements` take them in).
    pub(super) fn bind<'q>(
        &'q self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(&self.reference)
            .bind(&self.status)
            .bind(&self.bank_reference)
            .bind(&self.reason_code)
            .bind(&self.reason_message)
            .bind(&self.processed_at)
    }
}

async fn insert_orders(
    tx: &mut PgConnection,
    client_id: &str,
    orders: &[&OrderStatusUpdate],
) -> Result<(), ApplyError> {
    if orders.is_empty() {
        return Ok(());
    }
    let c = OrderColumns::of(orders.iter().copied());
    let inserted = c
        .bind(sqlx::query(statements::INSERT_ORDERS).bind(client_id))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    // Another transaction created one of them after our lock query saw none: its status must
    // be taken into account, so start again.
    if inserted != orders.len() as u64 {
        return Err(ApplyError::Contention);
    }
    Ok(())
}

async fn update_orders(
    tx: &mut PgConnection,
    orders: &[&OrderStatusUpdate],
) -> Result<(), ApplyError> {
    if orders.is_empty() {
        return Ok(());
    }
    let c = OrderColumns::of(orders.iter().copied());
    c.bind(sqlx::query(statements::UPDATE_ORDERS))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn insert_history(
    tx: &mut PgConnection,
    envelope: &IntakeEnvelope,
    n: &Notification,
    effects: &[(&OrderStatusUpdate, Option<OrderStatus>, Effect)],
) -> Result<(), ApplyError> {
    let c = OrderColumns::of(effects.iter().map(|(o, _, _)| *o));
    let previous: Vec<Option<&str>> = effects
        .iter()
        .map(|(_, p, _)| p.map(OrderStatus::as_str))
        .collect();
    let effect: Vec<&str> = effects.iter().map(|(_, _, e)| e.as_str()).collect();
    c.bind(sqlx::query(statements::INSERT_HISTORY))
        .bind(&previous)
        .bind(&effect)
        .bind(envelope.message_id)
        .bind(&n.client_id)
        .bind(&n.idempotency_key)
        .bind(n.batch.as_ref().and_then(|b| b.id.as_deref()))
        .bind(envelope.received_at)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub(super) fn order_event(
    order: &OrderStatusUpdate,
    n: &Notification,
    recorded_at: OffsetDateTime,
) -> LedgerEvent {
    let event_type = match order.status {
        OrderStatus::Failed => EventType::OrderFailed,
        _ => EventType::OrderSucceeded,
    };
    LedgerEvent::new(
        Source::Corelink,
        event_type,
        &order.reference,
        order.status.as_str(),
        order.processed_at,
        recorded_at,
        serde_json::json!({
            "client_id": n.client_id,
            "bank_reference": order.bank_reference,
            "reason_code": order.reason_code,
            "reason_message": order.reason_message,
            "batch_id": n.batch.as_ref().and_then(|b| b.id.clone()),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::{Failed, Pending, Success};

    #[test]
    fn the_transition_table_of_section_3_4() {
        assert_eq!(transition(None, Pending), Ok(Effect::Created));
        assert_eq!(transition(None, Success), Ok(Effect::Created));
        assert_eq!(transition(Some(Pending), Pending), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Pending), Success), Ok(Effect::Applied));
        assert_eq!(transition(Some(Pending), Failed), Ok(Effect::Applied));
        assert_eq!(transition(Some(Success), Success), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Failed), Failed), Ok(Effect::Unchanged));
        assert_eq!(transition(Some(Success), Pending), Ok(Effect::Stale));
        assert_eq!(transition(Some(Success), Failed), Err(Success));
        assert_eq!(transition(Some(Failed), Success), Err(Failed));
    }
}
