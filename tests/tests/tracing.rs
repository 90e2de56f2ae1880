//! Observability: W3C Trace Context, OpenTelemetry spans exported over
//! OTLP/HTTP to a real receiver ([`OtlpReceiver`], decoding the protobuf with
//! the `opentelemetry-proto` types), the `/metrics` exposition, and the
//! Grafana dashboard in `conf/grafana-dashboard.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gateway_tests::{
    free_port, http_client, metric_value, parse_families, parse_prometheus, show_spans, tpl, url,
    wait_metrics, workspace_root, Gateway, OtlpReceiver, ReceivedSpan, Reply, SpanKind, TestCa,
    Upstream,
};
use serde_json::Value;

/// How long a test waits for spans that should arrive (the gateway batches
/// every ~200 ms; this is only the bound on a slow, shared machine).
const SPAN_WAIT: Duration = Duration::from_secs(10);

/// A parsed `traceparent`: trace id, parent id, flags (all lowercase hex).
#[derive(Clone, Debug, PartialEq)]
struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

/// Parses a version-00 `traceparent` strictly (lowercase hex, non-zero ids).
fn parse_traceparent(v: &str) -> Option<TraceParent> {
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    match parts[..] {
        ["00", t, p, f] if hex(t, 32) && hex(p, 16) && hex(f, 2) && !zero(t) && !zero(p) => {
            Some(TraceParent {
                trace_id: t.to_string(),
                parent_id: p.to_string(),
                flags: f.to_string(),
            })
        }
        _ => None,
    }
}

/// The `traceparent` an upstream request carried, parsed (panics otherwise).
fn upstream_traceparent(up: &Upstream, seq: u64) -> TraceParent {
    let reqs = up.requests();
    let req = reqs
        .iter()
        .find(|r| r.seq == seq)
        .unwrap_or_else(|| panic!("upstream {} has no request #{seq}: {reqs:?}", up.name()));
    let tp = req.header("traceparent").unwrap_or_else(|| {
        panic!(
            "upstream {} request #{seq}: expected a traceparent header, got headers {:?}",
            up.name(),
            req.headers
        )
    });
    parse_traceparent(tp).unwrap_or_else(|| {
        panic!(
            "upstream {} request #{seq}: expected a valid version-00 traceparent, got `{tp}`",
            up.name()
        )
    })
}

fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).expect("hex digit"))
        .collect::<String>()
        .replacen('0', "1", 1) // never all zeros
}

fn of_trace(spans: &[ReceivedSpan], trace_id: &str) -> Vec<ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect()
}

/// Asserts that `gw`'s access log gets one `path` line, with `trace_id`.
fn assert_logged_trace(gw: &Gateway, path: &str, trace_id: &str, whose: &str) {
    let lines = gw.wait_access_log(1, Duration::from_secs(5), |l| l["path"] == path);
    let got: Vec<&Value> = lines.iter().map(|l| &l["trace_id"]).collect();
    assert_eq!(
        got,
        vec![&Value::String(trace_id.to_string())],
        "{whose} access log: expected one {path} line with trace_id {trace_id}"
    );
}

/// `GET path` on `port` with `headers`, asserting a 200.
async fn get_ok(client: &reqwest::Client, port: u16, path: &str, headers: &[(&str, String)]) {
    let mut req = client.get(url(port, path));
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req.send().await.expect("request");
    assert_eq!(resp.status(), 200, "GET {path} with {headers:?}");
}

/// The single span matching `pred` (panics with all spans otherwise).
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let hits: Vec<&ReceivedSpan> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one {what}, got {}; spans:\n{}",
        hits.len(),
        show_spans(spans)
    );
    hits[0]
}

fn tracing_block(otlp: &str, ratio: &str, extra: &str) -> String {
    format!("telemetry: {{tracing: {{otlp_endpoint: \"{otlp}\", sample_ratio: {ratio}{extra}}}}}")
}

/// A gateway named `name` with one listener, cluster `c` of `endpoint` and
/// one catch-all route: `route` is its name, optionally followed by more of
/// its keys (`name, retries: {...}`); plus the `telemetry` line (empty for
/// none). Returns it and its traffic port.
fn start_gateway(name: &str, endpoint: &str, route: &str, telemetry: &str) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
gateway: {name: ${name}}
clusters:
  - {name: c, connect_timeout: 1s, endpoints: [{address: "${endpoint}"}]}
routes:
  - {name: ${route}, cluster: c}
