//! Test upstream servers: hyper 1 (HTTP/1.1 and HTTP/2, h2c prior knowledge
//! included) on 127.0.0.1, optionally behind TLS, with a handler closure.
//!
//! Every upstream streams and hashes the request body as it arrives (nothing
//! requires the gateway to buffer), counts requests, and records what it saw.
//! All upstreams of a test process share one background tokio runtime, so
//! they keep serving whatever runtime (or none) the test itself uses.
//!
//! Every upstream also has run-time switches ([`Upstream::set_failing`],
//! [`Upstream::set_delay`]) and records how many requests it served at once;
//! one made with [`Upstream::switchable`] also answers a health path
//! ([`SWITCHABLE_HEALTH_PATH`], 200 or 503 per [`Upstream::set_healthy`]),
//! counted apart so that request counts measure only balanced traffic.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};

use crate::certs::LeafCert;

/// Size of the chunks a generated response body is sent in.
pub const GENERATED_CHUNK: usize = 64 * 1024;

/// What an upstream saw of one request (the body as length and SHA-256).
#[derive(Clone, Debug)]
pub struct RequestInfo {
    /// 0-based arrival order of this request at this upstream.
    pub seq: u64,
    /// Request method.
    pub method: String,
    /// Path and query, as received (`/v2/users?x=1`).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Header fields in arrival order (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Number of body bytes received.
    pub body_len: u64,
    /// Lowercase hex SHA-256 of the body received.
    pub body_sha256: String,
}

impl RequestInfo {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The echo document: `upstream`, `method`, `path`, `version`, `headers`
    /// (name -> list of values), `body_len`, `body_sha256`.
    pub fn to_json(&self, upstream: &str) -> serde_json::Value {
        let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &self.headers {
            headers.entry(k.as_str()).or_default().push(v.as_str());
        }
        serde_json::json!({
            "upstream": upstream,
            "method": self.method,
            "path": self.path,
            "version": self.version,
            "headers": headers,
            "body_len": self.body_len,
            "body_sha256": self.body_sha256,
        })
    }
}

enum ReplyBody {
    Full(Bytes),
    Generated { len: u64, seed: u64 },
}

/// What a handler answers: status, headers, body, and an optional delay
/// before the response headers are sent.
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: ReplyBody,
    delay: Duration,
}

impl Reply {
    /// An empty response with `status`.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: ReplyBody::Full(Bytes::new()),
            delay: Duration::ZERO,
        }
    }

    /// A `text/plain` response.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::status(status)
            .header("content-type", "text/plain")
            .body(body.into())
    }

    /// The echo response of upstream `name`: 200, `x-upstream: name`, and the
    /// JSON document of [`RequestInfo::to_json`].
    pub fn echo(name: &str, req: &RequestInfo) -> Reply {
        Reply::status(200)
            .header("content-type", "application/json")
            .header("x-upstream", name)
            .body(req.to_json(name).to_string())
    }

    /// Appends a response header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = ReplyBody::Full(body.into());
        self
    }

    /// Sets the body to `len` bytes of [`pseudo_random_bytes`]`(len, seed)`,
    /// generated and sent in chunks (never held in memory whole).
    pub fn generated(mut self, len: u64, seed: u64) -> Reply {
        self.body = ReplyBody::Generated { len, seed };
        self
    }

    /// Waits this long before sending the response headers.
    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }
}

/// xorshift64* — deterministic, fast, good enough to defeat compression.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `len` deterministic pseudo-random bytes for `seed`: the same bytes a
/// [`Reply::generated`] body with that length and seed carries.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    // Fill chunk by chunk exactly like the streaming body does, so both agree
    // even when `len` is not a multiple of 8 within a chunk.
    let mut rng = Prng::new(seed);
    for chunk in buf.chunks_mut(GENERATED_CHUNK) {
        rng.fill(chunk);
    }
    buf
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct ReplyStream {
    full: Option<Bytes>,
    remaining: u64,
    rng: Prng,
}

impl Body for ReplyStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(b) = self.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(GENERATED_CHUNK as u64) as usize;
        let mut buf = vec![0u8; n];
        self.rng.fill(&mut buf);
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.full.as_ref().map_or(0, |b| b.len() as u64) + self.remaining)
    }
}

/// A handler: gets what the upstream saw, returns what it answers.
pub type UpstreamHandler = Arc<dyn Fn(&RequestInfo) -> Reply + Send + Sync>;

/// The path a [`Upstream::switchable`] upstream answers as its health endpoint.
pub const SWITCHABLE_HEALTH_PATH: &str = "/healthz";

/// Length of every non-health response body of a [`Upstream::switchable`]
/// upstream (its name, space-padded, and a newline).
pub const SWITCHABLE_BODY_LEN: usize = 64;

