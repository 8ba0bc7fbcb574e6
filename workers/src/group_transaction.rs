//! What the apply role's and the poller's group transactions share: how one is opened, with
//! its locks, and why one failed.
//!
//! Deadlock-free groups. A group transaction writes the rows of several messages (or poll
//! answers), in the order they came; two groups holding the same order, nonce or Paysafe item
//! in opposite orders would wait on each other. So before it touches a row, a group takes a
//! transaction-scoped advisory lock on every business key its members can write, all in one
//! statement, in one global order (by the keys' hashes). Two groups sharing keys meet on the
//! first shared key before either holds a row the other needs: they wait, they never
//! deadlock. (Ordered acquisition is what prevents the cycle; PostgreSQL's deadlock detection
//! then only guards transactions outside this protocol.)
//!
//! A key is every unique value a member writes under: the message id (audit, quarantine), the
//! nonce and idempotency key of a Corelink request, each order reference (the order, its
//! history, its outbox events), a Paysafe item id, a BNC binding's reference and external id.
//! Keys are hashed to 32 bits: two keys that collide only serialise two groups that did not
//! need it.

use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::db;
use crate::outcome::ApplyError;

/// The first key of the two-key advisory locks taken here ("appl"); the single-`bigint`
/// advisory locks of migrations and partition maintenance are a separate key space.
const LOCK_CLASS: i32 = 0x6170_706c;

/// Why a group's transaction did not commit: nothing of it was written.
#[derive(Debug)]
pub struct GroupFailure {
    /// Worth retrying as it is (database unreachable, deadlock, lock or serialization failure).
    pub transient: bool,
    pub error: String,
}

impl GroupFailure {
    pub fn database(error: &sqlx::Error) -> Self {
        Self {
            transient: db::is_transient(error),
            error: error.to_string(),
        }
    }

    pub fn transient(error: String) -> Self {
        Self {
            transient: true,
            error,
        }
    }
}

/// Opens a group's transaction with `begin` (`BEGIN` and its settings), then takes the locks
/// of `keys`.
pub async fn begin(
    pool: &PgPool,
    begin: String,
    keys: GroupKeys,
) -> Result<Transaction<'static, Postgres>, GroupFailure> {
    let mut tx = pool
        .begin_with(begin)
        .await
        .map_err(|e| GroupFailure::database(&e))?;
    keys.lock(&mut tx)
        .await
        .map_err(|e| GroupFailure::database(&e))?;
    Ok(tx)
}

/// Ends a member's savepoint by `result`: committed on `Ok`; on a passing database error the
/// group fails as a whole (a deadlock or a lost connection aborts more than the savepoint); on
/// any other error rolled back (whatever the member wrote goes, the rest of the group stays) and
/// the error handed back for the member's own outcome.
pub async fn end_savepoint<T>(
    savepoint: Transaction<'_, Postgres>,
    result: Result<T, ApplyError>,
) -> Result<Result<T, ApplyError>, GroupFailure> {
    match result {
        Ok(value) => {
            savepoint
                .commit()
                .await
                .map_err(|e| GroupFailure::database(&e))?;
            Ok(Ok(value))
        }
        Err(ApplyError::Database(error)) if db::is_transient(&error) => {
            Err(GroupFailure::database(&error))
        }
        Err(error) => {
            savepoint
                .rollback()
                .await
                .map_err(|e| GroupFailure::database(&e))?;
            Ok(Err(error))
        }
    }
}

/// The keys a group will lock, gathered member by member.
#[derive(Debug, Default, Clone)]
pub struct GroupKeys {
    hashes: Vec<i32>,
}

impl GroupKeys {
    pub fn message(&mut self, id: Uuid) {
        self.add("message", &[id.to_string().as_str()]);
    }

    pub fn nonce(&mut self, client_id: &str, nonce: &str) {
        self.add("nonce", &[client_id, nonce]);
    }

    pub fn idempotency_key(&mut self, client_id: &str, key: &str) {
        self.add("idempotency-key", &[client_id, key]);
    }

    pub fn order(&mut self, reference: &str) {
        self.add("order", &[reference]);
    }

    pub fn paysafe_item(&mut self, id: &str) {
        self.add("paysafe-item", &[id]);
    }

