//! TLS termination with ALPN, h2c on plaintext listeners, and upstream TLS
//! origination with CA verification. Uses the system `curl` as the client.

use gateway_tests::{curl, free_port, http_client, tls_client, tpl, Gateway, TestCa, Upstream};

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
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("gateway test CA");
    ca.write_pem(dir.path(), "ca.pem");
    ca.issue(&["gw.test"]).write(dir.path(), "gw.pem", "gw.key");
    let (admin, tls_port) = (free_port(), free_port());
    let gw = Gateway::start_in(
        dir,
        &tpl(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: secure, listen: "127.0.0.1:${tls}", tls: {cert: gw.pem, key: gw.key}}
clusters:
  - {name: echo, endpoints: [{address: "${echo}"}]}
routes:
  - {name: all, cluster: echo}
"#,
            &[
                ("admin", &admin),
                ("tls", &tls_port),
                ("echo", &echo.address()),
            ],
        ),
    );
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
    let (admin, port) = (free_port(), free_port());
    let gw = Gateway::start(&tpl(
        r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
clusters:
  - {name: echo, endpoints: [{address: "${echo}"}]}
routes:
  - {name: all, cluster: echo}
"#,
        &[
            ("admin", &admin),
            ("port", &port),
            ("echo", &echo.address()),
        ],
    ));
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
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("upstream CA");
    ca.write_pem(dir.path(), "ca.pem");
    TestCa::new("some other CA").write_pem(dir.path(), "wrong-ca.pem");
    let up = Upstream::echo_tls("tls-up", &ca.issue(&["upstream.test"]));
    let (admin, port) = (free_port(), free_port());
    let _gw = Gateway::start_in(
        dir,
        &tpl(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
clusters:
  - {name: good, endpoints: [{address: "${up}"}], tls: {sni: upstream.test, ca: ca.pem}}
  - {name: bad, endpoints: [{address: "${up}"}], tls: {sni: upstream.test, ca: wrong-ca.pem}}
routes:
  - {name: good, match: {path_prefix: /good}, cluster: good}
  - {name: bad, match: {path_prefix: /bad}, cluster: bad}
"#,
            &[("admin", &admin), ("port", &port), ("up", &up.address())],
        ),
    );
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
