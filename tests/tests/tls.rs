//! TLS termination with ALPN, h2c on plaintext listeners, and upstream TLS
//! origination with CA verification. Uses the system `curl` as the client.

use gateway_tests::{curl, http_client, tls_client, tpl, Gateway, TestCa, Upstream};

/// curl's `-w` output for a request whose body is discarded.
fn curl_w(args: &[&str], cwd: &std::path::Path) -> String {
    let mut all = vec!["-o", "/dev/null", "-w", "%{http_code} %{http_version}"];
    all.extend_from_slice(args);
    let out = curl(&all, cwd);
    assert_eq!(
        out.code,
        Some(0),
        "curl {args:?} should succeed; stderr: {}",
        out.stderr
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_negotiates_h2_and_h1() {
    let echo = Upstream::echo();
    let ca = TestCa::new("gateway test CA");
    let b = Gateway::builder()
        .listener_name("secure")
        .tls(&ca.issue(&["gw.test"]));
    ca.write_pem(b.dir_path(), "ca.pem");
    let gw = b
        .cluster("echo", &[&echo], "")
        .route("{name: all, cluster: echo}")
        .start();
    let tls_port = gw.port();
    let resolve = format!("gw.test:{tls_port}:127.0.0.1");
    let https = format!("https://gw.test:{tls_port}/");
    let base = ["--cacert", "ca.pem", "--resolve", resolve.as_str()];

    let mut args = base.to_vec();
    args.push(&https);
    assert_eq!(
        curl_w(&args, gw.dir()),
        "200 2",
        "curl over HTTPS trusting the test CA should get 200 over HTTP/2 (ALPN h2)"
    );

    let mut args = base.to_vec();
    args.extend_from_slice(&["--http1.1", https.as_str()]);
    assert_eq!(
        curl_w(&args, gw.dir()),
        "200 1.1",
        "curl --http1.1 over HTTPS should get 200 over HTTP/1.1"
    );

    // Without the test CA the certificate must not verify.
    let out = curl(
        &["--resolve", &resolve, "-o", "/dev/null", &https],
        gw.dir(),
    );
    assert_ne!(
        out.code,
        Some(0),
        "curl without --cacert must reject the gateway's test certificate"
    );

    // reqwest with the test CA as its only root.
    let addr = format!("127.0.0.1:{tls_port}").parse().expect("addr");
    let resp = tls_client(&ca, "gw.test", addr)
        .get(format!("https://gw.test:{tls_port}/via-reqwest"))
        .send()
        .await
        .expect("reqwest over TLS");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.version(),
        reqwest::Version::HTTP_2,
        "reqwest negotiates h2"
    );
    let doc: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(doc["path"], "/via-reqwest", "request reached the upstream");
    assert!(echo.count() >= 3, "upstream saw the proxied TLS requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_listener_speaks_h2c_and_h1() {
    let echo = Upstream::echo();
    let gw = Gateway::builder()
        .cluster("echo", &[&echo], "")
        .route("{name: all, cluster: echo}")
        .start();
    let port = gw.port();
    let http = format!("http://127.0.0.1:{port}/h2c");
    assert_eq!(
        curl_w(&["--http2-prior-knowledge", &http], gw.dir()),
        "200 2",
        "curl --http2-prior-knowledge should get HTTP/2 (h2c) from the plaintext listener"
    );
    assert_eq!(
        curl_w(&[&http], gw.dir()),
        "200 1.1",
        "plain HTTP/1.1 should work on the same port"
    );

    let h2c = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let resp = h2c.get(&http).send().await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let resp = http_client().get(&http).send().await.expect("h1 request");
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(echo.count(), 4, "all four requests were proxied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_verifies_against_the_configured_ca() {
    let b = Gateway::builder();
    let ca = TestCa::new("upstream CA");
    ca.write_pem(b.dir_path(), "ca.pem");
    TestCa::new("some other CA").write_pem(b.dir_path(), "wrong-ca.pem");
    let up = Upstream::echo_tls("tls-up", &ca.issue(&["upstream.test"]));
    let gw = b
        .yaml(&tpl(
            r#"
clusters:
  - {name: good, endpoints: [{address: "${up}"}], tls: {sni: upstream.test, ca: ca.pem}}
  - {name: bad, endpoints: [{address: "${up}"}], tls: {sni: upstream.test, ca: wrong-ca.pem}}
routes:
  - {name: good, match: {path_prefix: /good}, cluster: good}
  - {name: bad, match: {path_prefix: /bad}, cluster: bad}
"#,
            &[("up", &up.address())],
        ))
        .start();
    let port = gw.port();
    let client = http_client();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/good"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status(),
        200,
        "upstream TLS with SNI upstream.test and the right CA should work"
    );
    assert_eq!(
        resp.headers().get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"tls-up"[..]),
        "the TLS upstream answered"
    );
    assert_eq!(up.count(), 1);

    let resp = client
        .get(format!("http://127.0.0.1:{port}/bad"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        resp.status(),
        502,
        "upstream TLS verified against the wrong CA must fail with 502"
    );
    assert_eq!(
        up.count(),
        1,
        "no request may reach the upstream over an unverified connection"
    );
}
