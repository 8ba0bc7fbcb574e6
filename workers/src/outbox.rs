//! The ledger outbox (`ledger_outbox`), and every statement the workers run on it. It is a
//! transactional outbox: a ledger event is written in the same transaction as the state it
//! describes, so both commit or neither does (§2.3), and the relay publishes it afterwards, at
//! least once. A republish is harmless because each event carries a deterministic `event_id`
//! (UUID v5, §6) that consumers dedupe on, and which the table keeps unique.
//!
//! Its statements live here together so that its rules (one row per `event_id`, claims with a
//! lease, published only once confirmed) are read and changed in one place. Who calls what:
//! the appliers (`corelink`, `bnc`, `paysafe`) [`write`]; the relay [`listen`]s, [`claim`]s,
//! then [`mark_published`]s or [`settle`]s; the gauges read the [`backlog`]; the admin commands
//! read the [`events_of`] a reference; the pipeline bench times [`write_columns`].

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::{PgConnection, PgPool};
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::events::LedgerEvent;

use crate::outcome::ApplyError;

/// The NOTIFY channel of the table's insert trigger (see the migrations).
const NOTIFY_CHANNEL: &str = "ledger_outbox";

/// Marks confirmed rows published and releases their claim.
const MARK_PUBLISHED: &str = "UPDATE ledger_outbox SET published_at = now(), claimed_until = NULL
     WHERE id = ANY($1) AND published_at IS NULL";

/// Events as columns of `ledger_outbox`, one array each, so that one `UNNEST` statement writes
/// any number of them. Borrowed, so the bench can bind columns it prepared before its clock.
#[derive(Debug, Clone, Copy)]
pub struct EventColumns<'a> {
    pub event_ids: &'a [Uuid],
    pub event_types: &'a [String],
    pub references: &'a [String],
    /// Each event's JSON, exactly as the relay will publish it.
    pub bodies: &'a [String],
    /// The intake message that caused them (None for the poller and the deadline).
    pub message_id: Option<Uuid>,
}

/// Writes `events` to the outbox inside the caller's transaction, recording `message_id` (the
/// intake message that caused them) in `emitted_ledger_events`. That table's unique
/// `event_id`, kept for ever, makes a second write of the same fact impossible even if a state
/// machine were ever wrong, and even after the first one's outbox row was dropped.
pub async fn write(
    tx: &mut PgConnection,
    events: &[LedgerEvent],
    message_id: Option<Uuid>,
) -> Result<(), ApplyError> {
    let caused: Vec<(&LedgerEvent, Option<Uuid>)> =
        events.iter().map(|event| (event, message_id)).collect();
    write_caused(tx, &caused).await
}

/// [`write`] for the events of several messages at once, each with the message that caused it
/// (the unit notifications of a group applied together).
pub async fn write_caused(
    tx: &mut PgConnection,
    events: &[(&LedgerEvent, Option<Uuid>)],
) -> Result<(), ApplyError> {
    let columns = Columns::of(events)?;
    Ok(insert(tx, &columns.borrowed(), &columns.message_ids).await?)
}

/// The columns [`write`] and [`write_caused`] bind, owned.
struct Columns {
    event_ids: Vec<Uuid>,
    event_types: Vec<String>,
    references: Vec<String>,
    bodies: Vec<String>,
    message_ids: Vec<Option<Uuid>>,
}

impl Columns {
    fn of(events: &[(&LedgerEvent, Option<Uuid>)]) -> Result<Self, ApplyError> {
        let mut columns = Self {
            event_ids: Vec::new(),
            event_types: Vec::new(),
            references: Vec::new(),
            bodies: Vec::new(),
            message_ids: Vec::new(),
        };
        for &(event, message_id) in events {
            columns.event_ids.push(event.event_id);
            columns.event_types.push(event.event_type.clone());
            columns.references.push(event.reference.clone());
            columns.bodies.push(
                serde_json::to_string(event).map_err(|e| ApplyError::Invalid(e.to_string()))?,
            );
            columns.message_ids.push(message_id);
        }
        Ok(columns)
    }

    fn borrowed(&self) -> EventColumns<'_> {
        EventColumns {
            event_ids: &self.event_ids,
            event_types: &self.event_types,
            references: &self.references,
            bodies: &self.bodies,
            // Unused: `insert` takes the message ids apart, one per event.
            message_id: None,
        }
    }
}

/// The statement behind [`write`], on events already in columns, all caused by
/// `columns.message_id`.
pub async fn write_columns(
    connection: &mut PgConnection,
    columns: EventColumns<'_>,
) -> sqlx::Result<()> {
    let message_ids = vec![columns.message_id; columns.event_ids.len()];
    insert(connection, &columns, &message_ids).await
}

