//! The circuit breaker and TCP health checks.

use super::*;

// 5. Circuit breaker.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_sheds_load_over_max_requests() {
    const DELAY: Duration = Duration::from_secs(2);
    let slow = Upstream::switchable("slow");
    slow.set_delay(DELAY);
    let gw = Gateway::builder()
        .yaml(NO_ACCESS_LOG)
        .cluster("cb", &[&slow], "circuit_breaker: {max_requests: 10}")
        .route("{name: all, cluster: cb}")
        .start();
    let port = gw.port();
    let client = http_client();
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (client, barrier) = (client.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let start = Instant::now();
            let resp = client
                .get(url(port, &format!("/cb/{i}")))
                .send()
                .await
                .expect("request through the gateway");
            let status = resp.status().as_u16();
            let overloaded = resp
                .headers()
                .get("x-gateway-overloaded")
                .map(|v| v.to_str().unwrap_or("").to_string());
            let body = resp.text().await.unwrap_or_default();
            (status, overloaded, body, start.elapsed())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("request task"));
    }
    let ok: Vec<_> = results.iter().filter(|r| r.0 == 200).collect();
    let shed: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    let slowest_shed = shed.iter().map(|r| r.3).max().unwrap_or_default();
    let fastest_ok = ok.iter().map(|r| r.3).min().unwrap_or_default();
    eprintln!(
        "circuit breaker: {} x 200 (fastest {fastest_ok:?}), {} x 503 (slowest {slowest_shed:?}), \
         upstream saw {} requests, at most {} at once",
        ok.len(),
        shed.len(),
        slow.count(),
        slow.max_concurrent()
    );
    assert_eq!(
        (ok.len(), shed.len()),
        (10, 40),
        "max_requests 10, 50 concurrent: expected 10 x 200 and 40 x 503, got statuses {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    for (status, overloaded, body, elapsed) in &shed {
        assert_eq!(
            overloaded.as_deref(),
            Some("true"),
            "a shed {status} must carry x-gateway-overloaded: true"
        );
        assert_eq!(body, "upstream overloaded\n", "body of a shed request");
        assert!(
            *elapsed < DELAY / 2,
            "a shed request must be refused at once (well under the {DELAY:?} upstream delay), took {elapsed:?}"
        );
    }
    assert!(
        fastest_ok >= DELAY,
        "admitted requests wait for the slow upstream ({DELAY:?}), fastest took {fastest_ok:?}"
    );
    assert!(
        slow.max_concurrent() <= 10,
        "the upstream must never see more than 10 concurrent requests, saw {}",
        slow.max_concurrent()
    );
    assert_eq!(
        slow.count(),
        10,
        "only the 10 admitted requests reach the upstream"
    );
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "gateway_circuit_open_total", &[("cluster", "cb")]),
        40.0,
        "expected gateway_circuit_open_total == 40"
    );
}

// ---------------------------------------------------------------------------
// TCP health checks and `initially_healthy: false`.
// ---------------------------------------------------------------------------

/// `type: tcp` checks only connect: an endpoint whose HTTP health path
/// fails is healthy, a dead port is not. Both start unhealthy
/// (`initially_healthy: false`); the live one becomes healthy on its first
/// check. Were it not, zone a would be in panic and the dead port would get
/// traffic (502s), which `fire` would catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_health_check_marks_only_the_dead_port_unhealthy() {
    let live = Upstream::switchable("live");
    live.set_healthy(false); // an HTTP check would fail; a TCP one must not
    let dead = format!("127.0.0.1:{}", free_port());
    let gw = Gateway::builder()
        .yaml("gateway: {locality: {region: r1, zone: a}}")
        .yaml(NO_ACCESS_LOG)
        .cluster_yaml(&tpl(
            r#"
name: tcp
endpoints:
  - {address: "${live}", zone: a, region: r1}
  - {address: "${dead}", zone: a, region: r1}
health_check: {type: tcp, interval: 2s, jitter_percent: 0, timeout: 2s, healthy_threshold: 1, unhealthy_threshold: 1, initially_healthy: false}"#,
            &[("live", &live.address()), ("dead", &dead)],
        ))
        .route("{name: all, cluster: tcp}")
        .start();
    let port = gw.port();
    // Checks run at once, then every 2 s: the first one decides.
    let took = gw
        .metric(
            "gateway_endpoint_healthy",
            &[("cluster", "tcp"), ("zone", "a")],
        )
        .within(Duration::from_secs(5))
        .eventually_eq(1.0)
        .await;
    fire(port, "/r/", 100, 4).await;
    eprintln!(
        "tcp check: 1 of 2 healthy {took:?} after start; live served {} of 100 requests",
        live.count()
    );
    assert_eq!(
        live.count(),
        100,
        "only the live endpoint is healthy: it serves all 100 requests (the dead port none)"
    );
}

// ---------------------------------------------------------------------------
