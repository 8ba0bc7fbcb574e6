//! The nonces this ingress instance has seen, to answer 409 to an exact replay (§3.1).
//!
//! Bounded in memory and time: an entry only needs to outlive the timestamp window, since a
//! replay older than that fails the window check anyway. It is per instance by design (the
//! ingress keeps no shared state); the workers neutralise replays that reach another
//! instance or that this cache evicted under pressure.

use std::time::Duration;

use moka::sync::Cache;

#[derive(Debug, Clone)]
pub struct ReplayCache {
    seen: Cache<(String, String), ()>,
}

impl ReplayCache {
    /// `tolerance` is the timestamp window on either side of now.
    pub fn new(capacity: u64, tolerance: Duration) -> Self {
        Self {
            seen: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(tolerance * 2 + Duration::from_secs(1))
                .build(),
        }
    }

    /// Records `(client_id, nonce)`; `false` if it was already there. Atomic, so two
    /// concurrent copies of one request cannot both pass.
    pub fn first_use(&self, client_id: &str, nonce: &str) -> bool {
        self.seen
            .entry((client_id.to_owned(), nonce.to_owned()))
            .or_insert(())
            .is_fresh()
    }

    /// Forgets a nonce whose request was not enqueued, so the sender may retry it as is.
    pub fn forget(&self, client_id: &str, nonce: &str) {
        self.seen
            .invalidate(&(client_id.to_owned(), nonce.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_fresh_once_per_client() {
        let cache = ReplayCache::new(100, Duration::from_secs(300));
        assert!(cache.first_use("BANK_X", "n1"));
        assert!(!cache.first_use("BANK_X", "n1"));
        assert!(cache.first_use("BANK_Y", "n1"));
        cache.forget("BANK_X", "n1");
        assert!(cache.first_use("BANK_X", "n1"));
    }
}
