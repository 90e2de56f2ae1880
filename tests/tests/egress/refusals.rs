//! Refusals before any rule is asked are audited and counted too: an
//! unparsable request (400), a client certificate that no longer verifies
//! on a resumed TLS session (403), and an egress listener that outlived
//! the `egress:` block of its config (503). Each gets its answer, one
//! access-log line (`decision: deny`, `rule: none`, a `note` and a
//! `reason`) and `gateway_egress_requests_total{decision="deny",rule="none"}`.

use gateway_tests::{tpl, Gateway, LeafCert, TestCa, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Asserts the one audit line of a refusal with `note` (kind `egress`,
/// listener `egress`, `decision: deny`, `rule: none`, `status`, unknown
/// principal, the caller's address, a `reason` containing `reason`), and
/// that it was counted once under `deny`/`none`.
async fn assert_audited(eg: &Egress, note: &str, status: u16, reason: &str) {
    let what = format!("the audit line with note {note:?}");
    let lines = eg.expect_lines(1, &what, |v| v["note"] == note);
    let l = &lines[0];
    assert_eq!(l["kind"], "egress", "{l}");
    assert_eq!(l["listener"], "egress", "{l}");
    assert_eq!(l["decision"], "deny", "{l}");
    assert_eq!(l["rule"], "none", "{l}");
    assert_eq!(l["status"], status, "{l}");
    assert_eq!(l["principal"], "-", "{l}");
    assert_eq!(l["client"], "127.0.0.1", "{l}");
    assert_eq!(
        (&l["bytes_up"], &l["bytes_down"]),
        (&0.into(), &0.into()),
        "{l}"
    );
    assert!(l["duration_ms"].is_number(), "duration_ms: {l}");
    assert!(
        l["reason"].as_str().is_some_and(|r| r.contains(reason)),
        "the audit line names the reason ({reason:?}): {l}"
    );
    eg.assert_requests("deny", "none", 1.0).await;
}

/// `POST /reload` on the admin listener; panics unless it succeeded.
async fn reload(eg: &Egress) {
    let resp = gateway_tests::http_client()
        .post(format!("{}/reload", eg.gw.admin_url()))
        .send()
        .await
        .expect("POST /reload");
    let code = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(code, 200, "POST /reload: {body}\n{}", eg.stderr());
    let status: serde_json::Value = serde_json::from_str(&body).expect("reload status JSON");
    assert_eq!(status["generation"], 2, "reloaded once: {status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparsable_request_is_answered_400_audited_and_counted() {
    let eg = Egress::start(
        None,
        "egress:\n  rules:\n    - {name: partner, hosts: [api.partner.test]}\n",
        &[],
    );
    assert_eq!(
        eg.gw
            .metric(
                "gateway_egress_requests_total",
                &[("decision", "deny"), ("rule", "none")]
            )
            .value()
            .await,
        0.0
    );
    let r = raw_exchange(eg.addr(), "THIS IS NOT HTTP\r\n\r\n")
        .await
        .unwrap_or_else(|e| panic!("garbage request: {e}\n{}", eg.stderr()));
    assert_eq!((r.status, r.body.as_str()), (400, "bad request\n"), "{r:?}");
    assert_audited(&eg, "bad_request", 400, "unparsable request").await;
}

/// A TLS client presenting `leaf`, trusting `ca`, that resumes sessions.
fn resuming_client(ca: &TestCa, leaf: &LeafCert) -> tokio_rustls::TlsConnector {
    gateway_tests::rustls_connector(ca, Some(leaf), &[&rustls::version::TLS13], false)
}

/// Over TLS to the egress listener: `request`, then the whole answer.
async fn tls_exchange(
    tls: &tokio_rustls::TlsConnector,
    eg: &Egress,
    request: &str,
) -> Result<String, String> {
    let name = rustls::pki_types::ServerName::try_from("proxy.test").expect("server name");
    let tcp = tokio::net::TcpStream::connect(eg.addr())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let io = async {
        let mut s = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        // A close without close_notify still delivered its answer.
        let read = s.read_to_end(&mut buf).await;
        match read {
            Err(e) if buf.is_empty() => Err(format!("read: {e}")),
            _ => Ok(String::from_utf8_lossy(&buf).into_owned()),
        }
    };
    tokio::time::timeout(IO_LIMIT, io)
        .await
        .map_err(|_| "TLS exchange timed out".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_certificate_is_refused_403_audited_and_counted() {
    let up = Upstream::named("api");
    let port = up.port();
    let ca = TestCa::new("fn.example CA");
    let dir = tempfile::tempdir().expect("tempdir");
    ca.write_pem(dir.path(), "fn-ca.pem");
    ca.issue_svid("spiffe://fn.example/gateway", &["proxy.test"])
        .write(dir.path(), "gw.pem", "gw.key");
    let leaf = ca.issue_svid("spiffe://fn.example/ns/fn/sa/billing", &[]);
    let listen = gateway_tests::free_port();
    let yaml = tpl(
        r#"
admin: {listen: "127.0.0.1:${admin}"}
trust_domains:
  - {name: fn.example, ca: fn-ca.pem}
listeners:
  - name: egress
    listen: "127.0.0.1:${listen}"
    mode: egress
    tls: {cert: gw.pem, key: gw.key, client_auth: require}
egress:
  dns: {static: {api.partner.test: 127.0.0.1}}
  rules:
    - {name: partner, hosts: [api.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[
            ("admin", &gateway_tests::free_port()),
            ("listen", &listen),
            ("port", &port),
        ],
    );
    let eg = Egress {
        gw: Gateway::start_in(dir, &yaml),
        port: listen,
    };
    let tls = resuming_client(&ca, &leaf);
    let request = absolute_get(
        &format!("http://{PARTNER}:{port}/ok"),
        &format!("{PARTNER}:{port}"),
        &[],
    );
    let first = tls_exchange(&tls, &eg, &request).await;
    assert!(
        first
            .as_deref()
            .is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
        "before the rotation the SVID is let through: {first:?}\n{}",
        eg.stderr()
    );
    eg.assert_requests("allow", "partner", 1.0).await;
    // The trust domain's CA is replaced: the SVID no longer verifies, and
    // only a resumed session (which skips the verifier) can still carry it.
    eg.gw
        .write_file("fn-ca.pem", &TestCa::new("fn.example CA 2").cert_pem());
    reload(&eg).await;
    let after = tls_exchange(&tls, &eg, &request)
        .await
        .unwrap_or_else(|e| panic!("resumed session after the rotation: {e}\n{}", eg.stderr()));
    assert!(
        after.starts_with("HTTP/1.1 403")
            && after.contains("x-gateway-egress-decision: deny")
            && after.ends_with("egress denied: client certificate no longer valid\n"),
        "a resumed session of a no longer trusted SVID gets 403: {after:?}"
    );
    assert_eq!(
        up.count(),
        1,
        "the refused request never reaches the upstream"
    );
    assert_audited(
        &eg,
        "certificate_revoked",
        403,
        "client certificate no longer valid",
    )
    .await;
    eg.assert_requests("allow", "partner", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_listener_without_egress_config_answers_503_audited_and_counted() {
    let eg = Egress::start(
        None,
        "egress:\n  rules:\n    - {name: partner, hosts: [api.partner.test]}\n",
        &[],
    );
    // The listener keeps serving until a restart, its `egress:` block is gone.
    eg.gw.write_file(
        "gateway.yaml",
        &format!(
            "admin: {{listen: \"{}\"}}\nlisteners:\n  - {{name: egress, listen: \"127.0.0.1:{}\"}}\n",
            eg.gw.admin_addr(),
            eg.port
        ),
    );
    reload(&eg).await;
    let authority = format!("{PARTNER}:80");
    let r = raw_exchange(
        eg.addr(),
        &absolute_get(&format!("http://{authority}/"), &authority, &[]),
    )
    .await
    .unwrap_or_else(|e| panic!("request after the reload: {e}\n{}", eg.stderr()));
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, "egress is not configured\n"),
        "{r:?}"
    );
    assert_audited(&eg, "not_configured", 503, "egress is not configured").await;
}
