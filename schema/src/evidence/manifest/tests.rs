use time::macros::datetime;
use uuid::Uuid;

use super::*;
use crate::evidence::{
    ArchiveEntry, ArchivedEvent, FsArchiveStore, StagedArchive, decode_archive, encode_archive,
};

fn bounds() -> ArchiveBounds {
    ArchiveBounds {
        from: datetime!(2026-12-01 00:00 UTC),
        to: datetime!(2026-12-02 00:00 UTC),
    }
}

fn entry(n: u128) -> ArchiveEntry {
    ArchiveEntry {
        message_id: Uuid::from_u128(n),
        kind: "corelink.status".into(),
        received_at: datetime!(2026-12-01 10:00 UTC),
        processed_at: datetime!(2026-12-01 10:00:01 UTC),
        client_id: Some("BANK_X".into()),
        idempotency_key: Some("k".into()),
        nonce: Some("n".into()),
        request_path: Some("/callbacks/orders/status".into()),
        headers: serde_json::json!({"x-signature": "a.b.c"}),
        body_base64: "e30=".into(),
        body_sha256: "RBNvo1WzZ4oRRq0W9-hknpT7T8If536DEMBg9hyq_4o".into(),
        body_redacted: false,
        signature: Some("a.b.c".into()),
        verification: None,
        outcome: "applied".into(),
        events: vec![ArchivedEvent {
            event_id: Uuid::from_u128(n + 100),
            event_type: "order.succeeded".into(),
            reference: Some("PAY-1".into()),
        }],
    }
}

fn chain(n: usize) -> Vec<ManifestRecord> {
    let mut records: Vec<ManifestRecord> = Vec::new();
    for i in 0..n {
        let bytes = encode_archive(&[entry(i as u128)]);
        let record = ManifestRecord::new(
            records.last(),
            &format!("f{i}.ndjson.gz"),
            "received_messages",
            bounds(),
            1,
            &FileDigest::of(&bytes),
        );
        records.push(record);
    }
    records
}

#[test]
fn the_same_entries_give_the_same_bytes_and_read_back() {
    let entries = [entry(1), entry(2)];
    let first = encode_archive(&entries);
    assert_eq!(first, encode_archive(&entries));
    assert_eq!(decode_archive(&first).unwrap(), entries);
}

#[test]
fn a_file_that_is_not_gzip_is_an_error() {
    assert!(matches!(
        decode_archive(b"not gzip"),
        Err(crate::evidence::ArchiveFileError::Gzip(_))
    ));
}

#[test]
fn a_chain_verifies_and_renders_back() {
    let records = chain(3);
    verify_chain(&records).unwrap();
    assert_eq!(records[0].previous, GENESIS);
    assert_eq!(records[1].previous, records[0].record_sha256);
    let text = String::from_utf8(render_manifest(&records)).unwrap();
    assert_eq!(parse_manifest(&text).unwrap(), records);
}

