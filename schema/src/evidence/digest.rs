//! SHA-256 and length of an archive file, computed while it is written or read, so neither
//! side needs the file in memory.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// Lower-case hex SHA-256, the form every digest in the manifest takes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the manifest records of a file's content: its SHA-256 and its length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Lower-case hex.
    pub sha256: String,
    pub bytes: u64,
}

impl FileDigest {
    /// The digest of bytes in memory.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            sha256: sha256_hex(bytes),
            bytes: bytes.len() as u64,
        }
    }

    /// The digest of everything `reader` yields, read in chunks.
    pub fn of_reader(mut reader: impl Read) -> io::Result<Self> {
        let mut sink = HashingWriter::new(io::sink());
        io::copy(&mut reader, &mut sink)?;
        Ok(sink.finish().1)
    }
}

/// Passes writes on to `inner`, hashing and counting exactly the bytes `inner` accepted.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer (not flushed) and the digest of everything written through.
    pub fn finish(self) -> (W, FileDigest) {
        let digest = FileDigest {
            sha256: hex(&self.hasher.finalize()),
            bytes: self.bytes,
        };
        (self.inner, digest)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
