//! The spawned task of one copy: connect to the shadow cluster, send the
//! header and the teed body, read the answer, compare it in compare mode.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::http::RequestHeader;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};

use super::connector::CONNECTOR;
use super::handle::{Chunk, PrimaryOutcome, HINT_DROPPED, HINT_TOO_LARGE};
use super::log_limit::mismatch;
use super::{count, BodyDigest};
use crate::runtime::cluster::Cluster;

/// One copy in flight; holds a permit of the target's concurrency bound.
pub(super) struct Job {
    pub(super) cluster: Arc<Cluster>,
    pub(super) route: Arc<str>,
    pub(super) header: Option<Box<RequestHeader>>,
    pub(super) body: Option<mpsc::UnboundedReceiver<Chunk>>,
    pub(super) hint: Arc<AtomicU8>,
    pub(super) primary: Option<oneshot::Receiver<PrimaryOutcome>>,
    pub(super) timeout: Duration,
    pub(super) compare_status: bool,
    pub(super) compare_body: bool,
    pub(super) request_id: String,
    /// Released when the copy ends.
    pub(super) _permit: OwnedSemaphorePermit,
}

enum Failure {
    Abandoned,
    Error(String),
}

impl From<Box<pingora::Error>> for Failure {
    fn from(e: Box<pingora::Error>) -> Self {
        Failure::Error(e.to_string())
    }
}

impl Job {
    pub(super) async fn run(mut self) {
        let outcome = match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(Failure::Error("timed out".into())),
        };
        let (status, digest) = match outcome {
            Ok(x) => {
                count(&self.route, "sent");
                x
            }
            Err(Failure::Abandoned) => {
                let result = match self.hint.load(Ordering::Relaxed) {
                    HINT_TOO_LARGE => "too_large",
                    HINT_DROPPED => "dropped",
                    _ => "error",
                };
                count(&self.route, result);
                return;
            }
            Err(Failure::Error(e)) => {
                tracing::debug!(route = %self.route, "mirror copy failed: {e}");
                count(&self.route, "error");
                return;
            }
        };
        let Some(primary) = self.primary.take() else {
            return;
        };
        // The primary may still be streaming its answer; wait for it a while.
        let Ok(Ok(p)) = tokio::time::timeout(Duration::from_secs(30), primary).await else {
            return;
        };
        if self.compare_status && p.status / 100 != status / 100 {
            mismatch(&self.route, &self.request_id, p.status, status, "status");
        }
        if self.compare_body && p.body_digest.is_some() && p.body_digest != digest {
            mismatch(&self.route, &self.request_id, p.status, status, "body");
        }
    }

    async fn exchange(&mut self) -> Result<(u16, Option<u64>), Failure> {
        let cluster = self.cluster.current();
        let pick = cluster
            .select(None, &[])
            .ok_or_else(|| Failure::Error("no healthy endpoint".into()))?;
        let mut peer = cluster.endpoints[pick.index].peer.clone();
        peer.options.read_timeout = Some(self.timeout);
        let (mut session, _) = CONNECTOR.get_http_session(&peer).await?;
        let header = self.header.take().ok_or(Failure::Abandoned)?;
        session.write_request_header(header).await?;
        if let Some(rx) = self.body.as_mut() {
            loop {
                match rx.recv().await {
                    Some(Chunk::Data(d)) => session.write_request_body(d, false).await?,
                    Some(Chunk::End) => break,
                    None => return Err(Failure::Abandoned),
                }
            }
        }
        session.finish_request_body().await?;
        let status = crate::hop_by_hop::final_response(&mut session).await?;
        if status < 200 {
            return Err(Failure::Error(format!("no final answer (status {status})")));
        }
        let mut digest = self.compare_body.then(BodyDigest::default);
        while let Some(chunk) = session.read_response_body().await? {
            if let Some(d) = digest.as_mut() {
                d.update(&chunk);
            }
        }
        CONNECTOR
            .release_http_session(session, &peer, peer.options.idle_timeout)
            .await;
        Ok((status, digest.map(|d| d.finish())))
    }
}
