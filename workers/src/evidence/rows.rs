//! Reading a relation of received messages into archive entries, with the ledger events each
//! message caused. Columns that arrive with later migrations (`verification`) and the
//! `emitted_ledger_events` table are read when present, so an archive of an older partition
//! simply has none.

use std::collections::HashMap;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sqlx::{PgConnection, Row as _};
use time::OffsetDateTime;
use uuid::Uuid;

use connector_schema::evidence::{ArchiveEntry, ArchivedEvent};

/// The relation's name, quoted; only plain identifiers (optionally schema-qualified) pass,
/// since it is spliced into the statement.
pub(super) fn quoted_relation(relation: &str) -> anyhow::Result<String> {
    let parts: Vec<&str> = relation.split('.').collect();
    let plain = |part: &&str| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    anyhow::ensure!(
        parts.len() <= 2 && parts.iter().all(plain),
        "`{relation}` is not a relation name (lower-case letters, digits and _)"
    );
    Ok(parts
        .iter()
        .map(|part| format!("\"{part}\""))
        .collect::<Vec<_>>()
        .join("."))
}

/// Every row of `relation`, oldest first (then by message id and outcome: deterministic).
pub(super) async fn read_entries(
    connection: &mut PgConnection,
    relation: &str,
) -> anyhow::Result<Vec<ArchiveEntry>> {
    let quoted = quoted_relation(relation)?;
    // `to_jsonb(r) -> 'verification'` is NULL where the column does not exist yet.
    let rows = sqlx::query(&format!(
        "SELECT message_id, kind, client_id, idempotency_key, nonce, body_sha256, outcome,
                received_at, processed_at, request_path, headers, body,
                to_jsonb(r) -> 'verification' AS verification
           FROM {quoted} r
          ORDER BY processed_at, message_id, outcome"
    ))
    .fetch_all(&mut *connection)
    .await
    .with_context(|| format!("reading {relation}"))?;

    let ids: Vec<Uuid> = rows.iter().map(|row| row.get("message_id")).collect();
    let events = read_events(connection, &ids).await?;

    let mut entries = Vec::with_capacity(rows.len());
    for row in rows {
        let message_id: Uuid = row.get("message_id");
        let kind: String = row.get("kind");
        let headers: serde_json::Value = row.get("headers");
        let body: Vec<u8> = row.get("body");
        let verification: Option<serde_json::Value> = row.get("verification");
        let mut entry = ArchiveEntry {
            message_id,
            received_at: row.get::<OffsetDateTime, _>("received_at"),
            processed_at: row.get::<OffsetDateTime, _>("processed_at"),
            client_id: row.get("client_id"),
            idempotency_key: row.get("idempotency_key"),
            nonce: row.get("nonce"),
            request_path: row.get("request_path"),
            body_base64: STANDARD.encode(&body),
            body_sha256: row.get("body_sha256"),
            // The workers keep BNC bodies only as redacted copies (no token, no account).
            body_redacted: kind == "bnc.account_binding",
            signature: None,
            verification: verification.filter(|v| !v.is_null()),
            outcome: row.get("outcome"),
            events: events.get(&message_id).cloned().unwrap_or_default(),
            headers,
            kind,
        };
        entry.signature = ArchiveEntry::signature_header(&entry.kind)
            .and_then(|name| entry.header(name))
            .map(str::to_owned);
        entries.push(entry);
    }
    Ok(entries)
}

/// The ledger events of these messages, by message id, in event id order.
async fn read_events(
    connection: &mut PgConnection,
    message_ids: &[Uuid],
) -> anyhow::Result<HashMap<Uuid, Vec<ArchivedEvent>>> {
    let mut by_message: HashMap<Uuid, Vec<ArchivedEvent>> = HashMap::new();
    let present: bool =
        sqlx::query_scalar("SELECT to_regclass('emitted_ledger_events') IS NOT NULL")
            .fetch_one(&mut *connection)
            .await?;
    if !present || message_ids.is_empty() {
        return Ok(by_message);
    }
    let rows = sqlx::query(
        "SELECT message_id, event_id, event_type, reference FROM emitted_ledger_events
          WHERE message_id = ANY($1) ORDER BY message_id, event_id",
    )
    .bind(message_ids)
    .fetch_all(&mut *connection)
    .await
    .context("reading emitted_ledger_events")?;
    for row in rows {
        by_message
            .entry(row.get("message_id"))
            .or_default()
            .push(ArchivedEvent {
                event_id: row.get("event_id"),
                event_type: row.get("event_type"),
                reference: row.get("reference"),
            });
    }
    Ok(by_message)
}

#[cfg(test)]
mod tests {
    use super::quoted_relation;

    #[test]
    fn only_plain_relation_names_are_spliced() {
        assert_eq!(
            quoted_relation("received_messages_p20261201").unwrap(),
            "\"received_messages_p20261201\""
        );
        assert_eq!(
            quoted_relation("history.received_messages").unwrap(),
            "\"history\".\"received_messages\""
        );
        for bad in ["", "a;drop table x", "A", "a.b.c", "a\"b", "a."] {
            assert!(quoted_relation(bad).is_err(), "{bad}");
        }
    }
}
