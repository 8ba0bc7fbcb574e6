//! One archive file: gzip-compressed newline-delimited JSON, one entry a line. Deterministic
//! (no mtime, no file name in the gzip header, entries in the caller's order), so the same
//! rows always give the same bytes and a re-export can be compared byte for byte.

use std::io::{self, Read as _, Write};

use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};

use super::ArchiveEntry;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveFileError {
    #[error("not a gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    #[error("line {line} is not an archive entry: {source}")]
    Entry {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Writes an archive file entry by entry into `W`, so the entries never have to be in memory
/// together. The bytes are those [`encode_archive`] gives for the same entries.
pub struct ArchiveWriter<W: Write> {
    encoder: GzEncoder<W>,
    /// One entry's JSON, reused from line to line.
    line: Vec<u8>,
    entries: usize,
}

impl<W: Write> std::fmt::Debug for ArchiveWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveWriter")
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            // `mtime(0)` and no filename: the header carries nothing that varies between runs.
            encoder: GzBuilder::new()
                .mtime(0)
                .write(inner, Compression::default()),
            line: Vec::new(),
            entries: 0,
        }
    }

    /// Appends `entry` as the next line.
    pub fn append(&mut self, entry: &ArchiveEntry) -> io::Result<()> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, entry).map_err(io::Error::other)?;
        // Line and newline as two writes, exactly as every earlier archive was written, so a
        // re-export of a partition archived by an older build gives the same bytes.
        self.encoder.write_all(&self.line)?;
        self.encoder.write_all(b"\n")?;
        self.entries += 1;
        Ok(())
    }

    /// Entries appended so far.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Ends the gzip stream; returns the inner writer (not flushed) and the entry count.
    pub fn finish(self) -> io::Result<(W, usize)> {
        Ok((self.encoder.finish()?, self.entries))
    }
}

/// The file's bytes for `entries`, in the order given.
pub fn encode_archive(entries: &[ArchiveEntry]) -> Vec<u8> {
    let mut writer = ArchiveWriter::new(Vec::new());
    for entry in entries {
        // Serialising a plain struct of strings and JSON values into a Vec cannot fail.
        let _ = writer.append(entry);
    }
    writer.finish().map(|(bytes, _)| bytes).unwrap_or_default()
}

/// The entries of an archive file.
pub fn decode_archive(bytes: &[u8]) -> Result<Vec<ArchiveEntry>, ArchiveFileError> {
    let mut text = String::new();
    GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(ArchiveFileError::Gzip)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|source| ArchiveFileError::Entry {
                line: i + 1,
                source,
            })
        })
        .collect()
}
