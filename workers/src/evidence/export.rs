//! Exporting one relation of received messages: archive file, manifest record, anchor.

use anyhow::Context as _;
use sqlx::PgConnection;

use connector_schema::evidence::{
    ArchiveBounds, ArchiveStore, FileDigest, MANIFEST_FILE, ManifestRecord, StagedArchive,
    parse_manifest, render_manifest, verify_chain,
};

use super::{ARCHIVE_BYTES_TOTAL, ARCHIVE_ENTRIES_TOTAL, ARCHIVE_FILES_TOTAL, anchor, rows};

/// Archives every row of `relation` (a partition of `received_messages`, or the whole table)
/// into `store` and returns its manifest record.
///
/// Must run inside the transaction that then drops the relation, with the relation locked
/// against writes: the anchor row is written in it, so the drop commits with its record or
/// neither does. Store writes happen before the commit: a crash in between leaves a file and
/// a manifest record that are not anchored, and the next export of the same relation (same
/// rows, same bytes) reuses them. The same relation with other content is refused: an
/// archived file is never overwritten.
///
/// The rows stream from the database into the gzip encoder and the staged file, hashed on the
/// way: memory stays at one row and the encoder's buffers, whatever the partition's size. The
/// store is written synchronously: a maintenance step, not the request path.
pub async fn export_partition(
    connection: &mut PgConnection,
    store: &dyn ArchiveStore,
    relation: &str,
    bounds: ArchiveBounds,
) -> anyhow::Result<ManifestRecord> {
    let bounds = bounds.at_microseconds();
    anchor::lock(&mut *connection).await?;
    let mut manifest = match store.get(MANIFEST_FILE).context("reading the manifest")? {
        Some(bytes) => parse_manifest(&String::from_utf8_lossy(&bytes))?,
        None => Vec::new(),
    };
    verify_chain(&manifest).context("the archive's manifest does not verify")?;
    let head = anchor::head(&mut *connection).await?;
    let file = file_name(relation, bounds)?;
    check_head(&manifest, head.as_ref(), &file)?;

    // Written to a staged file while the rows stream in: dropped uncommitted (an error, a
    // refusal, or the same file already stored) it leaves nothing behind.
    let mut archive = StagedArchive::new(store, &file).context("staging the archive file")?;
    rows::for_each_entry(&mut *connection, relation, |entry| {
        archive.append(&entry).context("writing the archive file")
    })
    .await?;
    let written = archive.finish().context("writing the archive file")?;

    if let Some(existing) = manifest.iter().find(|r| r.file == file) {
        anyhow::ensure!(
            existing.sha256 == written.digest.sha256
                && existing.relation == relation
                && existing.bounds() == bounds,
            "{relation} is already archived as {file} (record {}) with other content; \
             an archived file is never replaced",
            existing.sequence
        );
        let existing = existing.clone();
        let stored = store
            .reader(&file)
            .context("reading the archived file")?
            .map(FileDigest::of_reader)
            .transpose()
            .context("reading the archived file")?;
        if stored.as_ref() != Some(&written.digest) {
            written.file.commit().context("writing the archive file")?;
        }
        // Recorded by an export whose transaction did not commit: anchor it now.
        if head
            .as_ref()
            .is_none_or(|(sequence, _)| *sequence < existing.sequence)
        {
            anchor::insert(connection, &existing).await?;
        }
        return Ok(existing);
    }

    let record = ManifestRecord::new(
        manifest.last(),
        &file,
        relation,
        bounds,
        written.entries,
        &written.digest,
    );
    written.file.commit().context("writing the archive file")?;
    manifest.push(record.clone());
    store
        .put(MANIFEST_FILE, &render_manifest(&manifest))
        .context("appending to the manifest")?;
    anchor::insert(connection, &record).await?;

    metrics::counter!(ARCHIVE_FILES_TOTAL).increment(1);
    metrics::counter!(ARCHIVE_ENTRIES_TOTAL).increment(written.entries as u64);
    metrics::counter!(ARCHIVE_BYTES_TOTAL).increment(written.digest.bytes);
    tracing::info!(
        relation,
        file,
        sequence = record.sequence,
        entries = written.entries,
        bytes = written.digest.bytes,
        "relation archived"
    );
    Ok(record)
}

/// The manifest on disk must extend the anchored chain: the anchored head is in it,
/// unchanged, and at most one unanchored record follows: `file`'s, written by an export of
/// the same partition that did not commit. Another partition's unanchored record must be
/// settled by retrying that partition's export first, or the anchor would skip a sequence.
fn check_head(
    manifest: &[ManifestRecord],
    head: Option<&(i64, String)>,
    file: &str,
) -> anyhow::Result<()> {
    let anchored = head.map_or(0, |(sequence, _)| *sequence);
    if let Some((sequence, record_sha256)) = head {
        let on_disk = usize::try_from(*sequence - 1)
            .ok()
            .and_then(|i| manifest.get(i));
        anyhow::ensure!(
            on_disk.is_some_and(|r| &r.record_sha256 == record_sha256),
            "the manifest does not hold the anchored record {sequence} as anchored: \
             the archive was altered or is not this database's"
        );
    }
    let unanchored = manifest.len() as i64 - anchored;
    anyhow::ensure!(
        unanchored <= 1,
        "the manifest holds {unanchored} records not anchored in evidence_archive_files"
    );
    if let (1, Some(last)) = (unanchored, manifest.last()) {
        anyhow::ensure!(
            last.file == file,
            "manifest record {} ({}) was written by an export of {} that did not commit; \
             retry that export first",
            last.sequence,
            last.file,
            last.relation
        );
    }
    Ok(())
}

/// `<relation>.<from>.<to>.ndjson.gz`, times in UTC, basic ISO 8601 (no colons), with
/// microseconds only when the bound has them.
fn file_name(relation: &str, bounds: ArchiveBounds) -> anyhow::Result<String> {
    let basic = time::macros::format_description!("[year][month][day]T[hour][minute][second]");
    let format = |at: time::OffsetDateTime| -> anyhow::Result<String> {
        let at = at.to_offset(time::UtcOffset::UTC);
        let micros = at.microsecond();
        let fraction = if micros == 0 {
            String::new()
        } else {
            format!(".{micros:06}")
        };
        Ok(format!("{}{fraction}Z", at.format(&basic)?))
    };
    Ok(format!(
        "{relation}.{}.{}.ndjson.gz",
        format(bounds.from)?,
        format(bounds.to)?
    ))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn a_file_is_named_by_its_relation_and_bounds() {
        let bounds = ArchiveBounds {
            from: datetime!(2026-12-01 00:00 UTC),
            to: datetime!(2026-12-02 07:00 +07:00),
        };
        assert_eq!(
            file_name("received_messages_p20261201", bounds).unwrap(),
            "received_messages_p20261201.20261201T000000Z.20261202T000000Z.ndjson.gz"
        );
        let precise = ArchiveBounds {
            from: datetime!(2026-12-01 00:00:00.000250 UTC),
            to: datetime!(2026-12-02 00:00 UTC),
        };
        assert_eq!(
            file_name("r", precise).unwrap(),
            "r.20261201T000000.000250Z.20261202T000000Z.ndjson.gz"
        );
    }
}
