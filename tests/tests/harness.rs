//! Self-checks of the harness, without the gateway: when these fail, the
//! other suites' failures say nothing about the gateway.

use std::time::Duration;

use gateway_tests::{
    curl, http_client, pseudo_random_bytes, sha256_hex, tls_client, tpl, Gateway, TestCa, Upstream,
    DOWNLOAD_SEED, SWITCHABLE_BODY_LEN, SWITCHABLE_HEALTH_PATH,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_upstream_reports_what_it_received() {
    let up = Upstream::named("alpha");
    let body = pseudo_random_bytes(300_000, 7);
    let resp = http_client()
        .post(format!("http://{}/p/q?x=1", up.address()))
        .header("x-test", "a")
        .body(body.clone())
        .send()
        .await
        .expect("request to echo upstream");
    assert_eq!(resp.status(), 200, "echo answers 200");
    assert_eq!(
        resp.headers()["x-upstream"],
        "alpha",
        "x-upstream names the upstream"
    );
    let v: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(v["upstream"], "alpha");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/p/q?x=1");
    assert_eq!(v["headers"]["x-test"][0], "a");
    assert_eq!(v["body_len"], body.len() as u64);
    assert_eq!(v["body_sha256"], sha256_hex(&body));
    assert_eq!(up.count(), 1, "one request counted");
    assert_eq!(up.requests()[0].header("x-test"), Some("a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_speaks_h2c_and_generates_downloads() {
    let n = 3 * 1024 * 1024 + 5;
    let up = Upstream::big_download(n);
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = client
        .get(format!("http://{}/", up.address()))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "h2c works");
    let bytes = resp.bytes().await.expect("body");
    assert_eq!(bytes.len() as u64, n);
    assert_eq!(
        sha256_hex(&bytes),
        sha256_hex(&pseudo_random_bytes(n as usize, DOWNLOAD_SEED)),
        "generated body equals pseudo_random_bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstream_with_test_ca() {
    let ca = TestCa::new("harness CA");
    let leaf = ca.issue(&["upstream.test"]);
    let up = Upstream::echo_tls("tls-up", &leaf);
    let client = tls_client(&ca, "upstream.test", up.addr());
    let resp = client
        .get(format!("https://upstream.test:{}/x", up.port()))
        .send()
        .await
        .expect("TLS request trusted by the test CA");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN h2");

    let other = TestCa::new("other CA");
    let err = tls_client(&other, "upstream.test", up.addr())
        .get(format!("https://upstream.test:{}/x", up.port()))
        .send()
        .await;
    assert!(err.is_err(), "a client trusting another CA must fail");

    let dir = tempfile::tempdir().expect("tempdir");
    ca.write_pem(dir.path(), "ca.pem");
    let port = up.port().to_string();
    let resolve = format!("upstream.test:{port}:127.0.0.1");
    let url = format!("https://upstream.test:{port}/");
    let out = curl(
        &[
            "--cacert",
            "ca.pem",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &url,
        ],
        dir.path(),
    );
    assert_eq!(out.code, Some(0), "curl succeeds: {}", out.stderr);
    assert_eq!(out.stdout, "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_delays() {
    let up = Upstream::slow(Duration::from_millis(300));
    let t = std::time::Instant::now();
    let resp = http_client()
        .get(format!("http://{}/", up.address()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[test]
fn templates_fill_placeholders() {
    assert_eq!(
        tpl("a: ${x}, b: {c: ${y}}", &[("x", &1), ("y", &"z")]),
        "a: 1, b: {c: z}"
    );
}

#[test]
#[should_panic(expected = "${missing}")]
fn templates_reject_leftovers() {
    tpl("a: ${missing}", &[]);
}

/// The example of the fixture's documentation (`tests/src/lib.rs`), verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_example() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("c", &[&up], "")
        .route("{name: all, cluster: c}")
        .start();
    let resp = gw.get("/hello").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "a");
    gw.metric("gateway_requests_total", &[("route", "all")])
        .eventually(|v| v == 1.0)
        .await;
    assert_eq!(up.requests()[0].path, "/hello");
}

/// Switchable upstreams answer their health path apart from the counted traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchable_upstream_flips_health_and_failure() {
    let up = Upstream::switchable("s");
    let get = |path: &'static str| {
        let addr = up.address();
        async move {
            let resp = http_client()
                .get(format!("http://{addr}{path}"))
                .send()
                .await
                .expect("request");
            (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            )
        }
    };
    assert_eq!(get(SWITCHABLE_HEALTH_PATH).await.0, 200);
    up.set_healthy(false);
    assert_eq!(get(SWITCHABLE_HEALTH_PATH).await.0, 503);
    let (status, body) = get("/x").await;
    assert_eq!((status, body.len()), (200, SWITCHABLE_BODY_LEN));
    up.set_failing(true);
    assert_eq!(get("/x").await.0, 500);
    assert_eq!((up.count(), up.health_checks()), (2, 2));
}