${telemetry}
"#,
            &[
                ("name", &name),
                ("endpoint", &endpoint),
                ("route", &route),
                ("telemetry", &telemetry),
            ],
        ))
        .start();
    let port = gw.port();
    (gw, port)
}

// ---------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------

/// client -> gateway A -> gateway B -> upstream: one trace, linked
/// server -> attempt -> server -> attempt -> upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_one_trace_with_parent_links() {
    let recv = OtlpReceiver::start();
    let app = Upstream::named("app");
    // B names its spans by `gateway.name`, A by an explicit `service_name`.
    let (gw_b, b_port) = start_gateway(
        "gw-b",
        &app.address(),
        "b-route",
        &tracing_block(&recv.endpoint(), "1.0", ""),
    );
    let (gw_a, a_port) = start_gateway(
        "gw-a",
        &format!("127.0.0.1:{b_port}"),
        "a-route",
        &tracing_block(&recv.endpoint(), "1.0", ", service_name: edge-a"),
    );

    let resp = http_client()
        .get(url(a_port, "/chain"))
        .send()
        .await
        .expect("request through A and B");
    assert_eq!(
        resp.status(),
        200,
        "client -> A -> B -> app should answer 200"
    );
    assert_eq!(
        resp.headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("app"),
        "the answer should come from the app upstream"
    );
    let up = upstream_traceparent(&app, 0);
    assert_eq!(
        up.flags, "01",
        "sampled trace: expected flags 01 at the upstream, got {up:?}"
    );

    let spans = recv
        .wait_for(|s| of_trace(s, &up.trace_id).len() >= 4, SPAN_WAIT)
        .await;
    let trace = of_trace(&spans, &up.trace_id);
    assert_eq!(
        (trace.len(), spans.len()),
        (4, 4),
        "expected 4 spans (2 server + 2 attempt), all in trace {} (the upstream's), got {} in it of {} received:\n{}\nrejected exports: {:?}",
        up.trace_id,
        trace.len(),
        spans.len(),
        show_spans(&spans),
        recv.rejected()
    );
    let [a_server, a_attempt, b_server, b_attempt] = [
        (SpanKind::Server, "edge-a"),
        (SpanKind::Client, "edge-a"),
        (SpanKind::Server, "gw-b"),
        (SpanKind::Client, "gw-b"),
    ]
    .map(|(kind, service)| {
        one(&trace, &format!("{kind:?} span of {service}"), |s| {
            s.kind == kind && s.service_name.as_deref() == Some(service)
        })
    });
    let all = show_spans(&trace);
    assert_eq!(
        a_server.parent_span_id, None,
        "A's server span starts the trace (no incoming traceparent): expected no parent:\n{all}"
    );
    assert_eq!(
        a_attempt.parent_span_id.as_deref(),
        Some(a_server.span_id.as_str()),
        "A's attempt span: expected parent = A's server span:\n{all}"
    );
    assert_eq!(
        b_server.parent_span_id.as_deref(),
        Some(a_attempt.span_id.as_str()),
        "B's server span: expected parent = A's attempt span (the traceparent A sent):\n{all}"
    );
    assert_eq!(
        b_attempt.parent_span_id.as_deref(),
        Some(b_server.span_id.as_str()),
        "B's attempt span: expected parent = B's server span:\n{all}"
    );
    assert_eq!(
        up.parent_id, b_attempt.span_id,
        "the upstream's traceparent: expected parent id = B's attempt span:\n{all}"
    );
    for (span, route) in [(a_server, "a-route"), (b_server, "b-route")] {
        assert_eq!(
            span.name,
            format!("GET {route}"),
            "server span name: expected \"<METHOD> <route>\":\n{all}"
        );
        assert_eq!(
            span.attr_str("http.route"),
            Some(route),
            "server span http.route:\n{all}"
        );
        assert_eq!(
            span.attr_i64("http.response.status_code"),
            Some(200),
            "server span http.response.status_code:\n{all}"
        );
    }
    for span in [a_attempt, b_attempt] {
        assert_eq!(span.name, "upstream attempt", "attempt span name:\n{all}");
        assert_eq!(
            span.attr_i64("gateway.attempt"),
            Some(1),
            "one try each:\n{all}"
        );
    }
    assert!(
        recv.rejected().is_empty(),
        "the receiver should have refused nothing, got {:?}",
        recv.rejected()
    );
    eprintln!("two-gateway trace:\n{all}");
    // Both access logs carry the trace id.
    for (gw, name) in [(&gw_a, "A's"), (&gw_b, "B's")] {
        assert_logged_trace(gw, "/chain", &up.trace_id, name);
    }
}

