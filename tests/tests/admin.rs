//! Admin endpoints, Prometheus metrics and the JSON access log.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway_tests::{
    free_port, http_client, metric_value, parse_prometheus, url, wait_metrics, Gateway, Upstream,
};
use serde_json::Value;

fn start(echo: &Upstream) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .cluster("c1", &[echo], "")
        .route("{name: r1, match: {path_prefix: /one}, cluster: c1}")
        .route(r#"{name: r2, match: {path_prefix: /two}, direct_response: {status: 200, body: "two\n"}}"#)
        .start();
    let port = gw.port();
    (gw, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints() {
    let echo = Upstream::echo();
    let (gw, _port) = start(&echo);
    for path in ["/healthz", "/readyz"] {
        let (status, _) = gw.admin_get(path).await;
        assert_eq!(status, 200, "admin {path} should answer 200");
    }
    let (status, body) = gw.admin_get("/config").await;
    assert_eq!(status, 200, "admin /config should answer 200");
    let doc: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("admin /config should be JSON ({e}): {body}"));
    let text = doc.to_string();
    for name in ["\"r1\"", "\"r2\"", "\"c1\""] {
        assert!(text.contains(name), "/config should mention {name}: {text}");
    }
    let metrics = gw.metrics().await;
    if let Err(e) = parse_prometheus(&metrics) {
        panic!("/metrics should be Prometheus text format: {e}\n{metrics}");
    }
    for name in ["gateway_build_info", "gateway_active_requests"] {
        assert!(
            metric_value(&metrics, name, &[]).is_some(),
            "/metrics should expose {name}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_metrics_and_access_log() {
    const N: usize = 7;
    const BODY: usize = 1000;
    let echo = Upstream::echo();
    let (gw, port) = start(&echo);
    let client = http_client();
    let mut ids = Vec::new();
    for i in 0..N {
        let resp = client
            .post(url(port, &format!("/one/{i}?q={i}")))
            .body(vec![b'x'; BODY])
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        ids.push(
            resp.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
        let _ = resp.bytes().await;
    }

    let want = N as f64;
    let requests =
        |m: &str, labels: &[(&str, &str)]| metric_value(m, "gateway_requests_total", labels);
    let durations = |m: &str| {
        metric_value(
            m,
            "gateway_request_duration_seconds_count",
            &[("route", "r1")],
        )
    };
    let ok_2xx = [("route", "r1"), ("code_class", "2xx")];
    // Metrics are recorded when a request ends; give the gateway a moment.
    let metrics = wait_metrics(&gw, Duration::from_secs(5), |m| {
        durations(m) == Some(want) && requests(m, &ok_2xx) == Some(want)
    })
    .await;
    assert_eq!(
        requests(&metrics, &ok_2xx),
        Some(want),
        "gateway_requests_total{{route=\"r1\",code_class=\"2xx\"}} should be {N}:\n{metrics}"
    );
    assert_eq!(
        requests(
            &metrics,
            &[("route", "r1"), ("listener", "public"), ("cluster", "c1")]
        ),
        Some(want),
        "gateway_requests_total should carry listener=public and cluster=c1 labels"
    );
    assert_eq!(
        durations(&metrics),
        Some(want),
        "gateway_request_duration_seconds_count{{route=\"r1\"}} should be {N}"
    );
    for name in ["gateway_active_requests", "gateway_build_info"] {
        assert!(
            metric_value(&metrics, name, &[]).is_some(),
            "{name} should exist"
        );
    }

    // Access log: one JSON line per request.
    let entries = gw.wait_access_log(N, Duration::from_secs(5), |v| v["route"] == "r1");
    assert_eq!(
        entries.len(),
        N,
        "expected {N} access-log lines for route r1 on stdout, got:\n{}",
        gw.stdout()
    );
    let fields = [
        "listener",
        "route",
        "cluster",
        "endpoint",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "request_id",
        "time",
    ];
    let mut logged_ids = BTreeSet::new();
    for e in &entries {
        for f in fields {
            assert!(
                e.get(f).is_some_and(|v| !v.is_null()),
                "access-log entry should have `{f}`: {e}"
            );
        }
        assert_eq!(e["listener"], "public", "listener in {e}");
        assert_eq!(e["cluster"], "c1", "cluster in {e}");
        assert_eq!(e["endpoint"], echo.address(), "endpoint in {e}");
        assert_eq!(e["method"], "POST", "method in {e}");
        assert!(
            e["path"].as_str().is_some_and(|p| p.starts_with("/one/")),
            "path in {e}"
        );
        assert_eq!(e["status"], 200, "status in {e}");
        assert!(
            e["bytes_in"].as_u64().is_some_and(|n| n >= BODY as u64),
            "bytes_in should count the {BODY}-byte request body: {e}"
        );
        assert!(
            e["bytes_out"].as_u64().is_some_and(|n| n > 0),
            "bytes_out should count the response body: {e}"
        );
        assert!(e["duration_ms"].is_number(), "duration_ms is a number: {e}");
        assert!(
            e["time"].as_str().is_some_and(|t| !t.is_empty()),
            "time is a string: {e}"
        );
        logged_ids.insert(e["request_id"].as_str().unwrap_or_default().to_string());
    }
    let sent_ids: BTreeSet<String> = ids.into_iter().collect();
    assert_eq!(
        logged_ids, sent_ids,
        "the access log's request ids should be the x-request-id values the client got"
    );
}

#[test]
fn readyz_means_listeners_accept_connections() {
    let admin = free_port();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let mut yaml = format!("admin: {{listen: \"127.0.0.1:{admin}\"}}\nlisteners:\n");
    for (i, p) in ports.iter().enumerate() {
        yaml += &format!("  - {{name: l{i}, listen: \"127.0.0.1:{p}\"}}\n");
    }
    yaml += "routes:\n  - {name: hello, direct_response: {status: 200, body: \"hi\\n\"}}\n";
    let gw = Gateway::start_readyz_only(tempfile::tempdir().expect("tempdir"), &yaml);
    // No retry: the moment /readyz says 200, traffic must be accepted.
    let refused: Vec<_> = gw
        .listener_addrs()
        .into_iter()
        .filter(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(1)).is_err())
        .collect();
    assert!(
        refused.is_empty(),
        "/readyz answered 200 while listeners {refused:?} still refused connections"
    );
}

/// `success_sample_ratio: 0` logs no successful request, yet every failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_samples_successes_but_keeps_failures() {
    let echo = Upstream::echo();
    let gw = Gateway::builder()
        .yaml("telemetry: {access_log: {success_sample_ratio: 0}}")
        .cluster("c1", &[&echo], "")
        .route("{name: ok, match: {path: /ok}, cluster: c1}")
        .start();
    let port = gw.port();
    let client = http_client();
    for _ in 0..20 {
        let r = client.get(url(port, "/ok")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    for _ in 0..5 {
        let r = client
            .get(url(port, "/missing"))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404);
    }
    let failures = gw.wait_access_log(5, Duration::from_secs(5), |v| v["status"] == 404);
    assert_eq!(failures.len(), 5, "every failed request is logged");
    let successes = gw
        .access_log()
        .into_iter()
        .filter(|v| v["status"] == 200)
        .count();
    assert_eq!(
        successes, 0,
        "successful requests are sampled out at ratio 0"
    );
    assert_eq!(echo.count(), 20, "sampling only affects the log");
}
