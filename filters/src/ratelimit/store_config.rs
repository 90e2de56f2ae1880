//! Configuration of the fleet store (`rate_limit_store:` at the top level).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration as ConfigDuration;

use super::config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_STORE_TIMEOUT};

/// The shared store of `scope: fleet` rules.
///
/// ```yaml
/// rate_limit_store: {redis: "redis://127.0.0.1:6379", timeout: 50ms, key_prefix: "gateway:rl:"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Redis URL: `redis://[user:password@]host:port[/db]`, or `rediss://`
    /// for TLS. A single Redis (or a primary), or with `cluster: true` a
    /// seed node of a Redis Cluster.
    pub redis: String,
    /// `redis` (and `cluster_seeds`) are nodes of a Redis Cluster: each
    /// bucket is sent to the master of its key's slot, and the topology
    /// (failovers, resharding) is followed by the client. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
    /// More seed nodes of the cluster, tried when `redis` is down at connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_seeds: Vec<String>,
    /// PEM CA bundle that signs the Redis server certificates (`rediss://`);
    /// default: the system's roots. Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Longest time a request waits for Redis (default `50ms`). When it
    /// passes, the rule's `on_store_error` decides. Also accepted as
    /// `store_timeout`.
    #[serde(
        default,
        alias = "store_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<ConfigDuration>,
    /// Time allowed to (re)connect to Redis, in the background, never on the
    /// request path (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<ConfigDuration>,
    /// Prefix of every Redis key written (default `gateway:rl:`). Keys are
    /// `<prefix><rule name>:<sha1 of route and key values>` and expire when
    /// their bucket has refilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_prefix: Option<String>,
}

impl StoreConfig {
    /// A config for `url` with every default.
    pub fn new(url: impl Into<String>) -> Self {
        StoreConfig {
            redis: url.into(),
            cluster: false,
            cluster_seeds: Vec::new(),
            ca: None,
            timeout: None,
            connect_timeout: None,
            key_prefix: None,
        }
    }
    /// The call timeout, defaulted.
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_STORE_TIMEOUT, |d| d.0)
    }
    /// The connect timeout, defaulted.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
            .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0)
    }
    /// Every node URL: `redis`, then the cluster seeds.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.redis.as_str()).chain(self.cluster_seeds.iter().map(String::as_str))
    }
    /// The key prefix, defaulted.
    pub fn key_prefix(&self) -> &str {
        self.key_prefix.as_deref().unwrap_or(DEFAULT_KEY_PREFIX)
    }
    /// Every problem with this config (URL, timeouts).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Err(e) = redis::Client::open(self.redis.as_str()) {
            errors.push(format!("rate_limit_store.redis: invalid URL: {e}"));
        }
        for (i, seed) in self.cluster_seeds.iter().enumerate() {
            if let Err(e) = redis::Client::open(seed.as_str()) {
                errors.push(format!(
                    "rate_limit_store.cluster_seeds[{i}]: invalid URL: {e}"
                ));
            }
        }
        if !self.cluster_seeds.is_empty() && !self.cluster {
            errors.push("rate_limit_store.cluster_seeds needs `cluster: true`".into());
        }
        if self.ca.is_some() && !self.nodes().all(|n| n.starts_with("rediss://")) {
            errors.push("rate_limit_store.ca is for TLS: use rediss:// URLs".into());
        }
        if self.timeout().is_zero() {
            errors.push("rate_limit_store.timeout must be greater than zero".into());
        }
        if self.connect_timeout().is_zero() {
            errors.push("rate_limit_store.connect_timeout must be greater than zero".into());
        }
        errors
    }
}
