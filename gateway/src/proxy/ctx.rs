//! Per-request state kept between Pingora's phase hooks.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::METRICS;
use crate::runtime::cluster::Cluster;
use crate::runtime::route::Route;
use crate::runtime::Runtime;

/// State of one request. Gauges and counters it raised are lowered in
/// `Drop`, so no exit path can leak them.
pub struct RequestCtx {
    /// When the request started.
    pub start: Instant,
    /// The runtime snapshot this request uses from start to end.
    pub runtime: Arc<Runtime>,
    /// Index of the matched route.
    pub route: Option<usize>,
    /// The cluster picked for this request.
    pub cluster: Option<Arc<Cluster>>,
    /// Endpoint currently in use (index into the cluster).
    pub endpoint: Option<usize>,
    /// Endpoints already tried.
    pub tried: Vec<usize>,
    /// Upstream tries so far.
    pub tries: u32,
    /// Whole-exchange deadline of the route.
    pub deadline: Option<Instant>,
    /// Request id (kept or generated).
    pub request_id: super::forwarding::RequestId,
    /// Client address.
    pub client_ip: Option<IpAddr>,
    /// The address the connection comes from (TCP peer or PROXY source),
    /// the hop appended to `X-Forwarded-For`.
    pub peer_ip: Option<IpAddr>,
    /// The client's `Host` (for `X-Forwarded-Host`).
    pub original_host: Option<http::HeaderValue>,
    /// Start of the current upstream try.
    pub try_start: Option<Instant>,
    /// `upstream_response_filter` turned a response into a retry.
    pub status_retry: bool,
    /// This request holds a slot of the cluster's retry budget.
    pub retrying: bool,
    /// Counted in `gateway_active_requests`.
    pub counted: bool,
    /// Rate-limit headers for the response of an allowed request.
    pub ratelimit_headers: Option<filters::ratelimit::RateLimitHeaders>,
    /// Counted in the cluster's requests waiting for a connection.
    pub pending: bool,
    /// Counted in the cluster's connections in use.
    pub conn_in_use: bool,
    /// Refused by the cluster's circuit breaker.
    pub overloaded: bool,
    /// Mirror copies of this request.
    pub mirrors: Vec<crate::mirror::MirrorHandle>,
    /// Request body bytes seen in the current try (mirror tee offset).
    pub body_offset: u64,
    /// Digest of the primary's response body (compare mode).
    pub body_digest: Option<crate::mirror::BodyDigest>,
    /// Trace context and spans.
    pub trace: Option<crate::telemetry::RequestTrace>,
    /// The authenticated caller, if any.
    pub identity: Option<filters::identity::Identity>,
    /// The connection's client certificate identity (mTLS).
    pub peer: Option<crate::identity::PeerIdentity>,
    /// The route's upgrade protocol this request asks for (an index into
    /// its `UpgradePolicy`).
    pub upgrade: Option<u8>,
    /// An actual cross-origin request from an allowed origin: its response
    /// echoes the request's `Origin` (read again there, not kept here).
    pub cors: bool,
    /// The response coding negotiated on a compressing route.
    pub compression: Option<super::compression::Negotiated>,
    /// Headers an external authorization service set for the upstream.
    pub ext_authz_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl RequestCtx {
    /// A fresh context on the given snapshot.
    pub fn new(runtime: Arc<Runtime>) -> Self {
        RequestCtx {
            start: Instant::now(),
            runtime,
            route: None,
            cluster: None,
            endpoint: None,
            tried: Vec::new(),
            tries: 0,
            deadline: None,
            request_id: Default::default(),
            client_ip: None,
            peer_ip: None,
            original_host: None,
            try_start: None,
            status_retry: false,
            retrying: false,
            counted: false,
            ratelimit_headers: None,
            pending: false,
            conn_in_use: false,
            overloaded: false,
            mirrors: Vec::new(),
            body_offset: 0,
            body_digest: None,
            trace: None,
            identity: None,
            peer: None,
            upgrade: None,
            cors: false,
            compression: None,
            ext_authz_headers: Vec::new(),
        }
    }

    /// Counts the request in `gateway_active_requests` (`Drop` uncounts it).
    pub fn count_active(&mut self) {
        METRICS.active_requests.inc();
        self.counted = true;
    }

    /// Records the matched route (index `idx` of the router) and names the
    /// request's span after it.
    pub fn enter_route(&mut self, idx: usize, route: &Route, method: &str, https: bool) {
        self.route = Some(idx);
        if let Some(t) = self.trace.as_mut() {
            t.set_route(method, &route.name, https, self.client_ip);
        }
    }

    /// The matched route.
    pub fn route(&self) -> Option<&Route> {
        self.route.and_then(|i| self.runtime.router.routes.get(i))
    }

    /// Name of the matched route, or `none`.
    pub fn route_name(&self) -> &str {
        self.route().map_or("none", |r| &r.name)
    }

    /// Name of the picked cluster, or `none`.
    pub fn cluster_name(&self) -> &str {
        self.cluster.as_ref().map_or("none", |c| &c.name)
    }

    /// Address label of the endpoint in use, or `""`.
    pub fn endpoint_label(&self) -> &str {
        match (&self.cluster, self.endpoint) {
            (Some(c), Some(i)) => c.endpoints.get(i).map_or("", |e| e.label.as_str()),
            _ => "",
        }
    }

    /// Binds the request to a cluster that admitted it
    /// ([`Cluster::admit_request`] counted it as active).
    pub fn set_cluster(&mut self, c: Arc<Cluster>) {
        self.cluster = Some(c);
    }

    /// The priority of the endpoint in use.
    pub fn priority(&self) -> Option<crate::runtime::locality::Priority> {
        let c = self.cluster.as_ref()?;
        Some(c.endpoints.get(self.endpoint?)?.priority)
    }

    /// Leaves the "waiting for a connection" state, if in it.
    pub fn end_pending(&mut self) {
        if std::mem::take(&mut self.pending) {
            if let Some(c) = &self.cluster {
                c.pending.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Releases the connection of the previous try, if one was counted.
    pub fn release_connection(&mut self) {
        if std::mem::take(&mut self.conn_in_use) {
            if let Some(c) = &self.cluster {
                c.connections_in_use.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// Switches to endpoint `idx`, moving the active-request count.
    pub fn use_endpoint(&mut self, idx: usize) {
        let Some(c) = &self.cluster else { return };
        if let Some(prev) = self.endpoint.replace(idx) {
            if let Some(e) = c.endpoints.get(prev) {
                e.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if let Some(e) = c.endpoints.get(idx) {
            e.active.fetch_add(1, Ordering::Relaxed);
        }
        self.tried.push(idx);
    }

    /// Takes a slot of the retry budget unless this request already holds one.
    pub fn take_retry_slot(&mut self) -> bool {
        let Some(c) = &self.cluster else { return false };
        if self.retrying {
            return true;
        }
        if !c.retry_allowed() {
            return false;
        }
        c.active_retries.fetch_add(1, Ordering::Relaxed);
        self.retrying = true;
        true
    }
}

impl Drop for RequestCtx {
    fn drop(&mut self) {
        self.end_pending();
        self.release_connection();
        if self.counted {
            METRICS.active_requests.dec();
        }
        if let Some(c) = &self.cluster {
            c.active_requests.fetch_sub(1, Ordering::Relaxed);
            if self.retrying {
                c.active_retries.fetch_sub(1, Ordering::Relaxed);
            }
            if let Some(e) = self.endpoint.and_then(|i| c.endpoints.get(i)) {
                e.active.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Pingora keeps room for the request context in every connection's
    /// task, idle keep-alive connections included: what is rare (trace
    /// spans, tokens) stays behind a box.
    #[test]
    fn the_context_stays_small() {
        let size = std::mem::size_of::<super::RequestCtx>();
        assert!(size <= 800, "RequestCtx grew to {size} bytes");
    }
}
