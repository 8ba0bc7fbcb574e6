//! The order timeline: everything known about one Corelink order (its state, every
//! notification with its effect, every ledger event and whether it went out), so support can
//! answer "what happened to PAY-2025-0001" (§3.4) from one command.

use std::fmt::Write as _;

use anyhow::bail;
use sqlx::PgPool;
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::envelope::rfc3339;

use crate::outbox;

type OrderRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    OffsetDateTime,
    OffsetDateTime,
);
type HistoryRow = (
    OffsetDateTime,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    OffsetDateTime,
    Uuid,
    Option<String>,
);

/// Everything known about one order: its state, every notification, every event.
pub async fn order_timeline(pool: &PgPool, reference: &str) -> anyhow::Result<String> {
    let order: Option<OrderRow> = sqlx::query_as(
        "SELECT client_id, status, bank_reference, reason_code, reason_message, created_at, updated_at
         FROM orders WHERE reference = $1",
    )
    .bind(reference)
    .fetch_optional(pool)
    .await?;
    let Some((client, status, bank_reference, reason_code, reason_message, created, updated)) =
        order
    else {
        bail!("no order {reference}");
    };
    let mut out = format!(
        "order {reference}: {status} (client {client}, bank reference {}{})\n  first seen {}, last changed {}\n\nnotifications:\n",
        bank_reference.unwrap_or_else(|| "-".into()),
        reason_code
            .map(|code| format!(", reason {code}: {}", reason_message.unwrap_or_default()))
            .unwrap_or_default(),
        rfc3339(created),
        rfc3339(updated),
    );
    let history: Vec<HistoryRow> = sqlx::query_as(
        "SELECT h.recorded_at, h.status, h.previous_status, h.effect, h.client_id,
                h.idempotency_key, h.batch_id, h.bank_processed_at, h.message_id,
                (SELECT concat_ws(' ', 'kid=' || (r.verification->>'key_id'),
                                  'key_sha256=' || (r.verification->>'key_sha256'),
                                  'cert_sha256=' || (r.verification->>'client_cert_sha256'))
                 FROM received_messages r WHERE r.message_id = h.message_id)
         FROM order_history h WHERE h.reference = $1 ORDER BY h.id",
    )
    .bind(reference)
    .fetch_all(pool)
    .await?;
    for (recorded, status, previous, effect, client, key, batch, processed, message, verified) in
        history
    {
        // How the ingress verified it: key id and public fingerprints, never a secret.
        let verified = verified
            .filter(|v| !v.is_empty())
            .map(|v| format!(" verified {v}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {}  {:<7} -> {:<7} {:<9} from {client} key={key}{} bank time {} message {message}{verified}",
            rfc3339(recorded),
            previous.unwrap_or_else(|| "(new)".into()),
            status,
            effect,
            batch.map(|b| format!(" batch={b}")).unwrap_or_default(),
            rfc3339(processed),
        );
    }
    out.push_str("\nledger events:\n");
    for event in outbox::events_of(pool, reference).await? {
        let outbox::RecordedEvent {
            event_id: id,
            event_type,
            created_at: created,
            published_at: published,
            attempts,
            last_error: error,
        } = event;
        let _ = writeln!(
            out,
            "  {}  {event_type} {id} {}{}",
            rfc3339(created),
            published.map_or_else(
                || format!("NOT YET PUBLISHED (attempts {attempts})"),
                |at| format!("published {}", rfc3339(at))
            ),
            error
                .map(|e| format!(" last error: {e}"))
                .unwrap_or_default(),
        );
    }
    Ok(out)
}
