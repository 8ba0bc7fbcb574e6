//! The manifest against its anchor, `evidence_archive_files`: a chain rewritten consistently
//! on disk (every hash recomputed) still differs from what the exports committed.

use sqlx::{Connection as _, PgConnection, Row as _};

use connector_schema::evidence::ManifestRecord;

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("the database cannot be read: {0}")]
    Database(#[from] sqlx::Error),
    #[error(
        "manifest record {sequence} differs from its anchor in evidence_archive_files ({member} differs)"
    )]
    RecordDiffers { sequence: i64, member: &'static str },
    #[error("anchored record {sequence} ({file}) is missing from the manifest")]
    MissingOnDisk { sequence: i64, file: String },
    #[error("manifest record {sequence} ({file}) is not anchored in evidence_archive_files")]
    NotAnchored { sequence: i64, file: String },
}

/// Compares every manifest record with the anchored one of the same sequence; returns the
/// anchored head's sequence.
pub async fn check_anchor(
    database_url: &str,
    records: &[ManifestRecord],
) -> Result<i64, AnchorError> {
    let mut connection = PgConnection::connect(database_url).await?;
    let rows = sqlx::query(
        "SELECT sequence, file, relation, range_from, range_to, entries, bytes, sha256,
                previous, record_sha256
           FROM evidence_archive_files ORDER BY sequence",
    )
    .fetch_all(&mut connection)
    .await?;
    let _ = connection.close().await;
    let anchored: Vec<ManifestRecord> = rows
        .into_iter()
        .map(|row| ManifestRecord {
            sequence: row.get("sequence"),
            file: row.get("file"),
            relation: row.get("relation"),
            from: row.get("range_from"),
            to: row.get("range_to"),
            entries: row.get("entries"),
            bytes: row.get("bytes"),
            sha256: row.get("sha256"),
            previous: row.get("previous"),
            record_sha256: row.get("record_sha256"),
        })
        .collect();
    for (i, anchor) in anchored.iter().enumerate() {
        let Some(record) = records.get(i) else {
            return Err(AnchorError::MissingOnDisk {
                sequence: anchor.sequence,
                file: anchor.file.clone(),
            });
        };
        if let Some(member) = first_difference(record, anchor) {
            return Err(AnchorError::RecordDiffers {
                sequence: record.sequence,
                member,
            });
        }
    }
    if let Some(record) = records.get(anchored.len()) {
        return Err(AnchorError::NotAnchored {
            sequence: record.sequence,
            file: record.file.clone(),
        });
    }
    Ok(anchored.last().map_or(0, |r| r.sequence))
}

fn first_difference(disk: &ManifestRecord, anchor: &ManifestRecord) -> Option<&'static str> {
    [
        ("sequence", disk.sequence == anchor.sequence),
        ("file", disk.file == anchor.file),
        ("relation", disk.relation == anchor.relation),
        ("from", disk.from == anchor.from),
        ("to", disk.to == anchor.to),
        ("entries", disk.entries == anchor.entries),
        ("bytes", disk.bytes == anchor.bytes),
        ("sha256", disk.sha256 == anchor.sha256),
        ("previous", disk.previous == anchor.previous),
        ("record_sha256", disk.record_sha256 == anchor.record_sha256),
    ]
    .into_iter()
    .find(|(_, same)| !same)
    .map(|(member, _)| member)
}
