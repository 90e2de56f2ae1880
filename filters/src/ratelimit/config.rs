//! Configuration types of rate limiting, as written in the YAML files. They
//! are also the source of the JSON schema, so every field is documented.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Highest accepted rate, per second (one request per microsecond).
pub const MAX_RATE_PER_SECOND: u64 = 1_000_000;
/// Highest accepted `burst`.
pub const MAX_BURST: u32 = 1_000_000;
/// Default cap on distinct keys tracked by one local rule (`max_keys`).
pub const DEFAULT_MAX_KEYS: u32 = 100_000;
/// Default Redis call timeout of the fleet store.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// Default timeout for establishing the Redis connection (off the request path).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default prefix of every Redis key the fleet store writes.
pub const DEFAULT_KEY_PREFIX: &str = "gateway:rl:";

/// One rate-limit rule of a route (`rate_limit:` is a list of these; a
/// request must pass all of them).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name of the rule, unique within the route. It names the policy in the
    /// `RateLimit-Policy`/`RateLimit` response headers, is the `rule` label of
    /// `gateway_ratelimit_decisions_total`, part of the Redis key of fleet
    /// rules, and identifies the rule across reloads (its buckets are kept
    /// when a rule of the same name keeps the same `key`, `rate`, `burst`,
    /// `scope` and `max_keys`). Defaults to the key written out, e.g.
    /// `client_ip` or `header:x-tenant+route`. Printable ASCII, at most 64
    /// characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the quota is counted per: one key source, or a list of them
    /// combined (each distinct combination gets its own quota). Sources:
    /// `client_ip`, `header:<name>` (first value of the request header),
    /// `jwt:<claim>` (claim of the verified JWT), `principal` (authenticated
    /// identity, e.g. a SPIFFE ID) and `route` (the route name). A request
    /// that lacks any part of the key (no such header, no JWT, no principal)
    /// is not limited by this rule, like a missing descriptor in Envoy.
    pub key: KeySpec,
    /// Sustained rate: `N/s`, `N/m` or `N/h` (at most 1000000/s).
    pub rate: Rate,
    /// How many requests may arrive at once on a full bucket (GCRA burst);
    /// defaults to the count of `rate` (`100/s` gives a burst of 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Dry run: count and report what the rule would limit (decision
    /// `would_limit` in metrics) but let every request through and add no
    /// rate-limit headers for it. Like Envoy's `shadow_mode`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shadow: bool,
    /// `local` (default): each gateway instance counts on its own.
    /// `fleet`: one quota shared by every instance through the Redis store
    /// (`rate_limit_store`).
    #[serde(default)]
    pub scope: Scope,
    /// Fleet rules only: what to do when Redis errors or does not answer
    /// within the store timeout. `local` (default): enforce the same rate and
    /// burst per instance until Redis is back; `allow`: let the request
    /// through (fail open); `deny`: reject it with 429 (fail closed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreError>,
    /// Most distinct keys one instance tracks for this rule (default
    /// 100000). Idle keys (whose bucket has refilled) are dropped first; when
    /// all are busy, the one closest to idle is evicted. Memory stays under
    /// about 80 bytes per key (4.5 MB at the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
}

/// Where a rule's quota is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Per gateway instance, in memory.
    #[default]
    Local,
    /// Across the fleet, in Redis.
    Fleet,
}
crate::config_enum!(Scope { Local = "local", Fleet = "fleet" });

/// What a fleet rule does when the store fails.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Enforce the rule per instance with a local limiter.
    #[default]
    Local,
    /// Let the request through.
    Allow,
    /// Reject the request (429, `Retry-After: 1`).
    Deny,
}
crate::config_enum!(OnStoreError { Local = "local", Allow = "allow", Deny = "deny" });

impl OnStoreError {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Local => "local",
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
        }
    }
}

