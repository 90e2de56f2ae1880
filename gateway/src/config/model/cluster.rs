//! Clusters: endpoints, load balancing, upstream TLS, locality, health,
//! outlier detection, circuit breaking, retry budget.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// A named group of upstream endpoints and how to reach them.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique name, referenced by routes.
    pub name: String,
    /// The endpoints (at least one).
    pub endpoints: Vec<Endpoint>,
    /// Load-balancing policy.
    #[serde(default)]
    pub lb: LbPolicy,
    /// Hash key for `lb: consistent_hash`; default: the client IP.
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    /// TCP connect timeout (TLS handshake included).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Longest wait for any single read from the upstream (response headers
    /// included) when the route sets no tighter timeout.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: Duration,
    /// How long an idle pooled connection is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// Upstream protocol: `http1` (default), `http2` (h2 over TLS, or h2c
    /// prior knowledge over plaintext), or `auto` (ALPN, TLS only).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Originate TLS to the endpoints.
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// Retries at most this share of the cluster's active requests.
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// Locality-aware routing: prefer the gateway's zone, then its region.
    #[serde(default)]
    pub locality: LocalityPolicy,
    /// Active health checking of the endpoints.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    /// Passive health: eject endpoints that keep failing.
    #[serde(default)]
    pub outlier_detection: Option<OutlierDetection>,
    /// Limits that shed load with 503 instead of queueing it.
    #[serde(default)]
    pub circuit_breaker: Option<CircuitBreaker>,
    /// Keep `hostname:port` endpoints resolved by DNS at run time
    /// (default: resolved once when the config is loaded).
    #[serde(default)]
    pub discovery: Option<Discovery>,
}

/// How endpoints of other localities are used (Envoy's priorities: the
/// gateway's zone, then its region, then anywhere else).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalityPolicy {
    /// `failover` (spill over as the local zone loses healthy endpoints),
    /// `local_only` (never leave the zone), or `none` (ignore localities).
    #[serde(default)]
    pub mode: LocalityMode,
    /// A priority's share is its healthy fraction times this (Envoy: 1.4).
    #[serde(default = "default_overprovisioning")]
    pub overprovisioning_factor: f64,
    /// Below this percentage of healthy capacity, health is ignored and
    /// every endpoint is used (Envoy's panic threshold). 0 turns panic mode
    /// off: with no healthy endpoint the cluster answers 503.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold: f64,
}

impl Default for LocalityPolicy {
    fn default() -> Self {
        LocalityPolicy {
            mode: LocalityMode::default(),
            overprovisioning_factor: default_overprovisioning(),
            panic_threshold: default_panic_threshold(),
        }
    }
}

fn default_overprovisioning() -> f64 {
    1.4
}
fn default_panic_threshold() -> f64 {
    50.0
}

/// Locality modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LocalityMode {
    /// Same zone first, spill to the region, then to other clusters.
    #[default]
    Failover,
    /// Only endpoints of the gateway's zone.
    LocalOnly,
    /// All endpoints alike.
    None,
}
filters::config_enum!(LocalityMode { Failover = "failover", LocalOnly = "local_only", None = "none" });

/// Active health checks.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `http` (a GET on `path`) or `tcp` (a connect).
    #[serde(default, rename = "type")]
    pub kind: HealthCheckKind,
    /// Path of the HTTP check.
    #[serde(default = "default_hc_path")]
    pub path: String,
    /// `Host` of the HTTP check (default: the endpoint address).
    #[serde(default)]
    pub host: Option<String>,
    /// Statuses that count as healthy (default: any 2xx).
    #[serde(default)]
    pub expected_statuses: Vec<u16>,
    /// Time between checks of one endpoint.
    #[serde(default = "default_hc_interval")]
    pub interval: Duration,
    /// Random extra delay, up to this percentage of the interval.
    #[serde(default = "default_hc_jitter")]
    pub jitter_percent: u32,
    /// A check slower than this fails.
    #[serde(default = "default_hc_timeout")]
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Consecutive failures to become unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Whether endpoints count as healthy before their first check.
    #[serde(default = "default_true")]
    pub initially_healthy: bool,
}

fn default_hc_path() -> String {
    "/healthz".to_string()
}
fn default_hc_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_hc_jitter() -> u32 {
    10
}
fn default_hc_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// Kinds of active health check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// HTTP/1.1 GET, healthy on an expected status.
    #[default]
    Http,
    /// TCP connect.
    Tcp,
}
filters::config_enum!(HealthCheckKind { Http = "http", Tcp = "tcp" });

