//! Upstream failures become 504 / 502 / 503 with the documented bodies.

use std::time::{Duration, Instant};

use gateway_tests::{free_port, http_client, url, Gateway, Upstream};

fn start(cluster_yaml: &str, route_extra: &str) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .cluster_yaml(cluster_yaml)
        .route(&format!("{{name: r, cluster: c{route_extra}}}"))
        .start();
    let port = gw.port();
    (gw, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_timeout_gives_504() {
    let slow = Upstream::slow(Duration::from_secs(3));
    let (_gw, port) = start(
        &format!(
            "{{name: c, endpoints: [{{address: \"{}\"}}]}}",
            slow.address()
        ),
        ", timeout: 1s",
    );
    let client = http_client();
    let t = Instant::now();
    let resp = client
        .get(url(port, "/slow"))
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    let elapsed = t.elapsed();
    assert_eq!(
        status, 504,
        "a 3 s upstream behind `timeout: 1s` should give 504"
    );
    assert!(
        elapsed < Duration::from_millis(1200),
        "the 504 should come after ~1 s (< 1.2 s), took {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "the 504 should come from the 1 s timeout, not earlier; took {elapsed:?}"
    );
    assert!(
        body.contains("upstream request timeout"),
        "504 body should contain `upstream request timeout`, got {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_endpoint_gives_502() {
    let dead = free_port();
    let (gw, _) = start(
        &format!("{{name: c, endpoints: [{{address: \"127.0.0.1:{dead}\"}}]}}"),
        "",
    );
    let resp = gw.get("/").await;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 502, "an endpoint nobody listens on should give 502");
    assert!(
        body.starts_with("upstream connect error"),
        "502 body should start with `upstream connect error`, got {body:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_zero_weights_give_503() {
    let a = Upstream::named("a");
    let b = Upstream::named("b");
    let (gw, _) = start(
        &format!(
            "{{name: c, endpoints: [{{address: \"{}\", weight: 0}}, {{address: \"{}\", weight: 0}}]}}",
            a.address(),
            b.address()
        ),
        "",
    );
    let resp = gw.get("/").await;
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(
        status, 503,
        "a cluster whose endpoints all have weight 0 should give 503"
    );
    assert_eq!(body, "no healthy upstream\n", "503 body");
    assert_eq!(a.count() + b.count(), 0, "no weight-0 endpoint may be used");
}
