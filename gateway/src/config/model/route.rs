//! Routes: matching, backends, direct responses, rewrites, retries, mirrors.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

use std::collections::BTreeMap;

/// A route: what requests it matches and what happens to them.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// Conditions, all of which must hold. Empty matches everything.
    #[serde(default, rename = "match")]
    pub matches: RouteMatch,
    /// Shorthand for `backends: [{cluster: NAME}]`.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Weighted clusters (canary splits).
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Answer directly instead of proxying.
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    /// Answer with a redirect instead of proxying (Envoy's `redirect`).
    #[serde(default)]
    pub redirect: Option<filters::redirect::RedirectConfig>,
    /// Rewrite the request before it goes upstream.
    #[serde(default)]
    pub rewrite: Option<Rewrite>,
    /// Edit request headers sent upstream.
    #[serde(default)]
    pub request_headers: filters::headers::HeaderEdits,
    /// Edit response headers sent to the client.
    #[serde(default)]
    pub response_headers: filters::headers::HeaderEdits,
    /// Deadline for the whole upstream exchange until response headers
    /// (all tries included); exceeded -> 504.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// Retry policy.
    #[serde(default)]
    pub retries: Option<RetryPolicy>,
    /// Rate limits; every rule must allow the request (else 429).
    #[serde(default)]
    pub rate_limit: Vec<filters::ratelimit::RuleConfig>,
    /// Shadow copies of this route's traffic; the primary never waits for them.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
    /// Authentication (JWT) and authorization of callers.
    #[serde(default)]
    pub auth: Option<filters::authz::AuthzConfig>,
    /// How the caller's identity is passed to the upstream.
    #[serde(default)]
    pub identity: Option<IdentityForwarding>,
    /// Protocol upgrades (WebSocket) passed to the upstream.
    #[serde(default)]
    pub upgrades: Upgrades,
    /// Cross-origin resource sharing (Envoy's and Istio's `corsPolicy`).
    #[serde(default)]
    pub cors: Option<filters::cors::CorsConfig>,
    /// Fault injection (Istio's `fault`).
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Largest request body on this route, bytes; overrides the listener's
    /// `limits.max_request_body_bytes` (larger or smaller). Same behaviour:
    /// 413 for a `Content-Length` over it, a cut stream for a body that
    /// grows past it. 0 refuses every body.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Response compression (gzip, br, zstd) for clients that accept it.
    #[serde(default)]
    pub compression: Option<Compression>,
    /// External authorization: a service decides about each request.
    #[serde(default)]
    pub ext_authz: Option<ExtAuthz>,
}

/// Fault injection for a share of a route's requests (Istio's `fault`), to
/// see how clients cope with a slow or failing service. Faults hit the
/// primary request only: mirror copies are sent unchanged, and undelayed.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// Delay the request before it is proxied.
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    /// Answer at the gateway instead of proxying.
    #[serde(default)]
    pub abort: Option<FaultAbort>,
    /// Only requests whose headers all match (the forms of `match.headers`).
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Most requests of this route delayed at once (Envoy's
    /// `max_active_faults`); one over it is not delayed. Default 1000.
    #[serde(default = "default_max_active_delays")]
    pub max_active_delays: u32,
}

fn default_max_active_delays() -> u32 {
    1000
}

/// A fixed delay for a share of requests.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    /// How long.
    pub fixed: Duration,
    /// Share of requests delayed, 0 to 100. Default 100.
    #[serde(default = "default_fault_percentage")]
    pub percentage: f64,
}

/// An answer at the gateway for a share of requests: an HTTP status, or a
/// gRPC status (HTTP 200 with `grpc-status`, a trailers-only answer).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    /// The HTTP status answered (200 to 599).
    #[serde(default)]
    pub http_status: Option<u16>,
    /// The gRPC status answered (0 to 16).
    #[serde(default)]
    pub grpc_status: Option<u32>,
    /// Share of requests aborted, 0 to 100. Default 100.
    #[serde(default = "default_fault_percentage")]
    pub percentage: f64,
}

fn default_fault_percentage() -> f64 {
    100.0
}

/// Protocol upgrades (RFC 9110 §7.8) a route passes on, as Envoy's per-route
/// `upgrade_configs`. An HTTP/1.1 request asking for a listed protocol keeps
/// its `Connection: Upgrade` and `Upgrade` fields to the upstream; a `101`
/// answer turns the connection into a byte tunnel both ways. A WebSocket
/// handshake on a route that does not list `websocket` is refused with 403
/// (Envoy's answer); other unlisted upgrades (`h2c` sent by curl, say) are
/// dropped and the request is served as plain HTTP.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upgrades {
    /// Upgrade protocols passed on, as `Upgrade` tokens (case-insensitive).
    /// Default `[websocket]`; `[]` refuses WebSocket. `h2c` is never passed
    /// on (an HTTP/2 upgrade is this hop's business).
    #[serde(default = "default_upgrade_protocols")]
    pub protocols: Vec<String>,
    /// How long an upgrade request (and then its tunnel) waits for bytes
    /// from the upstream before the tunnel is closed (NGINX's
    /// `proxy_read_timeout` on a WebSocket). It replaces the cluster's
    /// `read_timeout` and the route's `timeout` and per-try timeout, which
    /// are sized for HTTP answers. Default 5 minutes (Envoy's stream idle
    /// timeout).
    #[serde(default = "default_upgrade_idle_timeout")]
    pub idle_timeout: Duration,
}

