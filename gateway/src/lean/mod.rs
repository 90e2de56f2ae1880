//! The lean HTTP/1 path: a [`ServerApp`] on `pingora-core` that drives the
//! same [`GatewayProxy`] hooks as Pingora's `ProxyHttp` service, without
//! Pingora's per-request machinery around them.
//!
//! Why: between requests, Pingora's HTTP service keeps a keep-alive
//! connection as a ~13 KiB `process_new_http` future plus a session with a
//! 4 KiB header buffer (heaptrack, `load/README.md`). Here an idle
//! connection waits for its next byte as a future of a few hundred bytes;
//! the session, its buffers and the request's (boxed) future exist only
//! while a request is in flight. Per request it saves `ProxyHttp`'s channel
//! pair and the two joined tasks that pump them: one `select!` loop moves
//! the request body up and the response down.
//!
//! What stays Pingora's: listeners, TLS, `HttpSession` parsing and framing
//! on both sides, connectors and their pools, the server lifecycle and
//! zero-downtime upgrade. What stays the gateway's: every policy step, since
//! the hooks are the very `ProxyHttp` methods of [`GatewayProxy`], called
//! in Pingora's order (see `../shared/notes/pingora-0.9.md`, phase chart).
//! HTTP/2 connections (ALPN `h2`, or an h2c preface) are handed whole to a
//! Pingora `HttpProxy` built on the same hooks.
//!
//! - `exchange.rs`: one request: hooks, tries, the upstream exchange.
//!
//! Not covered yet: HTTP/2 upstreams (refused at config load for lean
//! listeners), Pingora's HTTP cache and subrequests (the gateway uses
//! neither).

mod exchange;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::ServerApp;
use pingora::connectors::http::Connector;
use pingora::modules::http::HttpModules;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::{HttpProxy, ProxyHttp, Session};
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt;

use crate::limits::head::{first_byte, head_or_refuse, HEADER_BUF};
use crate::limits::Gatekeeper;
use crate::proxy::GatewayProxy;

/// Pingora's `ServerConf::max_retries` default: tries per request.
const MAX_TRIES: usize = 16;
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The lean HTTP/1 application of one listener.
pub struct LeanApp {
    hooks: GatewayProxy,
    /// Pingora's proxy on the same hooks, for HTTP/2 connections.
    h2: Arc<HttpProxy<GatewayProxy>>,
    connector: Connector,
    modules: HttpModules,
    h2c: bool,
    /// The listener's limits (header and idle timeouts, head size).
    gk: Arc<Gatekeeper>,
}

impl LeanApp {
    /// The app for a listener: `hooks` serve HTTP/1 here, `h2` (built on an
    /// equal `GatewayProxy`) serves HTTP/2; `h2c` looks for the h2c preface
    /// on plaintext connections; heads are read under `gk`'s limits.
    pub fn new(
        hooks: GatewayProxy,
        h2: HttpProxy<GatewayProxy>,
        connector: Connector,
        h2c: bool,
        gk: Arc<Gatekeeper>,
    ) -> Self {
        // `h2` has its modules already (`pingora::proxy::http_proxy` adds
        // them); adding them again would register each module twice,
        // which Pingora refuses with a panic on the first request.
        // The same modules as Pingora's service would have (compression
        // when a route uses it); `Session::write_response_*` runs them.
        let mut modules = HttpModules::new();
        hooks.init_downstream_modules(&mut modules);
        LeanApp {
            hooks,
            h2: Arc::new(h2),
            connector,
            modules,
            h2c,
            gk,
        }
    }
}

/// How a new connection speaks.
pub(crate) enum Opening {
    /// HTTP/2: by ALPN, or by the h2c preface (put back on the stream).
    H2(Stream),
    /// HTTP/1, with the first bytes already read if any.
    H1(Stream, Option<BytesMut>),
}

/// Tells HTTP/2 from HTTP/1 on a new connection. On a plaintext h2c
/// listener the first bytes are read only while they could still be the
/// preface: unlike Pingora's peek of a full 24 bytes, an HTTP/1 request
/// shorter than the preface is answered rather than left waiting. A
/// connection that sends nothing within `wait` (the header timeout) is
/// dropped.
pub(crate) async fn opening(mut stream: Stream, h2c: bool, wait: Duration) -> Option<Opening> {
    if stream.get_ssl_digest().is_some() {
        let h2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
        return Some(if h2 {
            Opening::H2(stream)
        } else {
            Opening::H1(stream, None)
        });
    }
    if !h2c {
        return Some(Opening::H1(stream, None));
    }
    let mut head = BytesMut::with_capacity(HEADER_BUF);
    // One deadline for the whole preface check, as for a head.
    let read = tokio::time::timeout(wait, async {
        loop {
            if !matches!(stream.read_buf(&mut head).await, Ok(n) if n > 0) {
                return false;
            }
            let seen = head.len().min(H2_PREFACE.len());
            if head[..seen] != H2_PREFACE[..seen] || seen == H2_PREFACE.len() {
                return true;
            }
        }
    });
    if !matches!(read.await, Ok(true)) {
        return None;
    }
    if head.len() < H2_PREFACE.len() || head[..H2_PREFACE.len()] != *H2_PREFACE {
        return Some(Opening::H1(stream, Some(head)));
    }
    // Plaintext streams are Pingora's L4 stream, which can put bytes back
    // for the HTTP/2 server to read.
    let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
    l4.rewind(&head);
    Some(Opening::H2(l4))
}

#[async_trait]
impl ServerApp for LeanApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.gk.limits;
        let (mut stream, mut prefix) =
            match opening(stream, self.h2c, limits.header_timeout).await? {
                Opening::H2(stream) => return self.h2.process_new(stream, shutdown).await,
                Opening::H1(stream, head) => (stream, head),
            };
        // A new connection may stay silent for the header timeout; a
        // keep-alive one waits for its next request for the idle timeout.
        let mut wait = limits.header_timeout;
        loop {
            let start = match prefix.take() {
                Some(p) => p,
                None => first_byte(&mut stream, wait, shutdown).await?,
            };
            wait = limits.idle_timeout;
            // Boxed: the head read and the request's future exist only
            // while they run, so the connection's own future stays small
            // across the idle wait (one allocation per request, as before).
            let reusable = Box::pin(self.read_and_serve(stream, start, shutdown)).await?;
            let (next, overread) = reusable.into_parts();
            stream = next;
            prefix = overread.filter(|p| !p.is_empty());
        }
    }
}

impl LeanApp {
    /// Reads the rest of a request head (begun with `start`) under the
    /// listener's limits, refusing it past them, then serves the request.
    async fn read_and_serve(
        &self,
        stream: Stream,
        start: BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<pingora::protocols::http::ReusableHttpStream> {
        // The whole head, so that Pingora parses it without reading.
        let (stream, head) = head_or_refuse(stream, start, &self.gk).await?;
        let mut session = Session::new_h1_with_modules(stream, &self.modules);
        let downstream = &mut session.downstream_session;
        downstream.set_keepalive(self.gk.keepalive(shutdown));
        downstream.set_pipelined_prefix(head);
        self.serve(session).await
    }
}
