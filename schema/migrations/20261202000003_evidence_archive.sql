-- The anchor of the evidence archive's manifest chain: each manifest record is also written
-- here, in the transaction that exports (and then drops) its partition, so the drop commits
-- with its record or not at all, and a chain rewritten on disk no longer matches this table.
CREATE TABLE evidence_archive_files (
    sequence      bigint      PRIMARY KEY CHECK (sequence > 0),
    file          text        NOT NULL UNIQUE,
    relation      text        NOT NULL,
    range_from    timestamptz NOT NULL,
    range_to      timestamptz NOT NULL,
    entries       bigint      NOT NULL,
    bytes         bigint      NOT NULL,
    sha256        text        NOT NULL,
    previous      text        NOT NULL,
    record_sha256 text        NOT NULL UNIQUE,
    archived_at   timestamptz NOT NULL DEFAULT now()
);
