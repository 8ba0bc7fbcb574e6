-- Amounts that reach the ledger are Paysafe's own (DESIGN.md §2.7, §5). `amount` and
-- `currency_code` now hold only what Paysafe said (webhook or poll answer); what the merchant's
-- track command claimed is kept beside them, and a disagreement between the two is recorded
-- once per item for review (PAYSAFE_AMOUNT_MISMATCH), never resolved silently.
ALTER TABLE paysafe_items
    ADD COLUMN merchant_amount        bigint,      -- minor units, from the track command
    ADD COLUMN merchant_currency_code text,
    ADD COLUMN amount_mismatch_at     timestamptz; -- when Paysafe's values were found to differ

-- Items tracked before: an amount that only a track command could have given (no webhook or
-- poll has reported on the item yet) is the merchant's; it moves to the merchant's columns, and
-- Paysafe's first answer fills `amount` again.
UPDATE paysafe_items i
SET merchant_amount = amount, merchant_currency_code = currency_code,
    amount = NULL, currency_code = NULL
WHERE NOT EXISTS (
    SELECT 1 FROM paysafe_item_history h
    WHERE h.item_id = i.id AND h.source IN ('webhook', 'poll')
);

-- What a fact revealed beyond its status, e.g. the amount mismatch it found.
ALTER TABLE paysafe_item_history ADD COLUMN detail text;