impl Default for Upgrades {
    fn default() -> Self {
        Upgrades {
            protocols: default_upgrade_protocols(),
            idle_timeout: default_upgrade_idle_timeout(),
        }
    }
}

fn default_upgrade_protocols() -> Vec<String> {
    vec!["websocket".to_string()]
}
fn default_upgrade_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// A mirror target: a sampled copy of requests goes to `cluster`, its
/// answer is read and discarded (or compared with the primary's).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of requests copied, 0-100 (fractions allowed).
    #[serde(default = "default_mirror_percentage")]
    pub percentage: f64,
    /// Request header whose value decides sampling (e.g. `x-request-id`):
    /// the same value is always mirrored or never. Random without it.
    #[serde(default)]
    pub sample_key: Option<String>,
    /// Headers removed from the copy (e.g. `authorization`).
    #[serde(default)]
    pub strip_headers: Vec<String>,
    /// A body larger than this abandons the copy (counted `too_large`).
    #[serde(default = "default_mirror_max_body")]
    pub max_body_bytes: u64,
    /// Copies in flight for this target; beyond, copies are dropped.
    #[serde(default = "default_mirror_concurrency")]
    pub max_concurrent: u32,
    /// Deadline of one copy, from start to the end of its response.
    #[serde(default = "default_mirror_timeout")]
    pub timeout: Duration,
    /// Compare the shadow's answer with the primary's.
    #[serde(default)]
    pub compare: Option<MirrorCompare>,
}

fn default_mirror_percentage() -> f64 {
    100.0
}
fn default_mirror_max_body() -> u64 {
    1024 * 1024
}
fn default_mirror_concurrency() -> u32 {
    64
}
fn default_mirror_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What compare mode checks.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorCompare {
    /// Status classes (2xx, 5xx, ...) must match.
    #[serde(default = "default_true")]
    pub status: bool,
    /// Response bodies must have the same digest.
    #[serde(default)]
    pub body: bool,
}

/// Match conditions of a route.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host: exact (`api.example.com`) or suffix wildcard (`*.example.com`),
    /// case-insensitive, port ignored.
    #[serde(default)]
    pub host: Option<String>,
    /// Exact path.
    #[serde(default)]
    pub path: Option<String>,
    /// Path prefix, on segment boundaries or not (`/api` matches `/api2`,
    /// like Envoy's `prefix`).
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Regular expression the whole path must match.
    #[serde(default)]
    pub path_regex: Option<String>,
    /// Allowed methods.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header conditions by name: a string is an exact match, or
    /// `{present: true|false}`, `{exact: ..}`, `{regex: ..}`.
    #[serde(default)]
    pub headers: BTreeMap<String, ValueMatch>,
    /// Query parameter conditions by name, same forms as `headers`.
    #[serde(default)]
    pub query: BTreeMap<String, ValueMatch>,
}

/// How a header or query value must look.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ValueMatch {
    /// Exact value.
    Exact(String),
    /// Explicit form.
    Spec(ValueMatchSpec),
}

/// Explicit value condition; exactly one field must be set.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchSpec {
    /// The value must equal this.
    #[serde(default)]
    pub exact: Option<String>,
    /// The whole value must match this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
    /// `true`: must be present (any value); `false`: must be absent.
    #[serde(default)]
    pub present: Option<bool>,
}

/// A weighted reference to a cluster.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Cluster name.
    pub cluster: String,
    /// Relative weight (default 1).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// A canned response.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    /// HTTP status code.
    pub status: u16,
    /// Response body.
    #[serde(default)]
    pub body: String,
    /// Response headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Request rewrites applied before proxying.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replace the matched `path_prefix` with this.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Replace the `Host` header with this.
    #[serde(default)]
    pub host: Option<String>,
}

/// Retry policy of a route.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total tries including the first (e.g. 3 = one try plus two retries).
    pub attempts: u32,
    /// Deadline of each try until response headers.
    #[serde(default)]
    pub per_try_timeout: Option<Duration>,
    /// Conditions that trigger a retry.
    #[serde(default = "default_retry_on")]
    pub on: Vec<RetryOn>,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::Named(RetryCondition::ConnectFailure),
        RetryOn::Status(503),
    ]
}

/// A retry condition: a name or a response status code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    /// A response status that triggers a retry (e.g. `503`).
    Status(u16),
    /// A named condition.
    Named(RetryCondition),
}

/// Named retry conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RetryCondition {
    /// The connection to the endpoint could not be established (safe for
    /// every method: nothing was sent).
    ConnectFailure,
    /// The connection broke or the per-try timeout passed before a response
    /// arrived (idempotent methods only).
    Reset,
    /// 502, 503 and 504 responses.
    GatewayError,
}
filters::config_enum!(RetryCondition { ConnectFailure = "connect-failure", Reset = "reset", GatewayError = "gateway-error" });

/// By hand rather than `untagged`, whose error ("data did not match any
/// variant") names neither a status nor the condition names.
impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RetryOnVisitor;
        impl serde::de::Visitor<'_> for RetryOnVisitor {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "a response status or {}",
                    filters::config_enum::one_of(RetryCondition::CONFIG_NAMES)
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RetryOn, E> {
                // The range is checked with the route, positioned at `on[i]`.
                u16::try_from(v)
                    .map(RetryOn::Status)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RetryOn, E> {
                Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self))
            }
            fn visit_str<E: serde::de::Error>(self, word: &str) -> Result<RetryOn, E> {
                filters::config_enum::parse(word, RetryCondition::CONFIG_NAMES).map(RetryOn::Named)
            }
        }
        d.deserialize_any(RetryOnVisitor)
    }
}
