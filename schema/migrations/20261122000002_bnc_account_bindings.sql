-- BNC account bindings (DESIGN.md §4): one row per successful binding BNC reported.
--
-- The card token is a secret: it lives apart, in bnc_binding_tokens, which PUBLIC cannot read
-- and only the NOLOGIN role connector_token_reader may SELECT. Grant that role to the services
-- that debit, never to dashboards, ad-hoc readers or the ledger. The workers write it as the
-- schema's owner. The account number BNC sends is already masked; it is kept as sent.
CREATE TABLE bnc_account_bindings (
    partner_reference_no      text          PRIMARY KEY,   -- BNC's partnerReferenceNo: unique
    client_key                text          NOT NULL,      -- X-CLIENT-KEY, the partner
    external_id               text          NOT NULL,      -- X-EXTERNAL-ID
    channel_id                text          NOT NULL,      -- CHANNEL-ID
    user_id                   text          NOT NULL,      -- additionalInfo.userId
    account_no_masked         text          NOT NULL,
    account_transaction_limit numeric(20,2) NOT NULL,      -- exact, as sent (at most 2 places)
    account_currency          text,
    bind_status               text          NOT NULL,
    content_digest            text          NOT NULL,      -- the callback's meaning, for retries
    message_id                uuid          NOT NULL,      -- the intake message that created it
    signed_at                 timestamptz   NOT NULL,      -- X-TIMESTAMP
    received_at               timestamptz   NOT NULL,      -- by the ingress
    created_at                timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (client_key, external_id)
);

CREATE TABLE bnc_binding_tokens (
    partner_reference_no text PRIMARY KEY REFERENCES bnc_account_bindings (partner_reference_no),
    token                text NOT NULL
);

-- Roles are per cluster, and parallel test databases migrate at once: tolerate the race.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'connector_token_reader') THEN
        CREATE ROLE connector_token_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END;
$$;
REVOKE ALL ON bnc_binding_tokens FROM PUBLIC;
GRANT SELECT ON bnc_binding_tokens TO connector_token_reader;
