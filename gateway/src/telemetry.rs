//! Distributed tracing: W3C Trace Context and OpenTelemetry spans.
//!
//! Every request continues an incoming `traceparent` (or starts a trace) and
//! passes it on to the upstream, one span id per upstream attempt, so the
//! trace id ties the access log to the traces. With `telemetry.tracing`
//! configured, the gateway also records a server span per request and a
//! client span per upstream attempt (retries visible), sampled parent-based
//! by ratio, and exports them over OTLP/HTTP (protobuf) from the SDK's batch
//! thread: the request path only queues. The queue is bounded: a full queue
//! drops spans and counts them (`gateway_trace_spans_dropped_total`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use pingora::http::RequestHeader;

use crate::config::TracingConfig;
use crate::metrics::METRICS;

static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Starts span export when `cfg` is set. Call once, outside any async
/// runtime (the OTLP client is a blocking one, used on the batch thread).
pub fn init(cfg: Option<&TracingConfig>, service_name: &str) -> Result<(), String> {
    let Some(cfg) = cfg else { return Ok(()) };
    let endpoint = format!("{}/v1/traces", cfg.otlp_endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .with_timeout(cfg.export_timeout.get())
        .build()
        .map_err(|e| format!("telemetry.tracing: {e}"))?;
    let queued = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(CountingExporter {
        inner: exporter,
        queued: queued.clone(),
    })
    .with_batch_config(
        BatchConfigBuilder::default()
            .with_max_queue_size(cfg.max_queue_size)
            .with_scheduled_delay(Duration::from_millis(200))
            .build(),
    )
    .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BoundedProcessor {
            inner: batch,
            queued,
            max: cfg.max_queue_size,
        })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            cfg.sample_ratio,
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(
                    cfg.service_name
                        .clone()
                        .unwrap_or_else(|| service_name.to_string()),
                )
                .build(),
        )
        .build();
    let tracer = provider.tracer("gateway");
    let _ = TRACER.set((provider, tracer));
    Ok(())
}

/// Exports what is queued (bounded wait); used before the process exits.
pub fn flush() {
    if let Some((provider, _)) = TRACER.get() {
        let _ = provider.force_flush();
    }
}

