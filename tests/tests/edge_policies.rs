//! Edge policies users bring from Envoy, Istio and NGINX: redirects (route
//! action and the listener's HTTP→HTTPS one), CORS answered at the
//! gateway, and fault injection (delays, HTTP and gRPC aborts, header
//! triggered, capped, never applied to mirror copies).

use std::time::{Duration, Instant};

use gateway_tests::{http_client, three_sigma, Gateway, Upstream};

/// A client that shows redirects instead of following them.
fn no_follow() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_redirect_form_gives_its_location_and_status() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route("{name: https, match: {path_prefix: /secure}, redirect: {scheme: https}}")
        .route("{name: tls-port, match: {path_prefix: /port}, redirect: {scheme: https, port: 8443, status: 308}}")
        .route("{name: moved, match: {path_prefix: /old}, redirect: {host: new.test, prefix_rewrite: /new, status: 302}}")
        .route("{name: page, match: {path: /page}, redirect: {path: /landing, strip_query: true, status: 303}}")
        .route("{name: temp, match: {path_prefix: /tmp}, redirect: {status: 307, port: 9000}}")
        .route("{name: rest, cluster: a}")
        .start();
    let cases = [
        ("/secure/x?q=1", 301, "https://site.test/secure/x?q=1"),
        ("/port/x", 308, "https://site.test:8443/port/x"),
        ("/old/a/b?k=v", 302, "http://new.test:8080/new/a/b?k=v"),
        ("/page?utm=1", 303, "http://site.test:8080/landing"),
        ("/tmp/f", 307, "http://site.test:9000/tmp/f"),
    ];
    let client = no_follow();
    for (path, status, location) in cases {
        let resp = client
            .get(gw.url(path))
            .header("host", "site.test:8080")
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), status, "{path}");
        assert_eq!(resp.headers()["location"], location, "{path}");
    }
    assert_eq!(up.count(), 0, "redirects are answered at the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_listener_redirects_everything_to_https_in_one_line() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .catch_all(&up)
        .listener("redirect: {scheme: https}")
        .start();
    let resp = no_follow()
        .get(gw.url("/any/path?x=1"))
        .header("host", "shop.test:8080")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://shop.test/any/path?x=1");
    assert_eq!(up.count(), 0);
}

const CORS_ROUTE: &str = r#"{name: api, cluster: a, cors: {allow_origins: [{exact: "https://app.test"}, {suffix: ".corp.test"}], allow_methods: [GET, PUT], allow_headers: [content-type, x-token], expose_headers: [x-request-id], max_age: 10m, allow_credentials: true}}"#;