/// Only the events `emitted_ledger_events` did not know reach the outbox, in their order; each
/// recorded there with its entry of `message_ids`.
async fn insert(
    connection: &mut PgConnection,
    columns: &EventColumns<'_>,
    message_ids: &[Option<Uuid>],
) -> sqlx::Result<()> {
    if columns.event_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "WITH events AS (
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::uuid[])
                 WITH ORDINALITY AS e (event_id, event_type, reference, body, message_id, position)),
         new_events AS (
             INSERT INTO emitted_ledger_events (event_id, event_type, reference, message_id)
             SELECT event_id, event_type, reference, message_id FROM events
             ON CONFLICT (event_id) DO NOTHING
             RETURNING event_id)
         INSERT INTO ledger_outbox (event_id, event_type, reference, body)
         SELECT event_id, event_type, reference, body FROM events JOIN new_events USING (event_id)
         ORDER BY position",
    )
    .bind(columns.event_ids)
    .bind(columns.event_types)
    .bind(columns.references)
    .bind(columns.bodies)
    .bind(message_ids)
    .execute(connection)
    .await?;
    Ok(())
}

/// A connection woken whenever events are committed (the relay also polls, in case it misses
/// one while reconnecting).
pub async fn listen(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(NOTIFY_CHANNEL).await?;
    Ok(listener)
}

/// An unpublished row a relay has claimed, ready to publish.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub body: String,
}

/// [`claim`]'s statement: `$1` rows at most, for `$2` seconds, run in [`CLAIM_SETTINGS`] (e2e
/// `outbox_claims` reads its plan).
pub const CLAIM: &str = "UPDATE ledger_outbox SET claimed_until = now() + make_interval(secs => $2)
     WHERE published_at IS NULL AND id = ANY(ARRAY(
         SELECT id FROM ledger_outbox
         WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < now())
         ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED))
     RETURNING id, event_id, event_type, body";

/// The claim's transaction. Its cost must not grow with the backlog or the day's partition,
/// whatever the statistics say: on a partition analyzed while young (one starts every
/// midnight) they say there is hardly an unpublished row, and the planner then sorts every
/// unpublished row to take the first 100 (26 ms per claim at a backlog of 6 000, and a relay
/// that falls behind only falls further). Without sorts, the oldest rows come from the
/// unpublished index in id order and the scan stops at the limit; the ids then reach the
/// update as one array (`ARRAY(...)`, computed first), looked up through the same index.
pub const CLAIM_SETTINGS: &str = "SET LOCAL enable_sort = off";

/// Claims up to `limit` unpublished rows, oldest first, for `lease`: one committed statement
/// (`FOR UPDATE SKIP LOCKED` inside), so relays share the rows without waiting on each other
/// and no transaction stays open while they publish. Returned in id order.
pub async fn claim(pool: &PgPool, limit: i64, lease: Duration) -> sqlx::Result<Vec<Claimed>> {
    let mut tx = pool.begin_with(format!("BEGIN; {CLAIM_SETTINGS}")).await?;
    let mut rows: Vec<Claimed> = sqlx::query_as(CLAIM)
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    // RETURNING follows no order.
    rows.sort_unstable_by_key(|row| row.id);
    Ok(rows)
}

/// Marks confirmed rows published (and unclaimed), on its own.
pub async fn mark_published(pool: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(MARK_PUBLISHED)
        .bind(ids)
        .execute(pool)
        .await
        .map(drop)
}

/// In one transaction: marks `published` rows published, and releases the `released` ones,
/// each `(id, error)`, with their attempt counted and their error recorded. With nothing to
/// release, the usual case, the mark is the only statement and needs no transaction around it.
pub async fn settle(
    pool: &PgPool,
    published: &[i64],
    released: &[(i64, String)],
) -> sqlx::Result<()> {
    if released.is_empty() {
        return mark_published(pool, published).await;
    }
    let (ids, errors): (Vec<i64>, Vec<&str>) = released
        .iter()
        .map(|(id, error)| (*id, error.as_str()))
        .unzip();
    let mut tx = pool.begin().await?;
    sqlx::query(MARK_PUBLISHED)
        .bind(published)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE ledger_outbox o
         SET attempts = o.attempts + 1, last_error = u.error, claimed_until = NULL
         FROM UNNEST($1::bigint[], $2::text[]) AS u(id, error) WHERE o.id = u.id",
    )
    .bind(&ids)
    .bind(&errors)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// What is waiting to be published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub unpublished: i64,
    /// Age of the oldest unpublished row; `None` when there is none.
    pub oldest_age_secs: Option<f64>,
}

/// Reads the [`Backlog`], for the gauges (and the bench's final check).
pub async fn backlog(pool: &PgPool) -> sqlx::Result<Backlog> {
    let (unpublished, oldest_age_secs): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), EXTRACT(EPOCH FROM now() - min(created_at))::float8
         FROM ledger_outbox WHERE published_at IS NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(Backlog {
        unpublished,
        oldest_age_secs,
    })
}

/// One event as the outbox holds it, with how its publishing went.
#[derive(Debug, sqlx::FromRow)]
pub struct RecordedEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub created_at: OffsetDateTime,
    pub published_at: Option<OffsetDateTime>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

/// Every event of `reference` (an order, a Paysafe item, a binding), in the order written.
pub async fn events_of(pool: &PgPool, reference: &str) -> sqlx::Result<Vec<RecordedEvent>> {
    sqlx::query_as(
        "SELECT event_id, event_type, created_at, published_at, attempts, last_error
         FROM ledger_outbox WHERE reference = $1 ORDER BY id",
    )
    .bind(reference)
    .fetch_all(pool)
    .await
}