/// Drops spans beyond `max` queued (counted) so the batch queue never
/// overflows silently.
#[derive(Debug)]
struct BoundedProcessor {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl SpanProcessor for BoundedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }
    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            METRICS.trace_spans_dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts spans out of the queue as batches are exported.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::AcqRel);
        if result.is_err() {
            METRICS.trace_export_errors.inc();
        }
        result
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Parses a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`). Unknown
/// future versions are read by their first four fields, as the spec asks.
pub fn parse_traceparent(v: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let mut parts = s.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    if version.len() != 2
        || version == "ff"
        || (version == "00" && (rest.is_some() || s.len() != 55))
    {
        return None;
    }
    let hex = |x: &str, n: usize| {
        x.len() == n
            && x.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()? & 1);
    Some((trace, span, flags))
}

fn random_trace_id() -> TraceId {
    TraceId::from_bytes(fastrand::u128(1..).to_be_bytes())
}

fn random_span_id() -> SpanId {
    SpanId::from_bytes(fastrand::u64(1..).to_be_bytes())
}

/// `00-<trace id>-<parent span id>-<flags>`, formatted without `fmt`.
fn traceparent_bytes(trace: TraceId, parent: SpanId, flags: TraceFlags) -> [u8; 55] {
    use crate::proxy::forwarding::hex_into;
    let mut out = [b'-'; 55];
    out[0..2].copy_from_slice(b"00");
    hex_into(&trace.to_bytes(), &mut out[3..35]);
    hex_into(&parent.to_bytes(), &mut out[36..52]);
    hex_into(&[flags.to_u8()], &mut out[53..55]);
    out
}

/// The trace state of one request.
pub struct RequestTrace {
    trace_id: TraceId,
    server_span_id: SpanId,
    flags: TraceFlags,
    state: TraceState,
    /// Span id of the current upstream attempt (what the upstream sees as parent).
    attempt_id: Option<SpanId>,
    // Boxed: the context of every request holds a `RequestTrace`, and
    // Pingora keeps room for that context in each connection's task, idle
    // keep-alive ones included; spans exist only when tracing is on.
    server: Option<Box<opentelemetry_sdk::trace::Span>>,
    attempt: Option<Box<opentelemetry_sdk::trace::Span>>,
}

impl RequestTrace {
    /// Continues the request's trace or starts one.
    pub fn start(req: &RequestHeader) -> Self {
        let parent = req
            .headers
            .get("traceparent")
            .and_then(|v| parse_traceparent(v.as_bytes()));
        let state = req
            .headers
            .get("tracestate")
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        if let Some((_, tracer)) = TRACER.get() {
            let cx = match parent {
                Some((t, s, f)) => Context::new().with_remote_span_context(SpanContext::new(
                    t,
                    s,
                    f,
                    true,
                    state.clone(),
                )),
                None => Context::new(),
            };
            let span = tracer
                .span_builder(req.method.as_str().to_string())
                .with_kind(SpanKind::Server)
                .with_attributes([
                    KeyValue::new("http.request.method", req.method.as_str().to_string()),
                    KeyValue::new("url.path", req.uri.path().to_string()),
                ])
                .start_with_context(tracer, &cx);
            let sc = span.span_context().clone();
            return RequestTrace {
                trace_id: sc.trace_id(),
                server_span_id: sc.span_id(),
                flags: sc.trace_flags(),
                state,
                attempt_id: None,
                server: Some(Box::new(span)),
                attempt: None,
            };
        }
        let (trace_id, flags) = match parent {
            Some((t, _, f)) => (t, f),
            None => (random_trace_id(), TraceFlags::default()),
        };
        RequestTrace {
            trace_id,
            server_span_id: random_span_id(),
            flags,
            state,
            attempt_id: None,
            server: None,
            attempt: None,
        }
    }

    /// The trace id (its `Display` is the hex form the access log shows).
    pub fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// Names the server span after the route and records request facts.
    pub fn set_route(
        &mut self,
        method: &str,
        route: &str,
        https: bool,
        client: Option<std::net::IpAddr>,
    ) {
        if let Some(s) = self.server.as_mut() {
            s.update_name(format!("{method} {route}"));
            s.set_attribute(KeyValue::new("http.route", route.to_string()));
            s.set_attribute(KeyValue::new(
                "url.scheme",
                if https { "https" } else { "http" },
            ));
            if let Some(ip) = client {
                s.set_attribute(KeyValue::new("client.address", ip.to_string()));
            }
        }
    }

    /// Starts the span of an upstream attempt (ending an unfinished one).
    pub fn start_attempt(
        &mut self,
        attempt: u32,
        cluster: &str,
        endpoint: &str,
        locality: &'static str,
    ) {
        if let Some(s) = self.server.as_mut() {
            s.set_attribute(KeyValue::new("gateway.cluster", cluster.to_string()));
            s.set_attribute(KeyValue::new("gateway.endpoint", endpoint.to_string()));
        }
        self.end_attempt(None, Some("abandoned"));
        let Some((_, tracer)) = TRACER.get() else {
            self.attempt_id = Some(random_span_id());
            return;
        };
        let parent = SpanContext::new(
            self.trace_id,
            self.server_span_id,
            self.flags,
            false,
            self.state.clone(),
        );
        let span = tracer
            .span_builder("upstream attempt")
            .with_kind(SpanKind::Client)
            .with_attributes([
                KeyValue::new("gateway.attempt", attempt as i64),
                KeyValue::new("gateway.cluster", cluster.to_string()),
                KeyValue::new("server.address", endpoint.to_string()),
                KeyValue::new("gateway.locality", locality),
            ])
            .start_with_context(tracer, &Context::new().with_remote_span_context(parent));
        self.attempt_id = Some(span.span_context().span_id());
        self.attempt = Some(Box::new(span));
    }

    /// Ends the current attempt span with its outcome.
    pub fn end_attempt(&mut self, status: Option<u16>, error: Option<&str>) {
        let Some(mut span) = self.attempt.take() else {
            return;
        };
        if let Some(s) = status {
            span.set_attribute(KeyValue::new("http.response.status_code", s as i64));
        }
        if let Some(e) = error {
            span.set_attribute(KeyValue::new("error.type", e.to_string()));
            span.set_status(Status::error(e.to_string()));
        }
        span.end();
    }

    /// The `traceparent` for the upstream: the current attempt as parent.
    pub fn upstream_traceparent(&self) -> http::HeaderValue {
        let parent = self.attempt_id.unwrap_or(self.server_span_id);
        let v = traceparent_bytes(self.trace_id, parent, self.flags);
        // Hex digits and dashes are a valid header value.
        http::HeaderValue::from_bytes(&v).unwrap_or_else(|_| http::HeaderValue::from_static(""))
    }

    /// The `traceparent` for a mirror copy: the server span as parent.
    pub fn traceparent(&self) -> String {
        let v = traceparent_bytes(self.trace_id, self.server_span_id, self.flags);
        String::from_utf8_lossy(&v).into_owned()
    }

    /// Ends the request's spans.
    pub fn finish(&mut self, status: u16, error: Option<Cow<'_, str>>) {
        self.end_attempt(
            None,
            error
                .as_deref()
                .or(Some("abandoned"))
                .filter(|_| self.attempt.is_some()),
        );
        if let Some(mut span) = self.server.take() {
            if status > 0 {
                span.set_attribute(KeyValue::new("http.response.status_code", status as i64));
            }
            if status >= 500 || (status == 0 && error.is_some()) {
                let e = error
                    .map(|e| e.into_owned())
                    .unwrap_or_else(|| status.to_string());
                span.set_attribute(KeyValue::new("error.type", e.clone()));
                span.set_status(Status::error(e));
            }
            span.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let (t, s, f) =
            parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert!(f.is_sampled());
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"garbage",
        ] {
            assert!(
                parse_traceparent(bad).is_none(),
                "{:?} accepted",
                std::str::from_utf8(bad)
            );
        }
        // A future version with more fields is read by its first four.
        assert!(
            parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
    }

    #[test]
    fn without_export_the_trace_is_continued_with_new_span_ids() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let mut t = RequestTrace::start(&req);
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        t.start_attempt(1, "c", "127.0.0.1:1", "zone");
        let up = t.upstream_traceparent();
        let up = up.to_str().unwrap();
        assert_eq!(up.len(), 55);
        assert!(
            up.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && up.ends_with("-01"),
            "{up}"
        );
        assert!(
            !up.contains("00f067aa0ba902b7"),
            "a new span id is the parent upstream"
        );
        let fresh = RequestTrace::start(&RequestHeader::build("GET", b"/", None).unwrap());
        assert_eq!(fresh.trace_id().to_string().len(), 32);
        assert_ne!(fresh.trace_id(), t.trace_id());
    }
}
