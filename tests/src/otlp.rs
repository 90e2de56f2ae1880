//! A real OTLP/HTTP trace receiver: a hyper 1 server on 127.0.0.1 that takes
//! `POST /v1/traces` with `content-type: application/x-protobuf`, decodes the
//! body as an `ExportTraceServiceRequest` (the `opentelemetry-proto` types,
//! with prost), keeps every span it received, and answers 200 with an empty
//! `ExportTraceServiceResponse`, like a collector would.
//!
//! Anything else (another path or method, another content type, a body that
//! does not decode) is refused (404 / 405 / 415 / 400) and remembered in
//! [`OtlpReceiver::rejected`], so a test can tell "nothing exported" from
//! "exported something the receiver could not read".

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::upstream::hex;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// An attribute value as received (arrays and maps shown as text).
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// `string_value`.
    Str(String),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `bool_value`.
    Bool(bool),
    /// Anything else (array, key-value list, bytes), debug-printed.
    Other(String),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => write!(f, "{s:?}"),
            AttrValue::Int(i) => write!(f, "{i}"),
            AttrValue::Double(d) => write!(f, "{d}"),
            AttrValue::Bool(b) => write!(f, "{b}"),
            AttrValue::Other(o) => f.write_str(o),
        }
    }
}

fn attr_value(v: Option<&AnyValue>) -> AttrValue {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => AttrValue::Str(s.clone()),
        Some(Value::IntValue(i)) => AttrValue::Int(*i),
        Some(Value::DoubleValue(d)) => AttrValue::Double(*d),
        Some(Value::BoolValue(b)) => AttrValue::Bool(*b),
        other => AttrValue::Other(format!("{other:?}")),
    }
}

/// One span as the receiver got it. Ids are lowercase hex, as in
/// `traceparent`.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits; `None` for a root span (empty `parent_span_id`).
    pub parent_span_id: Option<String>,
    /// Span name.
    pub name: String,
    /// Span kind (`SpanKind::Unspecified` if the number is unknown).
    pub kind: SpanKind,
    /// Span attributes by key.
    pub attributes: BTreeMap<String, AttrValue>,
    /// `service.name` of the span's resource, if set.
    pub service_name: Option<String>,
    /// Status code number (0 unset, 1 ok, 2 error).
    pub status_code: i32,
}

impl ReceivedSpan {
    /// Attribute `key`, if present.
    pub fn attr(&self, key: &str) -> Option<&AttrValue> {
        self.attributes.get(key)
    }

    /// Attribute `key` if it is an integer.
    pub fn attr_i64(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(AttrValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// Attribute `key` if it is a string.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(AttrValue::Str(s)) => Some(s),
            _ => None,
        }
    }
}

impl fmt::Display for ReceivedSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{} {:?} {:?} trace={} span={} parent={} status={}",
            self.service_name.as_deref().unwrap_or("?"),
            self.kind,
            self.name,
            self.trace_id,
            self.span_id,
            self.parent_span_id.as_deref().unwrap_or("-"),
            self.status_code,
        )?;
        for (k, v) in &self.attributes {
            write!(f, " {k}={v}")?;
        }
        f.write_str("]")
    }
}

/// Formats spans one per line (for assertion messages).
pub fn show_spans(spans: &[ReceivedSpan]) -> String {
    if spans.is_empty() {
        return "(no spans)".to_string();
    }
    spans
        .iter()
        .map(|s| format!("  {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A refused request: method, path, content type, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// `content-type` header, if any.
    pub content_type: Option<String>,
    /// Status answered and the reason.
    pub why: String,
}

#[derive(Default)]
struct State {
    spans: Vec<ReceivedSpan>,
    exports: u64,
    rejected: Vec<Rejected>,
}

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| crate::upstream::background_runtime(1, "test-otlp"))
}

/// A running OTLP/HTTP receiver on 127.0.0.1 (its own background runtime,
/// so it serves whatever runtime the test uses). Stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl OtlpReceiver {
    /// Binds 127.0.0.1:0 and starts serving.
    pub fn start() -> OtlpReceiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind OTLP receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("OTLP receiver addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = crate::upstream::accept_loop(runtime(), listener, move |stream| {
            let st = st.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            }
        });
        OtlpReceiver { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`: the value for `telemetry.tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state.lock().expect("otlp state").spans.clone()
    }

    /// Export requests accepted so far.
    pub fn exports(&self) -> u64 {
        self.state.lock().expect("otlp state").exports
    }

    /// Requests refused so far.
    pub fn rejected(&self) -> Vec<Rejected> {
        self.state.lock().expect("otlp state").rejected.clone()
    }

    /// Polls (every 20 ms, up to `timeout`) until `pred` holds for the spans
    /// received so far; returns them either way, for the caller to assert
    /// on. Async so the test's runtime keeps running while it waits.
    pub async fn wait_for(
        &self,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
        timeout: Duration,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) || Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<Mutex<State>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let refuse = |status: StatusCode, why: String| {
        state.lock().expect("otlp state").rejected.push(Rejected {
            method: method.clone(),
            path: path.clone(),
            content_type: content_type.clone(),
            why: format!("{status}: {why}"),
        });
        Ok(reply(status, "text/plain", format!("{why}\n").into_bytes()))
    };
    if path != "/v1/traces" {
        return refuse(StatusCode::NOT_FOUND, "only /v1/traces is served".into());
    }
    if req.method() != hyper::Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "POST only".into());
    }
    let is_protobuf = content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-protobuf"))
    });
    if !is_protobuf {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("expected content-type application/x-protobuf, got {content_type:?}"),
        );
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let export = match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!(
                    "not an ExportTraceServiceRequest ({} bytes): {e}",
                    body.len()
                ),
            )
        }
    };
    let mut received = Vec::new();
    for rs in &export.resource_spans {
        let service_name = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match attr_value(kv.value.as_ref()) {
                    AttrValue::Str(s) => Some(s),
                    _ => None,
                })
        });
        for ss in &rs.scope_spans {
            for s in &ss.spans {
                received.push(ReceivedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), attr_value(kv.value.as_ref())))
                        .collect(),
                    service_name: service_name.clone(),
                    status_code: s.status.as_ref().map_or(0, |st| st.code),
                });
            }
        }
    }
    {
        let mut st = state.lock().expect("otlp state");
        st.exports += 1;
        st.spans.extend(received);
    }
    Ok(reply(
        StatusCode::OK,
        "application/x-protobuf",
        ExportTraceServiceResponse::default().encode_to_vec(),
    ))
}
