//! The nonces this ingress instance has seen, to answer 409 to an exact replay (§3.1).
//!
//! Bounded in memory and time: an entry only needs to outlive the timestamp window, since a
//! replay older than that fails the window check anyway. It is per instance by design (the
//! ingress keeps no shared state); the workers neutralise replays that reach another
//! instance or that this cache evicted under pressure.
//!
//! Each `(client id, nonce)` is kept as a 128-bit keyed digest (two SipHash keys drawn at
//! start-up), in sets grouped by arrival time ("generations", 1/64 of the time to live each).
//! A whole generation is dropped once its youngest entry has lived the time to live, and the
//! oldest generations go first when the capacity is reached. An entry is therefore kept at
//! least the time to live and at most 1/64 longer, and eviction under pressure is oldest
//! first. About 40 bytes an entry: a full default cache (1 000 000 nonces) holds about 40 MiB,
//! where the general-purpose cache (moka) with the two strings as key held about 480 MiB
//! (measured by the soak; ops/BENCHMARKS.md). Two nonces share a digest with
//! probability about n / 2^128.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Generations over one time to live: the precision of expiry.
const GENERATIONS: u32 = 64;
/// A generation also closes at this fraction of a shard's capacity, so that eviction under
/// pressure drops at most this share of the entries at once.
const GENERATION_SHARE: usize = 16;
/// Independent locks, so concurrent requests rarely wait for one another.
const SHARDS: usize = 16;

#[derive(Debug, Clone)]
pub struct ReplayCache {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Two independent SipHash keys: 128 bits of digest per nonce.
    keys: (RandomState, RandomState),
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    generation_capacity: usize,
    ttl: Duration,
    span: Duration,
    epoch: Instant,
}

#[derive(Debug, Default)]
struct Shard {
    /// Oldest first.
    generations: VecDeque<Generation>,
    len: usize,
}

#[derive(Debug)]
struct Generation {
    /// Arrival time of its entries, in spans since the epoch.
    index: u64,
    digests: HashSet<u128, BuildHasherDefault<Prehashed>>,
}

/// The digests are uniformly random already: their low 64 bits are the hash.
#[derive(Debug, Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

impl ReplayCache {
    /// `tolerance` is the timestamp window on either side of now; at most about `capacity`
    /// nonces are kept.
    pub fn new(capacity: u64, tolerance: Duration) -> Self {
        let capacity = usize::try_from(capacity.max(1)).unwrap_or(usize::MAX);
        // Small caches (tests) keep one shard, so that the capacity is exact.
        let shards = if capacity >= SHARDS * 256 { SHARDS } else { 1 };
        let shard_capacity = capacity / shards;
        let ttl = tolerance * 2 + Duration::from_secs(1);
        Self {
            inner: Arc::new(Inner {
                keys: (RandomState::new(), RandomState::new()),
                shards: (0..shards).map(|_| Mutex::default()).collect(),
                shard_capacity,
                generation_capacity: (shard_capacity / GENERATION_SHARE).max(1),
                ttl,
                span: (ttl / GENERATIONS).max(Duration::from_millis(1)),
                epoch: Instant::now(),
            }),
        }
    }

    /// Records `(client_id, nonce)`; `false` if it was already there. Atomic, so two
    /// concurrent copies of one request cannot both pass.
    pub fn first_use(&self, client_id: &str, nonce: &str) -> bool {
        let digest = self.digest(client_id, nonce);
        let now = self.inner.epoch.elapsed();
        let mut shard = self.shard(digest);
        self.expire(&mut shard, now);
        if shard.contains(digest) {
            return false;
        }
        let index = self.index(now);
        let open = shard.generations.back().is_some_and(|newest| {
            newest.index == index && newest.digests.len() < self.inner.generation_capacity
        });
        if !open {
            shard.generations.push_back(Generation {
                index,
                digests: HashSet::default(),
            });
        }
        if let Some(newest) = shard.generations.back_mut() {
            newest.digests.insert(digest);
            shard.len += 1;
        }
        // Under pressure, the oldest nonces go first.
        while shard.len > self.inner.shard_capacity && shard.generations.len() > 1 {
            if let Some(oldest) = shard.generations.pop_front() {
                shard.len -= oldest.digests.len();
            }
        }
        true
    }

