//! Local (per-instance) enforcement: governor's GCRA over a bounded, sharded
//! key store.
//!
//! # Memory bound
//!
//! A key is stored as its 64-bit keyed hash with its GCRA state (the
//! theoretical arrival time, 8 bytes): 16 bytes in a hash table plus one
//! control byte. The store is split into up to 64 shards of at most
//! `max_keys / shards` keys each, so it never holds more than `max_keys`
//! keys. Before a new key is inserted into a full shard, the shard drops its
//! idle keys (those whose bucket has refilled: dropping them loses nothing);
//! if none is idle it evicts, out of a sample of 8, the key closest to idle
//! (counted by [`LocalLimiter::evictions`]). A hash table that deletes and
//! inserts may grow to twice its item count before rehashing in place, so
//! the tables of a rule stay under **80 bytes per key** of `max_keys`
//! (`17 × next_pow2(16/7 × keys per shard)`), i.e. **at most 4.5 MB per rule
//! at the default `max_keys` of 100,000**, whatever the number of distinct
//! clients. [`LocalLimiter::memory_bound_bytes`] computes the exact bound and
//! [`LocalLimiter::memory_bytes`] the current size.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};

use super::config::Rate;

thread_local! {
    /// The TAT stored by the last allowed decision on this thread, read right
    /// after `check_key` returns (governor does not expose it).
    static LAST_TAT: Cell<u64> = const { Cell::new(0) };
}

/// A key counts as idle once its TAT is this far in the past (covers the few
/// nanoseconds between our clock origin and governor's).
const IDLE_MARGIN_NS: u64 = 1_000_000;
/// Keys looked at when one busy key must be evicted.
const EVICTION_SAMPLE: usize = 8;
/// Most shards per rule.
const MAX_SHARDS: usize = 64;
/// Bytes per hash-table bucket: `(u64, u64)` plus one control byte.
const BUCKET_BYTES: usize = 17;

/// The keys are already keyed SipHash values: use them as they are.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

struct Shard {
    map: Table,
    inserts_since_sweep: usize,
}

struct Shards<C: Clock> {
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
    clock: C,
    start: C::Instant,
    evictions: AtomicU64,
}

impl<C: Clock> Shards<C> {
    fn shard(&self, key: u64) -> MutexGuard<'_, Shard> {
        // Bits 32.. pick the shard; the table uses the low bits.
        let i = (key >> 32) as usize & (self.shards.len() - 1);
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ns(&self) -> u64 {
        self.clock.now().duration_since(self.start).as_u64()
    }
}

impl Shard {
    /// Makes room for one more key: sweep idle keys (at most once per
    /// `cap / 8` inserts, so the cost stays amortized), then evict the key
    /// closest to idle out of a small sample.
    fn make_room(&mut self, cap: usize, now_ns: u64, evictions: &AtomicU64) {
        if self.map.len() < cap {
            return;
        }
        if self.inserts_since_sweep >= cap / 8 {
            self.inserts_since_sweep = 0;
            self.map
                .retain(|_, tat| tat.saturating_add(IDLE_MARGIN_NS) > now_ns);
        }
        while self.map.len() >= cap {
            let victim = self
                .map
                .iter()
                .take(EVICTION_SAMPLE)
                .min_by_key(|(_, tat)| **tat)
                .map(|(k, _)| *k);
            match victim {
                Some(k) => {
                    self.map.remove(&k);
                    evictions.fetch_add(1, Ordering::Relaxed);
                }
                None => break,
            }
        }
    }
}

/// governor state store over the bounded shards.
struct BoundedStore<C: Clock>(Arc<Shards<C>>);

impl<C: Clock> StateStore for BoundedStore<C> {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let s = &self.0;
        let mut shard = s.shard(*key);
        if let Some(tat) = shard.map.get_mut(key) {
            let (out, next) = f(Some(Nanos::from(*tat)))?;
            *tat = next.as_u64();
            LAST_TAT.with(|c| c.set(next.as_u64()));
            return Ok(out);
        }
        let (out, next) = f(None)?;
        shard.make_room(s.shard_cap, s.now_ns(), &s.evictions);
        shard.map.insert(*key, next.as_u64());
        shard.inserts_since_sweep = shard.inserts_since_sweep.saturating_add(1);
        LAST_TAT.with(|c| c.set(next.as_u64()));
        Ok(out)
    }
}

/// The result of one local check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalOutcome {
    /// Whether the request conforms (and was counted).
    pub allowed: bool,
    /// Requests that could still be made right now.
    pub remaining: u32,
    /// Time until one more request is available (zero on a full bucket).
    pub reset: Duration,
}

/// A keyed GCRA limiter (governor) with a hard cap on tracked keys. Share it
/// with `Arc` to keep its state across config reloads.
pub struct LocalLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<u64, BoundedStore<C>, C, StateInformationMiddleware>,
    shards: Arc<Shards<C>>,
    interval_ns: u64,
}

