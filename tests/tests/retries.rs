//! Retries: on 503, on connect failure, and never replaying a POST on a
//! response-status condition.

use gateway_tests::{endpoints, fire, free_port, http_client, url, Gateway, Upstream};

fn start(route_name: &str, addresses: &[String], retries: &str) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .cluster_yaml(&format!(
            "{{name: c, lb: round_robin, connect_timeout: 1s, endpoints: [{}]}}",
            endpoints(addresses)
        ))
        .route(&format!(
            "{{name: {route_name}, cluster: c, retries: {retries}}}"
        ))
        .start();
    let port = gw.port();
    (gw, port)
}

async fn retries_total(gw: &Gateway, route: &str) -> f64 {
    gw.metric("gateway_retries_total", &[("route", route)])
        .value()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_on_503_then_success() {
    let up = Upstream::fail_once(503);
    let (gw, _) = start(
        "retry503",
        &[up.address()],
        "{attempts: 3, on: [connect-failure, 503]}",
    );
    let resp = gw.get("/x").await;
    assert_eq!(
        resp.status(),
        200,
        "the 503 should be retried and the second try's 200 returned"
    );
    assert_eq!(
        up.count(),
        2,
        "upstream should see the first try (503) and one retry"
    );
    let n = retries_total(&gw, "retry503").await;
    assert!(
        n >= 1.0,
        "gateway_retries_total{{route=\"retry503\"}} should be > 0 after a retry, got {n}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_past_dead_endpoint() {
    let live = Upstream::named("live");
    let dead = format!("127.0.0.1:{}", free_port());
    let (gw, port) = start(
        "dead-live",
        &[dead, live.address()],
        "{attempts: 3, on: [connect-failure]}",
    );
    // Every request answers 200: a connect failure on the dead endpoint is
    // retried on the live one.
    fire(port, "/r/", 20, 1).await;
    assert_eq!(live.count(), 20, "the live endpoint served all 20 requests");
    let n = retries_total(&gw, "dead-live").await;
    assert!(
        n >= 1.0,
        "gateway_retries_total{{route=\"dead-live\"}} should be > 0 after connect-failure retries, got {n}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_replayed_on_503() {
    let up = Upstream::fail_once(503);
    let (gw, port) = start("post", &[up.address()], "{attempts: 3, on: [503]}");
    let resp = http_client()
        .post(url(port, "/order"))
        .body("payload=1")
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status(),
        503,
        "a POST that reached the upstream must not be replayed: the client gets the 503"
    );
    assert_eq!(up.count(), 1, "the upstream must see the POST exactly once");
    let n = retries_total(&gw, "post").await;
    assert_eq!(n, 0.0, "no retry should be counted for the POST route");
}
