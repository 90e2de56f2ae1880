//! Observed egress traffic: who reached (or tried to reach) which
//! destination, for building allowlists from `audit_only` runs and for an
//! admin endpoint.
//!
//! One entry per (principal, host, port, decision) with a count and the
//! first and last time seen. The table is bounded: once it holds
//! `max_entries` keys, requests with a new key are only counted in
//! [`ObservedTable::overflow`]. Updating an existing key takes one short
//! lock of one of 16 shards and allocates nothing; a new key allocates its
//! strings once.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::config::DEFAULT_OBSERVED_MAX_ENTRIES;
use super::host::normalize_host;
use super::rules::Outcome;

/// The principal recorded for an unknown caller.
pub const UNKNOWN_PRINCIPAL: &str = "-";

const SHARDS: usize = 16;

/// One observed (principal, host, port, decision).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedEntry {
    /// The caller's principal, or `-` for an unknown caller.
    pub principal: String,
    /// The destination host, lower-case, without a trailing dot.
    pub host: String,
    /// The destination port.
    pub port: u16,
    /// `allow`, `deny` or `audit_deny`.
    pub decision: Outcome,
    /// Requests seen.
    pub count: u64,
    /// First seen, in seconds since the Unix epoch.
    pub first_seen: u64,
    /// Last seen, in seconds since the Unix epoch.
    pub last_seen: u64,
}

/// The whole table at one moment, for a JSON endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedReport {
    /// The table's bound on entries.
    pub max_entries: usize,
    /// Requests not recorded because the table was full.
    pub overflow: u64,
    /// The entries, as [`ObservedTable::snapshot`] orders them.
    pub entries: Vec<ObservedEntry>,
}

struct Slot {
    principal: Box<str>,
    host: Box<str>,
    port: u16,
    decision: Outcome,
    count: u64,
    first_seen: u64,
    last_seen: u64,
}

type Shard = HashMap<u64, Vec<Slot>>;

/// A bounded, thread-safe count of observed egress requests.
pub struct ObservedTable {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    max_entries: usize,
    entries: AtomicUsize,
    overflow: AtomicU64,
}

impl Default for ObservedTable {
    fn default() -> Self {
        ObservedTable::new(DEFAULT_OBSERVED_MAX_ENTRIES)
    }
}

impl std::fmt::Debug for ObservedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObservedTable")
            .field("max_entries", &self.max_entries)
            .field("len", &self.len())
            .field("overflow", &self.overflow())
            .finish()
    }
}

impl ObservedTable {
    /// An empty table keeping at most `max_entries` keys.
    pub fn new(max_entries: usize) -> ObservedTable {
        ObservedTable {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            max_entries,
            entries: AtomicUsize::new(0),
            overflow: AtomicU64::new(0),
        }
    }

