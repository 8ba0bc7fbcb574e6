//! An archive file written into the store entry by entry, hashed and counted on the way, so
//! exporting a partition holds one entry in memory, never the partition or its file.

use std::io;

use super::{ArchiveEntry, ArchiveStore, ArchiveWriter, FileDigest, HashingWriter, StagedFile};

/// An archive file being written to a store, invisible under its name until committed.
#[derive(Debug)]
pub struct StagedArchive {
    writer: ArchiveWriter<HashingWriter<Box<dyn StagedFile>>>,
}

/// A complete archive file, staged: commit `file` to publish it, drop it to discard it.
#[derive(Debug)]
pub struct WrittenArchive {
    pub file: Box<dyn StagedFile>,
    /// Of the file's bytes (the gzip stream), what its manifest record states.
    pub digest: FileDigest,
    pub entries: usize,
}

impl StagedArchive {
    pub fn new(store: &dyn ArchiveStore, name: &str) -> io::Result<Self> {
        let file = store.stage(name)?;
        Ok(Self {
            writer: ArchiveWriter::new(HashingWriter::new(file)),
        })
    }

    /// Appends `entry`; entries must come in the file's order.
    pub fn append(&mut self, entry: &ArchiveEntry) -> io::Result<()> {
        self.writer.append(entry)
    }

    /// Ends the file; it is still to be committed.
    pub fn finish(self) -> io::Result<WrittenArchive> {
        let (hashing, entries) = self.writer.finish()?;
        let (file, digest) = hashing.finish();
        Ok(WrittenArchive {
            file,
            digest,
            entries,
        })
    }
}
