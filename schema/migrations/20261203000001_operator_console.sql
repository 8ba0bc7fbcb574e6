-- The operator console (workers/src/console): signed-in sessions, actions waiting for a second
-- operator (four eyes), and the record of every action taken through it.

-- A session's cookie carries a random token; only its SHA-256 is kept, so a read of this table
-- signs nobody in. Each process of the console reads the same rows: any of them serves a session.
CREATE TABLE console_sessions (
    token_sha256 bytea       PRIMARY KEY,
    account      text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('viewer', 'operator', 'approver')),
    -- Every form of the session carries it; an action without it is refused (CSRF).
    csrf_token   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- A release or discard asked for by one operator and carried out only when another (an
-- approver) confirms it, when the console runs with four_eyes. No foreign key to the quarantine:
-- resolved quarantine rows are purged after their retention, their requests stay as history.
CREATE TABLE console_requests (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action           text        NOT NULL CHECK (action IN ('release', 'discard')),
    message_id       uuid        NOT NULL,
    requested_by     text        NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    comment          text        NOT NULL CHECK (btrim(comment) <> ''),
    state            text        NOT NULL DEFAULT 'pending'
                                 CHECK (state IN ('pending', 'confirmed', 'withdrawn', 'failed')),
    decided_by       text,
    decided_at       timestamptz,
    decision_comment text,
    -- The confirmer is never the requester: that is the point of four eyes.
    CHECK (decided_by IS NULL OR state = 'withdrawn' OR decided_by <> requested_by)
);
-- One open request per message: two could otherwise both be confirmed.
CREATE UNIQUE INDEX console_requests_one_pending ON console_requests (message_id)
    WHERE state = 'pending';

-- Who did what, when, to what, why, and how it ended: every sign-in, refusal and action.
CREATE TABLE console_audit (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    account text        NOT NULL,
    role    text,
    action  text        NOT NULL,
    target  text,
    comment text,
    outcome text        NOT NULL
);
CREATE INDEX console_audit_at ON console_audit (at);
