//! Where archive files and the manifest are kept, behind [`ArchiveStore`], so the archive can
//! live on a local (or mounted) disk today and in an object store later.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// A place for archive files: every `put` is atomic (a reader sees the old bytes or the new,
/// never a part), `get` reads a whole file, `list` names every file.
///
/// An S3-compatible store fits as it is: `put` is one `PutObject` (atomic by nature) into a
/// bucket with Object Lock in compliance mode (WORM), `get` a `GetObject`, `list` a
/// `ListObjectsV2`. Archive files are written once and never replaced. The manifest, which is
/// rewritten with each appended record, is kept under versioning so that every earlier
/// version stays retained and readable: the chain then also proves that no earlier record was
/// removed. Only the filesystem store is implemented; copying its files to such a bucket is
/// described in the README.
pub trait ArchiveStore: Send + Sync + std::fmt::Debug {
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// `None` when there is no such file.
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// Every file's name, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// Files in one folder. `put` writes a temporary file, fsyncs it, renames it over the name and
/// fsyncs the folder, so a crash leaves either the old file or the new one, durably.
#[derive(Debug, Clone)]
pub struct FsArchiveStore {
    directory: PathBuf,
}

impl FsArchiveStore {
    /// The store in `directory`, created if missing.
    pub fn open(directory: impl Into<PathBuf>) -> io::Result<Self> {
        let directory = directory.into();
        fs::create_dir_all(&directory)?;
        Ok(Self { directory })
    }

    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn path_of(&self, name: &str) -> io::Result<PathBuf> {
        // A name is one plain file name: never a path that leaves the folder.
        if name.is_empty()
            || name.starts_with('.')
            || name.contains(['/', '\\'])
            || name.contains("..")
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{name}` is not an archive file name"),
            ));
        }
        Ok(self.directory.join(name))
    }
}

impl ArchiveStore for FsArchiveStore {
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path_of(name)?;
        let temporary = self
            .directory
            .join(format!(".{name}.{}.partial", std::process::id()));
        let mut file = File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temporary, &path)?;
        File::open(&self.directory)?.sync_all()
    }

    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(name)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.directory)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
                && !name.starts_with('.')
            {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}
