//! The configuration schema: plain serde types, one YAML document (plus
//! `include:` files). These types describe *what* the operator asked for;
//! [`crate::runtime`] compiles them into the structures the request path uses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::units::Duration;

mod client_address;
mod cluster;
mod compression;
mod discovery;
mod ext_authz;
mod identity;
mod route;
mod telemetry;

pub use client_address::*;
pub use cluster::*;
pub use compression::*;
pub use discovery::*;
pub use ext_authz::*;
pub use identity::*;
pub use route::*;
pub use telemetry::*;

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
    /// SPIFFE trust domains: client-certificate CA bundles and JWT issuers.
    #[serde(default)]
    pub trust_domains: Vec<TrustDomain>,
    /// The gateway's own token signer (token exchange, admin
    /// `/.well-known/jwks.json`).
    #[serde(default)]
    pub token_issuer: Option<TokenIssuer>,
    /// The egress (forward proxy) rules of `mode: egress` listeners.
    #[serde(default)]
    pub egress: Option<filters::egress::EgressConfig>,
    /// Redis for `scope: fleet` rate limits (one quota for every gateway).
    #[serde(default)]
    pub rate_limit_store: Option<filters::ratelimit::StoreConfig>,
    /// The resolver of DNS-discovered clusters (a cluster's
    /// `discovery.dns` replaces it).
    #[serde(default)]
    pub dns: Option<DnsResolver>,
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
    /// Let worker threads steal each other's tasks (one multi-threaded
    /// Tokio runtime per listener, Pingora's `work_stealing`). Default
    /// `false`: each worker thread runs its own single-threaded runtime
    /// and a connection stays on the thread that accepted it, as in NGINX,
    /// HAProxy and Envoy; this is cheaper per request (no cross-thread
    /// wakes) and balances well when connections are many.
    #[serde(default)]
    pub work_stealing: bool,
    /// Idle upstream connections kept for reuse, per worker thread
    /// (Pingora's `upstream_keepalive_pool_size`, default 128 there). Keep
    /// it at least the number of concurrent upstream requests, or busy
    /// gateways re-dial their upstreams. Default 1024.
    #[serde(default = "default_upstream_pool_size")]
    pub upstream_keepalive_pool_size: usize,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        GatewaySettings {
            name: default_gateway_name(),
            locality: Locality::default(),
            threads: None,
            drain_timeout: default_drain_timeout(),
            upgrade_sock: None,
            work_stealing: false,
            upstream_keepalive_pool_size: default_upstream_pool_size(),
        }
    }
}

fn default_upstream_pool_size() -> usize {
    1024
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
    /// `proxy` (the reverse proxy, default) or `egress` (a forward proxy
    /// for `HTTPS_PROXY`, governed by `egress`).
    #[serde(default)]
    pub mode: ListenerMode,
    /// Bytes of the per-connection read buffer (Pingora's L4 read buffer,
    /// 64 KiB there). It is held for the life of every connection, idle
    /// keep-alive ones included, so it dominates memory per connection.
    /// Default 4096 on plaintext listeners (a request head fits, and larger
    /// bodies are read straight into the body buffer) and 16384 on TLS
    /// listeners (one TLS record per read); 0 on plaintext `engine: lean`
    /// listeners, whose idle connections hold no buffer. 0 turns it off.
    #[serde(default)]
    pub read_buffer_bytes: Option<usize>,
    /// Which implementation serves HTTP/1 here: `lean` (the lean HTTP/1
    /// path: the same policy steps, less memory per idle connection and
    /// less CPU per request; no HTTP/2 upstreams yet) or `proxy_http`
    /// (Pingora's `ProxyHttp` service). HTTP/2 connections are served by
    /// `proxy_http` either way. Default: `lean`, or `proxy_http` while any
    /// cluster speaks HTTP/2; the `GATEWAY_DEFAULT_ENGINE` environment
    /// variable changes it (how CI runs the suite on both).
    #[serde(default)]
    pub engine: Option<ListenerEngine>,
    /// Redirect every request instead of routing it: the one-line
    /// HTTP→HTTPS redirect of a plaintext listener is `redirect: {scheme:
    /// https}` (add `port` when HTTPS is not on 443). The fields are a
    /// route's `redirect` ones, without `prefix_rewrite`.
    #[serde(default)]
    pub redirect: Option<filters::redirect::RedirectConfig>,
    /// Protections against slow, greedy and oversized clients: header and
    /// idle timeouts, connection, header, body and HTTP/2 stream limits.
    /// Every refusal is counted in
    /// `gateway_listener_refusals_total{listener,reason}`. Fixed at startup,
    /// like the address (a reload that changes them asks for a restart).
    #[serde(default)]
    pub limits: ListenerLimits,
    /// Trusted proxies and `X-Forwarded-For`: who the client is behind a
    /// load balancer. Default: the peer is the client and its
    /// `X-Forwarded-For` is passed on, with the peer appended.
    #[serde(default)]
    pub client_address: Option<ClientAddress>,
    /// Read a PROXY protocol header (v1 or v2) at the start of every
    /// connection, before TLS. Default: off.
    #[serde(default)]
    pub proxy_protocol: Option<ProxyProtocol>,
}

