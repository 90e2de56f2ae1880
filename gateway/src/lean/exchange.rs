//! One request on the lean path: the hooks in Pingora's order, the tries,
//! and the exchange with one upstream connection.
//!
//! The order follows `pingora-proxy`'s `process_request` and
//! `proxy_to_h1_upstream` for what the gateway uses (no cache, no
//! subrequests; the downstream modules, compression, run inside
//! `Session::write_response_*`): `request_filter`; then per try
//! `upstream_peer`, connect (`fail_to_connect`), `connected_to_upstream`,
//! `upstream_request_filter`, the body both ways (`request_body_filter`,
//! `upstream_response_filter`, `response_filter`, `response_body_filter`),
//! `error_while_proxy`; then `fail_to_proxy` and `logging`.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::client::HttpSession as ClientSession;
use pingora::protocols::http::v1::client::HttpSession as UpstreamH1;
use pingora::protocols::http::{HttpTask, ReusableHttpStream};
use pingora::protocols::UniqueID;
use pingora::proxy::{ProxyHttp, Session};
use pingora::upstreams::peer::{HttpPeer, Peer};
use pingora::{Error, ErrorType, RetryType};

use super::{LeanApp, MAX_TRIES};
use crate::proxy::ctx::RequestCtx;

type Ctx = Box<RequestCtx>;

/// Outcome of one try: whether the downstream and the upstream connection
/// can be reused, and the error if it failed.
struct Tried {
    downstream_reusable: bool,
    upstream_reusable: bool,
    error: Option<Box<Error>>,
}

impl Tried {
    fn failed(upstream_reusable: bool, e: Box<Error>) -> Self {
        Tried {
            downstream_reusable: false,
            upstream_reusable,
            error: Some(e),
        }
    }
}

