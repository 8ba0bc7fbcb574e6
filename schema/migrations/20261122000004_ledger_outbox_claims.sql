-- Relays claim outbox rows with a lease instead of holding a transaction open across the
-- broker: the claim survives a lost database connection, so confirmed events can still be
-- marked published afterwards instead of being published again. NULL: not claimed.
ALTER TABLE ledger_outbox ADD COLUMN claimed_until timestamptz;
