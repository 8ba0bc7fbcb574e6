//! The evidence archive's writer: before a partition of raw requests (`received_messages`) is
//! dropped, its rows are exported to an archive file, chained into the manifest and anchored
//! in `evidence_archive_files`, all inside the transaction that drops the partition. The
//! format is `connector_schema::evidence`'s; `connector-evidence` verifies and proves.

mod anchor;
mod export;
mod hook;
mod rows;
mod settings;

pub use anchor::EXPORT_LOCK;
pub use export::export_partition;
pub use hook::EvidenceArchiver;
pub use settings::EvidenceSettings;

/// Archive files written (a re-export that reuses its record is not counted).
pub const ARCHIVE_FILES_TOTAL: &str = "connector_worker_archive_files_total";
/// Entries (received-message rows) written into archive files.
pub const ARCHIVE_ENTRIES_TOTAL: &str = "connector_worker_archive_entries_total";
/// Bytes of archive files written.
pub const ARCHIVE_BYTES_TOTAL: &str = "connector_worker_archive_bytes_total";