    pub fn bnc_binding(&mut self, partner_reference_no: &str) {
        self.add("bnc-reference", &[partner_reference_no]);
    }

    pub fn bnc_external_id(&mut self, client_key: &str, external_id: &str) {
        self.add("bnc-external-id", &[client_key, external_id]);
    }

    /// The keys of every member, for the group's lock.
    pub fn merged(members: &[GroupKeys]) -> GroupKeys {
        GroupKeys {
            hashes: members
                .iter()
                .flat_map(|m| m.hashes.iter().copied())
                .collect(),
        }
    }

    /// For each member, whether it shares none of its keys with another member: what it writes
    /// no other member reads or writes (collisions of the 32-bit hashes only say no wrongly).
    pub fn alone(members: &[GroupKeys]) -> Vec<bool> {
        let mut holders: std::collections::HashMap<i32, usize> = std::collections::HashMap::new();
        let own: Vec<Vec<i32>> = members.iter().map(|m| m.clone().sorted()).collect();
        for hash in own.iter().flatten() {
            *holders.entry(*hash).or_default() += 1;
        }
        own.iter()
            .map(|hashes| hashes.iter().all(|hash| holders[hash] == 1))
            .collect()
    }

    fn add(&mut self, kind: &str, parts: &[&str]) {
        let mut digest = Sha256::new();
        digest.update(kind.as_bytes());
        for part in parts {
            // Length-prefixed: ("ab", "c") and ("a", "bc") are different keys.
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        let hash = digest.finalize();
        self.hashes
            .push(i32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]));
    }

    /// Takes the locks on `tx`, in ascending order, each once; to run first in the group's
    /// transaction. (Not appended to its `BEGIN`, which would save a round trip: a `BEGIN`
    /// that fails or is cancelled after it opened the transaction, as one waiting for a lock
    /// can be, would leave the connection in that transaction when it goes back to the pool.)
    async fn lock(self, tx: &mut PgConnection) -> Result<(), sqlx::Error> {
        let hashes = self.sorted();
        if hashes.is_empty() {
            return Ok(());
        }
        // `unnest` yields the array in order, and each row's lock is taken as it is read.
        sqlx::query("SELECT pg_advisory_xact_lock($1, k) FROM unnest($2::int4[]) AS k")
            .bind(LOCK_CLASS)
            .bind(hashes)
            .execute(tx)
            .await
            .map(drop)
    }

    pub(crate) fn sorted(mut self) -> Vec<i32> {
        self.hashes.sort_unstable();
        self.hashes.dedup();
        self.hashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_are_taken_sorted_and_once() {
        let mut keys = GroupKeys::default();
        keys.order("ORD-2");
        keys.order("ORD-1");
        keys.order("ORD-2");
        let mut reversed = GroupKeys::default();
        reversed.order("ORD-1");
        reversed.order("ORD-2");
        let hashes = keys.sorted();
        // The same keys in another order give the same locks: one global order.
        assert_eq!(hashes, reversed.sorted());
        assert_eq!(hashes.len(), 2);
        assert!(hashes[0] < hashes[1]);
    }

    #[test]
    fn a_member_is_alone_when_no_other_holds_one_of_its_keys() {
        let member = |nonce: &str, order: &str| {
            let mut keys = GroupKeys::default();
            keys.nonce("bank-a", nonce);
            keys.order(order);
            keys
        };
        let members = [
            member("n1", "ORD-1"),
            member("n2", "ORD-2"),
            member("n3", "ORD-1"),
        ];
        assert_eq!(GroupKeys::alone(&members), [false, true, false]);
        assert_eq!(GroupKeys::merged(&members).sorted().len(), 5);
    }

    #[test]
    fn kinds_and_parts_are_distinct_keys() {
        let hash = |f: &dyn Fn(&mut GroupKeys)| {
            let mut keys = GroupKeys::default();
            f(&mut keys);
            keys.hashes[0]
        };
        assert_ne!(hash(&|k| k.order("X")), hash(&|k| k.paysafe_item("X")));
        assert_ne!(hash(&|k| k.nonce("ab", "c")), hash(&|k| k.nonce("a", "bc")));
    }
}
