//! Configuration of the fleet store (`rate_limit_store:` at the top level).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::config::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_KEY_PREFIX, DEFAULT_STORE_TIMEOUT};

/// The shared store of `scope: fleet` rules.
///
/// ```yaml
/// rate_limit_store: {redis: "redis://127.0.0.1:6379", timeout: 50ms, key_prefix: "gateway:rl:"}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Redis URL: `redis://[user:password@]host:port[/db]`. A single Redis
    /// (or a primary); Redis Cluster is not supported.
    pub redis: String,
    /// Longest time a request waits for Redis (default `50ms`). When it
    /// passes, the rule's `on_store_error` decides. Also accepted as
    /// `store_timeout`.
    #[serde(
        default,
        alias = "store_timeout",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<StoreDuration>,
    /// Time allowed to (re)connect to Redis, in the background, never on the
    /// request path (default `1s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<StoreDuration>,
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
        if self.timeout().is_zero() {
            errors.push("rate_limit_store.timeout must be greater than zero".into());
        }
        if self.connect_timeout().is_zero() {
            errors.push("rate_limit_store.connect_timeout must be greater than zero".into());
        }
        errors
    }
}

/// A duration in the store config: `50ms`, `1s`, `1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StoreDuration(pub Duration);

impl FromStr for StoreDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration `{s}` has no unit (use ms, s or m)"))?;
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration `{s}` must start with a whole number"))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            _ => {
                return Err(format!(
                    "duration `{s}` has unknown unit `{unit}` (use ms, s or m)"
                ))
            }
        };
        Ok(StoreDuration(d))
    }
}

impl fmt::Display for StoreDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for StoreDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for StoreDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for StoreDuration {
    fn schema_name() -> Cow<'static, str> {
        "RateLimitStoreDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^[0-9]+(ms|s|m)$",
            "description": "A duration such as `50ms`, `1s` or `1m`."
        })
    }
}
