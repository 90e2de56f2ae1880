//! The answers of an authorization service kept for `cache_ttl`: sharded
//! (a request locks one of [`SHARDS`] small maps, never a global one) and
//! bounded (a full shard drops its expired entries, then everything).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Verdict;

/// Shards of one route's cache.
const SHARDS: usize = 16;
/// Entries of one route's cache, over all shards.
const CAPACITY: usize = 4096;

/// One shard: key -> (expiry, verdict).
type Shard = Mutex<HashMap<u128, (Instant, Arc<Verdict>)>>;

/// A bounded, sharded map from a request's key to the service's verdict.
pub struct Cache {
    ttl: Duration,
    shards: Box<[Shard]>,
    /// Two independently keyed hashers: a 128-bit key, so that two
    /// different requests sharing a verdict by collision is not a concern.
    keys: (RandomState, RandomState),
}

/// Builds the key of one request from the parts that decide its verdict.
pub struct KeyBuilder {
    hashers: (std::hash::DefaultHasher, std::hash::DefaultHasher),
}

impl KeyBuilder {
    /// Adds one part (each part is length-delimited by `Hash for [u8]`).
    pub fn add(&mut self, part: &[u8]) {
        part.hash(&mut self.hashers.0);
        part.hash(&mut self.hashers.1);
    }

    /// The key.
    pub fn finish(self) -> u128 {
        (u128::from(self.hashers.0.finish()) << 64) | u128::from(self.hashers.1.finish())
    }
}

impl Cache {
    /// A cache keeping answers for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Cache {
            ttl,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            keys: (RandomState::new(), RandomState::new()),
        }
    }

    /// A builder for the key of one request.
    pub fn key(&self) -> KeyBuilder {
        KeyBuilder {
            hashers: (self.keys.0.build_hasher(), self.keys.1.build_hasher()),
        }
    }

    fn shard(&self, key: u128) -> &Shard {
        &self.shards[(key as usize) % SHARDS]
    }

    /// The verdict kept for `key`, if it has not expired.
    pub fn get(&self, key: u128, now: Instant) -> Option<Arc<Verdict>> {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        match shard.get(&key) {
            Some((expires, v)) if *expires > now => Some(v.clone()),
            Some(_) => {
                shard.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `verdict` for `key` until `now + ttl`.
    pub fn insert(&self, key: u128, verdict: Arc<Verdict>, now: Instant) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= CAPACITY / SHARDS {
            shard.retain(|_, (expires, _)| *expires > now);
            if shard.len() >= CAPACITY / SHARDS {
                // Still full of live entries: start over rather than keep
                // an order of use per entry on every hit.
                shard.clear();
            }
        }
        shard.insert(key, (now + self.ttl, verdict));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &Cache, parts: &[&str]) -> u128 {
        let mut k = c.key();
        for p in parts {
            k.add(p.as_bytes());
        }
        k.finish()
    }

    #[test]
    fn answers_expire_and_keys_keep_parts_apart() {
        let c = Cache::new(Duration::from_secs(5));
        let now = Instant::now();
        let a = key(&c, &["GET", "/a", "alice"]);
        assert_ne!(a, key(&c, &["GET", "/a", "bob"]));
        assert_ne!(key(&c, &["ab", "c"]), key(&c, &["a", "bc"]));
        c.insert(a, Arc::new(Verdict::Allow(Vec::new())), now);
        assert!(c.get(a, now + Duration::from_secs(4)).is_some());
        assert!(c.get(a, now + Duration::from_secs(6)).is_none());
        assert!(c.get(a, now).is_none(), "an expired entry was removed");
    }

    #[test]
    fn a_shard_never_grows_past_its_share() {
        let c = Cache::new(Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..(CAPACITY * 3) {
            c.insert(
                key(&c, &[&i.to_string()]),
                Arc::new(Verdict::Allow(Vec::new())),
                now,
            );
        }
        for s in c.shards.iter() {
            assert!(s.lock().unwrap().len() <= CAPACITY / SHARDS);
        }
    }
}
