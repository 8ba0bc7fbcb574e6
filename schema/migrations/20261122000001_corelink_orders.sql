-- Corelink orders, their notification history, message-level idempotency, quarantine and the
-- ledger outbox. Everything one intake message changes is written in one transaction.

-- Every intake message the workers finished with (applied, duplicate or replay), with the raw
-- request for audit: "what exactly did the bank send us, and when".
CREATE TABLE received_messages (
    message_id      uuid        PRIMARY KEY,          -- the envelope's id (UUID v7)
    kind            text        NOT NULL,             -- intake routing key
    client_id       text,
    idempotency_key text,
    nonce           text,
    body_sha256     text        NOT NULL,             -- base64url SHA-256 of the raw body
    outcome         text        NOT NULL,             -- applied | duplicate | replay
    received_at     timestamptz NOT NULL,             -- by the ingress
    processed_at    timestamptz NOT NULL DEFAULT now(),
    request_path    text,
    headers         jsonb       NOT NULL,
    body            bytea       NOT NULL
);
CREATE INDEX received_messages_by_key ON received_messages (client_id, idempotency_key);

-- Idempotency keys (§3.4). For a unit call the key is bound to the first reference seen with
-- it; for a batch it is bound to the batch's content digest (compared by meaning).
CREATE TABLE idempotency_keys (
    client_id        text        NOT NULL,
    idempotency_key  text        NOT NULL,
    scope            text        NOT NULL CHECK (scope IN ('unit', 'batch')),
    reference        text,                             -- unit: the order it belongs to
    content_digest   text,                             -- batch: digest of its parsed orders
    first_message_id uuid        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, idempotency_key)
);

-- Nonces seen by any worker: an exact replay is a no-op, the same nonce on another request is
-- quarantined. Purged once older than any replay the ingress could still accept and queue.
CREATE TABLE seen_nonces (
    client_id           text        NOT NULL,
    nonce               text        NOT NULL,
    request_fingerprint text        NOT NULL,          -- what the bank signed, minus the signature
    message_id          uuid        NOT NULL,
    request_timestamp   timestamptz NOT NULL,          -- X-Timestamp
    seen_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (client_id, nonce)
);
CREATE INDEX seen_nonces_by_age ON seen_nonces (seen_at);

-- One row per payment order: its current status. The bank is the source of truth and a final
-- status never changes.
CREATE TABLE orders (
    reference          text        PRIMARY KEY,
    client_id          text        NOT NULL,           -- the bank that reports this order
    status             text        NOT NULL CHECK (status IN ('PENDING', 'SUCCESS', 'FAILED')),
    bank_reference     text,
    reason_code        text,
    reason_message     text,
    bank_processed_at  timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

-- Every notification received for an order, whatever it changed: who, when, what.
CREATE TABLE order_history (
    id                bigserial   PRIMARY KEY,
    reference         text        NOT NULL REFERENCES orders (reference),
    message_id        uuid        NOT NULL,
    client_id         text        NOT NULL,
    idempotency_key   text        NOT NULL,
    batch_id          text,
    status            text        NOT NULL,
    previous_status   text,
    effect            text        NOT NULL CHECK (effect IN ('created', 'applied', 'unchanged', 'stale')),
    bank_reference    text,
    reason_code       text,
    reason_message    text,
    bank_processed_at timestamptz NOT NULL,
    received_at       timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_history_by_reference ON order_history (reference, id);

-- Messages that are valid but cannot be applied, held for a human with their reason and the
-- raw request (never dropped).
CREATE TABLE quarantined_messages (
    message_id      uuid        PRIMARY KEY,
    reason          text        NOT NULL,              -- IDEMPOTENCY_KEY_REUSED, FINAL_STATUS_CONFLICT, ...
    detail          text        NOT NULL,
    kind            text        NOT NULL,
    client_id       text,
    idempotency_key text,
    received_at     timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    state           text        NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released', 'discarded')),
    resolved_at     timestamptz,
    resolution_note text,
    request_path    text,
    headers         jsonb       NOT NULL,
    body            bytea       NOT NULL
);
CREATE INDEX quarantined_messages_held ON quarantined_messages (quarantined_at) WHERE state = 'held';

-- The transactional outbox of ledger events. Written in the apply transaction, published by the
-- relay, marked published only after the broker confirmed.
CREATE TABLE ledger_outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL UNIQUE,         -- deterministic (UUID v5), §6
    event_type   text        NOT NULL,
    reference    text        NOT NULL,
    body         text        NOT NULL,                -- the exact JSON published
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);
CREATE INDEX ledger_outbox_unpublished ON ledger_outbox (id) WHERE published_at IS NULL;

-- Wakes the relays as soon as events are committed (they also poll, in case a notification is
-- missed while they reconnect).
CREATE FUNCTION notify_ledger_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_outbox', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER ledger_outbox_notify AFTER INSERT ON ledger_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION notify_ledger_outbox();
