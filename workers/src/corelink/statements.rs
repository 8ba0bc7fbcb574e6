//! The statements a worker runs to apply a Corelink message, named and in one place, so that
//! the load bench's SQL baseline (`ops/load`, part 2) runs exactly the one-by-one ones and
//! cannot drift. The last five serve the units of a group applied together (`units`), which
//! the baseline does not imitate.

/// Claims `(client_id, nonce)` and, only if that succeeded, binds the idempotency key to its
/// first use; answers which of the two were claimed (no row inserted means seen before).
pub const CLAIM_NONCE_AND_KEY: &str = "WITH nonce AS (
             INSERT INTO seen_nonces (client_id, nonce, request_fingerprint, message_id, request_timestamp)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (client_id, nonce) DO NOTHING
             RETURNING 1),
         idempotency_key AS (
             INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, content_digest, first_message_id)
             SELECT $1, $6, $7, $8, $9, $4 WHERE EXISTS (SELECT FROM nonce)
             ON CONFLICT (client_id, idempotency_key) DO NOTHING
             RETURNING 1)
         SELECT EXISTS (SELECT FROM nonce), EXISTS (SELECT FROM idempotency_key)";

/// Locks the notified orders in reference order (no deadlock between batches).
pub const LOCK_ORDERS: &str = "SELECT reference, client_id, status FROM orders
         WHERE reference = ANY($1) ORDER BY reference FOR UPDATE";

/// Inserts the orders seen for the first time, from column arrays.
pub const INSERT_ORDERS: &str = "INSERT INTO orders (reference, client_id, status, bank_reference, reason_code, reason_message, bank_processed_at)
         SELECT u.reference, $1, u.status, u.bank_reference, u.reason_code, u.reason_message, u.processed_at
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at)
         ON CONFLICT (reference) DO NOTHING";

/// Applies the new statuses, from column arrays. `reference = ANY($1)` is redundant with the
/// join but gives the scan of `orders` an index condition, so that even a generic plan built
/// while the table was small reads only the notified rows (see `apply::GROUP_SETTINGS`).
pub const UPDATE_ORDERS: &str = "UPDATE orders o
         SET status = u.status, bank_reference = COALESCE(u.bank_reference, o.bank_reference),
             reason_code = u.reason_code, reason_message = u.reason_message,
             bank_processed_at = u.processed_at, updated_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at)
         WHERE o.reference = ANY($1) AND o.reference = u.reference";

/// Appends every notified order to its history, from column arrays.
pub const INSERT_HISTORY: &str =
    "INSERT INTO order_history (reference, status, bank_reference, reason_code, reason_message,
                                    bank_processed_at, previous_status, effect,
                                    message_id, client_id, idempotency_key, batch_id, received_at)
         SELECT u.*, $9, $10, $11, $12, $13
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::text[], $8::text[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at,
                   previous_status, effect)";

/// The unit notifications of a group applied together (`corelink::units`): for each (client,
/// nonce, key), in order, whether the nonce was seen and what the key is bound to.
///
/// Both lookups are per-row probes by primary key in any plan, generic or not: a scalar
/// subquery is never hashed, and `OFFSET 0` keeps the lateral one from being flattened into a
/// join. Written as `EXISTS` and a plain `LEFT JOIN`, a generic plan built while the tables
/// were small read the whole of `seen_nonces` (a hashed subplan) and of `idempotency_keys`
/// (materialized, filtered once per unit) at every execution, so a group cost more with every
/// nonce remembered (e2e `apply_plans`).
pub const UNITS_SEEN: &str = "SELECT COALESCE((SELECT true FROM seen_nonces s
                          WHERE s.client_id = u.client_id AND s.nonce = u.nonce), false),
                k.scope, k.reference
         FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
              AS u(client_id, nonce, idempotency_key, position)
         LEFT JOIN LATERAL (SELECT k.scope, k.reference FROM idempotency_keys k
              WHERE k.client_id = u.client_id AND k.idempotency_key = u.idempotency_key
              OFFSET 0) k ON true
         ORDER BY u.position";

/// Claims the nonces of the units applied together.
pub const CLAIM_NONCES: &str =
    "INSERT INTO seen_nonces (client_id, nonce, request_fingerprint, message_id, request_timestamp)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[])
         ON CONFLICT (client_id, nonce) DO NOTHING";

/// Binds the new unit keys of the units applied together to their orders.
pub const BIND_UNIT_KEYS: &str = "INSERT INTO idempotency_keys (client_id, idempotency_key, scope, reference, content_digest, first_message_id)
         SELECT u.client_id, u.idempotency_key, 'unit', u.reference, NULL, u.message_id
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[])
              AS u(client_id, idempotency_key, reference, message_id)
         ON CONFLICT (client_id, idempotency_key) DO NOTHING";

/// [`INSERT_ORDERS`] with each order's client.
pub const INSERT_ORDERS_OF_CLIENTS: &str = "INSERT INTO orders (reference, client_id, status, bank_reference, reason_code, reason_message, bank_processed_at)
         SELECT u.reference, u.client_id, u.status, u.bank_reference, u.reason_code, u.reason_message, u.processed_at
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
              AS u(client_id, reference, status, bank_reference, reason_code, reason_message, processed_at)
         ON CONFLICT (reference) DO NOTHING";

/// [`INSERT_HISTORY`] with each row's message, client, key and reception (no batch).
pub const INSERT_UNITS_HISTORY: &str =
    "INSERT INTO order_history (reference, status, bank_reference, reason_code, reason_message,
                                    bank_processed_at, previous_status, effect,
                                    message_id, client_id, idempotency_key, batch_id, received_at)
         SELECT u.reference, u.status, u.bank_reference, u.reason_code, u.reason_message,
                u.processed_at, u.previous_status, u.effect,
                u.message_id, u.client_id, u.idempotency_key, NULL, u.received_at
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                     $7::text[], $8::text[], $9::uuid[], $10::text[], $11::text[], $12::timestamptz[])
              AS u(reference, status, bank_reference, reason_code, reason_message, processed_at,
                   previous_status, effect, message_id, client_id, idempotency_key, received_at)";