struct State {
    name: String,
    count: AtomicU64,
    requests: Mutex<Vec<RequestInfo>>,
    handler: UpstreamHandler,
    /// Answered apart (not counted, not logged) when set.
    health_path: Option<&'static str>,
    healthy: AtomicBool,
    failing: AtomicBool,
    delay_ms: AtomicU64,
    health_checks: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
    /// Connections accepted.
    connections: AtomicU64,
}

/// Decrements the active count when a request's handling ends (also when
/// the connection is dropped mid-delay).
struct ActiveGuard(Arc<State>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A background runtime of `threads` workers named `name`, for test
/// servers that must serve whatever runtime the test itself uses.
pub(crate) fn background_runtime(threads: usize, name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("build runtime {name}: {e}"))
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| background_runtime(4, "test-upstreams"))
}

/// A running test upstream on 127.0.0.1. Stops serving when dropped.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Default seed of [`Upstream::big_download`] bodies.
pub const DOWNLOAD_SEED: u64 = 0xD0_5EED;

impl Upstream {
    /// Starts a plaintext upstream (HTTP/1.1 and h2c) named `name`.
    pub fn start(
        name: &str,
        handler: impl Fn(&RequestInfo) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Self::start_at(IpAddr::V4(Ipv4Addr::LOCALHOST), name, handler)
    }

    /// Like [`Upstream::start`], listening on `ip` (any loopback address,
    /// e.g. `127.0.1.2`: Linux routes all of 127/8 to `lo`) instead of
    /// 127.0.0.1.
    pub fn start_at(
        ip: IpAddr,
        name: &str,
        handler: impl Fn(&RequestInfo) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Self::spawn((ip, 0).into(), name, Arc::new(handler), None, None)
    }

    /// An echo upstream named `name` listening on exactly `addr`: several
    /// upstreams on different loopback addresses and one port stand for
    /// the records of one `hostname:port` (DNS discovery tests).
    pub fn named_on(addr: SocketAddr, name: &str) -> Upstream {
        let n = name.to_string();
        let handler: UpstreamHandler = Arc::new(move |req| Reply::echo(&n, req));
        Self::spawn(addr, name, handler, None, None)
    }

    /// An echo upstream named `name` (see [`Upstream::named`]) listening on `ip`.
    pub fn named_at(ip: IpAddr, name: &str) -> Upstream {
        let n = name.to_string();
        Self::start_at(ip, name, move |req| Reply::echo(&n, req))
    }

    /// Starts a TLS upstream presenting `leaf` (ALPN `h2`, `http/1.1`).
    pub fn start_tls(
        name: &str,
        leaf: &LeafCert,
        handler: impl Fn(&RequestInfo) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
            .expect("TLS server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self::spawn(
            (localhost, 0).into(),
            name,
            Arc::new(handler),
            Some(tls),
            None,
        )
    }

    /// An upstream whose health and behaviour the test flips at run time,
    /// healthy, succeeding and undelayed at first:
    ///
    /// * `GET /healthz` ([`SWITCHABLE_HEALTH_PATH`]): 200 `ok` while healthy,
    ///   503 otherwise (not counted in [`Upstream::count`]).
    /// * anything else: after the delay of [`Upstream::set_delay`], 200 (500
    ///   while [`Upstream::set_failing`]) with `x-upstream: NAME` and a body
    ///   of [`SWITCHABLE_BODY_LEN`] bytes.
    pub fn switchable(name: &str) -> Upstream {
        let mut text = format!("{name:<width$}", width = SWITCHABLE_BODY_LEN - 1);
        text.truncate(SWITCHABLE_BODY_LEN - 1);
        text.push('\n');
        let n = name.to_string();
        let handler: UpstreamHandler =
            Arc::new(move |_| Reply::text(200, text.clone()).header("x-upstream", &n));
        Self::spawn(
            (IpAddr::V4(Ipv4Addr::LOCALHOST), 0).into(),
            name,
            handler,
            None,
            Some(SWITCHABLE_HEALTH_PATH),
        )
    }

    /// `n` switchable upstreams named `{prefix}0`, `{prefix}1`, ...
    pub fn switchable_n(prefix: &str, n: usize) -> Vec<Upstream> {
        (0..n)
            .map(|i| Self::switchable(&format!("{prefix}{i}")))
            .collect()
    }

    /// `n` echo upstreams named `{prefix}0`, `{prefix}1`, ...
    pub fn named_n(prefix: &str, n: usize) -> Vec<Upstream> {
        (0..n)
            .map(|i| Self::named(&format!("{prefix}{i}")))
            .collect()
    }

    /// An echo upstream named `echo`; see [`Upstream::named`].
    pub fn echo() -> Upstream {
        Self::named("echo")
    }

    /// An echo upstream named `name`: answers 200 with header
    /// `x-upstream: name` and a JSON body ([`RequestInfo::to_json`]) holding
    /// its name, the method, path+query, headers, body length and SHA-256.
    pub fn named(name: &str) -> Upstream {
        let n = name.to_string();
        Self::start(name, move |req| Reply::echo(&n, req))
    }