impl LeanApp {
    /// Reads and answers one request; the connection back when it can take
    /// another.
    pub(super) async fn serve(&self, mut session: Session) -> Option<ReusableHttpStream> {
        match session.downstream_session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(mut e) => {
                e.as_down();
                if matches!(e.etype, ErrorType::InvalidHTTPHeader) {
                    let _ = session.downstream_session.respond_error(400).await;
                }
                session.downstream_session.shutdown().await;
                return None;
            }
        }
        // As Pingora's proxy: CONNECT changes the message flow; refused.
        if session.req_header().method == Method::CONNECT {
            let _ = session.downstream_session.respond_error(405).await;
            session.downstream_session.shutdown().await;
            return None;
        }
        let mut ctx = self.hooks.new_ctx();
        match self.hooks.request_filter(&mut session, &mut ctx).await {
            Ok(true) => return self.finish(session, &mut ctx, true, None).await,
            Ok(false) => {}
            Err(e) => {
                let answer = self.hooks.fail_to_proxy(&mut session, &e, &mut ctx).await;
                let reuse = answer.can_reuse_downstream;
                return self.finish(session, &mut ctx, reuse, Some(e)).await;
            }
        }
        let mut reuse = false;
        let mut error = None;
        for _ in 0..MAX_TRIES {
            let (reusable, e) = self.try_upstream(&mut session, &mut ctx).await;
            reuse = reusable;
            let again = e
                .as_ref()
                .is_some_and(|e| matches!(e.retry, RetryType::Decided(true)));
            error = e;
            if !again {
                break;
            }
        }
        if let Some(e) = error.as_deref() {
            self.hooks.fail_to_proxy(&mut session, e, &mut ctx).await;
        }
        self.finish(session, &mut ctx, reuse, error).await
    }

    /// The last step of every request: the `logging` hook, then the
    /// connection back if it can be reused.
    async fn finish(
        &self,
        mut session: Session,
        ctx: &mut Ctx,
        reuse: bool,
        error: Option<Box<Error>>,
    ) -> Option<ReusableHttpStream> {
        self.hooks
            .logging(&mut session, error.as_deref(), ctx)
            .await;
        if let Some(e) = error {
            session.downstream_session.on_proxy_failure(e);
        }
        if !reuse {
            return None;
        }
        session.downstream_session.finish().await.ok().flatten()
    }

    /// One try: an endpoint, a connection to it, the exchange. Returns
    /// whether the downstream connection can be reused, and the error with
    /// its retry decided by the hooks.
    async fn try_upstream(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
    ) -> (bool, Option<Box<Error>>) {
        let peer = match self.hooks.upstream_peer(session, ctx).await {
            Ok(p) => p,
            Err(e) => return (false, Some(e)),
        };
        let (upstream, reused) = match self.connector.get_http_session(&*peer).await {
            Ok(c) => c,
            Err(mut e) => {
                e.as_up();
                let e = self.hooks.fail_to_connect(session, &peer, ctx, e);
                return (false, Some(e.into_up()));
            }
        };
        let ClientSession::H1(mut upstream) = upstream else {
            // Config load refuses HTTP/2 clusters behind lean listeners.
            let e = Error::explain(
                ErrorType::InternalError,
                "the lean HTTP/1 path has no HTTP/2 upstreams",
            );
            return (false, Some(e));
        };
        let tried = self
            .exchange(session, &mut upstream, reused, &peer, ctx)
            .await;
        if tried.upstream_reusable {
            let idle = peer.idle_timeout();
            self.connector
                .release_http_session(ClientSession::H1(upstream), &*peer, idle)
                .await;
        }
        let error = tried
            .error
            .map(|e| self.hooks.error_while_proxy(&peer, session, e, ctx, reused));
        (tried.downstream_reusable, error)
    }

    /// The request and its response over one upstream connection.
    async fn exchange(
        &self,
        session: &mut Session,
        upstream: &mut UpstreamH1,
        reused: bool,
        peer: &HttpPeer,
        ctx: &mut Ctx,
    ) -> Tried {
        let fd = upstream.id();
        let digest = upstream.digest();
        if let Err(e) = self
            .hooks
            .connected_to_upstream(session, reused, peer, fd, Some(digest), ctx)
            .await
        {
            return Tried::failed(false, e);
        }
        upstream.read_timeout = peer.options.read_timeout;
        upstream.write_timeout = peer.options.write_timeout;

        let mut req = session.req_header().clone();
        req.set_version(Version::HTTP_11);
        if let Err(e) = upstream_head(&mut req) {
            return Tried::failed(true, e.into_down());
        }
        if let Err(e) = self
            .hooks
            .upstream_request_filter(session, &mut req, ctx)
            .await
        {
            return Tried::failed(true, e);
        }
        let has_body = !session.is_body_empty();
        if has_body
            && !req.headers.contains_key(header::CONTENT_LENGTH)
            && !req.headers.contains_key(header::TRANSFER_ENCODING)
        {
            if let Err(e) = req.insert_header(header::TRANSFER_ENCODING, "chunked") {
                return Tried::failed(true, e);
            }
        }
        if let Err(e) = upstream.write_request_header(Box::new(req)).await {
            return Tried::failed(false, e.into_up());
        }
        session.downstream_session.enable_retry_buffering();
        match self.pump(session, upstream, ctx).await {
            Ok(upstream_reusable) => Tried {
                downstream_reusable: true,
                upstream_reusable,
                error: None,
            },
            Err(e) => Tried::failed(false, e),
        }
    }

    /// Moves the request body up and the response down until both are
    /// done. A retry first replays what an earlier try read of the body.
    async fn pump(
        &self,
        session: &mut Session,
        upstream: &mut UpstreamH1,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        let mut request_done = session.is_body_done();
        let replay = session.downstream_session.get_retry_buffer();
        if replay.is_some() || session.is_body_empty() {
            self.send_body(session, upstream, replay, request_done, ctx)
                .await?;
        }
        let mut response_done = false;
        let mut upgraded = false;
        while !request_done || !response_done {
            tokio::select! {
                body = session.downstream_session.read_request_body(), if !request_done => {
                    let body = body.map_err(|e| e.into_down())?;
                    let end = body.is_none() || session.is_body_done();
                    request_done = self.send_body(session, upstream, body, end, ctx).await?;
                    if request_done && upgraded {
                        // A tunnel ends when either side closes.
                        response_done = true;
                    }
                }
                task = upstream.read_response_task(), if !response_done => {
                    let task = task.map_err(|e| e.into_up())?;
                    response_done = task.is_end();
                    if !upgraded && upstream.was_upgraded() {
                        upgraded = true;
                        // The request body now runs until the client closes.
                        request_done = false;
                    }
                    self.send_response(session, task, ctx).await?;
                    if !upgraded && !request_done && session.is_body_done() {
                        request_done = true;
                    }
                }
            }
        }
        // Offered back to the pool; the connector keeps it only if the
        // response allows (`respect_keepalive`: not after a 101, not a
        // close-delimited body, nothing read past the end).
        Ok(true)
    }

    /// One piece of the request body through `request_body_filter` to the
    /// upstream; whether the body is done.
    async fn send_body(
        &self,
        session: &mut Session,
        upstream: &mut UpstreamH1,
        mut data: Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> pingora::Result<bool> {
        let end = end || data.is_none();
        self.hooks
            .request_body_filter(session, &mut data, end, ctx)
            .await?;
        if session.was_upgraded() {
            upstream.maybe_upgrade_body_writer();
        }
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            upstream.write_body(&d).await.map_err(|e| e.into_up())?;
        }
        if end {
            upstream.finish_body().await.map_err(|e| e.into_up())?;
        }
        Ok(end)
    }

    /// One piece of the response through the response hooks to the client.
    async fn send_response(
        &self,
        session: &mut Session,
        task: HttpTask,
        ctx: &mut Ctx,
    ) -> pingora::Result<()> {
        match task {
            HttpTask::Header(mut resp, end) => {
                self.hooks
                    .upstream_response_filter(session, &mut resp, ctx)
                    .await?;
                self.hooks.response_filter(session, &mut resp, ctx).await?;
                frame_for_keepalive(session.req_header(), &mut resp, end)?;
                session.write_response_header(resp, end).await
            }
            HttpTask::Body(mut data, end) | HttpTask::UpgradedBody(mut data, end) => {
                self.hooks
                    .response_body_filter(session, &mut data, end, ctx)?;
                session.write_response_body(data, end).await
            }
            HttpTask::Trailer(Some(trailers)) => {
                session
                    .downstream_session
                    .write_response_trailers(*trailers)
                    .await
            }
            HttpTask::Trailer(None) => session.write_response_body(None, true).await,
            HttpTask::Done => session.write_response_body(None, true).await,
            HttpTask::Failed(e) => Err(e),
        }
    }
}

