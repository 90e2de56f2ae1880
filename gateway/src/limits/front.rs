//! The connection loop of `engine: proxy_http` listeners: Pingora's
//! `HttpProxy` serves every request, but the first request head of a
//! connection is read here, under the header timeout and size limit, and
//! handed to Pingora's parser whole. HTTP/2 connections go to the proxy
//! as they are.
//!
//! Why only the first: Pingora keeps what a keep-alive connection read
//! past a request (pipelined bytes) inside its `HttpPersistentSettings`,
//! which it gives only to its own next session, so later heads are read by
//! Pingora with its per-read keep-alive timeout (`idle_timeout` here) and
//! its own size ceiling. The lean path reads every head itself.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use super::head::{first_byte, head_or_refuse};
use super::Gatekeeper;
use crate::lean::{opening, Opening};
use crate::proxy::GatewayProxy;

/// A Pingora `HttpProxy` behind the listener's head limits.
pub struct ProxyHttpFront {
    proxy: Arc<HttpProxy<GatewayProxy>>,
    gk: Arc<Gatekeeper>,
    h2c: bool,
}

impl ProxyHttpFront {
    /// `proxy` behind `gk`'s limits; `h2c` looks for the h2c preface on
    /// plaintext connections (the proxy's `server_options` must say so too).
    pub fn new(proxy: HttpProxy<GatewayProxy>, gk: Arc<Gatekeeper>, h2c: bool) -> Self {
        ProxyHttpFront {
            proxy: Arc::new(proxy),
            gk,
            h2c,
        }
    }
}

#[async_trait]
impl ServerApp for ProxyHttpFront {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.gk.limits;
        let (mut stream, read) = match opening(stream, self.h2c, limits.header_timeout).await? {
            Opening::H2(stream) => return self.proxy.process_new(stream, shutdown).await,
            Opening::H1(stream, read) => (stream, read),
        };
        let start = match read {
            Some(r) => r,
            None => first_byte(&mut stream, limits.header_timeout, shutdown).await?,
        };
        let (stream, head) = head_or_refuse(stream, start, &self.gk).await?;
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(self.gk.keepalive(shutdown));
        session.set_pipelined_prefix(head);
        let mut next = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = next.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            next = self.proxy.process_new_http(session, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
