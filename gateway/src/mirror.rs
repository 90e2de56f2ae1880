//! Traffic mirroring: a sampled copy of a request goes to a shadow cluster
//! on a spawned task. The primary never waits for it and is never changed by
//! it: the copy gets its own header, its body is teed chunk by chunk through
//! a channel that holds at most `max_body_bytes` (never awaited: past the
//! cap the copy is abandoned, counted `too_large`), and the
//! shadow's answer is read and discarded — or, in compare mode, its status
//! class and body digest are compared with the primary's.

use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::metrics::METRICS;
use crate::runtime::cluster::Cluster;

/// Pingora's client, shared by every mirror copy (pooled connections, TLS).
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// Header marking a mirrored request.
const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-gateway-mirror");
/// Request fields that describe the downstream connection only.
/// `expect` too: the copy's body is sent at once, never after a 100 Continue.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Builds the shared client now (it loads the platform CA store), so the
/// first mirrored request does not pay for it on a request thread.
pub fn warm_up() {
    LazyLock::force(&CONNECTOR);
}

/// A compiled mirror target of a route.
pub struct MirrorTarget {
    /// Shadow cluster.
    pub cluster: Arc<Cluster>,
    /// Share mirrored, 0-100.
    pub percentage: f64,
    /// Sampling key header.
    pub sample_key: Option<HeaderName>,
    /// Headers removed from the copy.
    pub strip: Vec<HeaderName>,
    /// Body cap.
    pub max_body_bytes: u64,
    /// Copies in flight.
    pub permits: Arc<Semaphore>,
    /// Deadline of one copy.
    pub timeout: Duration,
    /// Compare status classes.
    pub compare_status: bool,
    /// Compare body digests.
    pub compare_body: bool,
}

/// Why a copy ended early, set by the request path before it closes the
/// channel so the task can count the right result.
const HINT_NONE: u8 = 0;
const HINT_TOO_LARGE: u8 = 1;
const HINT_DROPPED: u8 = 2;

enum Chunk {
    Data(Bytes),
    End,
}

/// What the primary answered, for compare mode.
pub struct PrimaryOutcome {
    /// Status sent to the client (0 = none).
    pub status: u16,
    /// Digest of the response body, when bodies are compared.
    pub body_digest: Option<u64>,
}

/// The request path's end of one copy.
pub struct MirrorHandle {
    tx: Option<mpsc::UnboundedSender<Chunk>>,
    sent: u64,
    max: u64,
    hint: Arc<AtomicU8>,
    primary: Option<oneshot::Sender<PrimaryOutcome>>,
    /// Whether this copy compares bodies (the primary's must be hashed).
    pub compare_body: bool,
}

impl MirrorHandle {
    /// Feeds a chunk of the request body that starts at byte `offset` of
    /// the body. A retry replays the body from its start: bytes the copy
    /// already has are skipped. Never waits; what is buffered is bounded by
    /// `max_body_bytes` (the copy is abandoned beyond it).
    pub fn feed(&mut self, offset: u64, chunk: Option<&Bytes>, end_of_stream: bool) {
        let Some(tx) = &self.tx else { return };
        if let Some(data) = chunk.filter(|d| !d.is_empty()) {
            let end = offset + data.len() as u64;
            if end > self.sent {
                let new = data.slice(self.sent.saturating_sub(offset) as usize..);
                self.sent = end;
                if self.sent > self.max {
                    self.abandon(HINT_TOO_LARGE);
                    return;
                }
                if tx.send(Chunk::Data(new)).is_err() {
                    self.abandon(HINT_DROPPED);
                    return;
                }
            }
        }
        if end_of_stream {
            if let Some(tx) = self.tx.take() {
                if tx.send(Chunk::End).is_err() {
                    self.hint.store(HINT_DROPPED, Ordering::Relaxed);
                }
            }
        }
    }

    fn abandon(&mut self, hint: u8) {
        self.hint.store(hint, Ordering::Relaxed);
        self.tx = None;
    }

    /// Ends the copy's view of the primary: hands over its outcome for
    /// compare mode. A body not fed to the end abandons the copy.
    pub fn finish(mut self, outcome: PrimaryOutcome) {
        self.tx = None;
        if let Some(p) = self.primary.take() {
            let _ = p.send(outcome);
        }
    }
}

fn count(route: &str, result: &str) {
    METRICS
        .mirror_requests
        .with_label_values(&[route, result])
        .inc();
}