/// A retried request: one server span, one attempt span per try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_make_one_attempt_span_per_try() {
    let recv = OtlpReceiver::start();
    let up = Upstream::fail_once(503);
    let (gw, _) = start_gateway(
        "gw-retry",
        &up.address(),
        "retried, retries: {attempts: 3, on: [connect-failure, 503]}",
        &tracing_block(&recv.endpoint(), "1.0", ""),
    );
    let resp = gw.get("/again").await;
    assert_eq!(
        resp.status(),
        200,
        "the 503 should be retried, the retry answered 200"
    );
    assert_eq!(
        up.count(),
        2,
        "expected 2 tries at the upstream, got {}",
        up.count()
    );
    let first = upstream_traceparent(&up, 0);
    let second = upstream_traceparent(&up, 1);
    assert_eq!(
        first.trace_id, second.trace_id,
        "both tries belong to one trace: {first:?} vs {second:?}"
    );
    assert_ne!(
        first.parent_id, second.parent_id,
        "each try must carry its own span id as parent"
    );

    let spans = recv
        .wait_for(|s| of_trace(s, &first.trace_id).len() >= 3, SPAN_WAIT)
        .await;
    let trace = of_trace(&spans, &first.trace_id);
    let all = show_spans(&spans);
    assert_eq!(
        trace.len(),
        3,
        "expected 1 server + 2 attempt spans in trace {}, got:\n{all}",
        first.trace_id
    );
    let server = one(&trace, "SERVER span", |s| s.kind == SpanKind::Server);
    assert_eq!(server.name, "GET retried", "server span name:\n{all}");
    let attempts: BTreeMap<i64, &ReceivedSpan> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Client)
        .filter_map(|s| Some((s.attr_i64("gateway.attempt")?, s)))
        .collect();
    assert_eq!(
        attempts.keys().copied().collect::<Vec<_>>(),
        vec![1, 2],
        "expected CLIENT spans with gateway.attempt 1 and 2:\n{all}"
    );
    for (n, span) in &attempts {
        assert_eq!(span.name, "upstream attempt", "attempt {n} name:\n{all}");
        assert_eq!(
            span.parent_span_id.as_deref(),
            Some(server.span_id.as_str()),
            "attempt {n}: expected parent = the server span:\n{all}"
        );
    }
    assert_eq!(
        (attempts[&1].span_id.as_str(), attempts[&2].span_id.as_str()),
        (first.parent_id.as_str(), second.parent_id.as_str()),
        "the upstream's traceparent of try 1 / try 2 should name attempt span 1 / 2"
    );
    assert_eq!(
        (
            attempts[&1].attr_i64("http.response.status_code"),
            attempts[&2].attr_i64("http.response.status_code")
        ),
        (Some(503), Some(200)),
        "attempt status codes: expected 503 then 200:\n{all}"
    );
    assert_eq!(
        (attempts[&1].status_code, attempts[&2].status_code),
        (2, 0),
        "attempt 1 (503) should be marked as an error (status code 2), attempt 2 not:\n{all}"
    );
    let lines = gw.wait_access_log(1, Duration::from_secs(5), |l| l["path"] == "/again");
    assert_eq!(
        lines.first().map(|l| (&l["trace_id"], &l["tries"])),
        Some((&Value::String(first.trace_id.clone()), &Value::from(2))),
        "access log: expected trace_id {} and tries 2, got {lines:?}",
        first.trace_id
    );
}

