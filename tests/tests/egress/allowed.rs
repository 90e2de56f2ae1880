//! Allowed traffic keeps its bytes: a 10 MiB download through the proxy
//! has the upstream's SHA-256, over plain HTTP (absolute form), HTTPS in a
//! CONNECT tunnel, and TLS originated by the gateway.

use gateway_tests::{Reply, TestCa, Upstream, DOWNLOAD_SEED};

use crate::common::*;

/// A TLS upstream presenting `leaf` that answers every request with the
/// [`BIG`] download body.
fn big_tls_upstream(name: &str, leaf: &gateway_tests::LeafCert) -> Upstream {
    Upstream::start_tls(name, leaf, |_| {
        Reply::status(200)
            .header("content-type", "application/octet-stream")
            .header("x-upstream", "partner-tls")
            .generated(BIG as u64, DOWNLOAD_SEED)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_absolute_form_keeps_a_10_mib_body_intact() {
    let up = Upstream::big_download(BIG as u64);
    let port = up.port();
    let eg = Egress::start(
        None,
        r#"
egress:
  caller_groups: [{name: functions, cidrs: [127.0.0.0/8]}]
  dns: {static: {api.partner.test: 127.0.0.1}}
  rules:
    - {name: partner-http, hosts: [api.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &port)],
    );
    let url = format!("http://{PARTNER}:{port}/big");
    let proxy = eg.proxy_url();

    // curl -x: absolute-form `GET http://api.partner.test:PORT/big`.
    let d = curl_download(&["-x", &proxy, &url], &[], eg.dir(), "big.bin").await;
    d.assert_big(&eg, "200 000", &format!("curl -x {proxy} {url}"));

    // reqwest with an HTTP proxy.
    let client = proxied_client(&proxy, None, None);
    let (status, headers, len, sha) = reqwest_download(&eg, &client, &url).await;
    assert_eq!(status, 200, "reqwest via proxy {proxy}: GET {url}");
    assert_eq!(
        headers.get("x-upstream").map(|v| v.as_bytes()),
        Some(&b"download"[..]),
        "the answer must come from the download upstream"
    );
    assert_big(len, &sha, "reqwest via proxy");

    // What the upstream saw: origin form, the URL's Host, no proxy headers.
    let reqs = up.requests();
    assert_eq!(
        reqs.len(),
        2,
        "the upstream must see exactly the two downloads"
    );
    for r in &reqs {
        assert_eq!(r.path, "/big", "forwarded in origin form: {r:?}");
        assert_eq!(
            r.header("host"),
            Some(format!("{PARTNER}:{port}").as_str()),
            "Host must be the URL's authority: {r:?}"
        );
        for h in ["proxy-authorization", "proxy-connection"] {
            assert!(
                r.header(h).is_none(),
                "hop header {h} must not be forwarded: {r:?}"
            );
        }
    }

    eg.assert_requests("allow", "partner-http", 2.0).await;
    let lines = eg.expect_lines(2, "one access-log line per download expected", |v| {
        v["host"] == PARTNER && v["decision"] == "allow"
    });
    for l in &lines {
        assert_eq!(l["port"], port, "{l}");
        assert_eq!(
            l["principal"], "cidr:functions",
            "caller group principal: {l}"
        );
        assert_eq!(l["rule"], "partner-http", "{l}");
        assert_eq!(l["method"], "HTTP", "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["bytes_down"], BIG as u64, "bytes_down is the body: {l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_via_connect_keeps_a_10_mib_body_intact() {
    let ca = TestCa::new("egress partner CA");
    let up = big_tls_upstream("partner-tls", &ca.issue(&[PARTNER]));
    let port = up.port();
    let eg = Egress::start(
        Some(&ca),
        r#"
egress:
  sni_must_match_connect: true
  dns: {static: {api.partner.test: 127.0.0.1}}
  rules:
    - {name: partner-https, hosts: [api.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &port)],
    );
    let url = format!("https://{PARTNER}:{port}/big");
    let proxy = eg.proxy_url();

    // curl with HTTPS_PROXY, as a workload would run it.
    let d = curl_download(
        &["--cacert", "ca.pem", &url],
        &[("HTTPS_PROXY", &proxy)],
        eg.dir(),
        "big.bin",
    )
    .await;
    d.assert_big(&eg, "200 200", &format!("HTTPS_PROXY={proxy} curl {url}"));

    // reqwest: an https:// URL through the proxy is a CONNECT tunnel.
    let client = proxied_client(&proxy, Some(&ca), None);
    let (status, _, len, sha) = reqwest_download(&eg, &client, &url).await;
    assert_eq!(status, 200, "reqwest via proxy {proxy}: GET {url}");
    assert_big(len, &sha, "reqwest through the CONNECT tunnel");
    assert_eq!(up.count(), 2, "the TLS upstream must see both downloads");

    eg.assert_requests("allow", "partner-https", 2.0).await;
    let lines = eg.expect_lines(2, "one access-log line per tunnel expected", |v| {
        v["method"] == "CONNECT" && v["decision"] == "allow"
    });
    for l in &lines {
        assert_eq!(l["host"], PARTNER, "{l}");
        assert_eq!(l["port"], port, "{l}");
        assert_eq!(l["rule"], "partner-https", "{l}");
        assert!(
            l["bytes_down"].as_u64().unwrap_or(0) > BIG as u64,
            "a tunnel's bytes_down counts the TLS records (more than the body): {l}"
        );
        assert!(l["bytes_up"].as_u64().unwrap_or(0) > 0, "{l}");
    }
    let metrics = eg.gw.metrics().await;
    let tunnels = gateway_tests::metric_value(
        &metrics,
        "gateway_egress_tunnel_duration_seconds_count",
        &[],
    )
    .unwrap_or(0.0);
    assert_eq!(
        tunnels, 2.0,
        "gateway_egress_tunnel_duration_seconds must observe both tunnels"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_origination_plain_http_in_verified_tls_out() {
    let ca = TestCa::new("egress partner CA");
    let up = big_tls_upstream("partner-tls", &ca.issue(&[PARTNER]));
    // Negative controls: a certificate from a CA the rule does not name,
    // and one from the right CA for another name.
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = Upstream::echo_tls("rogue", &rogue_ca.issue(&["rogue.partner.test"]));
    let misnamed = Upstream::echo_tls("misnamed", &ca.issue(&["other.test"]));
    let eg = Egress::start(
        Some(&ca),
        r#"
egress:
  dns:
    static: {api.partner.test: 127.0.0.1, rogue.partner.test: 127.0.0.1, misnamed.partner.test: 127.0.0.1}
  rules:
    - name: partner-originate
      hosts: [api.partner.test, rogue.partner.test, misnamed.partner.test]
      ports: [${port}, ${rogue}, ${misnamed}]
      originate_tls: true
      ca: ca.pem
      allow_cidrs: [127.0.0.0/8]
"#,
        &[
            ("port", &up.port()),
            ("rogue", &rogue.port()),
            ("misnamed", &misnamed.port()),
        ],
    );
    // The caller speaks plain HTTP to the TLS port; the gateway speaks TLS.
    let url = format!("http://{PARTNER}:{}/big", up.port());
    let proxy = eg.proxy_url();

    let d = curl_download(&["-x", &proxy, &url], &[], eg.dir(), "big.bin").await;
    d.assert_big(
        &eg,
        "200 000",
        &format!("curl -x {proxy} {url} (originate_tls)"),
    );
    let client = proxied_client(&proxy, None, None);
    let (status, _, len, sha) = reqwest_download(&eg, &client, &url).await;
    assert_eq!(status, 200, "reqwest via proxy {proxy}: GET {url}");
    assert_big(len, &sha, "reqwest, TLS originated by the gateway");
    let reqs = up.requests();
    assert_eq!(
        reqs.len(),
        2,
        "the TLS-only upstream must have received both requests (so TLS was spoken)"
    );
    for r in &reqs {
        assert_eq!(r.path, "/big", "{r:?}");
        assert_eq!(r.version, "HTTP/1.1", "{r:?}");
    }

    // The CA and the name are verified: both negatives fail with 502 and no
    // request reaches either server.
    for (host, port, why) in [
        (
            "rogue.partner.test",
            rogue.port(),
            "a certificate from an untrusted CA",
        ),
        (
            "misnamed.partner.test",
            misnamed.port(),
            "a certificate for another name",
        ),
    ] {
        let url = format!("http://{host}:{port}/x");
        let r = raw_exchange(
            eg.addr(),
            &absolute_get(&url, &format!("{host}:{port}"), &[]),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {url} via proxy: {e}\n{}", eg.stderr()));
        assert_eq!(
            r.status, 502,
            "originating TLS to {url} ({why}) must fail with 502, got {} {:?}",
            r.status, r.body
        );
    }
    assert_eq!(
        rogue.count(),
        0,
        "no request may reach the untrusted server"
    );
    assert_eq!(
        misnamed.count(),
        0,
        "no request may reach the misnamed server"
    );
}
