//! An upstream whose health and behaviour a test flips at run time.
//!
//! [`SwitchableUpstream`] answers its health path (`/healthz`) with 200 or
//! 503 and every other request with 200 or 500, as the test sets with
//! [`SwitchableUpstream::set_healthy`] and [`SwitchableUpstream::set_failing`];
//! it can also delay answers and records how many requests it served at
//! once. Health-check hits and other requests are counted apart, so request
//! counts measure only the traffic the gateway balanced.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::runtime::Runtime;
use tokio::task::{JoinHandle, JoinSet};

/// The path a [`SwitchableUpstream`] answers as its health endpoint.
pub const SWITCHABLE_HEALTH_PATH: &str = "/healthz";

/// Length of every non-health response body of a [`SwitchableUpstream`]
/// (its name, space-padded, and a newline).
pub const SWITCHABLE_BODY_LEN: usize = 64;

struct SwitchState {
    name: String,
    healthy: AtomicBool,
    failing: AtomicBool,
    delay_ms: AtomicU64,
    count: AtomicU64,
    health_checks: AtomicU64,
    active: AtomicU64,
    max_active: AtomicU64,
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("switchable-upstreams")
            .enable_all()
            .build()
            .expect("build switchable upstream runtime")
    })
}

/// A plaintext HTTP upstream on 127.0.0.1 (HTTP/1.1 and h2c) with run-time
/// switches; stops serving when dropped.
///
/// * `GET /healthz`: 200 `ok` while healthy, 503 otherwise (not counted in
///   [`SwitchableUpstream::count`]).
/// * anything else: after the configured delay, 200 (500 while failing)
///   with `x-upstream: NAME` and a body of [`SWITCHABLE_BODY_LEN`] bytes.
pub struct SwitchableUpstream {
    addr: SocketAddr,
    state: Arc<SwitchState>,
    task: JoinHandle<()>,
}

impl Drop for SwitchableUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SwitchableUpstream {
    /// Starts a healthy, succeeding, undelayed upstream named `name`.
    pub fn start(name: &str) -> SwitchableUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(SwitchState {
            name: name.to_string(),
            healthy: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            count: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            active: AtomicU64::new(0),
            max_active: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = runtime().spawn(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("tokio upstream listener");
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let st = st.clone();
                        conns.spawn(async move {
                            let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                            let _ = auto::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        SwitchableUpstream { addr, state, task }
    }

    /// The name given at start (sent back as `x-upstream`).
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// `127.0.0.1:PORT`, ready to paste into an endpoint `address`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Makes the health path answer 200 (`true`) or 503 (`false`).
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Makes other requests answer 500 (`true`) or 200 (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Delays every non-health answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Non-health requests received so far.
    pub fn count(&self) -> u64 {
        self.state.count.load(Ordering::SeqCst)
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

/// Decrements the active count when a request's handling ends (also when
/// the connection is dropped mid-delay).
struct ActiveGuard(Arc<SwitchState>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<SwitchState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_health = req.uri().path() == SWITCHABLE_HEALTH_PATH;
    // Drain the request body (GETs have none, but be a well-behaved server).
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
    if is_health {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let healthy = st.healthy.load(Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::from_static(if healthy {
            b"ok\n"
        } else {
            b"unhealthy\n"
        })));
        *resp.status_mut() = if healthy {
            hyper::StatusCode::OK
        } else {
            hyper::StatusCode::SERVICE_UNAVAILABLE
        };
        return Ok(resp);
    }
    st.count.fetch_add(1, Ordering::SeqCst);
    let now_active = st.active.fetch_add(1, Ordering::SeqCst) + 1;
    let _guard = ActiveGuard(st.clone());
    st.max_active.fetch_max(now_active, Ordering::SeqCst);
    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = st.failing.load(Ordering::SeqCst);
    let mut text = format!("{:<width$}", st.name, width = SWITCHABLE_BODY_LEN - 1);
    text.truncate(SWITCHABLE_BODY_LEN - 1);
    text.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    *resp.status_mut() = if failing {
        hyper::StatusCode::INTERNAL_SERVER_ERROR
    } else {
        hyper::StatusCode::OK
    };
    let headers = resp.headers_mut();
    headers.insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&st.name) {
        headers.insert("x-upstream", v);
    }
    Ok(resp)
}
