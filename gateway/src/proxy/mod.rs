//! The `ProxyHttp` implementation: Pingora's phase hooks, in the order
//! Pingora calls them. Each listener gets its own [`GatewayProxy`] sharing
//! one [`crate::Gateway`]; every request takes one runtime snapshot in
//! `new_ctx` and uses it to the end, so a reload never changes a request
//! halfway.
//!
//! This file is the hook table: each hook is a short sequence of steps,
//! one module per concern, and a step a route does not configure is
//! skipped without work.
//!
//! - `forwarding.rs`: what is noted of a request as it arrives, path
//!   normalisation, forwarding headers, route rewrites, the response's
//!   hop-by-hop fields, the timeouts of one try.
//! - `identity.rs`, `ratelimit.rs`: the route's authentication and
//!   authorization, and its rate limits (`request_filter`); between them
//!   the route's external authorization ([`crate::ext_authz`]), once the
//!   caller is known and before it takes any quota.
//! - `mirror.rs`: starting the route's mirror copies ([`crate::mirror`]).
//! - `upstream.rs`: the cluster of a proxied route, then each try: the
//!   endpoint, and how the try went (health, breaker, metrics, spans).
//! - `limits.rs`: request body limits (413, cut streams).
//! - `retry.rs`: whether a failed try is tried again (pure decisions).
//! - `respond.rs`: responses the gateway writes itself.
//! - `compression.rs`: response compression (Pingora's module, decided
//!   per request and per response).
//! - `logging.rs` and `access_line.rs`: the last step of every request.
//! - `ctx.rs`: the per-request state the hooks share.

mod access_line;
pub mod compression;
pub mod ctx;
pub mod fault;
pub mod forwarding;
mod identity;
pub mod limits;
mod logging;
mod mirror;
mod ratelimit;
pub mod respond;
mod retry;
pub mod upgrade;
mod upstream;

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::Error;

use crate::limits::Gatekeeper;
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
    /// The listener's limits (the body limit here) and refusal counters.
    gk: Arc<Gatekeeper>,
}

impl GatewayProxy {
    /// A proxy for the listener `name`, the `index`-th of the runtime's
    /// listeners, under the listener's limits `gk`.
    pub fn new(
        name: Arc<str>,
        index: usize,
        https: bool,
        gateway: Arc<Gateway>,
        gk: Arc<Gatekeeper>,
    ) -> Self {
        GatewayProxy {
            listener: name,
            listener_index: index,
            https,
            gateway,
            gk,
        }
    }

    /// The body limit of the request `ctx` (its route's, else the listener's).
    fn body_limit(&self, ctx: &RequestCtx) -> Option<u64> {
        limits::body_limit(ctx.route(), self.gk.limits.max_body_bytes)
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    /// Boxed: Pingora keeps the context by value in its per-connection
    /// future (`process_new_http`), whose size an idle keep-alive
    /// connection holds even between requests. In place, a ~750-byte
    /// context made that future ~2.2 KiB larger than bare Pingora's
    /// (heaptrack, 10k idle connections); boxed, it costs one allocation
    /// per request and nothing while idle.
    type CTX = Box<RequestCtx>;

    /// Pingora's default adds a (disabled) compression module to every
    /// request, which costs a module context per request: it is added
    /// only when some route compresses (the lean path asks here too).
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        compression::register(&self.gateway.runtime.load(), modules);
    }

