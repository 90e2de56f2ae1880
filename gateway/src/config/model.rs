//! The configuration schema: plain serde types, one YAML document (plus
//! `include:` files). These types describe *what* the operator asked for;
//! [`crate::runtime`] compiles them into the structures the request path uses.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::units::Duration;

/// The whole gateway configuration.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity and process settings of this gateway instance.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`).
    #[serde(default)]
    pub admin: AdminSettings,
    /// Where the gateway accepts traffic.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Named groups of upstream endpoints.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Routes, matched in file order; the first match wins.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Access-log settings.
    #[serde(default)]
    pub telemetry: Telemetry,
    /// Redis for `scope: fleet` rate limits (one quota for every gateway).
    #[serde(default)]
    pub rate_limit_store: Option<filters::ratelimit::StoreConfig>,
    /// Glob patterns (relative to this file) of further files whose
    /// `listeners`, `clusters` and `routes` are appended to this one's.
    #[serde(default)]
    pub include: Vec<String>,
}

/// Identity and process settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Name of this instance, used in logs and metrics.
    #[serde(default = "default_gateway_name")]
    pub name: String,
    /// Where this gateway runs (used by locality-aware routing).
    #[serde(default)]
    pub locality: Locality,
    /// Worker threads per listener; default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// How long a graceful shutdown (SIGTERM) lets in-flight requests
    /// finish; the process exits earlier once none is left.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// Unix socket for handing listening sockets to a new process
    /// (`gateway run --upgrade`); default `/tmp/gateway-<name>-upgrade.sock`.
    #[serde(default)]
    pub upgrade_sock: Option<String>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            name: default_gateway_name(),
            locality: Locality::default(),
            threads: None,
            drain_timeout: default_drain_timeout(),
            upgrade_sock: None,
        }
    }
}

fn default_gateway_name() -> String {
    "gateway".to_string()
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(10)
}

/// Region / zone / cluster of a gateway or an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// Region, e.g. `eu-west`.
    #[serde(default)]
    pub region: Option<String>,
    /// Zone, e.g. `eu-west-1a`.
    #[serde(default)]
    pub zone: Option<String>,
    /// Cluster, e.g. `cluster-a`.
    #[serde(default)]
    pub cluster: Option<String>,
}

/// The admin listener.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    /// Address to listen on; keep it on loopback unless it is firewalled.
    #[serde(default = "default_admin_listen")]
    pub listen: String,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: default_admin_listen(),
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:9901".to_string()
}

/// A listening socket and how it speaks.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in metrics and logs.
    pub name: String,
    /// `ip:port` to bind.
    pub listen: String,
    /// Terminate TLS on this listener.
    #[serde(default)]
    pub tls: Option<ListenerTls>,
    /// Accept HTTP/2 with prior knowledge (h2c) next to HTTP/1.1 on a
    /// plaintext listener. Default `true`.
    #[serde(default = "default_true")]
    pub h2c: bool,
}

fn default_true() -> bool {
    true
}

/// TLS termination settings of a listener.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// ALPN protocols offered, in order: `h2`, `http/1.1`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<Alpn>,
}

fn default_alpn() -> Vec<Alpn> {
    vec![Alpn::H2, Alpn::Http11]
}

/// An ALPN protocol id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum Alpn {
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}

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
    /// every endpoint is used (Envoy's panic threshold).
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// HTTP/1.1 GET, healthy on an expected status.
    #[default]
    Http,
    /// TCP connect.
    Tcp,
}

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
    /// `ip:port` or `hostname:port` (resolved when the config is loaded).
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

fn default_weight() -> u32 {
    1
}

/// Load-balancing policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    /// A response status that triggers a retry (e.g. `503`).
    Status(u16),
    /// A named condition.
    Named(RetryCondition),
}

/// Named retry conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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

/// Telemetry settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Telemetry {
    /// Access log.
    #[serde(default)]
    pub access_log: AccessLog,
    /// OpenTelemetry traces (off when absent; W3C `traceparent` is passed on
    /// either way). Changes apply at restart.
    #[serde(default)]
    pub tracing: Option<TracingConfig>,
}

/// OpenTelemetry span export over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// Collector base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` is appended).
    pub otlp_endpoint: String,
    /// Share of new traces recorded, 0-1; incoming sampled flags are followed.
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// `service.name` of the spans (default: `gateway.name`).
    #[serde(default)]
    pub service_name: Option<String>,
    /// Spans queued for export; beyond, spans are dropped and counted.
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// Deadline of one export call.
    #[serde(default = "default_export_timeout")]
    pub export_timeout: Duration,
}

fn default_sample_ratio() -> f64 {
    1.0
}
fn default_max_queue_size() -> usize {
    2048
}
fn default_export_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Access-log settings.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessLog {
    /// Write one JSON line per request to standard output.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog { enabled: true }
    }
}