/// An incoming sampled `traceparent` is continued (same trace, server span
/// parented on the caller's span, `tracestate` kept); an unsampled one is
/// passed on with its flags and not exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_traceparent_is_continued() {
    let recv = OtlpReceiver::start();
    let app = Upstream::named("app");
    let (gw, port) = start_gateway(
        "gw-continue",
        &app.address(),
        "cont",
        &tracing_block(&recv.endpoint(), "1.0", ""),
    );
    let client = http_client();

    // First an unsampled caller: its trace goes on, but is not recorded.
    let (quiet_trace, quiet_parent) = (random_hex(32), random_hex(16));
    let tp = format!("00-{quiet_trace}-{quiet_parent}-00");
    get_ok(&client, port, "/unsampled", &[("traceparent", tp)]).await;
    let quiet = upstream_traceparent(&app, 0);
    assert_eq!(
        (quiet.trace_id.as_str(), quiet.flags.as_str()),
        (quiet_trace.as_str(), "00"),
        "unsampled incoming traceparent: expected the same trace id and flags 00 upstream, got {quiet:?}"
    );
    assert_ne!(
        quiet.parent_id, quiet_parent,
        "the gateway adds its own span id"
    );

    // A malformed traceparent (uppercase hex) is not continued: a new trace.
    let bad_trace = "4BF92F3577B34DA6A3CE929D0E0E4736";
    let tp = format!("00-{bad_trace}-00F067AA0BA902B7-01");
    get_ok(&client, port, "/malformed", &[("traceparent", tp)]).await;
    let fresh = upstream_traceparent(&app, 1);
    assert_ne!(
        fresh.trace_id,
        bad_trace.to_lowercase(),
        "a malformed incoming traceparent must start a new trace, not be continued"
    );

    // Then a sampled caller with vendor state.
    let (trace_id, parent_id) = (random_hex(32), random_hex(16));
    let tp = format!("00-{trace_id}-{parent_id}-01");
    let state = ("tracestate", "vendor1=abc,vendor2=xyz".to_string());
    get_ok(&client, port, "/sampled", &[("traceparent", tp), state]).await;
    let up = upstream_traceparent(&app, 2);
    assert_eq!(
        (up.trace_id.as_str(), up.flags.as_str()),
        (trace_id.as_str(), "01"),
        "expected the incoming trace id and flags 01 at the upstream, got {up:?}"
    );
    assert_ne!(
        up.parent_id, parent_id,
        "the upstream's parent must be the gateway's attempt span, not the caller's span"
    );
    let state = app
        .requests()
        .into_iter()
        .find(|r| r.seq == 2)
        .and_then(|r| r.header("tracestate").map(str::to_string));
    assert_eq!(
        state.as_deref(),
        Some("vendor1=abc,vendor2=xyz"),
        "tracestate should reach the upstream unchanged"
    );

    recv.wait_for(|s| of_trace(s, &trace_id).len() >= 2, SPAN_WAIT)
        .await;
    // Spans of the earlier (unsampled) request would have been in the same
    // or an earlier batch; a short grace period covers a batch boundary.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spans = recv.spans();
    let all = show_spans(&spans);
    let trace = of_trace(&spans, &trace_id);
    assert_eq!(
        trace.len(),
        2,
        "expected server + attempt span in trace {trace_id}:\n{all}"
    );
    let server = one(&trace, "SERVER span", |s| s.kind == SpanKind::Server);
    let attempt = one(&trace, "CLIENT span", |s| s.kind == SpanKind::Client);
    assert_eq!(
        server.parent_span_id.as_deref(),
        Some(parent_id.as_str()),
        "server span: expected parent = the incoming parent id {parent_id}:\n{all}"
    );
    assert_eq!(
        attempt.parent_span_id.as_deref(),
        Some(server.span_id.as_str()),
        "attempt span: expected parent = the server span:\n{all}"
    );
    assert_eq!(
        up.parent_id, attempt.span_id,
        "upstream parent = attempt span:\n{all}"
    );
    assert!(
        of_trace(&spans, &quiet_trace).is_empty(),
        "an unsampled incoming trace must not be exported (parent-based sampling):\n{all}"
    );

    for (path, want) in [("/sampled", &trace_id), ("/unsampled", &quiet_trace)] {
        assert_logged_trace(&gw, path, want, "the");
    }
}