/// Starts a copy of `req` if this target samples it and has room. The copy
/// waits for its body on a channel when the request has one.
pub fn start(
    target: &MirrorTarget,
    route: &Arc<str>,
    req: &RequestHeader,
    host: Option<&HeaderValue>,
    has_body: bool,
    request_id: &str,
    traceparent: Option<&str>,
) -> Option<MirrorHandle> {
    let key = target
        .sample_key
        .as_ref()
        .and_then(|k| req.headers.get(k))
        .map(|v| v.as_bytes());
    if !filters::mirror::sampled(target.percentage, key) {
        return None;
    }
    let Ok(permit) = target.permits.clone().try_acquire_owned() else {
        count(route, "dropped");
        return None;
    };
    let mut header = copy_header(target, req, host, has_body)?;
    if let Some(tp) = traceparent {
        header.insert_header("traceparent", tp).ok()?;
    }
    let (tx, rx) = if has_body {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let compare = target.compare_status || target.compare_body;
    let (ptx, prx) = if compare {
        let (a, b) = oneshot::channel();
        (Some(a), Some(b))
    } else {
        (None, None)
    };
    let hint = Arc::new(AtomicU8::new(HINT_NONE));
    let job = Job {
        cluster: target.cluster.clone(),
        route: route.clone(),
        header: Some(header),
        body: rx,
        hint: hint.clone(),
        primary: prx,
        timeout: target.timeout,
        compare_status: target.compare_status,
        compare_body: target.compare_body,
        request_id: request_id.to_string(),
        _permit: permit,
    };
    tokio::spawn(job.run());
    Some(MirrorHandle {
        tx,
        sent: 0,
        max: target.max_body_bytes,
        hint,
        primary: ptx,
        compare_body: target.compare_body,
    })
}

/// The copy's request header: same method, path, headers and framing; the
/// host gets `-shadow`; `x-gateway-mirror: true`.
fn copy_header(
    target: &MirrorTarget,
    req: &RequestHeader,
    host: Option<&HeaderValue>,
    has_body: bool,
) -> Option<Box<RequestHeader>> {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut h = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(req.headers.len() + 2),
    )
    .ok()?;
    for (name, value) in req.headers.iter() {
        if HOP_BY_HOP.contains(&name.as_str())
            || target.strip.contains(name)
            || name == http::header::HOST
        {
            continue;
        }
        h.append_header(name.clone(), value.clone()).ok()?;
    }
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        h.insert_header(http::header::HOST, filters::mirror::shadow_host(host))
            .ok()?;
    }
    h.insert_header(MIRROR_HEADER, "true").ok()?;
    let framed = h.headers.contains_key(http::header::CONTENT_LENGTH)
        || h.headers.contains_key(http::header::TRANSFER_ENCODING);
    if has_body && !framed {
        // An HTTP/2 request without content-length: send it chunked.
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .ok()?;
    }
    Some(Box::new(h))
}

struct Job {
    cluster: Arc<Cluster>,
    route: Arc<str>,
    header: Option<Box<RequestHeader>>,
    body: Option<mpsc::UnboundedReceiver<Chunk>>,
    hint: Arc<AtomicU8>,
    primary: Option<oneshot::Receiver<PrimaryOutcome>>,
    timeout: Duration,
    compare_status: bool,
    compare_body: bool,
    request_id: String,
    _permit: OwnedSemaphorePermit,
}

enum Failure {
    Abandoned,
    Error(String),
}

impl Job {
    async fn run(mut self) {
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
            METRICS
                .mirror_mismatch
                .with_label_values(&[&*self.route, "status"])
                .inc();
            log_mismatch(&self.route, &self.request_id, p.status, status, "status");
        }
        if self.compare_body && p.body_digest.is_some() && p.body_digest != digest {
            METRICS
                .mirror_mismatch
                .with_label_values(&[&*self.route, "body"])
                .inc();
            log_mismatch(&self.route, &self.request_id, p.status, status, "body");
        }
    }

    async fn exchange(&mut self) -> Result<(u16, Option<u64>), Failure> {
        let pick = self
            .cluster
            .select(None, &[])
            .ok_or_else(|| Failure::Error("no healthy endpoint".into()))?;
        let mut peer = self.cluster.endpoints[pick.index].peer.clone();
        peer.options.read_timeout = Some(self.timeout);
        let (mut session, _) = CONNECTOR
            .get_http_session(&peer)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        let header = self.header.take().ok_or(Failure::Abandoned)?;
        session
            .write_request_header(header)
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        if let Some(rx) = self.body.as_mut() {
            loop {
                match rx.recv().await {
                    Some(Chunk::Data(d)) => session
                        .write_request_body(d, false)
                        .await
                        .map_err(|e| Failure::Error(e.to_string()))?,
                    Some(Chunk::End) => break,
                    None => return Err(Failure::Abandoned),
                }
            }
        }
        session
            .finish_request_body()
            .await
            .map_err(|e| Failure::Error(e.to_string()))?;
        let mut status = 0;
        // Skip informational answers (at most a few).
        for _ in 0..4 {
            session
                .read_response_header()
                .await
                .map_err(|e| Failure::Error(e.to_string()))?;
            status = session.response_header().map_or(0, |r| r.status.as_u16());
            if status >= 200 {
                break;
            }
        }
        if status < 200 {
            return Err(Failure::Error(format!("no final answer (status {status})")));
        }
        let mut digest = self.compare_body.then(BodyDigest::default);
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| Failure::Error(e.to_string()))?
        {
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

/// At most this many mismatch log lines per second.
const MISMATCH_LOGS_PER_SEC: u64 = 10;

fn log_mismatch(route: &str, request_id: &str, primary: u16, shadow: u16, kind: &str) {
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
    let sec = crate::runtime::health::now_ms() / 1000;
    if WINDOW.swap(sec, Ordering::Relaxed) != sec {
        IN_WINDOW.store(0, Ordering::Relaxed);
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) < MISMATCH_LOGS_PER_SEC {
        tracing::warn!(route, request_id, primary, shadow, kind, "mirror mismatch");
    }
}

/// A running digest of a response body (compare mode), chunking-independent.
#[derive(Default)]
pub struct BodyDigest {
    hasher: std::collections::hash_map::DefaultHasher,
}

impl BodyDigest {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.write(data);
    }
    /// The digest.
    pub fn finish(&self) -> u64 {
        self.hasher.finish()
    }
}
