-- A release is recorded before its message is published again, with a generation number, so
-- that a worker re-holding the released message always wins: the row can never end up
-- "released" while its message sits in quarantine again. The generation also lets a release
-- whose publish failed undo exactly its own record, never a later hold or release.
ALTER TABLE quarantined_messages ADD COLUMN release_generation integer NOT NULL DEFAULT 0;

-- The ingress's seal as the message carried it (NULL for an unsealed kind, a track command),
-- so that a release re-checks it: an edited row is never applied (DESIGN.md §2.7).
ALTER TABLE quarantined_messages ADD COLUMN seal text;

-- Raw bodies of quarantined messages from secret-bearing sources (BNC: card token, account
-- number). quarantined_messages keeps a redacted copy, readable by operators and dashboards;
-- the raw body, needed only to release the message, lives here under the token table's rules:
-- PUBLIC cannot read it, only connector_token_reader (and the schema's owner, the workers).
CREATE TABLE quarantined_secret_bodies (
    message_id uuid  PRIMARY KEY REFERENCES quarantined_messages (message_id),
    body       bytea NOT NULL
);
REVOKE ALL ON quarantined_secret_bodies FROM PUBLIC;
GRANT SELECT ON quarantined_secret_bodies TO connector_token_reader;

-- BNC messages quarantined before this migration: their raw body moves to the restricted
-- table, and the readable copy loses the token and the account number (as the workers now
-- write it). A body that is not a JSON object keeps nothing readable.
INSERT INTO quarantined_secret_bodies (message_id, body)
    SELECT message_id, body FROM quarantined_messages WHERE kind = 'bnc.account_binding';
DO $$
DECLARE
    held record;
    readable jsonb;
BEGIN
    FOR held IN SELECT message_id, body FROM quarantined_messages WHERE kind = 'bnc.account_binding' LOOP
        BEGIN
            readable := convert_from(held.body, 'UTF8')::jsonb;
            IF jsonb_typeof(readable) <> 'object' THEN
                RAISE EXCEPTION 'not an object';
            END IF;
            IF readable ? 'accountNo' THEN
                readable := jsonb_set(readable, '{accountNo}', '"<redacted>"');
            END IF;
            IF readable #> '{additionalInfo,token}' IS NOT NULL THEN
                readable := jsonb_set(readable, '{additionalInfo,token}', '"<redacted>"');
            END IF;
            UPDATE quarantined_messages SET body = convert_to(readable::text, 'UTF8')
                WHERE message_id = held.message_id;
        EXCEPTION WHEN others THEN
            UPDATE quarantined_messages SET body = convert_to('<redacted>', 'UTF8')
                WHERE message_id = held.message_id;
        END;
    END LOOP;
END;
$$;