/// A browser's preflight from `origin` for a PUT with `x-token`.
async fn preflight(gw: &Gateway, origin: &str) -> reqwest::Response {
    http_client()
        .request(reqwest::Method::OPTIONS, gw.url("/items/1"))
        .header("origin", origin)
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "x-token")
        .send()
        .await
        .expect("preflight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_from_an_allowed_origin_is_answered_at_the_gateway() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route(CORS_ROUTE)
        .start();
    let resp = preflight(&gw, "https://app.test").await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.test");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "content-type, x-token");
    assert_eq!(h["access-control-max-age"], "600");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["vary"], "Origin");
    assert_eq!(up.count(), 0, "the preflight never reached the upstream");
    let preflights = [("route", "api"), ("result", "preflight")];
    gw.metric("gateway_cors_total", &preflights)
        .eventually_eq(1.0)
        .await;

    // The actual request from a suffix-matched origin: proxied, with the
    // CORS fields added to the upstream's answer.
    let actual = http_client()
        .put(gw.url("/items/1"))
        .header("origin", "https://b.corp.test")
        .send()
        .await
        .expect("actual request");
    assert_eq!(actual.status(), 200);
    let h = actual.headers();
    assert_eq!(h["access-control-allow-origin"], "https://b.corp.test");
    assert_eq!(h["access-control-expose-headers"], "x-request-id");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(up.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disallowed_origin_gets_no_cors_fields() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route(CORS_ROUTE)
        .start();
    let pre = preflight(&gw, "https://evil.test").await;
    let actual = http_client()
        .get(gw.url("/items/1"))
        .header("origin", "https://app.test.evil.test")
        .send()
        .await
        .expect("actual request");
    for resp in [pre, actual] {
        let cors: Vec<_> = resp
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .collect();
        assert!(
            cors.is_empty(),
            "CORS fields for a disallowed origin: {cors:?}"
        );
    }
    // Not a preflight the gateway answers: both went on to the route.
    assert_eq!(up.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_percent_abort_lands_within_three_sigma() {
    const N: u64 = 2000;
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route("{name: flaky, cluster: a, fault: {abort: {http_status: 503, percentage: 10}}}")
        .start();
    let client = http_client();
    let mut aborted = 0u64;
    for i in 0..N {
        let resp = client
            .get(gw.url(&format!("/r/{i}")))
            .send()
            .await
            .expect("request");
        match resp.status().as_u16() {
            503 => {
                assert_eq!(resp.text().await.expect("body"), "fault filter abort\n");
                aborted += 1;
            }
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let (mean, sigma3) = three_sigma(N, 0.10);
    assert!(
        (aborted as f64 - mean).abs() <= sigma3,
        "{aborted} of {N} aborted; expected {mean} ± {sigma3:.1}"
    );
    assert_eq!(
        up.count(),
        N - aborted,
        "aborted requests never reached the upstream"
    );
    let kind = [("route", "flaky"), ("kind", "abort")];
    gw.metric("gateway_faults_total", &kind)
        .eventually_eq(aborted as f64)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_add_their_time_and_header_triggered_faults_hit_only_marked_requests() {
    let (up, shadow) = (Upstream::named("a"), Upstream::named("shadow"));
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .cluster("shadow", &[&shadow], "")
        .route(
            "{name: slow, match: {path_prefix: /slow}, cluster: a, \
             fault: {delay: {fixed: 400ms}}}",
        )
        .route(
            "{name: marked, cluster: a, mirror: [{cluster: shadow}], \
             fault: {headers: {x-fault: \"yes\"}, abort: {grpc_status: 14}}}",
        )
        .start();
    let client = http_client();
    let started = Instant::now();
    assert_eq!(gw.get("/slow/1").await.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // Unmarked: proxied. Marked: a trailers-only gRPC UNAVAILABLE from the
    // gateway, while its mirror copy still reaches the shadow.
    assert_eq!(gw.get("/plain").await.status(), 200);
    let marked = client
        .get(gw.url("/marked"))
        .header("x-fault", "yes")
        .send()
        .await
        .expect("request");
    assert_eq!(marked.status(), 200);
    assert_eq!(marked.headers()["grpc-status"], "14");
    assert_eq!(marked.headers()["content-type"], "application/grpc");
    let paths: Vec<String> = up.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/slow/1", "/plain"],
        "the marked request was aborted"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.count() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copies: Vec<String> = shadow.requests().into_iter().map(|r| r.path).collect();
    assert!(
        copies.contains(&"/marked".to_string()),
        "mirror copies: {copies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_delays_stop_at_max_active_delays() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route("{name: capped, cluster: a, fault: {delay: {fixed: 1500ms}, max_active_delays: 2}}")
        .start();
    let client = http_client();
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (client, url) = (client.clone(), gw.url(&format!("/c/{i}")));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let status = client.get(url).send().await.expect("request").status();
            (status, t.elapsed())
        }));
    }
    let mut delayed = 0;
    for t in tasks {
        let (status, took) = t.await.expect("task");
        assert_eq!(status, 200);
        if took >= Duration::from_millis(1500) {
            delayed += 1;
        }
    }
    assert_eq!(delayed, 2, "only max_active_delays requests were delayed");
    for (kind, n) in [("delay", 2.0), ("delay_over_limit", 3.0)] {
        gw.metric(
            "gateway_faults_total",
            &[("route", "capped"), ("kind", kind)],
        )
        .eventually_eq(n)
        .await;
    }
}
