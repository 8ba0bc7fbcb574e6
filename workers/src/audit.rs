//! The audit record of every intake message the workers finished with (applied, duplicate or
//! replay): what was received, when, from whom, how the ingress verified it, and what it did.
//! Written in the message's own apply transaction.

use sqlx::PgConnection;

use connector_schema::IntakeEnvelope;

use crate::outcome::{ApplyError, Outcome};
use crate::quarantine::{headers_json, verification_json};

/// What a source knows about its message beyond the envelope.
#[derive(Debug)]
pub struct Received<'a> {
    pub client_id: Option<&'a str>,
    pub idempotency_key: Option<&'a str>,
    pub nonce: Option<&'a str>,
    /// base64url SHA-256 of the raw body: proves what was received even where `body` is a
    /// redacted copy.
    pub body_sha256: &'a str,
    /// The body kept for audit: the raw body, or a copy without its secrets.
    pub body: &'a [u8],
}

/// The statement that keeps a received message (also run by the load bench's SQL baseline).
/// One row per delivery the workers finished with: a message delivered again after its commit
/// (a worker died before its ack) adds a row with its own outcome (see the migration
/// `20261202000001_partitioned_history.sql`). `processed_at`, in the primary key, is the
/// statement's clock rather than the transaction's start: one group transaction may hold two
/// deliveries of the same message (the second a replay), and each needs its own row.
pub const RECORD_RECEIVED: &str = "INSERT INTO received_messages (message_id, kind, client_id, idempotency_key, nonce, body_sha256,
                                        outcome, received_at, request_path, headers, body,
                                        verification, processed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, clock_timestamp())";

/// [`RECORD_RECEIVED`] for several messages, one array per column (the unit notifications of
/// a group applied together); each row gets its own `clock_timestamp()`.
pub const RECORD_RECEIVED_MANY: &str = "INSERT INTO received_messages (message_id, kind, client_id, idempotency_key, nonce, body_sha256,
                                        outcome, received_at, request_path, headers, body,
                                        verification, processed_at)
         SELECT u.*, clock_timestamp()
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::timestamptz[], $9::text[], $10::jsonb[], $11::bytea[],
                     $12::jsonb[]) AS u";

pub async fn record(
    tx: &mut PgConnection,
    envelope: &IntakeEnvelope,
    received: Received<'_>,
    outcome: Outcome,
) -> Result<(), ApplyError> {
    sqlx::query(RECORD_RECEIVED)
        .bind(envelope.message_id)
        .bind(envelope.kind.routing_key())
        .bind(received.client_id)
        .bind(received.idempotency_key)
        .bind(received.nonce)
        .bind(received.body_sha256)
        .bind(outcome.label())
        .bind(envelope.received_at)
        .bind(envelope.request_path.as_deref())
        .bind(headers_json(envelope))
        .bind(received.body)
        .bind(verification_json(envelope))
        .execute(&mut *tx)
        .await?;
    Ok(())
}