    /// A TLS echo upstream named `name` presenting `leaf`.
    pub fn echo_tls(name: &str, leaf: &LeafCert) -> Upstream {
        let n = name.to_string();
        Self::start_tls(name, leaf, move |req| Reply::echo(&n, req))
    }

    /// Answers its first request with `status` (body `failing once\n`) and
    /// every later one like [`Upstream::echo`].
    pub fn fail_once(status: u16) -> Upstream {
        Self::start("fail-once", move |req| {
            if req.seq == 0 {
                Reply::text(status, "failing once\n")
            } else {
                Reply::echo("fail-once", req)
            }
        })
    }

    /// An echo upstream (named `slow`) that waits `delay` before answering.
    pub fn slow(delay: Duration) -> Upstream {
        Self::start("slow", move |req| Reply::echo("slow", req).delay(delay))
    }

    /// Answers every request with 200 and `n_bytes` of
    /// [`pseudo_random_bytes`]`(n_bytes, DOWNLOAD_SEED)`, streamed in chunks.
    pub fn big_download(n_bytes: u64) -> Upstream {
        Self::start("download", move |_| {
            Reply::status(200)
                .header("content-type", "application/octet-stream")
                .header("x-upstream", "download")
                .generated(n_bytes, DOWNLOAD_SEED)
        })
    }

    fn spawn(
        addr: SocketAddr,
        name: &str,
        handler: UpstreamHandler,
        tls: Option<tokio_rustls::TlsAcceptor>,
        health_path: Option<&'static str>,
    ) -> Upstream {
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("bind upstream on {addr}: {e}"));
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(State {
            name: name.to_string(),
            count: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            handler,
            health_path,
            healthy: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = accept_loop(runtime(), listener, move |stream| {
            let _ = stream.set_nodelay(true);
            st.connections.fetch_add(1, Ordering::SeqCst);
            let (st, tls) = (st.clone(), tls.clone());
            async move {
                match tls {
                    None => serve(stream, st).await,
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve(s, st).await;
                        }
                    }
                }
            }
        });
        Upstream { addr, state, task }
    }

    /// The name given at start.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started with
    /// [`Upstream::start_at`]), ready to paste into an endpoint `address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Requests that reached it so far (counted when headers arrive).
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
    }

    /// Connections accepted so far (the gateway's pool reuses them).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Every request fully received so far, in completion order.
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Makes the health path (of a [`Upstream::switchable`]) answer 200
    /// (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes every other request answer 500 (`true`) or what the handler
    /// says (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays every non-health answer by `delay` (on top of the reply's own).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Health-path requests received so far.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Most non-health requests it was serving at the same time.
    pub fn max_concurrent(&self) -> u64 {
        self.state.max_active.load(Ordering::SeqCst)
    }
}

/// Accepts connections on `listener` (non-blocking, std) on `rt` until the
/// returned task is aborted; each connection is served by `on_conn` in a
/// task of its own.
pub(crate) fn accept_loop<F, Fut>(
    rt: &Runtime,
    listener: std::net::TcpListener,
    on_conn: F,
) -> JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    conns.spawn(on_conn(stream));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

async fn serve<I>(io: I, state: Arc<State>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(req, state.clone()));
    let builder = auto::Builder::new(TokioExecutor::new());
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<ReplyStream>, Infallible> {
    if state.health_path == Some(req.uri().path()) {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let healthy = state.healthy.load(Ordering::SeqCst);
        let (status, text) = if healthy {
            (200, "ok\n")
        } else {
            (503, "unhealthy\n")
        };
        return Ok(respond(Reply::status(status).body(text)));
    }
    let seq = state.count.fetch_add(1, Ordering::SeqCst);
    let now_active = state.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = ActiveGuard(state.clone());
    state.max_active.fetch_max(now_active, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let mut hasher = Sha256::new();
    let mut body_len = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    body_len += data.len() as u64;
                    hasher.update(&data);
                }
            }
            Err(_) => break,
        }
    }
    let info = RequestInfo {
        seq,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_string(), |pq| pq.to_string()),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
        body_sha256: hex(&hasher.finalize()),
    };
    state
        .requests
        .lock()
        .expect("requests lock")
        .push(info.clone());
    let mut reply = (state.handler)(&info);
    let delay = reply.delay + Duration::from_millis(state.delay_ms.load(Ordering::SeqCst));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if state.failing.load(Ordering::SeqCst) {
        reply.status = 500;
    }
    Ok(respond(reply))
}

fn respond(reply: Reply) -> Response<ReplyStream> {
    let (full, remaining, seed) = match reply.body {
        ReplyBody::Full(b) => (if b.is_empty() { None } else { Some(b) }, 0, 0),
        ReplyBody::Generated { len, seed } => (None, len, seed),
    };
    let mut resp = Response::new(ReplyStream {
        full,
        remaining,
        rng: Prng::new(seed),
    });
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap_or(hyper::StatusCode::OK);
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    resp
}