/// Pingora's default `HttpUpstreamRequestPolicy` on the upstream request:
/// the fields `Connection` names and the hop-by-hop ones go, except the
/// body's framing; a WebSocket handshake keeps exactly `Connection:
/// Upgrade` and `Upgrade: websocket`; any other upgrade (h2c included) is
/// not passed on.
fn upstream_head(req: &mut RequestHeader) -> pingora::Result<()> {
    let websocket = req.version == Version::HTTP_11
        && crate::hop_by_hop::is_nominated(&req.headers, &header::UPGRADE)
        && req
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    crate::hop_by_hop::strip(req, &[header::TRANSFER_ENCODING]);
    req.remove_header(&HTTP2_SETTINGS);
    if websocket {
        req.insert_header(header::CONNECTION, HeaderValue::from_static("Upgrade"))?;
        req.insert_header(header::UPGRADE, HeaderValue::from_static("websocket"))?;
    }
    Ok(())
}

const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// As Pingora's `h1_response_filter`: a response with a body but neither
/// `Content-Length` nor `Transfer-Encoding` (HTTP/1.0 style, ended by
/// close) goes on chunked, so the client connection can be kept.
fn frame_for_keepalive(
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    end: bool,
) -> pingora::Result<()> {
    let no_body = req.method == Method::HEAD || matches!(resp.status.as_u16(), 204 | 304);
    if !no_body
        && !end
        && !resp.status.is_informational()
        && !resp.headers.contains_key(header::TRANSFER_ENCODING)
        && !resp.headers.contains_key(header::CONTENT_LENGTH)
    {
        resp.set_version(Version::HTTP_11);
        resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/chat", None).expect("request");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
        }
        req
    }

    fn field<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
        req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_websocket_handshake_keeps_exactly_its_upgrade_fields() {
        let mut req = request(&[
            ("connection", "keep-alive, Upgrade, x-secret"),
            ("upgrade", "WebSocket"),
            ("x-secret", "hop"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("keep-alive", "timeout=5"),
        ]);
        upstream_head(&mut req).expect("head");
        assert_eq!(field(&req, "connection"), Some("Upgrade"));
        assert_eq!(field(&req, "upgrade"), Some("websocket"));
        assert_eq!(field(&req, "x-secret"), None, "nominated by Connection");
        assert_eq!(field(&req, "keep-alive"), None);
        assert!(field(&req, "sec-websocket-key").is_some());
    }

    #[test]
    fn other_upgrades_and_h2c_are_not_passed_on() {
        for upgrade in ["h2c", "TLS/1.2"] {
            let mut req = request(&[
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", upgrade),
                ("http2-settings", "AAMAAABkAAQAAP__"),
            ]);
            upstream_head(&mut req).expect("head");
            for name in ["connection", "upgrade", "http2-settings"] {
                assert_eq!(field(&req, name), None, "{upgrade}: {name}");
            }
        }
    }

    #[test]
    fn the_body_framing_stays() {
        let mut req = request(&[("transfer-encoding", "chunked"), ("te", "trailers")]);
        upstream_head(&mut req).expect("head");
        assert_eq!(field(&req, "transfer-encoding"), Some("chunked"));
        assert_eq!(field(&req, "te"), None);
    }

    #[test]
    fn a_close_delimited_answer_goes_on_chunked() {
        let get = request(&[]);
        let mut resp = ResponseHeader::build(200, None).expect("response");
        resp.set_version(Version::HTTP_10);
        frame_for_keepalive(&get, &mut resp, false).expect("frame");
        assert_eq!(resp.version, Version::HTTP_11);
        assert_eq!(
            resp.headers.get("transfer-encoding").map(|v| v.as_bytes()),
            Some(&b"chunked"[..])
        );
        // Nothing to frame: HEAD, 204/304, 101, a sized body, a header-only answer.
        let head = RequestHeader::build("HEAD", b"/", None).expect("head");
        for (req, status, length, end) in [
            (&head, 200, None, false),
            (&get, 204, None, false),
            (&get, 304, None, false),
            (&get, 101, None, false),
            (&get, 200, Some("3"), false),
            (&get, 200, None, true),
        ] {
            let mut resp = ResponseHeader::build(status, None).expect("response");
            if let Some(n) = length {
                resp.insert_header("content-length", n).expect("length");
            }
            frame_for_keepalive(req, &mut resp, end).expect("frame");
            assert!(
                !resp.headers.contains_key("transfer-encoding"),
                "{status} {length:?} {end}"
            );
        }
    }
}