    fn new_ctx(&self) -> Box<RequestCtx> {
        Box::new(RequestCtx::new(self.gateway.runtime.load_full()))
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<bool> {
        ctx.count_active();
        // Pipelined requests are answered in order (RFC 9112 §9.3.2), not
        // dropped with the connection: Pingora keeps the bytes read past
        // this request for the next one once asked to.
        session.set_pipelining_enabled(true);
        // Pingora's parser turns every HTTP/1.1 keep-alive wait unbounded
        // (`respect_keepalive`: "infinite", 0); the listener's idle timeout
        // bounds it again on `engine: proxy_http` (the lean path waits
        // itself). A `Connection: close` (None) stays.
        if session.get_keepalive() == Some(0) {
            session.set_keepalive(Some(self.gk.limits.keepalive_secs()));
        }
        if self
            .gateway
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            session.set_keepalive(None);
        }
        forwarding::take_in(session, ctx, (self.listener_index, &self.listener))?;
        if let Err(why) = forwarding::settle_host(session.req_header_mut(), ctx) {
            let body = Bytes::from(format!("bad request: {why}\n"));
            return respond::early(session, ctx, 400, body).await;
        }
        identity::strip(session.req_header_mut());
        if let Err(e) = forwarding::normalize_path(session.req_header_mut()) {
            let body = Bytes::from(format!("bad request: {e}\n"));
            return respond::early(session, ctx, 400, body).await;
        }
        let runtime = ctx.runtime.clone();
        let listener = (self.listener_index, &*self.listener);
        let listener = crate::runtime::find_listener(&runtime.listeners, listener);
        if let Some(r) = listener.and_then(|l| l.redirect.as_ref()) {
            return respond::redirect(session, ctx, r, self.https).await;
        }
        let Some(idx) = runtime.router.find(session.req_header()) else {
            let body = Bytes::from_static(b"no route matched\n");
            return respond::early(session, ctx, 404, body).await;
        };
        let route = &runtime.router.routes[idx];
        ctx.enter_route(idx, route, session.req_header().method.as_str(), self.https);
        match route.upgrades.asked(session.req_header()) {
            upgrade::Asked::Nothing => {}
            upgrade::Asked::Allowed(n) => ctx.upgrade = Some(n),
            upgrade::Asked::RefusedWebSocket => {
                upgrade::count(&route.name, "websocket", "refused");
                let body =
                    Bytes::from_static(b"upgrade refused: this route does not pass WebSocket on\n");
                return respond::early(session, ctx, 403, body).await;
            }
        }
        if let Some(cors) = &route.cors {
            let req = session.req_header();
            match cors.policy.see(&req.method, &req.headers) {
                filters::cors::Seen::NotCors => {}
                filters::cors::Seen::Preflight(origin) => {
                    cors.preflight.inc();
                    let fields = cors.policy.preflight_fields(origin);
                    respond::write(session, ctx, 200, Bytes::new(), &fields).await?;
                    return Ok(true);
                }
                filters::cors::Seen::Actual(_) => {
                    cors.actual.inc();
                    ctx.cors = true;
                }
            }
        }
        if let Some(limit) = limits::body_limit(Some(route), self.gk.limits.max_body_bytes) {
            if let Some(declared) = limits::declared_too_large(session.req_header(), limit) {
                self.gk.refusals.body_too_large.inc();
                // A small body is read and dropped after the answer, which
                // keeps the connection (and spares the client a reset that
                // could destroy the 413); a large one is not worth reading.
                if declared > limits::DRAIN_AFTER_413 {
                    session.set_keepalive(None);
                }
                let body = Bytes::from_static(limits::TOO_LARGE_BODY.as_bytes());
                return respond::early(session, ctx, 413, body).await;
            }
        }
        if identity::enforce(session, ctx, route).await? {
            return Ok(true);
        }
        if let Some(a) = &route.ext_authz {
            if crate::ext_authz::enforce(session, ctx, a).await? {
                return Ok(true);
            }
        }
        if let Some(limits) = &route.rate_limits {
            let store = runtime.rate_limit_store.as_deref();
            if ratelimit::enforce(session, ctx, route, limits, store).await? {
                return Ok(true);
            }
        }
        match &route.action {
            Action::Direct(d) => respond::direct(session, ctx, d).await,
            Action::Redirect(r) => respond::redirect(session, ctx, r, self.https).await,
            Action::Proxy(backends) => {
                if upstream::choose_cluster(session, ctx, route, backends).await? {
                    return Ok(true);
                }
                if let Some(f) = &route.fault {
                    if fault::inject(session, ctx, f, route.timeout).await? {
                        return Ok(true);
                    }
                }
                // Last: the gateway's own answers above stay uncompressed.
                if let Some(c) = &route.compression {
                    compression::negotiate(session, ctx, c);
                }
                Ok(false)
            }
        }
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<Box<HttpPeer>> {
        let cluster = upstream::cluster(ctx)?;
        upstream::count_retry(ctx);
        let pick = upstream::pick(session, ctx, &cluster)?;
        upstream::begin_try(ctx, &cluster, pick)?;
        let mut peer = Box::new(cluster.endpoints[pick.index].peer.clone());
        let now = Instant::now();
        let per_try = ctx.route().and_then(|r| r.retry.as_ref()?.per_try_timeout);
        forwarding::set_try_timeouts(
            &mut peer.options,
            cluster.read_timeout,
            per_try,
            ctx.deadline,
            now,
        )?;
        if ctx.upgrade.is_some() {
            // A tunnel's reads wait as long as the route's upgrade idle
            // timeout allows, not as long as an HTTP answer may take.
            if let Some(r) = ctx.route() {
                peer.options.read_timeout = Some(r.upgrades.idle_timeout);
            }
        }
        ctx.tries += 1;
        ctx.try_start = Some(now);
        Ok(peer)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        // Before the piece goes anywhere (upstream, mirrors).
        if let Err(e) = limits::check_read(session, self.body_limit(ctx)) {
            self.gk.refusals.body_too_large.inc();
            return Err(e);
        }
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
        ctx: &mut Self::CTX,
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
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        upstream::connected(ctx);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let runtime = ctx.runtime.clone();
        let Some(route) = ctx.route.and_then(|i| runtime.router.routes.get(i)) else {
            return Ok(());
        };
        forwarding::rewrite(upstream, route)?;
        if let Some(n) = ctx.upgrade {
            route.upgrades.restore(n, upstream)?;
        }
        if let Some(t) = &ctx.trace {
            upstream.insert_header(TRACEPARENT, t.upstream_traceparent())?;
        }
        forwarding::set_forwarded(
            upstream,
            ctx.peer_ip,
            self.https,
            ctx.original_host.as_ref(),
        );
        // Before the identity headers: those are the gateway's to set.
        if !ctx.ext_authz_headers.is_empty() {
            crate::ext_authz::pass_on(ctx, upstream)?;
        }
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
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        let status = resp.status.as_u16();
        upstream::answered(ctx, status);
        let policy = ctx.route().and_then(|r| r.retry.as_ref());
        let req = session.req_header();
        let answered = session.response_written().is_some();
        if retry::on_status(policy, ctx.tries, status, &req.method, answered)
            && ctx.take_retry_slot()
        {
            ctx.status_retry = true;
            return Error::e_explain(
                pingora::ErrorType::HTTPStatus(status),
                "upstream status is retriable",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> pingora::Result<()> {
        forwarding::strip_hop_by_hop_response(resp);
        if let Some(route) = ctx.route() {
            route.response_headers.apply(&mut Headers(resp));
            if let Some(c) = &route.compression {
                compression::settle(session, ctx, c, resp)?;
            }
        }
        if let Some(h) = &ctx.ratelimit_headers {
            h.apply(&mut Headers(resp));
        }
        respond::add_cors(session.req_header(), ctx, resp);
        resp.insert_header(REQUEST_ID, ctx.request_id.header())?;
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut e: Box<Error>,
    ) -> Box<Error> {
        upstream::connect_failed(ctx, &e);
        let policy = ctx.route().and_then(|r| r.retry.as_ref());
        let retry = retry::on_connect_failure(policy, ctx.tries) && ctx.take_retry_slot();
        e.set_retry(retry);
        e
    }

    fn error_while_proxy(
        &self,
        _peer: &HttpPeer,
        session: &mut Session,
        mut e: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        if std::mem::take(&mut ctx.status_retry) {
            // Decided (budget taken) in upstream_response_filter.
            e.set_retry(true);
            return e;
        }
        if limits::is_refusal(&e) {
            // The client's fault, not the upstream's: no retry, no upstream error.
            e.set_retry(false);
            return e;
        }
        upstream::proxy_failed(ctx, &e);
        let policy = ctx.route().and_then(|r| r.retry.as_ref());
        let req = retry::Replay::of(session);
        let retry = retry::on_proxy_error(policy, ctx.tries, &e, client_reused, req)
            && ctx.take_retry_slot();
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if ctx.compression.is_some() {
            compression::withdraw(session);
        }
        respond::failed(session, e, ctx).await
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        compression::count(session, ctx);
        logging::finish((self.listener_index, &self.listener), session, e, ctx);
    }
}
