//! The manifest: an append-only `manifest.ndjson`, one record per archive file, each record
//! chained to the one before by `previous` (the earlier record's `record_sha256`). Changing a
//! file changes its hash; changing a record changes its `record_sha256`, which breaks the
//! next record's `previous`. Rewriting the whole chain consistently is what the database
//! anchor (`evidence_archive_files`) catches.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{ArchiveStore, FileDigest, sha256_hex};

/// The manifest's file name in an archive folder.
pub const MANIFEST_FILE: &str = "manifest.ndjson";

/// `previous` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `processed_at` range a partition covers, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveBounds {
    pub from: OffsetDateTime,
    pub to: OffsetDateTime,
}

impl ArchiveBounds {
    /// The bounds at PostgreSQL's precision (whole microseconds), the precision a record is
    /// anchored with: a record hashed with finer bounds would never match its anchor.
    pub fn at_microseconds(self) -> Self {
        let truncate = |at: OffsetDateTime| {
            at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
                .unwrap_or(at)
        };
        Self {
            from: truncate(self.from),
            to: truncate(self.to),
        }
    }
}

/// One archive file, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestRecord {
    /// 1, 2, 3, ... in the order the files were archived.
    pub sequence: i64,
    pub file: String,
    /// The relation (partition) the rows came from.
    pub relation: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub to: OffsetDateTime,
    pub entries: i64,
    pub bytes: i64,
    /// Hex SHA-256 of the archive file.
    pub sha256: String,
    /// The previous record's `record_sha256`, or [`GENESIS`].
    pub previous: String,
    /// Hex SHA-256 of this record's canonical form (every other member, `previous` included).
    pub record_sha256: String,
}

/// The members a record's hash covers, in this fixed order (serde keeps the field order).
#[derive(Serialize)]
struct Canonical<'a> {
    sequence: i64,
    file: &'a str,
    relation: &'a str,
    #[serde(with = "time::serde::rfc3339")]
    from: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    to: OffsetDateTime,
    entries: i64,
    bytes: i64,
    sha256: &'a str,
    previous: &'a str,
}

impl ManifestRecord {
    /// The record for a file of `digest` holding `entries` entries, archived as `file` from
    /// `relation`, after `previous` (`None` for the first record).
    pub fn new(
        previous: Option<&ManifestRecord>,
        file: &str,
        relation: &str,
        bounds: ArchiveBounds,
        entries: usize,
        digest: &FileDigest,
    ) -> Self {
        let bounds = bounds.at_microseconds();
        let mut record = Self {
            sequence: previous.map_or(1, |p| p.sequence + 1),
            file: file.to_owned(),
            relation: relation.to_owned(),
            from: bounds.from,
            to: bounds.to,
            entries: i64::try_from(entries).unwrap_or(i64::MAX),
            bytes: i64::try_from(digest.bytes).unwrap_or(i64::MAX),
            sha256: digest.sha256.clone(),
            previous: previous.map_or_else(|| GENESIS.to_owned(), |p| p.record_sha256.clone()),
            record_sha256: String::new(),
        };
        record.record_sha256 = record.computed_record_sha256();
        record
    }

    /// SHA-256 over the canonical form: compact JSON of every member but `record_sha256`.
    pub fn computed_record_sha256(&self) -> String {
        let canonical = Canonical {
            sequence: self.sequence,
            file: &self.file,
            relation: &self.relation,
            from: self.from,
            to: self.to,
            entries: self.entries,
            bytes: self.bytes,
            sha256: &self.sha256,
            previous: &self.previous,
        };
        // A struct of strings and integers always serialises.
        sha256_hex(&serde_json::to_vec(&canonical).unwrap_or_default())
    }

    pub fn bounds(&self) -> ArchiveBounds {
        ArchiveBounds {
            from: self.from,
            to: self.to,
        }
    }
}

/// The first thing wrong with an archive; each names the record or file.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("the manifest cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("manifest line {line} is not a manifest record: {source}")]
    MalformedRecord {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("manifest line {line} has sequence {found}, expected {expected}")]
    Sequence {
        line: usize,
        expected: i64,
        found: i64,
    },
    #[error("manifest record {sequence} ({file}): its record_sha256 does not match its content")]
    RecordAltered { sequence: i64, file: String },
    #[error(
        "chain broken at manifest record {sequence} ({file}): `previous` is not the record_sha256 of record {}",
        sequence - 1
    )]
    ChainBroken { sequence: i64, file: String },
    #[error("archive file {file} (record {sequence}) is missing")]
    FileMissing { sequence: i64, file: String },
    #[error(
        "archive file {file} (record {sequence}) does not match its record: sha256 {actual}, recorded {expected}"
    )]
    FileAltered {
        sequence: i64,
        file: String,
        expected: String,
        actual: String,
    },
}

/// The records of a manifest's text (no check beyond the syntax).
pub fn parse_manifest(text: &str) -> Result<Vec<ManifestRecord>, ChainError> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| ChainError::MalformedRecord {
                line: i + 1,
                source,
            })
        })
        .collect()
}

/// The manifest's text for `records`, one compact JSON record a line.
pub fn render_manifest(records: &[ManifestRecord]) -> Vec<u8> {
    let mut text = Vec::new();
    for record in records {
        text.extend(serde_json::to_vec(record).unwrap_or_default());
        text.push(b'\n');
    }
    text
}

/// Checks every record's own hash, its sequence and its link to the record before.
pub fn verify_chain(records: &[ManifestRecord]) -> Result<(), ChainError> {
    let mut previous = GENESIS.to_owned();
    for (i, record) in records.iter().enumerate() {
        let expected = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if record.sequence != expected {
            return Err(ChainError::Sequence {
                line: i + 1,
                expected,
                found: record.sequence,
            });
        }
        if record.record_sha256 != record.computed_record_sha256() {
            return Err(ChainError::RecordAltered {
                sequence: record.sequence,
                file: record.file.clone(),
            });
        }
        if record.previous != previous {
            return Err(ChainError::ChainBroken {
                sequence: record.sequence,
                file: record.file.clone(),
            });
        }
        previous.clone_from(&record.record_sha256);
    }
    Ok(())
}

/// Checks that `record`'s file is in `store` and hashes to what the record says; returns its
/// bytes.
pub fn verify_file(
    store: &dyn ArchiveStore,
    record: &ManifestRecord,
) -> Result<Vec<u8>, ChainError> {
    let bytes = store
        .get(&record.file)
        .map_err(ChainError::Unreadable)?
        .ok_or_else(|| ChainError::FileMissing {
            sequence: record.sequence,
            file: record.file.clone(),
        })?;
    let actual = sha256_hex(&bytes);
    if actual != record.sha256 {
        return Err(ChainError::FileAltered {
            sequence: record.sequence,
            file: record.file.clone(),
            expected: record.sha256.clone(),
            actual,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests;