#[test]
fn an_edited_record_is_named() {
    let mut records = chain(3);
    records[1].entries = 7;
    match verify_chain(&records) {
        Err(ChainError::RecordAltered { sequence: 2, file }) => assert_eq!(file, "f1.ndjson.gz"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_record_rehashed_after_an_edit_breaks_the_next_link() {
    let mut records = chain(3);
    records[1].entries = 7;
    records[1].record_sha256 = records[1].computed_record_sha256();
    assert!(matches!(
        verify_chain(&records),
        Err(ChainError::ChainBroken { sequence: 3, .. })
    ));
}

#[test]
fn a_removed_record_is_a_sequence_gap() {
    let mut records = chain(3);
    records.remove(1);
    assert!(matches!(
        verify_chain(&records),
        Err(ChainError::Sequence {
            line: 2,
            expected: 2,
            found: 3
        })
    ));
}

#[test]
fn a_malformed_line_is_named() {
    assert!(matches!(
        parse_manifest("{\"sequence\":1}\n"),
        Err(ChainError::MalformedRecord { line: 1, .. })
    ));
}

#[test]
fn a_file_is_checked_against_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArchiveStore::open(dir.path()).unwrap();
    let records = chain(1);
    assert!(matches!(
        verify_file(&store, &records[0]),
        Err(ChainError::FileMissing { sequence: 1, .. })
    ));
    let bytes = encode_archive(&[entry(0)]);
    store.put("f0.ndjson.gz", &bytes).unwrap();
    assert_eq!(verify_file(&store, &records[0]).unwrap(), bytes);
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    store.put("f0.ndjson.gz", &flipped).unwrap();
    match verify_file(&store, &records[0]) {
        Err(ChainError::FileAltered { file, .. }) => assert_eq!(file, "f0.ndjson.gz"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_store_lists_and_refuses_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsArchiveStore::open(dir.path()).unwrap();
    store.put("b", b"2").unwrap();
    store.put("a", b"1").unwrap();
    store.put("a", b"3").unwrap();
    assert_eq!(store.list().unwrap(), ["a", "b"]);
    assert_eq!(store.get("a").unwrap().unwrap(), b"3");
    assert_eq!(store.get("c").unwrap(), None);
    assert!(store.put("../x", b"").is_err());
    assert!(store.get("sub/x").is_err());
}

#[test]
fn bounds_are_recorded_at_the_databases_precision() {
    let bounds = ArchiveBounds {
        from: datetime!(2026-12-01 00:00:00.123456789 UTC),
        to: datetime!(2026-12-02 00:00 UTC),
    };
    let record = ManifestRecord::new(None, "f", "r", bounds, 0, &FileDigest::of(b""));
    assert_eq!(record.from, datetime!(2026-12-01 00:00:00.123456 UTC));
    assert_eq!(record.to, bounds.to);
}

/// Every name in the folder, hidden ones included.
fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn a_staged_file_appears_only_when_committed_and_leaves_nothing_when_dropped() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let store = FsArchiveStore::open(dir.path()).unwrap();

    let mut staged = store.stage("dropped").unwrap();
    staged.write_all(b"half a file").unwrap();
    assert_eq!(store.get("dropped").unwrap(), None);
    assert_eq!(
        files_in(dir.path()).len(),
        1,
        "the temporary is being written"
    );
    drop(staged);
    assert!(store.list().unwrap().is_empty());
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );

    store.put("kept", b"old").unwrap();
    let mut staged = store.stage("kept").unwrap();
    staged.write_all(b"new").unwrap();
    assert_eq!(store.get("kept").unwrap().unwrap(), b"old");
    staged.commit().unwrap();
    assert_eq!(store.get("kept").unwrap().unwrap(), b"new");
    assert_eq!(files_in(dir.path()), ["kept"]);

    assert!(store.stage("../x").is_err());
    assert!(store.reader("sub/x").is_err());
    assert!(store.reader("missing").unwrap().is_none());
}

#[test]
fn a_streamed_archive_is_byte_for_byte_the_encoded_one() {
    use base64::Engine as _;
    // Bodies that barely compress, so the file spans many encoder and file buffers.
    let entries: Vec<ArchiveEntry> = (0..3000u128)
        .map(|i| ArchiveEntry {
            body_base64: base64::engine::general_purpose::STANDARD
                .encode(sha256_hex(&i.to_le_bytes())),
            ..entry(i)
        })
        .collect();
    let expected = encode_archive(&entries);
    assert!(expected.len() > 150_000, "{}", expected.len());

    let dir = tempfile::tempdir().unwrap();
    let store = FsArchiveStore::open(dir.path()).unwrap();
    let mut archive = StagedArchive::new(&store, "p.ndjson.gz").unwrap();
    for entry in &entries {
        archive.append(entry).unwrap();
    }
    let written = archive.finish().unwrap();
    assert_eq!(written.entries, entries.len());
    assert_eq!(written.digest, FileDigest::of(&expected));
    assert_eq!(
        store.list().unwrap(),
        Vec::<String>::new(),
        "not yet committed"
    );
    written.file.commit().unwrap();

    assert_eq!(store.get("p.ndjson.gz").unwrap().unwrap(), expected);
    let reader = store.reader("p.ndjson.gz").unwrap().unwrap();
    assert_eq!(FileDigest::of_reader(reader).unwrap(), written.digest);
    assert_eq!(files_in(dir.path()), ["p.ndjson.gz"]);
}