/// One source of a rate-limit key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySource {
    /// The client's IP address (IPv4-mapped IPv6 counts as IPv4).
    ClientIp,
    /// First value of a request header (name stored lowercase).
    Header(String),
    /// A claim of the verified JWT.
    JwtClaim(String),
    /// The authenticated principal (mTLS SPIFFE ID or JWT subject).
    Principal,
    /// The route name.
    Route,
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "client_ip" => return Ok(KeySource::ClientIp),
            "principal" => return Ok(KeySource::Principal),
            "route" => return Ok(KeySource::Route),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().as_bytes())
                .map(|h| KeySource::Header(h.as_str().to_string()))
                .map_err(|_| format!("key `{s}`: `{name}` is not a valid header name"));
        }
        if let Some(claim) = s.strip_prefix("jwt:") {
            let claim = claim.trim();
            if claim.is_empty() {
                return Err(format!("key `{s}` names no claim (write e.g. `jwt:sub`)"));
            }
            return Ok(KeySource::JwtClaim(claim.to_string()));
        }
        Err(format!(
            "unknown key `{s}` (use client_ip, header:<name>, jwt:<claim>, principal or route)"
        ))
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::ClientIp => f.write_str("client_ip"),
            KeySource::Header(h) => write!(f, "header:{h}"),
            KeySource::JwtClaim(c) => write!(f, "jwt:{c}"),
            KeySource::Principal => f.write_str("principal"),
            KeySource::Route => f.write_str("route"),
        }
    }
}

crate::config_string!(
    KeySource,
    "RateLimitKeySource",
    pattern: "^(client_ip|principal|route|header:[!#$%&'*+.^_`|~0-9A-Za-z-]+|jwt:.+)$",
    "`client_ip`, `header:<name>`, `jwt:<claim>`, `principal` or `route`."
);

/// A rule's key: one source or several combined.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// A single source: `key: client_ip`.
    One(KeySource),
    /// Several sources combined: `key: [header:x-tenant, route]`.
    All(Vec<KeySource>),
}

impl KeySpec {
    /// The sources, in order.
    pub fn sources(&self) -> &[KeySource] {
        match self {
            KeySpec::One(s) => std::slice::from_ref(s),
            KeySpec::All(v) => v,
        }
    }
}

impl fmt::Display for KeySpec {
    /// Sources joined with `+` (the default rule name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.sources().iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for KeySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = KeySpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key source such as `client_ip`, or a list of them")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<KeySpec, E> {
                s.parse().map(KeySpec::One).map_err(E::custom)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<KeySpec, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<KeySource>()? {
                    v.push(s);
                }
                Ok(KeySpec::All(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for KeySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KeySpec::One(k) => k.serialize(s),
            KeySpec::All(v) => v.serialize(s),
        }
    }
}

impl JsonSchema for KeySpec {
    fn schema_name() -> Cow<'static, str> {
        "RateLimitKey".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let one = g.subschema_for::<KeySource>();
        json_schema!({
            "description": "One key source, or a list of sources combined.",
            "anyOf": [one.clone(), {"type": "array", "items": one, "minItems": 1}]
        })
    }
}

/// A rate written as `N/s`, `N/m` or `N/h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    count: NonZeroU32,
    period_secs: u32,
}

impl Rate {
    /// Requests allowed per period.
    pub fn count(&self) -> u32 {
        self.count.get()
    }
    /// The period in seconds (1, 60 or 3600).
    pub fn period_secs(&self) -> u32 {
        self.period_secs
    }
    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_secs(u64::from(self.period_secs))
    }
    /// Time between two requests at the sustained rate (GCRA emission interval).
    pub fn interval(&self) -> Duration {
        self.period() / self.count.get()
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (n, unit) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("rate `{s}` must look like `100/s`"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("rate `{s}` must start with a whole number"))?;
        let count = NonZeroU32::new(count)
            .ok_or_else(|| format!("rate `{s}` must be greater than zero"))?;
        let period_secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            u => return Err(format!("rate `{s}` has unknown unit `{u}` (use s, m or h)")),
        };
        if u64::from(count.get()) > MAX_RATE_PER_SECOND * u64::from(period_secs) {
            return Err(format!(
                "rate `{s}` is too high (at most {MAX_RATE_PER_SECOND}/s)"
            ));
        }
        Ok(Rate { count, period_secs })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period_secs {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

crate::config_string!(
    Rate,
    "RateLimitRate",
    pattern: "^[0-9]+/(s|m|h)$",
    "A rate such as `100/s`, `1000/m` or `5000/h`."
);
