//! The manifest's anchor in PostgreSQL: `evidence_archive_files` holds a copy of every
//! manifest record, written in the export's transaction.

use anyhow::Context as _;
use sqlx::{PgConnection, Row as _};

use connector_schema::evidence::ManifestRecord;

/// Serialises exporters: one manifest, one head.
pub const EXPORT_LOCK: i64 = 0x6576_6964_656e_6365; // "evidence"

/// Takes the transaction-scoped export lock (released at commit or rollback).
pub(super) async fn lock(connection: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(EXPORT_LOCK)
        .execute(connection)
        .await
        .context("taking the evidence export lock")?;
    Ok(())
}

/// The anchored head: the last record's sequence and `record_sha256`.
pub(super) async fn head(connection: &mut PgConnection) -> anyhow::Result<Option<(i64, String)>> {
    let row = sqlx::query(
        "SELECT sequence, record_sha256 FROM evidence_archive_files
          ORDER BY sequence DESC LIMIT 1",
    )
    .fetch_optional(connection)
    .await
    .context("reading the evidence anchor")?;
    Ok(row.map(|row| (row.get("sequence"), row.get("record_sha256"))))
}

pub(super) async fn insert(
    connection: &mut PgConnection,
    record: &ManifestRecord,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO evidence_archive_files
             (sequence, file, relation, range_from, range_to, entries, bytes, sha256,
              previous, record_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(record.sequence)
    .bind(&record.file)
    .bind(&record.relation)
    .bind(record.from)
    .bind(record.to)
    .bind(record.entries)
    .bind(record.bytes)
    .bind(&record.sha256)
    .bind(&record.previous)
    .bind(&record.record_sha256)
    .execute(connection)
    .await
    .with_context(|| format!("anchoring manifest record {}", record.sequence))?;
    Ok(())
}
