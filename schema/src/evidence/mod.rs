//! The evidence archive: raw requests exported before their partition of `received_messages`
//! is dropped, so a bank dispute can be answered years later from the archive alone. This
//! module holds the shapes only (entry, archive file, manifest chain, storage); the workers
//! write archives, `connector-evidence` verifies them and proves requests from them.

mod entry;
mod file;
mod manifest;
mod store;

pub use entry::{ArchiveEntry, ArchivedEvent};
pub use file::{ArchiveFileError, decode_archive, encode_archive};
pub use manifest::{
    ArchiveBounds, ChainError, GENESIS, MANIFEST_FILE, ManifestRecord, parse_manifest,
    render_manifest, verify_chain, verify_file,
};
pub use store::{ArchiveStore, FsArchiveStore};

/// Lower-case hex SHA-256, the form every digest in the manifest takes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
