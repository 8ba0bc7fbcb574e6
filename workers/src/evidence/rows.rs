//! Reading a relation of received messages into archive entries, with the ledger events each
//! message caused. Columns that arrive with later migrations (`verification`) and the
//! `emitted_ledger_events` table are read when present, so an archive of an older partition
//! simply has none.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::TryStreamExt as _;
use sqlx::postgres::PgRow;
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

/// Every row of `relation` as an entry, handed to `each` as it arrives from the database,
/// oldest first (then by message id and outcome: deterministic). Only one row is in memory at
/// a time.
pub(super) async fn for_each_entry(
    connection: &mut PgConnection,
    relation: &str,
    mut each: impl FnMut(ArchiveEntry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let quoted = quoted_relation(relation)?;
    let events_present: bool =
        sqlx::query_scalar("SELECT to_regclass('emitted_ledger_events') IS NOT NULL")
            .fetch_one(&mut *connection)
            .await?;
    // Each row's events come with it (the table is indexed by message id), in event id order,
    // so the rows can stream: no second query while the first is being read.
    let events = if events_present {
        "(SELECT jsonb_agg(jsonb_build_object('event_id', e.event_id,
                                              'event_type', e.event_type,
                                              'reference', e.reference)
                           ORDER BY e.event_id)
            FROM emitted_ledger_events e
           WHERE e.message_id = r.message_id)"
    } else {
        "NULL::jsonb"
    };
    // `to_jsonb(r) -> 'verification'` is NULL where the column does not exist yet.
    let statement = format!(
        "SELECT r.message_id, r.kind, r.client_id, r.idempotency_key, r.nonce, r.body_sha256,
                r.outcome, r.received_at, r.processed_at, r.request_path, r.headers, r.body,
                to_jsonb(r) -> 'verification' AS verification,
                {events} AS events
           FROM {quoted} r
          ORDER BY r.processed_at, r.message_id, r.outcome"
    );
    let mut rows = sqlx::query(&statement).fetch(&mut *connection);
    while let Some(row) = rows
        .try_next()
        .await
        .with_context(|| format!("reading {relation}"))?
    {
        each(entry_of(&row).with_context(|| format!("reading {relation}"))?)?;
    }
    Ok(())
}

fn entry_of(row: &PgRow) -> anyhow::Result<ArchiveEntry> {
    let kind: String = row.try_get("kind")?;
    let body: Vec<u8> = row.try_get("body")?;
    let verification: Option<serde_json::Value> = row.try_get("verification")?;
    let events = match row.try_get::<Option<serde_json::Value>, _>("events")? {
        Some(events) => serde_json::from_value::<Vec<ArchivedEvent>>(events)
            .context("reading a message's emitted_ledger_events")?,
        None => Vec::new(),
    };
    let mut entry = ArchiveEntry {
        message_id: row.try_get::<Uuid, _>("message_id")?,
        received_at: row.try_get::<OffsetDateTime, _>("received_at")?,
        processed_at: row.try_get::<OffsetDateTime, _>("processed_at")?,
        client_id: row.try_get("client_id")?,
        idempotency_key: row.try_get("idempotency_key")?,
        nonce: row.try_get("nonce")?,
        request_path: row.try_get("request_path")?,
        body_base64: STANDARD.encode(&body),
        body_sha256: row.try_get("body_sha256")?,
        // The workers keep BNC bodies only as redacted copies (no token, no account).
        body_redacted: kind == "bnc.account_binding",
        signature: None,
        verification: verification.filter(|v| !v.is_null()),
        outcome: row.try_get("outcome")?,
        events,
        headers: row.try_get("headers")?,
        kind,
    };
    entry.signature = ArchiveEntry::signature_header(&entry.kind)
        .and_then(|name| entry.header(name))
        .map(str::to_owned);
    Ok(entry)
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
