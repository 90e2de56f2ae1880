//! The upstream side of a proxied request: the cluster it goes to
//! (`request_filter`), then each try: which endpoint (`upstream_peer`), and
//! how the try went (health and outlier detection, circuit-breaker counts,
//! upstream metrics, the try's trace span). Whether a failed try is tried
//! again is decided in [`super::retry`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use pingora::proxy::Session;
use pingora::{Error, ErrorType};

use super::ctx::RequestCtx;
use super::{mirror, respond};
use crate::config::LbPolicy;
use crate::runtime::cluster::{hash_key, Cluster, Pick};
use crate::runtime::health::{self, TryResult};
use crate::runtime::route::{Backends, Route};

/// Picks the cluster of a proxied route and passes its circuit breaker,
/// then starts the route's mirror copies. `Ok(true)`: answered with 503.
pub(super) async fn choose_cluster(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    backends: &Backends,
) -> pingora::Result<bool> {
    let refused = match backends.pick() {
        None => Some((&b"no healthy upstream\n"[..], None)),
        Some(c) if !c.admit_request() => {
            c.metrics.circuit_open().inc();
            Some((respond::OVERLOADED_BODY, Some(respond::overloaded_header())))
        }
        Some(c) => {
            // The endpoint set of now (a DNS-discovered cluster's changes).
            ctx.set_cluster(c.current());
            None
        }
    };
    if let Some((body, header)) = refused {
        let extra = header.as_slice();
        respond::write(session, ctx, 503, Bytes::from_static(body), extra).await?;
        return Ok(true);
    }
    ctx.deadline = route.timeout.map(|t| ctx.start + t);
    if !route.mirrors.is_empty() {
        mirror::start_copies(session, ctx, route);
    }
    Ok(false)
}

/// The cluster `request_filter` chose.
pub(super) fn cluster(ctx: &RequestCtx) -> pingora::Result<Arc<Cluster>> {
    let no_cluster = || Error::explain(ErrorType::InternalError, "no cluster chosen");
    ctx.cluster.clone().ok_or_else(no_cluster)
}

/// Counts a try after the first in the route's retries.
pub(super) fn count_retry(ctx: &RequestCtx) {
    if ctx.tries > 0 {
        if let Some(r) = ctx.route() {
            r.metrics.retries().inc();
        }
    }
}

/// The endpoint of the next try: by the cluster's balancing (a consistent
/// hash of the configured header or of the client address), avoiding the
/// endpoints this request already tried.
pub(super) fn pick(
    session: &Session,
    ctx: &RequestCtx,
    cluster: &Cluster,
) -> pingora::Result<Pick> {
    let hash = (cluster.lb == LbPolicy::ConsistentHash).then(|| {
        let header = cluster
            .hash_on
            .header
            .as_deref()
            .and_then(|h| session.req_header().headers.get(h));
        match (header, ctx.client_ip) {
            (Some(v), _) => hash_key(v.as_bytes()),
            (None, Some(ip)) => hash_key(ip.to_string().as_bytes()),
            (None, None) => 0,
        }
    });
    match cluster.select(hash, &ctx.tried) {
        Some(pick) => Ok(pick),
        None => Error::e_explain(ErrorType::HTTPStatus(503), "no healthy upstream"),
    }
}

/// Starts a try on `pick`: ends the previous try's connection count and
/// body offset, passes the pending-requests breaker, counts the endpoint
/// as active, opens the try's span and counts it.
pub(super) fn begin_try(
    ctx: &mut RequestCtx,
    cluster: &Cluster,
    pick: Pick,
) -> pingora::Result<()> {
    // A retry: the previous try's connection is no longer in use, and
    // its request body starts over.
    ctx.release_connection();
    ctx.body_offset = 0;
    if !cluster.admit_pending() {
        ctx.overloaded = true;
        cluster.metrics.circuit_open().inc();
        return Error::e_explain(
            ErrorType::HTTPStatus(503),
            "circuit breaker: too many pending requests",
        );
    }
    ctx.pending = true;
    ctx.use_endpoint(pick.index);
    if let Some(t) = ctx.trace.as_mut() {
        t.start_attempt(
            ctx.tries + 1,
            &cluster.name,
            &cluster.endpoints[pick.index].label,
            pick.priority.label(),
        );
    }
    cluster.metrics.upstream_requests(pick.priority).inc();
    Ok(())
}

/// The try's connection is up (`connected_to_upstream`).
pub(super) fn connected(ctx: &mut RequestCtx) {
    ctx.end_pending();
    if let Some(c) = &ctx.cluster {
        c.connections_in_use.fetch_add(1, Ordering::AcqRel);
        ctx.conn_in_use = true;
        if let Some(i) = ctx.endpoint {
            health::record_try(c, i, TryResult::Connected);
        }
    }
}

/// The upstream answered the try with `status` (`upstream_response_filter`).
pub(super) fn answered(ctx: &mut RequestCtx, status: u16) {
    if let Some(t) = ctx.trace.as_mut() {
        t.end_attempt(Some(status), (status >= 500).then_some("5xx"));
    }
    if let (Some(c), Some(i)) = (&ctx.cluster, ctx.endpoint) {
        let result = if status >= 500 {
            TryResult::ServerError
        } else {
            TryResult::Success
        };
        health::record_try(c, i, result);
    }
    if let (Some(t), Some(c)) = (ctx.try_start.take(), &ctx.cluster) {
        c.metrics
            .upstream_duration()
            .observe(t.elapsed().as_secs_f64());
        if status >= 500 {
            c.metrics.upstream_error("status");
        }
    }
}

/// The try could not connect (`fail_to_connect`).
pub(super) fn connect_failed(ctx: &mut RequestCtx, e: &Error) {
    ctx.end_pending();
    if let Some(t) = ctx.trace.as_mut() {
        t.end_attempt(None, Some(e.etype().as_str()));
    }
    if let Some(c) = &ctx.cluster {
        c.metrics.upstream_error(respond::upstream_error_kind(e));
        if let Some(i) = ctx.endpoint {
            health::record_try(c, i, TryResult::ConnectFailure);
        }
    }
}

/// Proxying the try failed after connecting (`error_while_proxy`);
/// counted as an upstream error when the upstream side failed.
pub(super) fn proxy_failed(ctx: &mut RequestCtx, e: &Error) {
    if let Some(t) = ctx.trace.as_mut() {
        t.end_attempt(None, Some(e.etype().as_str()));
    }
    if *e.esource() == pingora::ErrorSource::Upstream {
        if let Some(c) = &ctx.cluster {
            c.metrics.upstream_error(respond::upstream_error_kind(e));
        }
    }
}
