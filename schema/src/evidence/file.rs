//! One archive file: gzip-compressed newline-delimited JSON, one entry a line. Deterministic
//! (no mtime, no file name in the gzip header, entries in the caller's order), so the same
//! rows always give the same bytes and a re-export can be compared byte for byte.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::GzBuilder;
use flate2::read::GzDecoder;

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

/// The file's bytes for `entries`, in the order given.
pub fn encode_archive(entries: &[ArchiveEntry]) -> Vec<u8> {
    // `mtime(0)` and no filename: the header carries nothing that varies between runs.
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::default());
    for entry in entries {
        // Serialising a plain struct of strings and JSON values cannot fail.
        let line = serde_json::to_vec(entry).unwrap_or_default();
        // Writes into a Vec cannot fail.
        let _ = encoder.write_all(&line);
        let _ = encoder.write_all(b"\n");
    }
    encoder.finish().unwrap_or_default()
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
