-- How the ingress verified each message (the envelope's `connector-verification` header), kept
-- beside the body for the evidence a dispute needs: the scheme, the key id, the SHA-256 of the
-- public key (SubjectPublicKeyInfo DER) and of the client certificate, the path the signature
-- covered, and the result (always "verified": the ingress enqueues nothing else). Public facts
-- only, never a secret. NULL for a message that carried none: a `paysafe.track` command, or a
-- message enqueued by an ingress that did not record them yet.
ALTER TABLE received_messages ADD COLUMN verification jsonb;

-- In quarantine too: a release rebuilds the envelope from the row, facts included, and the
-- seal covers them, so an edited column makes the release refuse.
ALTER TABLE quarantined_messages ADD COLUMN verification jsonb;
