//! Compiled routes and the matcher. Routes are tried in file order; the
//! first whose every condition holds wins.

use std::sync::Arc;

use bytes::Bytes;
use filters::headers::CompiledHeaderEdits;
use http::{HeaderName, Method};
use pingora::http::RequestHeader;
use regex::Regex;

use super::cluster::Cluster;
use crate::config::RetryCondition;

/// Host condition.
#[derive(Debug)]
pub enum HostMatch {
    /// Lower-case exact host.
    Exact(String),
    /// Lower-case suffix including the dot (`.example.com` for `*.example.com`).
    Suffix(String),
}

/// Path condition.
#[derive(Debug)]
pub enum PathMatch {
    /// Exact path.
    Exact(String),
    /// Path prefix.
    Prefix(String),
    /// Whole-path regular expression (anchored at compile time).
    Regex(Regex),
}

/// Condition on a header or query value.
#[derive(Debug)]
pub enum ValueMatcher {
    /// Equals.
    Exact(String),
    /// Whole value matches (anchored at compile time).
    Regex(Regex),
    /// Present (true) or absent (false).
    Present(bool),
}

impl ValueMatcher {
    fn matches(&self, value: Option<&[u8]>) -> bool {
        match (self, value) {
            (ValueMatcher::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (ValueMatcher::Exact(s), Some(v)) => s.as_bytes() == v,
            (ValueMatcher::Regex(r), Some(v)) => {
                std::str::from_utf8(v).is_ok_and(|v| r.is_match(v))
            }
        }
    }
}

/// Whether every `(name, condition)` holds for `headers` (the first value
/// of each name is the one compared).
pub fn headers_match(conds: &[(HeaderName, ValueMatcher)], headers: &http::HeaderMap) -> bool {
    conds
        .iter()
        .all(|(name, m)| m.matches(headers.get(name).map(|v| v.as_bytes())))
}

/// All conditions of one route.
#[derive(Debug, Default)]
pub struct Matcher {
    /// Host condition.
    pub host: Option<HostMatch>,
    /// Path condition.
    pub path: Option<PathMatch>,
    /// Allowed methods (empty = any).
    pub methods: Vec<Method>,
    /// Header conditions.
    pub headers: Vec<(HeaderName, ValueMatcher)>,
    /// Query-parameter conditions (names and values compared decoded).
    pub query: Vec<(String, ValueMatcher)>,
}

/// The request facts a route is matched against, computed once per request.
pub struct RequestFacts<'a> {
    /// Lower-case host without port.
    pub host: &'a str,
    /// Path without query.
    pub path: &'a str,
    /// Raw query string (without `?`).
    pub query: Option<&'a str>,
}

impl<'a> RequestFacts<'a> {
    /// Extracts host, path and query from a request. `host_buf` holds the
    /// lower-cased host when it needs lower-casing.
    pub fn of(req: &'a RequestHeader, host_buf: &'a mut String) -> Self {
        let raw_host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        let host = strip_port(raw_host);
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            *host_buf = host.to_ascii_lowercase();
            host_buf.as_str()
        } else {
            host
        };
        RequestFacts {
            host,
            path: req.uri.path(),
            query: req.uri.query(),
        }
    }
}

/// Host without `:port` (IPv6 literals keep their brackets).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Percent-decodes a query component (`+` is a space, as in forms).
fn decode_component(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return s.into();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

fn query_value<'q>(query: Option<&'q str>, name: &str) -> Option<std::borrow::Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k) == name).then(|| decode_component(v))
    })
}

impl Matcher {
    /// Whether the request satisfies every condition.
    pub fn matches(&self, req: &RequestHeader, facts: &RequestFacts<'_>) -> bool {
        if let Some(h) = &self.host {
            let ok = match h {
                HostMatch::Exact(e) => facts.host == e,
                HostMatch::Suffix(s) => {
                    facts.host.len() > s.len() && facts.host.ends_with(s.as_str())
                }
            };
            if !ok {
                return false;
            }
        }
        if let Some(p) = &self.path {
            let ok = match p {
                PathMatch::Exact(e) => facts.path == e,
                PathMatch::Prefix(pre) => facts.path.starts_with(pre.as_str()),
                PathMatch::Regex(r) => r.is_match(facts.path),
            };
            if !ok {
                return false;
            }
        }
        if !self.methods.is_empty() && !self.methods.contains(&req.method) {
            return false;
        }
        if !headers_match(&self.headers, &req.headers) {
            return false;
        }
        for (name, m) in &self.query {
            let v = query_value(facts.query, name);
            if !m.matches(v.as_deref().map(str::as_bytes)) {
                return false;
            }
        }
        true
    }
}

/// A canned response.
#[derive(Debug)]
pub struct DirectResponse {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// Extra headers.
    pub headers: Vec<(HeaderName, http::HeaderValue)>,
}

/// Weighted clusters of a proxied route.
pub struct Backends {
    /// Clusters with cumulative weights.
    pub clusters: Vec<(Arc<Cluster>, u64)>,
    /// Sum of weights.
    pub total: u64,
}

impl Backends {
    /// Picks a cluster by weight.
    pub fn pick(&self) -> Option<&Arc<Cluster>> {
        if self.clusters.len() == 1 {
            return self.clusters.first().map(|(c, _)| c);
        }
        if self.total == 0 {
            return None;
        }
        let r = fastrand::u64(0..self.total);
        self.clusters
            .iter()
            .find(|(_, cum)| r < *cum)
            .map(|(c, _)| c)
    }
}

