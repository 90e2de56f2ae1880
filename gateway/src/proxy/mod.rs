//! The `ProxyHttp` implementation: Pingora's phase hooks, in the order
//! Pingora calls them. Each listener gets its own [`GatewayProxy`] sharing
//! one [`crate::Gateway`]; every request takes one runtime snapshot in
//! `new_ctx` and uses it to the end, so a reload never changes a request
//! halfway.

mod access_line;
pub mod ctx;
pub mod forwarding;
mod identity;
mod mirror;
mod ratelimit;
pub mod respond;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, RetryType};

use crate::config::LbPolicy;
use crate::metrics::METRICS;
use crate::runtime::cluster::hash_key;
use crate::runtime::health::{self, TryResult};
use crate::runtime::locality::Priority;
use crate::runtime::route::Action;
use crate::Gateway;
use ctx::RequestCtx;
use forwarding::{Headers, REQUEST_ID};

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The proxy service of one listener.
pub struct GatewayProxy {
    listener: Arc<str>,
    /// Position of the listener in the runtime's listener list (metric handles).
    listener_index: usize,
    https: bool,
    gateway: Arc<Gateway>,
}

impl GatewayProxy {
    /// A proxy for the listener `name`, the `index`-th of the runtime's listeners.
    pub fn new(name: Arc<str>, index: usize, https: bool, gateway: Arc<Gateway>) -> Self {
        GatewayProxy {
            listener: name,
            listener_index: index,
            https,
            gateway,
        }
    }
}

