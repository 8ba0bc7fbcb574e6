//! Where archive files and the manifest are kept, behind [`ArchiveStore`], so the archive can
//! live on a local (or mounted) disk today and in an object store later.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A place for archive files: every write is atomic (a reader sees the old bytes or the new,
/// never a part), `get` reads a whole file, `reader` streams one, `list` names every file.
///
/// Archive files are written through [`stage`](Self::stage): the file is written piece by
/// piece while the partition is read, and appears under its name only on
/// [`StagedFile::commit`]; a staged file dropped uncommitted leaves nothing behind. `put` is a
/// whole file in one go (the manifest).
///
/// An S3-compatible store fits as it is: `stage` is a multipart upload (`CreateMultipartUpload`,
/// an `UploadPart` each time the buffered bytes reach the part size), `commit` its
/// `CompleteMultipartUpload` (the object appears whole or not at all) and dropping it
/// uncommitted an `AbortMultipartUpload`; `put` is one `PutObject` (atomic by nature), `get`
/// and `reader` a `GetObject` (read whole, or its body streamed), `list` a `ListObjectsV2`. The
/// bucket has Object Lock in compliance mode (WORM): archive files are written once and never
/// replaced. The manifest, which is rewritten with each appended record, is kept under
/// versioning so that every earlier version stays retained and readable: the chain then also
/// proves that no earlier record was removed. Only the filesystem store is implemented;
/// copying its files to such a bucket is described in the README.
pub trait ArchiveStore: Send + Sync + std::fmt::Debug {
    /// A new file `name`, invisible until committed.
    fn stage(&self, name: &str) -> io::Result<Box<dyn StagedFile>>;
    /// `name` with exactly `bytes`, replacing any earlier version.
    fn put(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.stage(name)?;
        file.write_all(bytes)?;
        file.commit()
    }
    /// `None` when there is no such file.
    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>>;
    /// The file's content as a stream; `None` when there is no such file.
    fn reader(&self, name: &str) -> io::Result<Option<Box<dyn io::Read + Send>>>;
    /// Every file's name, sorted.
    fn list(&self) -> io::Result<Vec<String>>;
}

/// A file being written to an [`ArchiveStore`]. Dropping it without [`commit`](Self::commit)
/// discards it: nothing appears under its name and nothing of it stays in the store.
pub trait StagedFile: Write + Send + std::fmt::Debug {
    /// Publishes everything written under the file's name, atomically and durably (replacing
    /// any earlier file of that name).
    fn commit(self: Box<Self>) -> io::Result<()>;
}

/// Files in one folder. A staged file is a hidden temporary file in the folder; its commit
/// fsyncs it, renames it over the name and fsyncs the folder, so a crash leaves either the old
/// file or the new one, durably. A crash before the commit can leave a hidden `.partial` file,
/// which `list` does not name and a later export does not reuse.
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
    fn stage(&self, name: &str) -> io::Result<Box<dyn StagedFile>> {
        // Unique per process and per stage: two stagings of one name never share a temporary.
        static STAGED: AtomicU64 = AtomicU64::new(0);
        let path = self.path_of(name)?;
        let temporary = self.directory.join(format!(
            ".{name}.{}.{}.partial",
            std::process::id(),
            STAGED.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        Ok(Box::new(FsStagedFile {
            file: Some(BufWriter::new(file)),
            temporary,
            path,
            directory: self.directory.clone(),
            renamed: false,
        }))
    }

    fn get(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.path_of(name)?) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn reader(&self, name: &str) -> io::Result<Option<Box<dyn io::Read + Send>>> {
        match File::open(self.path_of(name)?) {
            Ok(file) => Ok(Some(Box::new(file))),
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

/// A temporary file in the store's folder, renamed over its name on commit.
#[derive(Debug)]
struct FsStagedFile {
    /// `None` once committed.
    file: Option<BufWriter<File>>,
    temporary: PathBuf,
    path: PathBuf,
    directory: PathBuf,
    /// The temporary is now the file under `path`.
    renamed: bool,
}

impl FsStagedFile {
    fn file(&mut self) -> io::Result<&mut BufWriter<File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("the staged file is already committed"))
    }
}

impl Write for FsStagedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file()?.flush()
    }
}

impl StagedFile for FsStagedFile {
    fn commit(mut self: Box<Self>) -> io::Result<()> {
        let file = self.file()?;
        file.flush()?;
        file.get_ref().sync_all()?;
        self.file = None;
        fs::rename(&self.temporary, &self.path)?;
        self.renamed = true;
        File::open(&self.directory)?.sync_all()
    }
}

impl Drop for FsStagedFile {
    fn drop(&mut self) {
        // Uncommitted, or the commit failed before its rename: the temporary must not stay.
        if !self.renamed {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}
