//! An archive folder opened for reading: its manifest, checked, and its entries.

use std::path::Path;

use connector_schema::evidence::{
    ArchiveEntry, ArchiveFileError, ArchiveStore as _, ChainError, FsArchiveStore, MANIFEST_FILE,
    ManifestRecord, decode_archive, parse_manifest, verify_chain, verify_file,
};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{0}: no such archive folder")]
    NoFolder(String),
    #[error("{0} has no {MANIFEST_FILE}")]
    NoManifest(String),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error("archive file {file}: {source}")]
    File {
        file: String,
        #[source]
        source: ArchiveFileError,
    },
}

/// A verified manifest, and the store its files are read from.
#[derive(Debug)]
pub struct Archive {
    pub store: FsArchiveStore,
    pub records: Vec<ManifestRecord>,
}

impl Archive {
    /// Reads the manifest and checks its chain (not yet the files).
    pub fn open(directory: &Path) -> Result<Self, ArchiveError> {
        if !directory.is_dir() {
            return Err(ArchiveError::NoFolder(directory.display().to_string()));
        }
        let store = FsArchiveStore::open(directory).map_err(ChainError::Unreadable)?;
        let manifest = store
            .get(MANIFEST_FILE)
            .map_err(ChainError::Unreadable)?
            .ok_or_else(|| ArchiveError::NoManifest(directory.display().to_string()))?;
        let records = parse_manifest(&String::from_utf8_lossy(&manifest))?;
        verify_chain(&records)?;
        Ok(Self { store, records })
    }

    /// Checks every file against its record.
    pub fn verify_files(&self) -> Result<(), ArchiveError> {
        for record in &self.records {
            verify_file(&self.store, record)?;
        }
        Ok(())
    }

    /// The entries of `record`'s file, once its hash is checked.
    pub fn entries(&self, record: &ManifestRecord) -> Result<Vec<ArchiveEntry>, ArchiveError> {
        let bytes = verify_file(&self.store, record)?;
        decode_archive(&bytes).map_err(|source| ArchiveError::File {
            file: record.file.clone(),
            source,
        })
    }

    /// Every archived entry that `matches`, with the record of its file. Every file is
    /// checked on the way (a request may be in any of them).
    pub fn find(
        &self,
        matches: impl Fn(&ArchiveEntry) -> bool,
    ) -> Result<Vec<(&ManifestRecord, ArchiveEntry)>, ArchiveError> {
        let mut found = Vec::new();
        for record in &self.records {
            for entry in self.entries(record)? {
                if matches(&entry) {
                    found.push((record, entry));
                }
            }
        }
        Ok(found)
    }
}
