//! The evidence archive: raw requests exported before their partition of `received_messages`
//! is dropped, so a bank dispute can be answered years later from the archive alone. This
//! module holds the shapes only (entry, archive file, manifest chain, storage); the workers
//! write archives, `connector-evidence` verifies them and proves requests from them.

mod digest;
mod entry;
mod file;
mod manifest;
mod staged;
mod store;

pub use digest::{FileDigest, HashingWriter, sha256_hex};
pub use entry::{ArchiveEntry, ArchivedEvent};
pub use file::{ArchiveFileError, ArchiveWriter, decode_archive, encode_archive};
pub use manifest::{
    ArchiveBounds, ChainError, GENESIS, MANIFEST_FILE, ManifestRecord, parse_manifest,
    render_manifest, verify_chain, verify_file,
};
pub use staged::{StagedArchive, WrittenArchive};
pub use store::{ArchiveStore, FsArchiveStore, StagedFile};
