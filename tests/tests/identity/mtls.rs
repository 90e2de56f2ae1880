//! mTLS with SPIFFE trust domains: every bad client certificate fails the
//! TLS handshake (no HTTP status), and trust-domain CA bundles reload
//! without a restart.

use std::time::{Duration, Instant};

use gateway_tests::{
    curl, metric_value, mtls_client, tls_exchange, Gateway, GatewayBuilder, LeafCert, LeafSpec,
    TestCa, TlsOutcome, Upstream,
};

use crate::common::*;

/// A cluster-A-like gateway on 127.0.1.1 with `client_auth: require` and
/// the default `client_trust_domains` (every trust domain with a `ca`),
/// routing everything to `up`. `extra_tds` is appended to `trust_domains`.
fn mtls_gateway(b: GatewayBuilder, up: &Upstream, extra_tds: &str) -> GatewayBuilder {
    b.config(
        r#"
admin: {listen: "${ip}:${admin}"}
trust_domains:
  - name: cluster-a.example
    ca: a-ca.pem
  - name: cluster-b.example
    ca: b-ca.pem
${extra}
listeners:
  - name: border
    listen: "${ip}:${port}"
    tls: {cert: gw-a.pem, key: gw-a.key, client_auth: require}
clusters:
  - {name: svc, endpoints: [{address: "${up}"}]}
routes:
  - name: svc
    cluster: svc
    identity: {xfcc: true}
"#,
        &[
            ("ip", &A_GW_IP),
            ("up", &up.address()),
            ("extra", &extra_tds),
        ],
    )
}

struct MtlsFixture {
    gw: Gateway,
    up: Upstream,
    a_ca: TestCa,
    b_ca: TestCa,
    port: u16,
}

fn start_mtls_gateway() -> MtlsFixture {
    let a_ca = TestCa::new("cluster-a.example CA");
    let b_ca = TestCa::new("cluster-b.example CA");
    let up = Upstream::named_at(ip(A_SVC_IP), "svc");
    let dir = tempfile::tempdir().expect("tempdir");
    a_ca.write_pem(dir.path(), "a-ca.pem");
    b_ca.write_pem(dir.path(), "b-ca.pem");
    a_ca.issue_svid(A_GW_ID, &[A_GW_HOST])
        .write(dir.path(), "gw-a.pem", "gw-a.key");
    let gw = mtls_gateway(Gateway::builder().in_dir(dir), &up, "").start();
    let port = gw.port();
    MtlsFixture {
        gw,
        up,
        a_ca,
        b_ca,
        port,
    }
}

/// `GET https://gw.cluster-a.example:PORT{path}` presenting `cert`.
async fn call(f: &MtlsFixture, cert: Option<&LeafCert>, path: &str) -> Result<Outcome, String> {
    let client = mtls_client(&f.a_ca, cert, A_GW_HOST, sock(A_GW_IP, f.port));
    send(
        &client,
        "GET",
        &format!("https://{A_GW_HOST}:{}{path}", f.port),
        None,
        &[],
    )
    .await
}

/// A raw rustls exchange (`GET path`) with the listener, presenting `cert`.
async fn raw(f: &MtlsFixture, cert: Option<&LeafCert>, path: &str, tls12_only: bool) -> TlsOutcome {
    tls_exchange(
        &f.a_ca,
        cert,
        A_GW_HOST,
        sock(A_GW_IP, f.port),
        path,
        tls12_only,
    )
    .await
}

