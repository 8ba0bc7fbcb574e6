-- The tables that grow with traffic become RANGE-partitioned on their insert-time column, so
-- that their retention is a cheap DROP of whole partitions instead of a DELETE that bloats the
-- table and holds locks (the workers' `lifecycle` role creates partitions ahead and drops old
-- ones; see README "Data retention").
--
-- Upgrade without copying: each existing table is renamed `<table>_legacy` and attached as the
-- first partition, FROM (MINVALUE) TO (this migration's now()). A CHECK proving the bound is
-- added first so that ATTACH trusts it instead of scanning under its lock. The partitions
-- after it are created by the workers (`lifecycle::partitions::ensure_ahead`) right after the
-- migrations, before anything inserts.
--
-- There is deliberately no DEFAULT partition: every partition created later would have to scan
-- it under lock to prove none of its rows belong to the new range, and a row that landed there
-- (a clock far ahead) would make that creation fail for good. An insert without a partition
-- fails loudly instead, and `connector_worker_partitions_ahead` alerts long before.

-- received_messages: the delivery log. A unique index of a partitioned table must include the
-- partition key, so `message_id` alone is no longer unique: a message delivered again after
-- its transaction committed (a worker died before its ack) adds a second row with its own
-- outcome (`duplicate` for an idempotency key already bound, `replay` for a nonce already
-- seen). That is the truthful delivery log: one row per delivery the workers finished with.
ALTER TABLE received_messages RENAME TO received_messages_legacy;
ALTER TABLE received_messages_legacy DROP CONSTRAINT received_messages_pkey;
ALTER INDEX received_messages_by_key RENAME TO received_messages_legacy_by_key;
CREATE TABLE received_messages (
    LIKE received_messages_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (message_id, processed_at)
) PARTITION BY RANGE (processed_at);
CREATE INDEX received_messages_by_key ON received_messages (client_id, idempotency_key);

-- order_history and paysafe_item_history: keep their sequences and foreign keys (a
-- partitioned table may reference a plain one).
ALTER TABLE order_history RENAME TO order_history_legacy;
ALTER TABLE order_history_legacy DROP CONSTRAINT order_history_pkey;
ALTER INDEX order_history_by_reference RENAME TO order_history_legacy_by_reference;
CREATE TABLE order_history (
    LIKE order_history_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (id, recorded_at),
    FOREIGN KEY (reference) REFERENCES orders (reference)
) PARTITION BY RANGE (recorded_at);
ALTER SEQUENCE order_history_id_seq OWNED BY order_history.id;
CREATE INDEX order_history_by_reference ON order_history (reference, id);

ALTER TABLE paysafe_item_history RENAME TO paysafe_item_history_legacy;
ALTER TABLE paysafe_item_history_legacy DROP CONSTRAINT paysafe_item_history_pkey;
ALTER INDEX paysafe_item_history_by_item RENAME TO paysafe_item_history_legacy_by_item;
CREATE TABLE paysafe_item_history (
    LIKE paysafe_item_history_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (id, recorded_at),
    FOREIGN KEY (item_id) REFERENCES paysafe_items (id)
) PARTITION BY RANGE (recorded_at);
ALTER SEQUENCE paysafe_item_history_id_seq OWNED BY paysafe_item_history.id;
CREATE INDEX paysafe_item_history_by_item ON paysafe_item_history (item_id, id);

-- ledger_outbox: its global UNIQUE (event_id) cannot stay on a partitioned table, and would
-- not survive the drop of published rows anyway. Exactly-once moves to emitted_ledger_events,
-- below, kept for ever.
ALTER TABLE ledger_outbox RENAME TO ledger_outbox_legacy;
ALTER TABLE ledger_outbox_legacy DROP CONSTRAINT ledger_outbox_pkey;
ALTER TABLE ledger_outbox_legacy DROP CONSTRAINT ledger_outbox_event_id_key;
ALTER INDEX ledger_outbox_unpublished RENAME TO ledger_outbox_legacy_unpublished;
DROP TRIGGER ledger_outbox_notify ON ledger_outbox_legacy;
CREATE TABLE ledger_outbox (
    LIKE ledger_outbox_legacy INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING COMMENTS,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
ALTER SEQUENCE ledger_outbox_id_seq OWNED BY ledger_outbox.id;
CREATE INDEX ledger_outbox_unpublished ON ledger_outbox (id) WHERE published_at IS NULL;
-- A statement trigger on the partitioned table fires for every insert through it.
CREATE TRIGGER ledger_outbox_notify AFTER INSERT ON ledger_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ledger_outbox();

-- Every ledger event ever emitted, by its deterministic id: whether an event is written is
-- decided here (and by the state tables), never by the purged ones, so a retry arriving after
-- its outbox row, idempotency key and nonce were dropped still cannot emit it twice.
-- `message_id`: the intake message that caused it (NULL for the poller and the deadline).
CREATE TABLE emitted_ledger_events (
    event_id   uuid        PRIMARY KEY,
    event_type text        NOT NULL,
    reference  text        NOT NULL,
    message_id uuid,
    emitted_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX emitted_ledger_events_by_message ON emitted_ledger_events (message_id);
INSERT INTO emitted_ledger_events (event_id, event_type, reference, emitted_at)
    SELECT event_id, event_type, reference, created_at FROM ledger_outbox_legacy;

-- Attach the old tables as the first partitions, with their existing indexes (ATTACH adopts an
-- index of the same definition and builds the others).
DO $$
DECLARE
    upgraded_at constant text := quote_literal(now()::text);
    legacy record;
BEGIN
    FOR legacy IN SELECT * FROM (VALUES
        ('received_messages', 'processed_at'),
        ('order_history', 'recorded_at'),
        ('paysafe_item_history', 'recorded_at'),
        ('ledger_outbox', 'created_at')) AS t (parent, column_name)
    LOOP
        EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I IS NOT NULL AND %I < %s)',
            legacy.parent || '_legacy', legacy.parent || '_legacy_bound',
            legacy.column_name, legacy.column_name, upgraded_at);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%s)',
            legacy.parent, legacy.parent || '_legacy', upgraded_at);
        -- Once attached, the partition constraint holds the bound; the CHECK is redundant.
        EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I',
            legacy.parent || '_legacy', legacy.parent || '_legacy_bound');
    END LOOP;
END;
$$;

-- Purged by batched DELETE (not partitioned): idempotency keys by age.
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
-- Resolved quarantine rows by age of their resolution (held rows are never purged).
CREATE INDEX quarantined_messages_resolved ON quarantined_messages (resolved_at)
    WHERE state IN ('released', 'discarded');
