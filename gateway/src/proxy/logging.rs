//! The `logging` step, last of every request: end the trace, hand the
//! primary's outcome to the mirror copies, record the request metrics and
//! write the access line ([`super::access_line`]).

use pingora::proxy::Session;
use pingora::Error;

use super::access_line::AccessLine;
use super::ctx::RequestCtx;
use super::upgrade;
use crate::mirror::PrimaryOutcome;
use crate::runtime::locality::Priority;

/// The listener a request came in on: its position in the runtime's
/// listener list (metric handles) and its name.
pub(super) type Listener<'a> = (usize, &'a str);

/// Everything that happens once a request is over, the access line last.
pub(super) fn finish(
    listener: Listener<'_>,
    session: &Session,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let status = session.response_written().map_or(0, |r| r.status.as_u16());
    let trace_id = end_trace_and_copies(ctx, status, e);
    let elapsed = ctx.start.elapsed();
    // Request count and duration of the route (or of unrouted requests),
    // and the bytes that crossed a zone.
    let metrics = ctx
        .route()
        .map_or(&ctx.runtime.unrouted_metrics, |r| &r.metrics);
    metrics.request(listener, ctx.cluster.as_deref().map(|c| &*c.name), status);
    metrics.duration().observe(elapsed.as_secs_f64());
    if let (Some(p), Some(c)) = (ctx.priority(), &ctx.cluster) {
        if p != Priority::Zone {
            let bytes = session.body_bytes_read() + session.body_bytes_sent();
            c.metrics.cross_zone_bytes().inc_by(bytes as u64);
        }
    }
    if let (Some(n), Some(route)) = (ctx.upgrade, ctx.route()) {
        let protocol = route.upgrades.protocol(n);
        if status == 101 {
            upgrade::count(&route.name, protocol, "switched");
            upgrade::count_bytes(
                &route.name,
                session.body_bytes_read(),
                session.body_bytes_sent(),
            );
        } else {
            upgrade::count(&route.name, protocol, "declined");
        }
    }
    if !should_log(ctx, status, e) {
        return;
    }
    let req = session.req_header();
    let line = AccessLine {
        time: humantime::format_rfc3339_millis(std::time::SystemTime::now()),
        listener: listener.1,
        route: ctx.route_name(),
        cluster: ctx.cluster_name(),
        endpoint: ctx.endpoint_label(),
        method: req.method.as_str(),
        path: req.uri.path(),
        protocol: if session.is_http2() {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        },
        status,
        bytes_in: session.body_bytes_read(),
        bytes_out: session.body_bytes_sent(),
        duration_ms: elapsed.as_secs_f64() * 1000.0,
        tries: ctx.tries,
        request_id: &ctx.request_id,
        trace_id,
        client: ctx.client_ip,
        error: e.map(|e| e.etype().as_str()),
    };
    crate::access_log::append(|buf| line.write_to(buf));
}

/// Ends the trace and the mirror copies' view of the primary; returns the
/// trace id for the access line.
fn end_trace_and_copies(
    ctx: &mut RequestCtx,
    status: u16,
    e: Option<&Error>,
) -> Option<opentelemetry::trace::TraceId> {
    let digest = ctx.body_digest.as_ref().map(|d| d.finish());
    let trace_id = ctx.trace.as_ref().map(|t| t.trace_id());
    if let Some(t) = ctx.trace.as_mut() {
        t.finish(
            status,
            e.map(|e| std::borrow::Cow::Borrowed(e.etype().as_str())),
        );
    }
    for m in ctx.mirrors.drain(..) {
        m.finish(PrimaryOutcome {
            status,
            body_digest: digest,
        });
    }
    trace_id
}

/// Whether the access log takes this request: on, and not a success
/// sampled out by `success_sample_ratio`.
fn should_log(ctx: &RequestCtx, status: u16, e: Option<&Error>) -> bool {
    let log = &ctx.runtime.config.telemetry.access_log;
    let sampled_out = (100..400).contains(&status)
        && e.is_none()
        && log.success_sample_ratio < 1.0
        && fastrand::f64() >= log.success_sample_ratio;
    log.enabled && !sampled_out
}
