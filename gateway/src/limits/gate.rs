//! The connection cap of a listener (Envoy's `max_connections`): a
//! [`ServerApp`] wrapper that counts the connections its app is serving
//! and closes, at once and without an answer, any beyond the limit.
//!
//! It wraps whatever serves the listener (the lean path, Pingora's
//! `HttpProxy` front, the egress proxy), so every engine is capped the
//! same way. The count is shared by the listener's worker threads: one
//! atomic add and one subtract per connection, nothing per request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use super::Gatekeeper;

/// `app`, serving at most `max` connections at once.
pub struct ConnectionGate<A> {
    app: Arc<A>,
    max: usize,
    open: AtomicUsize,
    gk: Arc<Gatekeeper>,
}

impl<A> ConnectionGate<A> {
    /// Caps `app` at `max` connections; refusals count on `gk`.
    pub fn new(app: A, max: usize, gk: Arc<Gatekeeper>) -> Self {
        ConnectionGate {
            app: Arc::new(app),
            max,
            open: AtomicUsize::new(0),
            gk,
        }
    }
}

/// One connection's place under the cap, given back when it ends (also
/// when its task is dropped at shutdown).
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ConnectionGate<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let place = Place(&self.open);
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            drop(place);
            self.gk.refusals.connection_limit.inc();
            // Dropping the stream closes the connection.
            return None;
        }
        let reused = self.app.process_new(stream, shutdown).await;
        drop(place);
        reused
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}