/// `sample_ratio: 0` records nothing for new traces, yet the upstream still
/// gets a valid (unsampled) `traceparent`; a sampled caller is still followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratio_zero_exports_nothing_but_propagates() {
    const N: u64 = 5;
    let recv = OtlpReceiver::start();
    let app = Upstream::named("app");
    let (gw, port) = start_gateway(
        "gw-ratio0",
        &app.address(),
        "r0",
        &tracing_block(&recv.endpoint(), "0", ""),
    );
    let client = http_client();
    for i in 0..N {
        get_ok(&client, port, &format!("/r0/{i}"), &[]).await;
    }
    let mut traces = BTreeSet::new();
    for seq in 0..N {
        let tp = upstream_traceparent(&app, seq);
        assert_eq!(
            tp.flags, "00",
            "request #{seq}: expected unsampled flags 00, got {tp:?}"
        );
        traces.insert(tp.trace_id);
    }
    assert_eq!(
        traces.len(),
        N as usize,
        "each new request starts its own trace: expected {N} distinct trace ids, got {traces:?}"
    );
    let lines = gw.wait_access_log(N as usize, Duration::from_secs(5), |l| {
        l["path"].as_str().is_some_and(|p| p.starts_with("/r0/"))
    });
    let logged: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| l["trace_id"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        logged, traces,
        "access-log trace ids vs. the upstream's trace ids"
    );

    // Bounded wait: more than 5 batch periods.
    let spans = recv
        .wait_for(|s| !s.is_empty(), Duration::from_millis(1500))
        .await;
    assert!(
        spans.is_empty() && recv.exports() == 0,
        "sample_ratio 0: expected no spans and no export requests within 1.5 s, got {} export(s):\n{}",
        recv.exports(),
        show_spans(&spans)
    );
    assert!(
        recv.rejected().is_empty(),
        "rejected: {:?}",
        recv.rejected()
    );

    // Parent-based: a sampled caller is recorded even at ratio 0.
    let (trace_id, parent_id) = (random_hex(32), random_hex(16));
    let tp = format!("00-{trace_id}-{parent_id}-01");
    get_ok(&client, port, "/r0/sampled", &[("traceparent", tp)]).await;
    let spans = recv
        .wait_for(|s| of_trace(s, &trace_id).len() >= 2, SPAN_WAIT)
        .await;
    assert_eq!(
        (of_trace(&spans, &trace_id).len(), spans.len()),
        (2, 2),
        "sample_ratio 0 with a sampled incoming traceparent: expected its 2 spans (and only those), got:\n{}",
        show_spans(&spans)
    );
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A dead collector (nothing listens) and a stalled one (accepts, never
/// answers) change no response and no latency beyond noise; failures and
/// drops are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_or_stalled_collector_changes_nothing() {
    const ROUNDS: usize = 50;
    /// Allowed difference of median latencies (tracing minus none).
    const BOUND: Duration = Duration::from_millis(5);
    let app = Upstream::named("app");
    let dead = format!("http://127.0.0.1:{}", free_port());
    // Accepts connections (kernel backlog) but never reads or answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stalled collector");
    let stalled_url = format!("http://{}", stalled.local_addr().expect("addr"));
    let (_plain, plain_port) = start_gateway("gw-plain", &app.address(), "lat", "");
    let (dead_gw, dead_port) = start_gateway(
        "gw-dead",
        &app.address(),
        "lat",
        &tracing_block(&dead, "1.0", ""),
    );
    let (stall_gw, stall_port) = start_gateway(
        "gw-stalled",
        &app.address(),
        "lat",
        &tracing_block(
            &stalled_url,
            "1.0",
            ", max_queue_size: 8, export_timeout: 3s",
        ),
    );
    let gws = [
        ("none", plain_port),
        ("dead", dead_port),
        ("stalled", stall_port),
    ];
    let clients: Vec<reqwest::Client> = gws.iter().map(|_| http_client()).collect();
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); gws.len()];
    for round in 0..(ROUNDS + 5) {
        for k in 0..gws.len() {
            // Rotate the order so no gateway always goes first.
            let i = (round + k) % gws.len();
            let (name, port) = gws[i];
            let t = Instant::now();
            let resp = clients[i]
                .get(url(port, &format!("/lat/{round}")))
                .send()
                .await
                .expect("request");
            let status = resp.status().as_u16();
            let from = resp
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let _ = resp.bytes().await;
            let took = t.elapsed();
            assert_eq!(
                (status, from.as_deref()),
                (200, Some("app")),
                "{name} collector, round {round}: expected 200 from the app"
            );
            if round >= 5 {
                lat[i].push(took); // the first 5 rounds warm up connections
            }
        }
    }
    let medians: Vec<Duration> = lat.iter_mut().map(|v| median(v)).collect();
    eprintln!(
        "median latency over {ROUNDS} requests: no tracing {:?}, dead collector {:?}, stalled collector {:?}",
        medians[0], medians[1], medians[2]
    );
    for (i, name) in [(1, "dead"), (2, "stalled")] {
        assert!(
            medians[i] < medians[0] + BOUND,
            "{name} collector: expected median latency < no-tracing median {:?} + {BOUND:?}, got {:?}",
            medians[0],
            medians[i]
        );
    }

    let deadline = Instant::now() + Duration::from_secs(10);
    let (errors, _) = dead_gw
        .metric("gateway_trace_export_errors_total", &[])
        .within(Duration::from_secs(10))
        .eventually(|v| v > 0.0)
        .await;
    let (dropped, _) = stall_gw
        .metric("gateway_trace_spans_dropped_total", &[])
        .within(deadline.saturating_duration_since(Instant::now()))
        .eventually(|v| v > 0.0)
        .await;
    eprintln!("dead collector: export errors {errors}; stalled collector (queue 8): spans dropped {dropped}");
    assert!(
        errors > 0.0,
        "dead collector: expected gateway_trace_export_errors_total > 0, got {errors}"
    );
    assert!(
        dropped > 0.0,
        "stalled collector with max_queue_size 8 and {} spans: expected gateway_trace_spans_dropped_total > 0, got {dropped}",
        2 * (ROUNDS + 5)
    );
    drop(stalled);
}