/// Limits of one listener, in Envoy's and NGINX's terms. Absent keys take
/// the default named on each. On `mode: egress` listeners only
/// `max_connections` applies.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerLimits {
    /// How long a client may take to send a whole request head, from its
    /// first byte (Envoy's `request_headers_timeout`, NGINX's
    /// `client_header_timeout`). Past it, a client that sent part of a head
    /// is answered `408 Request Timeout` and closed; a new connection that
    /// sent nothing at all is closed without an answer (as NGINX does, and
    /// not counted: browsers open such speculative connections). Default
    /// 30s. On `engine: proxy_http` it bounds the first request of each
    /// connection; later requests on a keep-alive connection are bounded
    /// per read by `idle_timeout` and closed without an answer (Pingora
    /// reads those heads itself).
    #[serde(default)]
    pub request_header_timeout: Option<Duration>,
    /// How long a keep-alive connection may wait for its next request
    /// before it is closed (NGINX's `keepalive_timeout`, Envoy's
    /// `idle_timeout`); for HTTP/2, how long a connection may stay without
    /// streams. Default 60s. Not a refusal: not counted. `engine:
    /// proxy_http` rounds HTTP/1 waits up to whole seconds (Pingora's
    /// keep-alive timeout).
    #[serde(default)]
    pub idle_timeout: Option<Duration>,
    /// Connections served at once by this listener (per process, across
    /// its worker threads; Envoy's `max_connections`). One more is closed
    /// at once, without an answer, and counted `connection_limit`. On TLS
    /// listeners the refused connection has completed its handshake (Pingora
    /// handshakes before the application sees it). Default: unlimited.
    #[serde(default)]
    pub max_connections: Option<u32>,
    /// Largest request head (request line and header fields, bytes; Envoy's
    /// `max_request_headers_kb`, NGINX's `large_client_header_buffers`).
    /// Larger: `431 Request Header Fields Too Large`, and the connection is
    /// closed; counted `header_too_large`. HTTP/2 requests are held to it
    /// as `SETTINGS_MAX_HEADER_LIST_SIZE` (the h2 library answers 431,
    /// uncounted). Default 61440 (60 KiB), at least 1024, at most 1048575
    /// (Pingora's own ceiling). On `engine: proxy_http` it applies to the
    /// first request of each connection; later ones get Pingora's ceiling
    /// (answered 400).
    #[serde(default)]
    pub max_request_header_bytes: Option<u32>,
    /// Largest request body (bytes; NGINX's `client_max_body_size`); a
    /// route's `max_request_body_bytes` overrides it. A `Content-Length`
    /// over it is answered `413 Content Too Large` before anything goes
    /// upstream (a body up to 64 KiB is then read and dropped, keeping the
    /// connection; a larger one closes it); a chunked (or HTTP/2) body that
    /// grows past it is cut: the
    /// upstream gets at most this many bytes (the piece that crosses the
    /// limit is not forwarded), the client a 413 if no answer started, and
    /// the connection is closed. Counted `body_too_large`. Upgraded
    /// (WebSocket) streams are not limited. 0 refuses every body. Default:
    /// unlimited.
    #[serde(default)]
    pub max_request_body_bytes: Option<u64>,
    /// Streams an HTTP/2 client may open at once on one connection
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`; Envoy's and NGINX's
    /// `http2_max_concurrent_streams`). Default 100.
    #[serde(default)]
    pub http2_max_concurrent_streams: Option<u32>,
}

/// The HTTP/1 implementation of a proxy listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListenerEngine {
    /// Pingora's `ProxyHttp` service.
    ProxyHttp,
    /// The lean HTTP/1 path (`gateway/src/lean`).
    #[default]
    Lean,
}
filters::config_enum!(ListenerEngine { ProxyHttp = "proxy_http", Lean = "lean" });

/// What a listener does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    /// Reverse proxy: routes and clusters.
    #[default]
    Proxy,
    /// Forward proxy (`CONNECT`, absolute-form and `Host` requests) under
    /// the `egress` rules.
    Egress,
}
filters::config_enum!(ListenerMode { Proxy = "proxy", Egress = "egress" });

fn default_true() -> bool {
    true
}

/// TLS termination settings of a listener. Its certificate is either one
/// `cert`/`key` pair, or a list of `certificates` chosen by SNI; exactly one
/// of the two forms.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// PEM certificate chain, leaf first: the listener's one certificate,
    /// served whatever the SNI (with `key`; not with `certificates`).
    #[serde(default)]
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    #[serde(default)]
    pub key: Option<String>,
    /// Several certificates, chosen by the SNI of the ClientHello: an exact
    /// name first, then a `*.` wildcard covering one label, both
    /// case-insensitive; no SNI or an unknown name gets the default
    /// certificate (the one with `default: true`, else the first). Two
    /// certificates may not claim the same name.
    #[serde(default)]
    pub certificates: Option<Vec<ListenerCertificate>>,
    /// ALPN protocols offered, in order: `h2`, `http/1.1`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<Alpn>,
    /// Ask for client certificates (mTLS with X.509-SVIDs).
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
    /// Trust domains whose SVIDs are accepted; default: every trust domain
    /// with a `ca`.
    #[serde(default)]
    pub client_trust_domains: Option<Vec<String>>,
}

/// One certificate of a listener's `certificates` list.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerCertificate {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// Server names (`api.example.com`, `*.example.com`) this certificate
    /// is served for; default: the DNS names of its subjectAltName.
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// Serve this certificate when the SNI is missing or matches no name
    /// (at most one; default: the first of the list).
    #[serde(default)]
    pub default: bool,
}

fn default_alpn() -> Vec<Alpn> {
    vec![Alpn::H2, Alpn::Http11]
}

/// An ALPN protocol id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub enum Alpn {
    /// HTTP/2.
    #[serde(rename = "h2")]
    H2,
    /// HTTP/1.1.
    #[serde(rename = "http/1.1")]
    Http11,
}
filters::config_enum!(Alpn { H2 = "h2", Http11 = "http/1.1" });

/// Default endpoint and backend weight.
fn default_weight() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::config_enum::config_names_match_serde;

    /// The spelling tables that give enum errors their accepted values are
    /// the spellings `Serialize` and the JSON schema use.
    #[test]
    fn config_enum_tables_match_serde() {
        config_names_match_serde(LocalityMode::CONFIG_NAMES).unwrap();
        config_names_match_serde(HealthCheckKind::CONFIG_NAMES).unwrap();
        config_names_match_serde(LbPolicy::CONFIG_NAMES).unwrap();
        config_names_match_serde(UpstreamProtocol::CONFIG_NAMES).unwrap();
        config_names_match_serde(ClientAuth::CONFIG_NAMES).unwrap();
        config_names_match_serde(ListenerMode::CONFIG_NAMES).unwrap();
        config_names_match_serde(Alpn::CONFIG_NAMES).unwrap();
        config_names_match_serde(RetryCondition::CONFIG_NAMES).unwrap();
    }

    #[test]
    fn retry_on_reads_statuses_and_names_and_says_what_it_accepts() {
        let on: Vec<RetryOn> = serde_yaml::from_str("[503, gateway-error]").unwrap();
        assert_eq!(
            on,
            [
                RetryOn::Status(503),
                RetryOn::Named(RetryCondition::GatewayError)
            ]
        );
        let e = serde_yaml::from_str::<Vec<RetryOn>>("[5xx]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(
                "unknown variant `5xx`, expected one of `connect-failure`, `reset`, `gateway-error`"
            ),
            "{e}"
        );
        let e = serde_yaml::from_str::<Vec<RetryOn>>("[{on: reset}]")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a response status or one of `connect-failure`"),
            "{e}"
        );
    }
}
