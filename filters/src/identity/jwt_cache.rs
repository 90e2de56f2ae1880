//! Verified tokens, cached per worker thread (Envoy's `jwt_cache_config`).
//!
//! A client sends the same bearer token on every request until it expires;
//! checking its signature each time costs more than the rest of the request
//! (an ES256 check is tens of microseconds). The cache keeps what a full
//! check proved (the token bytes, the verified claims and the key set the
//! signature was checked against) and, on a hit, re-checks only what
//! changes with time or config:
//!
//! - the time claims (`exp`, `nbf`, `iat` with the issuer's leeway), so an
//!   expired token is refused exactly as without the cache;
//! - the issuer's key set: a JWKS refresh or reload that replaced the set
//!   (key rotation, a revoked key) makes every older entry a miss, so the
//!   token is checked again against the new keys.
//!
//! Only successes are cached. Each worker thread has its own map (no lock,
//! no shared cache line), bounded by `capacity` entries; when full, an
//! arbitrary entry makes room. A new `JwtVerifier` (every config reload)
//! starts empty.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use thread_local::ThreadLocal;

use super::jwks::JwkSet;
use super::jwt::{TimeClaims, VerifiedJwt};

/// Entries per worker thread by default.
pub const DEFAULT_CAPACITY: usize = 1024;

/// What a full check established about one token.
#[derive(Clone)]
pub(super) struct CachedToken {
    pub jwt: VerifiedJwt,
    /// The key set the signature was checked against (`None`: HMAC secret,
    /// fixed for the verifier's life).
    pub keys: Option<Arc<JwkSet>>,
    pub times: TimeClaims,
}

/// Per-thread maps of verified tokens.
pub(super) struct TokenCache {
    capacity: usize,
    maps: ThreadLocal<RefCell<HashMap<Box<str>, CachedToken>>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(DEFAULT_CAPACITY)
    }
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache {
            capacity,
            maps: ThreadLocal::new(),
        }
    }

    /// The entry for `token`, if this thread verified it before.
    pub fn get(&self, token: &str) -> Option<CachedToken> {
        if self.capacity == 0 {
            return None;
        }
        self.maps.get()?.borrow().get(token).cloned()
    }

    /// Forgets `token` on this thread.
    pub fn remove(&self, token: &str) {
        if let Some(m) = self.maps.get() {
            m.borrow_mut().remove(token);
        }
    }

    /// Remembers a verified token.
    pub fn insert(&self, token: &str, entry: CachedToken) {
        if self.capacity == 0 {
            return;
        }
        let map = self.maps.get_or(|| RefCell::new(HashMap::new()));
        let mut map = map.borrow_mut();
        if map.len() >= self.capacity && !map.contains_key(token) {
            if let Some(victim) = map.keys().next().cloned() {
                map.remove(&victim);
            }
        }
        map.insert(token.into(), entry);
    }

    /// Entries held by this thread.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.maps.get().map_or(0, |m| m.borrow().len())
    }
}