// ---------------------------------------------------------------------------
// Metrics and the dashboard
// ---------------------------------------------------------------------------

/// A gateway (with tracing) whose traffic has touched every feature the
/// dashboard shows, so every labelled metric family has series.
struct Exercised {
    gw: Gateway,
    _ups: Vec<Upstream>,
    _recv: OtlpReceiver,
}

/// A path segment that must never show up in a metric label.
const SECRET_PATH: &str = "secret-path-7f3a91";

async fn exercised_gateway(want: &[&str]) -> Exercised {
    let recv = OtlpReceiver::start();
    let ok = Upstream::named("ok");
    let flaky = Upstream::fail_once(503);
    let broken = Upstream::start("broken", |_| Reply::text(500, "broken\n"));
    let gw = Gateway::builder()
        // A CA bundle, so the certificate expiry gauge has a series.
        .file("td-ca.pem", &TestCa::new("dashboard CA").cert_pem())
        .yaml(&tpl(
            r#"
gateway: {name: gw-metrics}
clusters:
  - {name: ok, endpoints: [{address: "${ok}"}]}
  - {name: flaky, endpoints: [{address: "${flaky}"}]}
  - {name: broken, endpoints: [{address: "${broken}"}], outlier_detection: {consecutive_5xx: 1}}
  - {name: shed, endpoints: [{address: "${ok}"}], circuit_breaker: {max_requests: 0}}
  - {name: shadow, endpoints: [{address: "${broken}"}]}
routes:
  - {name: limited, match: {path_prefix: /limited}, cluster: ok, rate_limit: [{name: per-ip, key: client_ip, rate: 1000/s}]}
  - {name: retried, match: {path_prefix: /retried}, cluster: flaky, retries: {attempts: 3, on: [connect-failure, 503]}}
  - {name: broken, match: {path_prefix: /broken}, cluster: broken}
  - {name: shed, match: {path_prefix: /shed}, cluster: shed}
  - {name: mirrored, match: {path_prefix: /mirrored}, cluster: ok, mirror: [{cluster: shadow, compare: {status: true}}]}
telemetry: {tracing: {otlp_endpoint: "${otlp}", sample_ratio: 1.0}}
trust_domains: [{name: td.example, ca: td-ca.pem}]
"#,
            &[("ok", &ok.address()),
            ("flaky", &flaky.address()),
            ("broken", &broken.address()),
            ("otlp", &recv.endpoint())],
        ))
        .start();
    let port = gw.port();
    let client = http_client();
    for (path, want_status) in [
        (format!("/limited/{SECRET_PATH}"), 200),
        ("/limited/2".to_string(), 200),
        ("/retried".to_string(), 200),
        ("/broken/1".to_string(), 500),
        ("/shed".to_string(), 503),
        ("/mirrored/1".to_string(), 200),
        ("/mirrored/2".to_string(), 200),
        ("/nowhere".to_string(), 404),
    ] {
        let resp = client.get(url(port, &path)).send().await.expect("request");
        assert_eq!(resp.status(), want_status, "GET {path}");
    }
    let (status, _) = gw.reload().await;
    assert!(
        (200..300).contains(&status),
        "POST /reload of an unchanged config: expected 2xx, got {status}"
    );
    // Mirror comparisons finish after the responses: wait (bounded) until
    // every wanted name has a series; the caller asserts on what is there.
    wait_metrics(&gw, Duration::from_secs(5), |text| {
        want.iter().all(|m| metric_value(text, m, &[]).is_some())
    })
    .await;
    Exercised {
        gw,
        _ups: vec![ok, flaky, broken],
        _recv: recv,
    }
}

/// The labelled families that [`exercised_gateway`] must bring to life.
const EXERCISED: &[&str] = &[
    "gateway_requests_total",
    "gateway_request_duration_seconds_count",
    "gateway_upstream_duration_seconds_count",
    "gateway_upstream_errors_total",
    "gateway_upstream_requests_total",
    "gateway_retries_total",
    "gateway_endpoint_healthy",
    "gateway_outlier_ejections_total",
    "gateway_circuit_open_total",
    "gateway_ratelimit_decisions_total",
    "gateway_mirror_requests_total",
    "gateway_mirror_mismatch_total",
    "gateway_config_reloads_total",
];

