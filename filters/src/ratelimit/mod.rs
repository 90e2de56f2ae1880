//! Rate limiting: per-key local limits (governor's GCRA) and fleet-wide
//! quotas shared through Redis.
//!
//! # Configuration
//!
//! ```yaml
//! routes:
//!   - name: orders
//!     rate_limit:                      # every rule must pass
//!       - {name: per-ip, key: client_ip, rate: 100/s, burst: 200}
//!       - {name: per-user, key: "jwt:sub", rate: 1000/m, scope: fleet, on_store_error: local}
//!       - {name: per-tenant, key: ["header:x-tenant", route], rate: 50/s, shadow: true}
//! rate_limit_store: {redis: "redis://127.0.0.1:6379", timeout: 50ms}
//! ```
//!
//! See [`RuleConfig`] and [`StoreConfig`] for every field. A request that
//! lacks a part of a rule's key (a missing header, no JWT) is not limited by
//! that rule, as Envoy does with missing descriptors.
//!
//! # Use from the gateway
//!
//! 1. At config compile: [`RouteRateLimits::compile`] per route, passing the
//!    same route of the previous runtime so unchanged rules keep their
//!    buckets; one [`RedisStore::new`] for `rate_limit_store` (keep the old
//!    one when its [`config`](RedisStore::config) is unchanged).
//! 2. Per request: implement [`RequestKeys`] on the request context, then
//!    `let d = limits.evaluate(&ctx, store.as_ref()).await;`. If
//!    `!d.allowed`, answer 429 with [`Decision::apply_headers`] (which sets
//!    `Retry-After`); otherwise the same headers may go on the upstream
//!    response. Count `gateway_ratelimit_decisions_total{route, rule,
//!    decision}` from [`Decision::outcomes`] ([`Verdict::as_str`]) and
//!    `gateway_ratelimit_store_errors_total` when [`Decision::store_error`]
//!    (or from [`RedisStore::store_errors`]).
//! 3. Optionally, every few seconds off the request path,
//!    [`RouteRateLimits::purge_idle`] gives memory of idle keys back.
//!
//! Memory of a local rule is bounded by `max_keys` (see [`local`]: under 80
//! bytes per key, 4.5 MB per rule at the default of 100,000 keys).

mod config;
mod decision;
mod fleet;
pub mod headers;
mod keys;
pub mod local;
mod rule;
mod store_config;

pub use config::{
    KeySource, KeySpec, OnStoreError, Rate, RuleConfig, Scope, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_KEY_PREFIX, DEFAULT_MAX_KEYS, DEFAULT_STORE_TIMEOUT, MAX_BURST, MAX_RATE_PER_SECOND,
};
pub use decision::{evaluate, Decision, RouteRateLimits, RuleOutcome, Source, Verdict};
pub use fleet::{RedisStore, StoreError};
pub use headers::RateLimitHeaders;
pub use keys::{RequestKeys, SimpleRequestKeys};
pub use local::{LocalLimiter, LocalOutcome};
pub use rule::CompiledRule;
pub use store_config::StoreConfig;

#[cfg(test)]
mod config_tests;
#[cfg(test)]
mod fleet_tests;
#[cfg(test)]
mod local_tests;
#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod test_redis;