/// Passive outlier detection (Envoy's names).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Eject after this many 5xx responses in a row (0 = off).
    #[serde(default = "default_consecutive_5xx")]
    pub consecutive_5xx: u32,
    /// Eject after this many failed connects in a row (0 = off).
    #[serde(default = "default_consecutive_connect_failures")]
    pub consecutive_connect_failures: u32,
    /// Ejection time = this x number of times ejected.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time: Duration,
    /// Cap of the ejection time.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// At most this percentage of the endpoints is ejected at once.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_consecutive_5xx() -> u32 {
    5
}
fn default_consecutive_connect_failures() -> u32 {
    5
}
fn default_base_ejection_time() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejection_percent() -> u32 {
    10
}

/// Per-cluster limits; over a limit the request gets 503 with
/// `x-gateway-overloaded: true` at once.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CircuitBreaker {
    /// Requests in flight to the cluster.
    #[serde(default)]
    pub max_requests: Option<u64>,
    /// Requests waiting for an upstream connection.
    #[serde(default)]
    pub max_pending: Option<u64>,
    /// Upstream connections in use (HTTP/1.1: one per request on the wire;
    /// idle pooled connections are bounded by Pingora's pool).
    #[serde(default)]
    pub max_connections: Option<u64>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

/// One upstream endpoint.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// `ip:port` or `hostname:port` (resolved when the config is loaded, or
    /// kept resolved by the cluster's `discovery`).
    pub address: String,
    /// Relative weight (default 1; 0 takes the endpoint out of rotation).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Region of the endpoint.
    #[serde(default)]
    pub region: Option<String>,
    /// Zone of the endpoint.
    #[serde(default)]
    pub zone: Option<String>,
    /// Cluster (Kubernetes cluster, not gateway cluster) of the endpoint.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// Load-balancing policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    /// Weighted round robin (smooth, nginx-style interleaving).
    #[default]
    RoundRobin,
    /// Power of two random choices, picking the one with fewer active requests.
    LeastRequest,
    /// Weighted random.
    Random,
    /// Weighted rendezvous hashing on `hash_on`: a key sticks to one endpoint
    /// and only keys of a removed endpoint move.
    ConsistentHash,
}
filters::config_enum!(LbPolicy { RoundRobin = "round_robin", LeastRequest = "least_request", Random = "random", ConsistentHash = "consistent_hash" });

/// The key consistent hashing uses: the value of `header` when set and
/// present on the request, otherwise the client IP address.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    /// Request header whose value is the key (e.g. `x-session-id`).
    #[serde(default)]
    pub header: Option<String>,
}

/// Upstream HTTP protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http1,
    /// HTTP/2 only (h2 over TLS, h2c prior knowledge over plaintext).
    Http2,
    /// Prefer h2, fall back to HTTP/1.1 (negotiated by ALPN; TLS only).
    Auto,
}
filters::config_enum!(UpstreamProtocol { Http1 = "http1", Http2 = "http2", Auto = "auto" });

/// Upstream TLS origination.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// Server name sent in SNI and verified against the certificate. Required:
    /// an empty SNI would disable verification.
    pub sni: String,
    /// PEM CA bundle to verify the upstream with (default: system roots).
    #[serde(default)]
    pub ca: Option<String>,
    /// Verify the upstream with this trust domain's `ca` (interconnect to
    /// another cluster's gateway); excludes `ca`.
    #[serde(default)]
    pub trust_domain: Option<String>,
    /// PEM client certificate chain for upstream mTLS.
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key of `cert`.
    #[serde(default)]
    pub key: Option<String>,
}

/// Cluster-wide cap on concurrent retries (Envoy's retry budget).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries in flight may be at most this percentage of active requests.
    #[serde(default = "default_budget_percent")]
    pub budget_percent: f64,
    /// Retries always allowed regardless of the percentage.
    #[serde(default = "default_min_retry_concurrency")]
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            budget_percent: default_budget_percent(),
            min_retry_concurrency: default_min_retry_concurrency(),
        }
    }
}

fn default_budget_percent() -> f64 {
    20.0
}
fn default_min_retry_concurrency() -> u32 {
    3
}