impl LocalLimiter<DefaultClock> {
    /// A limiter on the default (monotonic, fast) clock.
    pub fn new(rate: Rate, burst: NonZeroU32, max_keys: NonZeroU32) -> Self {
        Self::with_clock(rate, burst, max_keys, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LocalLimiter<C> {
    /// A limiter on `clock` (tests use governor's `FakeRelativeClock`).
    pub fn with_clock(rate: Rate, burst: NonZeroU32, max_keys: NonZeroU32, clock: C) -> Self {
        let max_keys = max_keys.get() as usize;
        let shard_count = (max_keys / 1024).clamp(1, MAX_SHARDS);
        let shard_count = if shard_count.is_power_of_two() {
            shard_count
        } else {
            shard_count.next_power_of_two() / 2
        };
        let shards = Arc::new(Shards {
            shards: (0..shard_count)
                .map(|_| {
                    Mutex::new(Shard {
                        map: Table::default(),
                        inserts_since_sweep: usize::MAX,
                    })
                })
                .collect(),
            shard_cap: (max_keys / shard_count).max(1),
            start: clock.now(),
            clock: clock.clone(),
            evictions: AtomicU64::new(0),
        });
        let interval = rate.interval().max(Duration::from_nanos(1));
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let limiter: RateLimiter<u64, _, C, StateInformationMiddleware> =
            RateLimiter::new(quota, BoundedStore(shards.clone()), clock);
        LocalLimiter {
            limiter,
            shards,
            interval_ns: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Counts one request for `key` and says whether it conforms.
    pub fn check(&self, key: u64) -> LocalOutcome {
        match self.limiter.check_key(&key) {
            Ok(snapshot) => {
                let tat = LAST_TAT.with(Cell::get);
                let ahead = tat.saturating_sub(self.shards.now_ns());
                let reset = if ahead == 0 {
                    0
                } else {
                    (ahead - 1) % self.interval_ns + 1
                };
                LocalOutcome {
                    allowed: true,
                    remaining: snapshot.remaining_burst_capacity(),
                    reset: Duration::from_nanos(reset),
                }
            }
            Err(not_until) => LocalOutcome {
                allowed: false,
                remaining: 0,
                reset: not_until.wait_time_from(self.limiter.clock().now()),
            },
        }
    }

    /// Keys currently tracked (never more than `max_keys`).
    pub fn len(&self) -> usize {
        self.each_shard(|s| s.map.len())
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Busy keys evicted to respect `max_keys` since creation (idle keys
    /// dropped are not counted: dropping them changes no decision).
    pub fn evictions(&self) -> u64 {
        self.shards.evictions.load(Ordering::Relaxed)
    }

    /// Drops every idle key and gives memory back when tables are mostly
    /// empty. Optional housekeeping (the cap holds without it); the gateway
    /// may call it every few seconds off the request path.
    pub fn purge_idle(&self) {
        let now = self.shards.now_ns();
        for m in self.shards.shards.iter() {
            let mut s = m.lock().unwrap_or_else(PoisonError::into_inner);
            s.map
                .retain(|_, tat| tat.saturating_add(IDLE_MARGIN_NS) > now);
            if s.map.len() * 4 < s.map.capacity() {
                s.map.shrink_to_fit();
            }
        }
    }

    /// Bytes held by the key tables now.
    pub fn memory_bytes(&self) -> usize {
        self.fixed_bytes() + self.each_shard(|s| table_bytes(s.map.capacity()))
    }

    /// Most bytes the key tables can ever hold (see the module docs).
    pub fn memory_bound_bytes(&self) -> usize {
        let per_shard = buckets_for(self.shards.shard_cap.saturating_mul(2)) * BUCKET_BYTES + 16;
        self.fixed_bytes() + self.shards.shards.len() * per_shard
    }

    fn fixed_bytes(&self) -> usize {
        std::mem::size_of::<Shards<C>>()
            + self.shards.shards.len() * std::mem::size_of::<Mutex<Shard>>()
    }

    fn each_shard(&self, f: impl Fn(&Shard) -> usize) -> usize {
        self.shards
            .shards
            .iter()
            .map(|m| f(&m.lock().unwrap_or_else(PoisonError::into_inner)))
            .sum()
    }
}

/// Buckets of a hash table created for `cap` items (hashbrown's rule, rounded up).
fn buckets_for(cap: usize) -> usize {
    match cap {
        0..4 => 4,
        4..8 => 8,
        _ => cap.saturating_mul(8).div_ceil(7).next_power_of_two(),
    }
}

/// Bytes of a hash table whose `capacity()` is `capacity`.
fn table_bytes(capacity: usize) -> usize {
    match capacity {
        0 => 0,
        1..8 => (capacity + 1) * BUCKET_BYTES + 16,
        _ => (capacity * 8 / 7).next_power_of_two() * BUCKET_BYTES + 16,
    }
}
