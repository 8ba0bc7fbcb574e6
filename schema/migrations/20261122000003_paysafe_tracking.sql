-- Paysafe payments and standalone credits tracked until final (DESIGN.md §5), from webhooks,
-- track commands and polling. One row per Paysafe id with its last known status; every fact
-- received is in the history. Webhooks, track commands and poll answers all change a row in one
-- transaction with its history and outbox events.
CREATE TABLE paysafe_items (
    id                text        PRIMARY KEY,         -- Paysafe's payment or standalone-credit id
    kind              text        NOT NULL CHECK (kind IN ('payment', 'standalone_credit')),
    merchant_ref_num  text,
    amount            bigint,                          -- minor units
    currency_code     text,
    status            text        NOT NULL,            -- Paysafe's own status, last known
    -- polling: non-final, the poller owns it; final: done; stale: the deadline passed while
    -- non-final (counted, alerted, never given an invented status).
    tracking          text        NOT NULL CHECK (tracking IN ('polling', 'final', 'stale')),
    status_at         timestamptz,                     -- when Paysafe says the status was reached
    reversed_at       timestamptz,                     -- a credit that failed or was cancelled after COMPLETED
    next_poll_at      timestamptz,                     -- due time; a claim pushes it out (lease)
    poll_attempts     integer     NOT NULL DEFAULT 0,  -- polls without a final answer: the backoff step
    last_polled_at    timestamptz,
    last_poll_outcome text,
    deadline_at       timestamptz NOT NULL,            -- created_at + 2 days (payments) / 30 days (credits)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paysafe_items_due ON paysafe_items (next_poll_at) WHERE tracking = 'polling';

CREATE TABLE paysafe_item_history (
    id              bigserial   PRIMARY KEY,
    item_id         text        NOT NULL REFERENCES paysafe_items (id),
    source          text        NOT NULL CHECK (source IN ('track', 'webhook', 'poll', 'deadline')),
    event_name      text,                              -- the webhook's event name
    status          text        NOT NULL,
    previous_status text,
    effect          text        NOT NULL CHECK (effect IN ('created', 'applied', 'unchanged', 'stale', 'reversed', 'expired')),
    message_id      uuid,                              -- the intake message (webhook, track)
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX paysafe_item_history_by_item ON paysafe_item_history (item_id, id);