/// What a route does with a matched request.
pub enum Action {
    /// Proxy to one of the weighted clusters.
    Proxy(Backends),
    /// Answer directly.
    Direct(DirectResponse),
    /// Answer with a redirect.
    Redirect(filters::redirect::Redirect),
}

/// Compiled retry policy.
#[derive(Debug, Clone)]
pub struct RetryRt {
    /// Total tries including the first.
    pub attempts: u32,
    /// Deadline per try.
    pub per_try_timeout: Option<std::time::Duration>,
    /// Retry when the connection could not be made.
    pub on_connect_failure: bool,
    /// Retry when the connection broke or a try timed out before a response.
    pub on_reset: bool,
    /// Retry on these response statuses.
    pub on_status: Vec<u16>,
}

impl RetryRt {
    /// Builds the compiled policy from the config's condition list.
    pub fn new(
        attempts: u32,
        per_try_timeout: Option<std::time::Duration>,
        on: &[crate::config::RetryOn],
    ) -> Self {
        let mut r = RetryRt {
            attempts,
            per_try_timeout,
            on_connect_failure: false,
            on_reset: false,
            on_status: Vec::new(),
        };
        for c in on {
            match c {
                crate::config::RetryOn::Status(s) => r.on_status.push(*s),
                crate::config::RetryOn::Named(RetryCondition::ConnectFailure) => {
                    r.on_connect_failure = true
                }
                crate::config::RetryOn::Named(RetryCondition::Reset) => r.on_reset = true,
                crate::config::RetryOn::Named(RetryCondition::GatewayError) => {
                    r.on_status.extend([502, 503, 504]);
                    r.on_connect_failure = true;
                }
            }
        }
        r
    }
}

/// A route's CORS policy and its counters (`gateway_cors_total`).
#[derive(Debug)]
pub struct CorsPolicy {
    /// The policy.
    pub policy: filters::cors::Cors,
    /// Preflights answered.
    pub preflight: prometheus::IntCounter,
    /// Actual requests from allowed origins.
    pub actual: prometheus::IntCounter,
}

impl CorsPolicy {
    /// `policy` for the route `route`, with its counters resolved now.
    pub fn new(route: &str, policy: filters::cors::Cors) -> Self {
        let counter = |result| {
            crate::metrics::METRICS
                .cors
                .with_label_values(&[route, result])
        };
        CorsPolicy {
            policy,
            preflight: counter("preflight"),
            actual: counter("actual"),
        }
    }
}

/// A compiled route.
pub struct Route {
    /// Route name (metrics label).
    pub name: Arc<str>,
    /// Conditions.
    pub matcher: Matcher,
    /// What to do.
    pub action: Action,
    /// Prefix to strip (the matched `path_prefix`) and its replacement.
    pub prefix_rewrite: Option<(String, String)>,
    /// New `Host` for the upstream request.
    pub host_rewrite: Option<http::HeaderValue>,
    /// Upstream request header edits.
    pub request_headers: CompiledHeaderEdits,
    /// Downstream response header edits.
    pub response_headers: CompiledHeaderEdits,
    /// Whole-exchange deadline.
    pub timeout: Option<std::time::Duration>,
    /// Retry policy.
    pub retry: Option<RetryRt>,
    /// Rate limits (`None` when the route has none).
    pub rate_limits: Option<filters::ratelimit::RouteRateLimits>,
    /// Mirror targets.
    pub mirrors: Vec<crate::mirror::MirrorTarget>,
    /// Authentication, authorization and identity passed upstream.
    pub identity: crate::identity::request::RouteIdentity,
    /// Protocol upgrades passed on.
    pub upgrades: crate::proxy::upgrade::UpgradePolicy,
    /// CORS policy.
    pub cors: Option<CorsPolicy>,
    /// Fault injection.
    pub fault: Option<crate::proxy::fault::FaultPolicy>,
    /// Metric handles of this route.
    pub metrics: crate::metrics::handles::RouteMetrics,
    /// Largest request body on this route (overrides the listener's).
    pub max_request_body_bytes: Option<u64>,
    /// Response compression.
    pub compression: Option<crate::proxy::compression::CompressionPolicy>,
    /// External authorization.
    pub ext_authz: Option<crate::ext_authz::ExtAuthzPolicy>,
}

/// The ordered route table.
#[derive(Default)]
pub struct Router {
    /// Routes in file order.
    pub routes: Vec<Route>,
}

impl Router {
    /// Index of the first route that matches.
    pub fn find(&self, req: &RequestHeader) -> Option<usize> {
        let mut host_buf = String::new();
        let facts = RequestFacts::of(req, &mut host_buf);
        self.routes
            .iter()
            .position(|r| r.matcher.matches(req, &facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value(Some("a=1&b=x%20y+z"), "b").as_deref(),
            Some("x y z")
        );
        assert_eq!(query_value(Some("flag&a=1"), "flag").as_deref(), Some(""));
        assert_eq!(query_value(Some("a=%zz"), "a").as_deref(), Some("%zz"));
        assert_eq!(query_value(Some("a=%4"), "a").as_deref(), Some("%4"));
        assert_eq!(query_value(None, "a"), None);
    }

    #[test]
    fn suffix_hosts_need_a_label_before_the_suffix() {
        let m = Matcher {
            host: Some(HostMatch::Suffix(".example.com".into())),
            ..Default::default()
        };
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let f = |host| RequestFacts {
            host,
            path: "/",
            query: None,
        };
        assert!(m.matches(&req, &f("a.example.com")));
        assert!(m.matches(&req, &f("a.b.example.com")));
        assert!(!m.matches(&req, &f("example.com")));
        assert!(!m.matches(&req, &f("badexample.com")));
    }
}