/// `/metrics` passes a strict exposition parse; every family has HELP and
/// TYPE; names, units, buckets and labels follow the conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_exposition_is_strict_and_documented() {
    let ex = exercised_gateway(EXERCISED).await;
    let text = ex.gw.metrics().await;
    let missing: Vec<&&str> = EXERCISED
        .iter()
        .filter(|m| metric_value(&text, m, &[]).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "after exercising every feature, expected series of {EXERCISED:?} in /metrics; missing {missing:?}:\n{text}"
    );
    if let Err(e) = parse_prometheus(&text) {
        panic!("/metrics: expected valid exposition, got: {e}\n{text}");
    }
    let families = parse_families(&text).unwrap_or_else(|problems| {
        panic!(
            "/metrics: expected a strictly valid exposition with HELP and TYPE for every family; problems:\n  {}\n--- /metrics ---\n{text}",
            problems.join("\n  ")
        )
    });
    eprintln!(
        "/metrics: {} families, {} samples, all with HELP and TYPE",
        families.len(),
        families.iter().map(|f| f.samples.len()).sum::<usize>()
    );
    assert!(
        families.len() >= EXERCISED.len(),
        "expected at least {} families, got {}",
        EXERCISED.len(),
        families.len()
    );
    let mut problems = Vec::new();
    for f in &families {
        let kind = f.kind.as_deref().unwrap_or_default();
        if !f.name.starts_with("gateway_") {
            problems.push(format!("{}: expected the gateway_ prefix", f.name));
        }
        if kind == "counter" && !f.name.ends_with("_total") {
            problems.push(format!("counter {}: expected a _total suffix", f.name));
        }
        if kind == "histogram" {
            if !f.name.ends_with("_seconds") {
                problems.push(format!("histogram {}: expected base unit _seconds", f.name));
            }
            let bounds: Vec<f64> = f
                .samples
                .iter()
                .filter_map(|s| s.labels.get("le")?.parse::<f64>().ok())
                .filter(|b| b.is_finite())
                .collect();
            let lo = bounds.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = bounds.iter().copied().fold(0.0, f64::max);
            if !(lo < 0.001 && hi >= 10.0) {
                problems.push(format!(
                    "histogram {}: expected buckets from under 1 ms to at least 10 s, got {lo}..{hi}",
                    f.name
                ));
            }
        }
        for s in &f.samples {
            for (k, v) in &s.labels {
                if v.contains(SECRET_PATH) || v.starts_with('/') || v.contains("127.0.0.1") {
                    problems.push(format!(
                        "{}: label {k}=\"{v}\" looks like a path or address (labels must be bounded)",
                        s.name
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "metric conventions violated:\n  {}",
        problems.join("\n  ")
    );
}

/// Every `gateway_*` name a dashboard query uses, found by scanning `expr`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(off) = expr[i..].find("gateway_") {
        let start = i + off;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.insert(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Label names in `by (...)` / `without (...)` clauses.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kw in ["by", "without"] {
        let pat = format!("{kw} (");
        let mut rest = expr;
        while let Some(i) = rest.find(&pat) {
            let after = &rest[i + pat.len()..];
            let close = after.find(')').unwrap_or(after.len());
            out.extend(
                after[..close]
                    .split(',')
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty()),
            );
            rest = &after[close..];
        }
    }
    out
}

/// Metrics the dashboard may show although the gateway does not export them
/// yet; their panel must say so in its description.
const FUTURE_METRICS: &[&str] = &["gateway_egress_decisions_total"];

/// `conf/grafana-dashboard.json` is a well-formed dashboard and every metric
/// (and grouping label) its queries use exists in a live gateway's `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_queries_only_live_metrics() {
    let path = workspace_root().join("conf/grafana-dashboard.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let dash: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} should be JSON: {e}", path.display()));

    // Shape: an importable dashboard with a Prometheus datasource input.
    let schema = dash["schemaVersion"].as_u64().unwrap_or(0);
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion: expected 36..=41, got {schema}"
    );
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard title"
    );
    assert!(
        dash["uid"].as_str().is_some_and(|t| !t.is_empty()),
        "dashboard uid"
    );
    let inputs = dash["__inputs"].as_array().cloned().unwrap_or_default();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "__inputs: expected a DS_PROMETHEUS prometheus datasource input, got {inputs:?}"
    );
    let vars: BTreeSet<String> = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();

    // Every panel (rows' nested panels included) and every query.
    let mut panels = Vec::new();
    for p in dash["panels"].as_array().expect("panels array") {
        panels.push(p.clone());
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
    }
    let mut ids = BTreeSet::new();
    // (panel title, description, expr)
    let mut queries: Vec<(String, String, String)> = Vec::new();
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        let id = p["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel {title:?}: no numeric id"));
        assert!(ids.insert(id), "panel id {id} is used twice");
        assert!(
            ["h", "w", "x", "y"]
                .iter()
                .all(|k| p["gridPos"][k].is_u64()),
            "panel {title:?}: gridPos h/w/x/y expected"
        );
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}: expected datasource uid ${{DS_PROMETHEUS}}"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(
            !targets.is_empty(),
            "panel {title:?}: expected at least one target"
        );
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default().to_string();
            assert!(!expr.is_empty(), "panel {title:?}: a target without expr");
            let desc = p["description"].as_str().unwrap_or_default().to_string();
            queries.push((title.clone(), desc, expr));
        }
    }
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = v["definition"].as_str().unwrap_or_default().to_string();
        queries.push((format!("variable {}", v["name"]), String::new(), q));
    }
    for (title, _, expr) in &queries {
        for var in ["route", "cluster"] {
            if expr.contains(&format!("${var}")) {
                assert!(
                    vars.contains(var),
                    "{title:?} uses ${var}, which is not a dashboard variable"
                );
            }
        }
        if expr.contains("histogram_quantile") {
            assert!(
                expr.contains("_bucket") && grouping_labels(expr).contains("le"),
                "{title:?}: histogram_quantile needs _bucket series grouped by le: {expr}"
            );
        }
    }

    let mut referenced = BTreeSet::new();
    for (_, _, expr) in &queries {
        referenced.extend(metric_names(expr));
    }
    // The topics the dashboard must cover.
    for must in [
        "gateway_requests_total",
        "gateway_request_duration_seconds_bucket",
        "gateway_upstream_duration_seconds_bucket",
        "gateway_endpoint_healthy",
        "gateway_retries_total",
        "gateway_ratelimit_decisions_total",
        "gateway_egress_decisions_total",
        "gateway_config_reloads_total",
        "gateway_config_generation",
        "gateway_mirror_requests_total",
        "gateway_mirror_mismatch_total",
        "gateway_circuit_open_total",
        "gateway_outlier_ejections_total",
        "gateway_trace_spans_dropped_total",
        "gateway_certificate_expiry_timestamp_seconds",
    ] {
        assert!(
            referenced.contains(must),
            "the dashboard should have a panel on {must}; it references {referenced:?}"
        );
    }

    // Live names: a gateway that exercised everything.
    let want: Vec<&str> = referenced
        .iter()
        .map(String::as_str)
        .filter(|m| !FUTURE_METRICS.contains(m))
        .collect();
    let ex = exercised_gateway(&want).await;
    let live_text = ex.gw.metrics().await;
    let live = parse_prometheus(&live_text).expect("live /metrics parses");
    let mut live_labels: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &live {
        live_labels
            .entry(s.name.as_str())
            .or_default()
            .extend(s.labels.keys().map(String::as_str));
    }
    let mut problems = Vec::new();
    for (title, desc, expr) in &queries {
        let names = metric_names(expr);
        for name in &names {
            if FUTURE_METRICS.contains(&name.as_str()) {
                if !desc.to_lowercase().contains("not implemented") {
                    problems.push(format!(
                        "{title:?}: uses future metric {name}; its description must say it is not implemented yet"
                    ));
                }
            } else if !live_labels.contains_key(name.as_str()) {
                problems.push(format!("{title:?}: {name} is not in the live /metrics"));
            }
        }
        if names.iter().any(|n| FUTURE_METRICS.contains(&n.as_str())) {
            continue;
        }
        // Scrape-time target labels exist only in Prometheus.
        for label in grouping_labels(expr) {
            let known = ["instance", "job"].contains(&label.as_str())
                || names.iter().any(|n| {
                    live_labels
                        .get(n.as_str())
                        .is_some_and(|ls| ls.contains(label.as_str()))
                });
            if !known {
                problems.push(format!(
                    "{title:?}: groups by `{label}`, which none of {names:?} has in the live /metrics"
                ));
            }
        }
    }
    eprintln!(
        "dashboard: {} panels, {} queries, {} gateway_* names ({} live, future: {FUTURE_METRICS:?})",
        panels.iter().filter(|p| p["type"] != "row").count(),
        queries.len(),
        referenced.len(),
        want.len()
    );
    assert!(
        problems.is_empty(),
        "dashboard queries that would show nothing:\n  {}",
        problems.join("\n  ")
    );
}