    /// Forgets a nonce whose request was not enqueued, so the sender may retry it as is.
    pub fn forget(&self, client_id: &str, nonce: &str) {
        let digest = self.digest(client_id, nonce);
        let mut shard = self.shard(digest);
        let removed = shard
            .generations
            .iter_mut()
            .rev()
            .any(|generation| generation.digests.remove(&digest));
        if removed {
            shard.len -= 1;
        }
    }

    fn digest(&self, client_id: &str, nonce: &str) -> u128 {
        let (high, low) = &self.inner.keys;
        let key = (client_id, nonce);
        (u128::from(high.hash_one(key)) << 64) | u128::from(low.hash_one(key))
    }

    /// The shard of a digest, by its high bits (the set inside hashes the low ones).
    fn shard(&self, digest: u128) -> MutexGuard<'_, Shard> {
        let shards = &self.inner.shards;
        let at = ((digest >> 64) as usize) % shards.len();
        // A panic while holding the lock cannot leave a shard inconsistent enough to matter:
        // at worst one nonce is missing or counted twice.
        shards[at]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn index(&self, elapsed: Duration) -> u64 {
        u64::try_from(elapsed.as_nanos() / self.inner.span.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    /// Drops the generations whose youngest possible entry has lived the time to live.
    fn expire(&self, shard: &mut Shard, now: Duration) {
        let span = self.inner.span.as_nanos();
        let ttl = self.inner.ttl.as_nanos();
        let now = now.as_nanos();
        while let Some(oldest) = shard.generations.front() {
            let youngest_arrival = (u128::from(oldest.index) + 1) * span;
            if youngest_arrival + ttl > now {
                break;
            }
            shard.len -= oldest.digests.len();
            shard.generations.pop_front();
        }
    }
}

impl Shard {
    fn contains(&self, digest: u128) -> bool {
        self.generations
            .iter()
            .rev()
            .any(|generation| generation.digests.contains(&digest))
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
        // Client and nonce are not simply concatenated.
        assert!(cache.first_use("BANK_", "Xn1"));
    }

    #[test]
    fn entries_expire_after_the_window_and_not_before() {
        // ttl = 2 × 50 ms + 1 s = 1.1 s; generations of about 17 ms.
        let cache = ReplayCache::new(100, Duration::from_millis(50));
        assert!(cache.first_use("BANK_X", "n1"));
        std::thread::sleep(Duration::from_millis(900));
        assert!(
            !cache.first_use("BANK_X", "n1"),
            "still within the time to live"
        );
        std::thread::sleep(Duration::from_millis(400));
        assert!(cache.first_use("BANK_X", "n1"), "expired after it");
    }

    #[test]
    fn under_pressure_the_oldest_go_first_and_the_size_is_bounded() {
        let cache = ReplayCache::new(1000, Duration::from_secs(300));
        for i in 0..5000 {
            assert!(cache.first_use("BANK_X", &format!("n{i}")));
        }
        let shard = cache.inner.shards[0].lock().unwrap();
        assert!(shard.len <= 1000, "{}", shard.len);
        assert!(shard.len >= 1000 - 1000 / GENERATION_SHARE, "{}", shard.len);
        drop(shard);
        assert!(!cache.first_use("BANK_X", "n4999"), "the newest are kept");
        assert!(cache.first_use("BANK_X", "n0"), "the oldest were evicted");
    }

    #[test]
    fn a_large_cache_is_sharded_and_still_exact_per_nonce() {
        let cache = ReplayCache::new(1_000_000, Duration::from_secs(300));
        assert_eq!(cache.inner.shards.len(), SHARDS);
        for i in 0..20_000 {
            assert!(cache.first_use("BANK_X", &format!("n{i}")));
        }
        for i in 0..20_000 {
            assert!(!cache.first_use("BANK_X", &format!("n{i}")));
        }
        let cloned = cache.clone();
        cloned.forget("BANK_X", "n7");
        assert!(cache.first_use("BANK_X", "n7"), "clones share the entries");
    }
}