/// Asserts the client with `cert` is refused at the TLS layer and reaches
/// nothing: reqwest gets a transport error (no HTTP status); a TLS 1.2-only
/// client's handshake itself fails (in 1.2 the server verifies the client
/// certificate before its Finished); a TLS 1.3 client, whose handshake ends
/// before the server's verdict, gets an alert (or a transport error) and
/// no answer.
async fn assert_handshake_refused(f: &MtlsFixture, what: &str, cert: Option<&LeafCert>) {
    let path = format!("/refused/{}", what.replace(' ', "-"));
    let before = f.up.count();
    match call(f, cert, &path).await {
        Ok(out) => panic!(
            "{what}: the TLS handshake must fail, but the gateway answered HTTP {} ({:?})\n--- gateway stderr ---\n{}",
            out.status,
            out.body,
            tail(&f.gw.stderr(), 30)
        ),
        Err(e) => eprintln!("{what}: reqwest refused as expected: {e}"),
    }
    match raw(f, cert, &path, true).await {
        TlsOutcome::HandshakeFailed(e) => {
            eprintln!("{what}: TLS 1.2 handshake failed as expected: {e}")
        }
        other => panic!(
            "{what}: a TLS 1.2 handshake must fail, got {other:?}\n--- gateway stderr ---\n{}",
            tail(&f.gw.stderr(), 30)
        ),
    }
    match raw(f, cert, &path, false).await {
        TlsOutcome::HandshakeFailed(e) | TlsOutcome::RefusedAfterHandshake(e) => {
            eprintln!("{what}: TLS 1.3 refused as expected: {e}")
        }
        other => panic!(
            "{what}: a TLS 1.3 client must get a TLS alert or error and no HTTP answer, got {other:?}\n--- gateway stderr ---\n{}",
            tail(&f.gw.stderr(), 30)
        ),
    }
    assert_eq!(
        f.up.count(),
        before,
        "{what}: the upstream must see nothing: {:?}",
        seen(&f.up, &path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_client_certificates_fail_the_handshake() {
    let f = start_mtls_gateway();

    // Controls: good SVIDs of both trust domains get through, and the
    // upstream learns who called.
    let web_id = "spiffe://cluster-b.example/ns/shop/sa/web";
    let web = f.b_ca.issue_svid(web_id, &[]);
    let out = call(&f, Some(&web), "/ok/b").await.unwrap_or_else(|e| {
        panic!(
            "a valid cluster-b SVID must be accepted: {e}\n--- gateway stderr ---\n{}",
            tail(&f.gw.stderr(), 40)
        )
    });
    assert_status(&f.gw, "valid cluster-b SVID", &out, 200);
    let req = seen(&f.up, "/ok/b").expect("upstream saw /ok/b");
    assert_eq!(
        identity_header(&req).as_deref(),
        Some(expected_identity(web_id, B_TD, "mtls", None).as_str()),
        "x-gateway-identity of an mTLS-only caller"
    );
    for tls12_only in [true, false] {
        let got = raw(&f, Some(&web), "/ok/raw", tls12_only).await;
        assert!(
            matches!(&got, TlsOutcome::Answered(l) if l.starts_with("HTTP/1.1 200")),
            "a valid SVID over raw rustls (TLS 1.2 only: {tls12_only}) must get 200, got {got:?}"
        );
    }
    let a_id = "spiffe://cluster-a.example/ns/ops/sa/tool";
    let out = call(&f, Some(&f.a_ca.issue_svid(a_id, &[])), "/ok/a")
        .await
        .unwrap_or_else(|e| panic!("a valid cluster-a SVID must be accepted: {e}"));
    assert_status(&f.gw, "valid cluster-a SVID", &out, 200);

    // No certificate where one is required.
    assert_handshake_refused(&f, "no client certificate", None).await;
    let dir = f.gw.dir();
    let https = format!("https://{A_GW_HOST}:{}/refused/curl", f.port);
    let resolve = format!("{A_GW_HOST}:{}:{A_GW_IP}", f.port);
    // curl's exit code and `%{http_code}` for `https`, with `extra` arguments.
    let curl_code = |extra: &[&str]| {
        let mut args = vec!["--cacert", "a-ca.pem", "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.extend(["-o", "/dev/null", "-w", "%{http_code}", &https]);
        curl(&args, dir)
    };
    let out = curl_code(&[]);
    assert!(
        out.code != Some(0) && out.stdout.trim() == "000",
        "curl without a client certificate must fail (non-zero exit, no HTTP status): {out:?}"
    );

    // A certificate from a CA no trust domain has, claiming a cluster-b ID.
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = rogue_ca.issue_svid(web_id, &[]);
    assert_handshake_refused(&f, "unknown CA", Some(&rogue)).await;
    rogue.write(dir, "rogue.pem", "rogue.key");
    let out = curl_code(&["--cert", "rogue.pem", "--key", "rogue.key"]);
    assert!(
        out.code != Some(0) && out.stdout.trim() == "000",
        "curl with a certificate from an unknown CA must fail (non-zero exit, no HTTP status): {out:?}"
    );

    // Cross-trust-domain spoof: B's CA signing a cluster-a ID.
    let spoof = f
        .b_ca
        .issue_svid("spiffe://cluster-a.example/ns/ops/sa/admin", &[]);
    assert_handshake_refused(&f, "cluster-b CA claiming a cluster-a ID", Some(&spoof)).await;

    let cases: Vec<(&str, LeafSpec)> = vec![
        (
            "two URI SANs",
            LeafSpec::new()
                .uri(web_id)
                .uri("spiffe://cluster-b.example/ns/shop/sa/other"),
        ),
        ("no URI SAN", LeafSpec::new().dns("web.cluster-b.example")),
        (
            "a non-SPIFFE URI SAN",
            LeafSpec::new().uri("https://web.cluster-b.example/"),
        ),
        ("expired", LeafSpec::new().uri(web_id).expired()),
        ("not yet valid", LeafSpec::new().uri(web_id).not_yet_valid()),
        (
            "a CA certificate as the leaf",
            LeafSpec::new().uri(web_id).ca(),
        ),
        (
            "no digitalSignature key usage",
            LeafSpec::new().uri(web_id).without_digital_signature(),
        ),
    ];
    for (what, spec) in &cases {
        let cert = f.b_ca.issue_with(spec);
        assert_handshake_refused(&f, what, Some(&cert)).await;
    }

    // The good SVID still works after all that (nothing got stuck).
    let out = call(&f, Some(&web), "/ok/again")
        .await
        .unwrap_or_else(|e| panic!("valid SVID after the refusals: {e}"));
    assert_status(&f.gw, "valid SVID after the refusals", &out, 200);

    let metrics = f.gw.metrics().await;
    let ok_b = authn(
        &metrics,
        &[
            ("method", "mtls"),
            ("trust_domain", B_TD),
            ("result", "success"),
        ],
    );
    assert!(
        ok_b >= 2.0,
        "gateway_authn_total{{method=\"mtls\",trust_domain=\"{B_TD}\",result=\"success\"}} counts the two good cluster-b handshakes, got {ok_b}"
    );
    let untrusted = authn(&metrics, &[("method", "mtls"), ("result", "untrusted")]);
    assert!(
        untrusted >= 1.0,
        "gateway_authn_total{{method=\"mtls\",result=\"untrusted\"}} counts the unknown-CA handshakes, got {untrusted}; mtls series: {:?}",
        metrics
            .lines()
            .filter(|l| l.starts_with("gateway_authn_total") && l.contains("mtls"))
            .collect::<Vec<_>>()
    );
}

/// Polls `call` with `cert` until it is accepted (200) or refused at the TLS
/// layer, as `want_ok` says; panics after `limit`.
async fn wait_mtls(f: &MtlsFixture, what: &str, cert: &LeafCert, want_ok: bool, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = call(f, Some(cert), "/reload-probe").await;
        let ok = matches!(&got, Ok(o) if o.status == 200);
        if ok == want_ok && (ok || got.is_err()) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not {} within {limit:?}; last outcome {got:?}\n--- gateway stderr ---\n{}",
            if want_ok {
                "accepted"
            } else {
                "refused at the TLS layer"
            },
            tail(&f.gw.stderr(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_domain_cas_reload_without_restart() {
    let mut f = start_mtls_gateway();
    let pid = f.gw.pid();
    let limit = Duration::from_secs(10);

    // Cluster C is not trusted yet.
    let c_ca = TestCa::new("cluster-c.example CA");
    let c_client = c_ca.issue_svid("spiffe://cluster-c.example/ns/pay/sa/api", &[]);
    assert_handshake_refused(&f, "cluster-c before it is configured", Some(&c_client)).await;

    // Add cluster C (its CA file first, then the config naming it).
    f.gw.write_file("c-ca.pem", &c_ca.cert_pem());
    f.gw.rewrite(mtls_gateway(
        f.gw.same_ports(),
        &f.up,
        &format!("  - name: {C_TD}\n    ca: c-ca.pem"),
    ));
    f.gw.wait_generation_at_least(2, limit).await;
    wait_mtls(
        &f,
        "cluster-c SVID after adding cluster C",
        &c_client,
        true,
        limit,
    )
    .await;

    // Rotate cluster B's CA by rewriting only the bundle file: first old +
    // new, then new only.
    let b_old = f
        .b_ca
        .issue_svid("spiffe://cluster-b.example/ns/shop/sa/web", &[]);
    let b2_ca = TestCa::new("cluster-b.example CA 2");
    let b_new = b2_ca.issue_svid("spiffe://cluster-b.example/ns/shop/sa/web", &[]);
    wait_mtls(
        &f,
        "old cluster-b SVID before rotation",
        &b_old,
        true,
        limit,
    )
    .await;
    f.gw.write_file(
        "b-ca.pem",
        &format!("{}{}", f.b_ca.cert_pem(), b2_ca.cert_pem()),
    );
    wait_mtls(
        &f,
        "new cluster-b SVID with both CAs in the bundle",
        &b_new,
        true,
        limit,
    )
    .await;
    wait_mtls(
        &f,
        "old cluster-b SVID with both CAs in the bundle",
        &b_old,
        true,
        limit,
    )
    .await;
    f.gw.write_file("b-ca.pem", &b2_ca.cert_pem());
    wait_mtls(
        &f,
        "old cluster-b SVID after its CA left the bundle",
        &b_old,
        false,
        limit,
    )
    .await;
    wait_mtls(&f, "new cluster-b SVID after rotation", &b_new, true, limit).await;

    assert!(f.gw.is_running(), "the gateway must still be running");
    assert_eq!(f.gw.pid(), pid, "no restart: same process");
    let metrics = f.gw.metrics().await;
    let ok = metric_value(
        &metrics,
        "gateway_config_reloads_total",
        &[("result", "success")],
    )
    .unwrap_or(0.0);
    assert!(
        ok >= 3.0,
        "three successful reloads (config + two CA file changes), counted {ok}"
    );
}

/// A resumed TLS session restores the client chain without the verifier:
/// the handshake hook checks it again, so a client whose CA left the
/// bundle is not let in by resuming a session from before the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_sessions_are_checked_again_after_a_reload() {
    let f = start_mtls_gateway();
    let limit = Duration::from_secs(10);
    let b = f
        .b_ca
        .issue_svid("spiffe://cluster-b.example/ns/shop/sa/web", &[]);
    // One client = one rustls session cache; a new connection per request.
    let client = mtls_client(&f.a_ca, Some(&b), A_GW_HOST, sock(A_GW_IP, f.port));
    let url = format!("https://{A_GW_HOST}:{}/resume", f.port);
    for i in 0..2 {
        let first = send(&client, "GET", &url, None, &[]).await;
        assert!(
            matches!(&first, Ok(o) if o.status == 200),
            "request {i} before the rotation: {first:?}"
        );
    }
    let seen_before = f.up.requests().len();
    // Cluster B's CA is replaced: the old SVID is no longer trusted.
    let other = TestCa::new("cluster-b.example CA 2");
    f.gw.write_file("b-ca.pem", &other.cert_pem());
    f.gw.wait_generation_at_least(2, limit).await;
    let after = send(&client, "GET", &url, None, &[]).await;
    match &after {
        Err(_) => {}
        Ok(o) => assert_eq!(
            o.status, 403,
            "a session resumed after the CA left the bundle must be refused: {o:?}"
        ),
    }
    assert_eq!(
        f.up.requests().len(),
        seen_before,
        "nothing reaches the upstream after the rotation"
    );
}