/// Methods that can be replayed once the request has reached the upstream
/// (RFC 9110 §9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Replaces the matched prefix of the path, keeping the query.
fn rewrite_prefix(req: &mut RequestHeader, from: &str, to: &str) -> pingora::Result<()> {
    let Some(rest) = req.uri.path().strip_prefix(from) else {
        return Ok(());
    };
    let mut path = String::with_capacity(to.len() + rest.len() + 1);
    path.push_str(to);
    if to.ends_with('/') && rest.starts_with('/') {
        path.push_str(&rest[1..]);
    } else {
        path.push_str(rest);
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = req.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let uri = http::Uri::try_from(path).map_err(|e| {
        Error::because(
            ErrorType::InternalError,
            "path rewrite produced an invalid URI",
            e,
        )
    })?;
    req.set_uri(uri);
    Ok(())
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a (disabled)
    /// compression module to every request, which costs a module context
    /// per request and buys nothing while no route compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.gateway.runtime.load_full())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        METRICS.active_requests.inc();
        ctx.counted = true;
        if self
            .gateway
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(None);
        }
        ctx.client_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.request_id = forwarding::request_id(session.req_header());
        ctx.trace = Some(crate::telemetry::RequestTrace::start(session.req_header()));
        let req = session.req_header_mut();
        req.insert_header(REQUEST_ID, ctx.request_id.header())?;
        identity::strip(req);
        ctx.original_host = req.headers.get(http::header::HOST).cloned().or_else(|| {
            req.uri
                .authority()
                .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
        });

        if let Err(e) = forwarding::normalize_path(session.req_header_mut()) {
            let body = Bytes::from(format!("bad request: {e}\n"));
            respond::write(session, 400, body, &[], None, &ctx.request_id).await?;
            return Ok(true);
        }
        let runtime = ctx.runtime.clone();
        let Some(idx) = runtime.router.find(session.req_header()) else {
            respond::write(
                session,
                404,
                Bytes::from_static(b"no route matched\n"),
                &[],
                None,
                &ctx.request_id,
            )
            .await?;
            return Ok(true);
        };
        ctx.route = Some(idx);
        let route = &runtime.router.routes[idx];
        if let Some(t) = ctx.trace.as_mut() {
            t.set_route(
                session.req_header().method.as_str(),
                &route.name,
                self.https,
                ctx.client_ip,
            );
        }
        if identity::enforce(session, ctx, route).await? {
            return Ok(true);
        }
        if let Some(limits) = &route.rate_limits {
            if ratelimit::enforce(
                session,
                ctx,
                route,
                limits,
                runtime.rate_limit_store.as_deref(),
            )
            .await?
            {
                return Ok(true);
            }
        }
        match &route.action {
            Action::Direct(d) => {
                let limit_headers = ctx.ratelimit_headers.as_ref().map(|h| h.pairs());
                let headers: std::borrow::Cow<'_, [_]> = match limit_headers {
                    Some(extra) => d
                        .headers
                        .iter()
                        .cloned()
                        .chain(extra)
                        .collect::<Vec<_>>()
                        .into(),
                    None => (&d.headers[..]).into(),
                };
                respond::write(
                    session,
                    d.status,
                    d.body.clone(),
                    &headers,
                    Some(route),
                    &ctx.request_id,
                )
                .await?;
                Ok(true)
            }
            Action::Proxy(backends) => {
                let Some(cluster) = backends.pick() else {
                    respond::write(
                        session,
                        503,
                        Bytes::from_static(b"no healthy upstream\n"),
                        &[],
                        Some(route),
                        &ctx.request_id,
                    )
                    .await?;
                    return Ok(true);
                };
                if !cluster.admit_request() {
                    cluster.metrics.circuit_open().inc();
                    respond::write(
                        session,
                        503,
                        Bytes::from_static(respond::OVERLOADED_BODY),
                        &[respond::overloaded_header()],
                        Some(route),
                        &ctx.request_id,
                    )
                    .await?;
                    return Ok(true);
                }
                ctx.set_cluster(cluster.clone());
                ctx.deadline = route.timeout.map(|t| ctx.start + t);
                if !route.mirrors.is_empty() {
                    mirror::start_copies(session, ctx, route);
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let Some(cluster) = ctx.cluster.clone() else {
            return Error::e_explain(ErrorType::InternalError, "no cluster chosen");
        };
        if ctx.tries > 0 {
            if let Some(r) = ctx.route() {
                r.metrics.retries().inc();
            }
        }
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
        let Some(pick) = cluster.select(hash, &ctx.tried) else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no healthy upstream");
        };
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
        let endpoint = &cluster.endpoints[pick.index];
        let mut peer = Box::new(endpoint.peer.clone());

        let now = Instant::now();
        let mut read_timeout = cluster.read_timeout;
        if let Some(t) = ctx
            .route()
            .and_then(|r| r.retry.as_ref())
            .and_then(|p| p.per_try_timeout)
        {
            read_timeout = read_timeout.min(t);
        }
        if let Some(deadline) = ctx.deadline {
            let left = deadline.saturating_duration_since(now);
            if left.is_zero() {
                return Error::e_explain(
                    ErrorType::HTTPStatus(504),
                    "route timeout passed before a try",
                );
            }
            read_timeout = read_timeout.min(left);
            let o = &mut peer.options;
            o.connection_timeout = o.connection_timeout.map(|c| c.min(left));
            o.total_connection_timeout = o.total_connection_timeout.map(|c| c.min(left));
        }
        peer.options.read_timeout = Some(read_timeout);
        ctx.tries += 1;
        ctx.try_start = Some(now);
        Ok(peer)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Each try sees the body from its start (a retry replays the
        // buffered prefix); the copies skip what they already have.
        let offset = ctx.body_offset;
        for m in &mut ctx.mirrors {
            m.feed(offset, body.as_ref(), end_of_stream);
        }
        ctx.body_offset += body.as_ref().map_or(0, |b| b.len() as u64);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let (Some(d), Some(b)) = (ctx.body_digest.as_mut(), body.as_ref()) {
            d.update(b);
        }
        Ok(None)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.end_pending();
        if let Some(c) = &ctx.cluster {
            c.connections_in_use
                .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            ctx.conn_in_use = true;
            if let Some(i) = ctx.endpoint {
                health::record_try(c, i, TryResult::Connected);
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let runtime = ctx.runtime.clone();
        let Some(route) = ctx.route.and_then(|i| runtime.router.routes.get(i)) else {
            return Ok(());
        };
        if let Some((from, to)) = &route.prefix_rewrite {
            rewrite_prefix(upstream, from, to)?;
        }
        if let Some(h) = &route.host_rewrite {
            upstream.insert_header(http::header::HOST, h.clone())?;
        }
        if let Some(t) = &ctx.trace {
            upstream.insert_header(TRACEPARENT, t.upstream_traceparent())?;
        }
        forwarding::set_forwarded(
            upstream,
            ctx.client_ip,
            self.https,
            ctx.original_host.as_ref(),
        );
        identity::pass_on(ctx, route, upstream)?;
        if !route.request_headers.is_empty() {
            route.request_headers.apply(&mut Headers(upstream));
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let status = resp.status.as_u16();
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
        let wants_retry = ctx.route().and_then(|r| r.retry.as_ref()).is_some_and(|p| {
            p.on_status.contains(&status)
                && ctx.tries < p.attempts
                && idempotent(&session.req_header().method)
        });
        if wants_retry && session.response_written().is_none() && ctx.take_retry_slot() {
            ctx.status_retry = true;
            return Error::e_explain(
                ErrorType::HTTPStatus(status),
                "upstream status is retriable",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        forwarding::strip_hop_by_hop_response(resp);
        if let Some(route) = ctx.route() {
            route.response_headers.apply(&mut Headers(resp));
        }
        if let Some(h) = &ctx.ratelimit_headers {
            h.apply(&mut Headers(resp));
        }
        resp.insert_header(REQUEST_ID, ctx.request_id.header())?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.end_pending();
        if let Some(t) = ctx.trace.as_mut() {
            t.end_attempt(None, Some(e.etype().as_str()));
        }
        if let Some(c) = &ctx.cluster {
            c.metrics.upstream_error(respond::upstream_error_kind(&e));
            if let Some(i) = ctx.endpoint {
                health::record_try(c, i, TryResult::ConnectFailure);
            }
        }
        // Nothing reached the upstream: safe to retry any method.
        let policy_allows = ctx
            .route()
            .and_then(|r| r.retry.as_ref())
            .is_some_and(|p| p.on_connect_failure && ctx.tries < p.attempts);
        let retry = policy_allows && ctx.take_retry_slot();
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.status_retry) {
            // Decided (budget taken) in upstream_response_filter.
            e.set_retry(true);
            return e;
        }
        if let Some(t) = ctx.trace.as_mut() {
            t.end_attempt(None, Some(e.etype().as_str()));
        }
        let upstream_side = *e.esource() == ErrorSource::Upstream;
        if upstream_side {
            if let Some(c) = &ctx.cluster {
                c.metrics.upstream_error(respond::upstream_error_kind(&e));
            }
        }
        // The request may have reached the upstream: replay only idempotent
        // requests whose body we still hold, and never once the client has
        // seen a response.
        let replayable = upstream_side
            && session.response_written().is_none()
            && idempotent(&session.req_header().method)
            && !session.retry_buffer_truncated();
        let timed_out = matches!(
            e.etype(),
            ErrorType::ReadTimedout | ErrorType::WriteTimedout
        );
        let policy = ctx.route().and_then(|r| r.retry.as_ref());
        let policy_allows = policy.is_some_and(|p| {
            ctx.tries < p.attempts && (p.on_reset || (timed_out && p.on_status.contains(&504)))
        });
        // A pooled connection the upstream had already closed: Pingora's
        // default is to retry once on a fresh one; keep that.
        let stale_pooled =
            matches!(e.retry, RetryType::ReusedOnly) && client_reused && ctx.tries < 2;
        let retry = replayable && (policy_allows || stale_pooled) && ctx.take_retry_slot();
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let (code, body) = if ctx.overloaded {
            (503, "upstream overloaded\n")
        } else {
            respond::classify(e)
        };
        // After a failed proxy attempt Pingora closes the downstream
        // connection (whatever `can_reuse_downstream` says), so announce it:
        // `Connection: close` keeps clients from sending on a closing socket.
        session.set_keepalive(None);
        if code > 0 && session.response_written().is_none() {
            let route = ctx.route.and_then(|i| ctx.runtime.router.routes.get(i));
            let extra = if ctx.overloaded {
                vec![respond::overloaded_header()]
            } else {
                Vec::new()
            };
            if let Err(err) = respond::write(
                session,
                code,
                Bytes::from_static(body.as_bytes()),
                &extra,
                route,
                &ctx.request_id,
            )
            .await
            {
                tracing::debug!("cannot send the error response: {err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let digest = ctx.body_digest.as_ref().map(|d| d.finish());
        let trace_id = ctx.trace.as_ref().map(|t| t.trace_id());
        if let Some(t) = ctx.trace.as_mut() {
            t.finish(
                status,
                e.map(|e| std::borrow::Cow::Borrowed(e.etype().as_str())),
            );
        }
        for m in ctx.mirrors.drain(..) {
            m.finish(crate::mirror::PrimaryOutcome {
                status,
                body_digest: digest,
            });
        }
        let elapsed = ctx.start.elapsed();
        let route = ctx.route_name();
        let metrics = ctx
            .route()
            .map_or(&ctx.runtime.unrouted_metrics, |r| &r.metrics);
        metrics.request(
            (self.listener_index, &self.listener),
            ctx.cluster.as_deref().map(|c| &*c.name),
            status,
        );
        metrics.duration().observe(elapsed.as_secs_f64());
        if let (Some(p), Some(c)) = (ctx.priority(), &ctx.cluster) {
            if p != Priority::Zone {
                let bytes = session.body_bytes_read() + session.body_bytes_sent();
                c.metrics.cross_zone_bytes().inc_by(bytes as u64);
            }
        }
        let log = &ctx.runtime.config.telemetry.access_log;
        let sampled_out = (100..400).contains(&status)
            && e.is_none()
            && log.success_sample_ratio < 1.0
            && fastrand::f64() >= log.success_sample_ratio;
        if !log.enabled || sampled_out {
            return;
        }
        let req = session.req_header();
        let line = access_line::AccessLine {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            listener: &self.listener,
            route,
            cluster: ctx.cluster_name(),
            endpoint: ctx.endpoint_label(),
            method: req.method.as_str(),
            path: req.uri.path(),
            protocol: if session.is_http2() {
                "HTTP/2"
            } else {
                "HTTP/1.1"
            },
            status,
            bytes_in: session.body_bytes_read(),
            bytes_out: session.body_bytes_sent(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            tries: ctx.tries,
            request_id: &ctx.request_id,
            trace_id,
            client: ctx.client_ip,
            error: e.map(|e| e.etype().as_str()),
        };
        crate::access_log::append(|buf| line.write_to(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrite_keeps_the_rest_and_the_query() {
        let mut req = RequestHeader::build("GET", b"/api/users?x=1", None).unwrap();
        rewrite_prefix(&mut req, "/api", "/v2").unwrap();
        assert_eq!(req.uri.to_string(), "/v2/users?x=1");
        let mut req = RequestHeader::build("GET", b"/api/users", None).unwrap();
        rewrite_prefix(&mut req, "/api/", "/").unwrap();
        assert_eq!(req.uri.path(), "/users");
        let mut req = RequestHeader::build("GET", b"/api", None).unwrap();
        rewrite_prefix(&mut req, "/api", "").unwrap();
        assert_eq!(req.uri.path(), "/");
    }

    #[test]
    fn only_safe_methods_are_replayed() {
        assert!(idempotent(&Method::GET));
        assert!(idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST));
        assert!(!idempotent(&Method::PATCH));
    }
}