    /// The bound on entries.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Requests not recorded because the table was full.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Counts one request now. `principal` is the caller's (its
    /// [`Identity::principal`](crate::identity::principal::Identity::principal),
    /// else its caller-group principal); `None` or empty for an unknown
    /// caller.
    pub fn record(&self, principal: Option<&str>, host: &str, port: u16, decision: Outcome) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.record_at(principal, host, port, decision, now);
    }

    /// Counts one request at `now` (seconds since the Unix epoch).
    pub fn record_at(
        &self,
        principal: Option<&str>,
        host: &str,
        port: u16,
        decision: Outcome,
        now: u64,
    ) {
        let principal = principal
            .filter(|p| !p.is_empty())
            .unwrap_or(UNKNOWN_PRINCIPAL);
        let host = normalize_host(host);
        let host = host.as_ref();
        let hash = self.hasher.hash_one((principal, host, port, decision));
        let mut shard = self.shard(hash);
        let bucket = shard.entry(hash).or_default();
        let found = bucket.iter_mut().find(|s| {
            s.port == port
                && s.decision == decision
                && &*s.host == host
                && &*s.principal == principal
        });
        if let Some(slot) = found {
            slot.count += 1;
            slot.last_seen = slot.last_seen.max(now);
            return;
        }
        let reserved = self
            .entries
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max_entries).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            if bucket.is_empty() {
                shard.remove(&hash);
            }
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        bucket.push(Slot {
            principal: principal.into(),
            host: host.into(),
            port,
            decision,
            count: 1,
            first_seen: now,
            last_seen: now,
        });
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // The high bits pick the shard, so the map inside keys on a hash
        // whose low bits are still spread.
        let i = (hash >> 60) as usize % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every entry, by count (highest first), then principal, host, port
    /// and decision.
    pub fn snapshot(&self) -> Vec<ObservedEntry> {
        let mut out = Vec::with_capacity(self.len());
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.values().flatten().map(|s| ObservedEntry {
                principal: s.principal.to_string(),
                host: s.host.to_string(),
                port: s.port,
                decision: s.decision,
                count: s.count,
                first_seen: s.first_seen,
                last_seen: s.last_seen,
            }));
        }
        out.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.principal.cmp(&b.principal))
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.port.cmp(&b.port))
                .then_with(|| a.decision.cmp(&b.decision))
        });
        out
    }

    /// The snapshot with the bound and the overflow count.
    pub fn report(&self) -> ObservedReport {
        ObservedReport {
            max_entries: self.max_entries,
            overflow: self.overflow(),
            entries: self.snapshot(),
        }
    }

    /// Forgets every entry and the overflow count.
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let n: usize = shard.values().map(Vec::len).sum();
            shard.clear();
            self.entries.fetch_sub(n, Ordering::Relaxed);
        }
        self.overflow.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::thread;

    use super::*;

    #[test]
    fn counts_per_key() {
        let t = ObservedTable::new(100);
        t.record_at(Some("spiffe://td/a"), "API.test.", 443, Outcome::Allow, 10);
        t.record_at(Some("spiffe://td/a"), "api.test", 443, Outcome::Allow, 12);
        t.record_at(Some("spiffe://td/a"), "api.test", 443, Outcome::Allow, 11);
        t.record_at(Some("spiffe://td/a"), "api.test", 80, Outcome::Allow, 11);
        t.record_at(
            Some("spiffe://td/a"),
            "api.test",
            443,
            Outcome::AuditDeny,
            11,
        );
        t.record_at(None, "api.test", 443, Outcome::Deny, 13);
        t.record_at(Some(""), "api.test", 443, Outcome::Deny, 14);
        assert_eq!(t.len(), 4);
        assert!(!t.is_empty());
        let s = t.snapshot();
        assert_eq!(s.len(), 4);
        assert_eq!(
            s[0],
            ObservedEntry {
                principal: "spiffe://td/a".into(),
                host: "api.test".into(),
                port: 443,
                decision: Outcome::Allow,
                count: 3,
                first_seen: 10,
                last_seen: 12,
            }
        );
        assert_eq!(
            (
                s[1].principal.as_str(),
                s[1].count,
                s[1].first_seen,
                s[1].last_seen
            ),
            ("-", 2, 13, 14)
        );
        // Ties on count: by principal, host, port, decision.
        assert_eq!(
            s[2..]
                .iter()
                .map(|e| (e.port, e.decision))
                .collect::<Vec<_>>(),
            [(80, Outcome::Allow), (443, Outcome::AuditDeny)]
        );
    }

    #[test]
    fn bounded_with_overflow() {
        let t = ObservedTable::new(3);
        for i in 0..5 {
            t.record_at(Some("p"), &format!("h{i}.test"), 443, Outcome::Allow, 1);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.overflow(), 2);
        // Known keys still count when full.
        t.record_at(Some("p"), "h0.test", 443, Outcome::Allow, 2);
        assert_eq!(t.overflow(), 2);
        assert_eq!(t.snapshot()[0].count, 2);
        t.clear();
        assert_eq!((t.len(), t.overflow(), t.snapshot().len()), (0, 0, 0));
        t.record_at(Some("p"), "h9.test", 443, Outcome::Allow, 1);
        assert_eq!(t.len(), 1);
        let none = ObservedTable::new(0);
        none.record_at(None, "x.test", 443, Outcome::Deny, 1);
        assert_eq!((none.len(), none.overflow()), (0, 1));
    }

    #[test]
    fn json_shape() {
        let t = ObservedTable::default();
        assert_eq!(t.max_entries(), 10_000);
        t.record_at(None, "x.test", 443, Outcome::AuditDeny, 7);
        let json = serde_json::to_value(t.report()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "max_entries": 10000,
                "overflow": 0,
                "entries": [{
                    "principal": "-", "host": "x.test", "port": 443,
                    "decision": "audit_deny", "count": 1, "first_seen": 7, "last_seen": 7
                }]
            })
        );
    }

    #[test]
    fn record_uses_the_clock() {
        let t = ObservedTable::new(1);
        t.record(Some("p"), "x.test", 443, Outcome::Allow);
        let e = &t.snapshot()[0];
        assert!(e.first_seen > 1_600_000_000, "{e:?}");
        assert_eq!(e.first_seen, e.last_seen);
    }

    #[test]
    fn concurrent_updates() {
        let t = Arc::new(ObservedTable::new(10_000));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let t = Arc::clone(&t);
                thread::spawn(move || {
                    for i in 0..5_000u64 {
                        let host = format!("h{}.test", i % 50);
                        let principal = if n % 2 == 0 {
                            Some("spiffe://td/a")
                        } else {
                            None
                        };
                        t.record_at(principal, &host, 443, Outcome::Allow, i);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let s = t.snapshot();
        assert_eq!(s.len(), 100);
        assert_eq!(t.len(), 100);
        assert!(s.iter().all(|e| e.count == 400), "{s:?}");
        assert_eq!(s.iter().map(|e| e.count).sum::<u64>(), 40_000);
        assert!(s.iter().all(|e| e.last_seen >= 4_950 && e.first_seen < 50));
    }

    #[test]
    fn concurrent_inserts_respect_the_bound() {
        let t = Arc::new(ObservedTable::new(1_000));
        let threads: Vec<_> = (0..8)
            .map(|n| {
                let t = Arc::clone(&t);
                thread::spawn(move || {
                    for i in 0..500 {
                        t.record_at(Some("p"), &format!("h{n}-{i}.test"), 443, Outcome::Deny, 1);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.len(), 1_000);
        assert_eq!(t.snapshot().len(), 1_000);
        assert_eq!(t.overflow(), 3_000);
    }
}
