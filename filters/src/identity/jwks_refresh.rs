//! Hot-swapped key sets and the refresh state machine of a `jwks_uri`.
//!
//! [`JwksRefresher`] does no I/O and reads no clock: the gateway passes
//! `now`, performs the fetch it asks for, and reports the result.
//!
//! - The first fetch is due at once; after a success the next is due
//!   `interval` later.
//! - After a failure (fetch error, unparsable JWKS, no usable key) the last
//!   good set stays published (stale-if-error) and a retry is due after
//!   `min_refetch_interval`, doubling per consecutive failure up to `interval`.
//! - An unknown `kid` asks for an early fetch: granted at most once per
//!   `min_refetch_interval` since the last fetch started, and never while one
//!   is in flight.
//! - A fetch not completed within `timeout` no longer counts as in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use super::jwks::JwkSet;
use super::JwksRefreshConfig;

/// A key set shared by the verifier (readers, per request) and the refresher
/// (writer, in the background). Cloning shares the same set.
#[derive(Clone, Debug, Default)]
pub struct SharedKeySet(Arc<ArcSwap<JwkSet>>);

impl SharedKeySet {
    /// A shared set holding `set`.
    pub fn new(set: JwkSet) -> Self {
        SharedKeySet(Arc::new(ArcSwap::from_pointee(set)))
    }
    /// The current set.
    pub fn load(&self) -> Arc<JwkSet> {
        self.0.load_full()
    }
    /// Publishes `set` to every holder.
    pub fn store(&self, set: JwkSet) {
        self.0.store(Arc::new(set));
    }
    /// Whether both handles share the same set.
    pub fn ptr_eq(&self, other: &SharedKeySet) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Timing of a refresher (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JwksRefreshPolicy {
    /// Time between refreshes after a success.
    pub interval: Duration,
    /// Least time between fetches for unknown `kid`s; first retry delay.
    pub min_refetch_interval: Duration,
    /// After this long a fetch is no longer considered in flight.
    pub timeout: Duration,
}

impl From<&JwksRefreshConfig> for JwksRefreshPolicy {
    fn from(c: &JwksRefreshConfig) -> Self {
        JwksRefreshPolicy {
            interval: c.interval.get(),
            min_refetch_interval: c.min_refetch_interval.get(),
            timeout: c.timeout.get(),
        }
    }
}

/// Why a fetch should start now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchReason {
    /// No good set yet.
    Initial,
    /// The periodic refresh.
    Scheduled,
    /// A retry after a failure.
    Retry,
    /// A token named a `kid` that is not in the set.
    UnknownKid,
}

/// What [`JwksRefresher::complete`] did with a fetch result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// A new set was published.
    Updated {
        /// Usable keys in it.
        keys: usize,
        /// Keys skipped (see [`JwkSet::skipped`]).
        skipped: usize,
    },
    /// The fetch failed; the last good set is still published.
    KeptStale {
        /// What went wrong.
        error: String,
    },
    /// The fetch failed and there is no good set yet: tokens of this issuer
    /// cannot be verified.
    NoKeys {
        /// What went wrong.
        error: String,
    },
}

/// Refresh state of one `jwks_uri`.
#[derive(Debug)]
pub struct JwksRefresher {
    policy: JwksRefreshPolicy,
    keys: SharedKeySet,
    have_good: bool,
    next_due: Instant,
    in_flight: Option<Instant>,
    last_start: Option<Instant>,
    last_success: Option<Instant>,
    failures: u32,
}

impl JwksRefresher {
    /// A refresher publishing into `keys`; the first fetch is due at `now`.
    /// A non-empty `keys` (carried over a reload) counts as a good set.
    pub fn new(policy: JwksRefreshPolicy, keys: SharedKeySet, now: Instant) -> Self {
        let have_good = !keys.load().is_empty();
        JwksRefresher {
            policy,
            keys,
            have_good,
            next_due: now,
            in_flight: None,
            last_start: None,
            last_success: None,
            failures: 0,
        }
    }

    /// The set this refresher publishes into.
    pub fn keys(&self) -> &SharedKeySet {
        &self.keys
    }

    /// When [`poll`](Self::poll) will next start a fetch.
    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    /// When the last good set was published.
    pub fn last_success(&self) -> Option<Instant> {
        self.last_success
    }

    /// Failed fetches since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Whether a fetch started before `now` is still awaited.
    pub fn in_flight(&self, now: Instant) -> bool {
        self.in_flight
            .is_some_and(|t| now.saturating_duration_since(t) < self.policy.timeout)
    }

    /// Background tick: `Some(reason)` when a fetch should start now (the
    /// fetch is then considered in flight).
    pub fn poll(&mut self, now: Instant) -> Option<FetchReason> {
        if now < self.next_due || self.in_flight(now) {
            return None;
        }
        let reason = if !self.have_good && self.last_start.is_none() {
            FetchReason::Initial
        } else if self.failures > 0 || !self.have_good {
            FetchReason::Retry
        } else {
            FetchReason::Scheduled
        };
        self.start(now);
        Some(reason)
    }

    /// Request path, after an unknown `kid`: `true` when a fetch should start
    /// now (rate limited; see the module docs).
    pub fn request_refetch(&mut self, now: Instant) -> bool {
        if self.in_flight(now) {
            return false;
        }
        if let Some(last) = self.last_start {
            if now.saturating_duration_since(last) < self.policy.min_refetch_interval {
                return false;
            }
        }
        self.start(now);
        true
    }

    fn start(&mut self, now: Instant) {
        self.in_flight = Some(now);
        self.last_start = Some(now);
    }

    /// Reports a finished fetch: the body, or why there is none. A good body
    /// is published; anything else keeps the last good set.
    pub fn complete(&mut self, now: Instant, body: Result<&[u8], String>) -> RefreshOutcome {
        self.in_flight = None;
        let parsed = body.and_then(|b| JwkSet::parse(b).map_err(|e| e.to_string()));
        match parsed {
            Ok(set) => {
                let outcome = RefreshOutcome::Updated {
                    keys: set.len(),
                    skipped: set.skipped().len(),
                };
                self.keys.store(set);
                self.have_good = true;
                self.failures = 0;
                self.last_success = Some(now);
                self.next_due = now + self.policy.interval;
                outcome
            }
            Err(error) => {
                self.failures = self.failures.saturating_add(1);
                let factor = 1u32 << (self.failures - 1).min(16);
                let delay = self
                    .policy
                    .min_refetch_interval
                    .saturating_mul(factor)
                    .min(self.policy.interval);
                self.next_due = now + delay;
                if self.have_good {
                    RefreshOutcome::KeptStale { error }
                } else {
                    RefreshOutcome::NoKeys { error }
                }
            }
        }
    }
}
