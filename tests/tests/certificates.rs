//! Listener certificates by SNI, their rotation on reload, the certificate
//! expiry metric, and validity checks in `gateway validate` and reloads.
//! Clients: the system `curl` and a rustls client that reads the served
//! certificate ([`served_cert`]).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_tests::{
    curl, metric_value, run_gateway, served_cert, tpl, Gateway, LeafCert, LeafSpec, TestCa,
    Upstream,
};

const CMD_TIMEOUT: Duration = Duration::from_secs(20);
const DAY: u64 = 86_400;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn listener_addr(gw: &Gateway) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], gw.port()))
}

/// The listener of these tests: three certificates, `b` with explicit
/// names (one a wildcard), `c` the default although it is listed last.
const THREE_CERTS: &str = "tls: {certificates: [\
    {cert: a.pem, key: a.key}, \
    {cert: b.pem, key: b.key, names: [b.example.com, \"*.b.example.com\"]}, \
    {cert: c.pem, key: c.key, default: true}]}";

/// `curl --resolve host:port:127.0.0.1 --cacert ca.pem -w '%{certs}'`: the
/// text of the certificate chain curl received (curl verified it against
/// the test CA and `host` first).
fn curl_certs(gw: &Gateway, host: &str) -> String {
    let port = gw.port();
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}/");
    let out = curl(
        &[
            "--cacert",
            "ca.pem",
            "--resolve",
            &resolve,
            "-o",
            "/dev/null",
            "-w",
            "%{certs}",
            &url,
        ],
        gw.dir(),
    );
    assert_eq!(out.code, Some(0), "curl {url}: {}", out.stderr);
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_is_chosen_by_sni_and_rotates_on_reload() {
    let up = Upstream::echo();
    let ca = TestCa::new("sni test CA");
    let a = ca.issue(&["a.example.com", "www.a.example.com"]);
    // b's SANs differ from its configured `names`: the names win.
    let b = ca.issue(&["b.example.com", "other.test"]);
    let c = ca.issue(&["c.example.com"]);
    let builder = Gateway::builder().listener(THREE_CERTS).catch_all(&up);
    let dir = builder.dir_path();
    ca.write_pem(dir, "ca.pem");
    a.write(dir, "a.pem", "a.key");
    b.write(dir, "b.pem", "b.key");
    c.write(dir, "c.pem", "c.key");
    let gw = builder.start();
    let addr = listener_addr(&gw);

    let cases: [(Option<&str>, &LeafCert, &str); 8] = [
        (Some("a.example.com"), &a, "exact name from a's SAN"),
        (Some("www.a.example.com"), &a, "second SAN of a"),
        (
            Some("WWW.A.Example.COM"),
            &a,
            "names match case-insensitively",
        ),
        (Some("b.example.com"), &b, "exact name of b's `names`"),
        (Some("x.b.example.com"), &b, "b's wildcard covers one label"),
        (
            Some("x.y.b.example.com"),
            &c,
            "two labels: no match, default",
        ),
        (
            Some("other.test"),
            &c,
            "b's SAN not in its `names`: default",
        ),
        (None, &c, "no SNI: the `default: true` certificate"),
    ];
    for (sni, want, why) in cases {
        assert!(
            served_cert(addr, sni).await == want.cert_der(),
            "SNI {sni:?}: {why}"
        );
    }

    // The real curl, verifying the chain and the name against the test CA.
    for (host, cn) in [
        ("a.example.com", "a.example.com"),
        ("b.example.com", "b.example.com"),
        ("c.example.com", "c.example.com"),
    ] {
        let certs = curl_certs(&gw, host);
        assert!(
            certs.contains(&format!("CN = {cn}")) || certs.contains(&format!("CN={cn}")),
            "curl with SNI {host} should get the certificate of {cn}; %{{certs}}:\n{certs}"
        );
    }

    // Rotate b (new content, same path); a and c stay.
    let b2 = ca.issue(&["b.example.com"]);
    gw.write_file("b.pem", &b2.cert_pem());
    gw.write_file("b.key", &b2.key_pem());
    let (status, body) = gw.reload().await;
    assert_eq!(status, 200, "reload: {body}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while served_cert(addr, Some("b.example.com")).await != b2.cert_der() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rotated b is served after the reload; last answer {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_cert(addr, Some("x.b.example.com")).await == b2.cert_der());
    assert!(served_cert(addr, Some("a.example.com")).await == a.cert_der());
    assert!(served_cert(addr, None).await == c.cert_der());
    assert!(
        curl_certs(&gw, "b.example.com").contains("b.example.com"),
        "curl verifies the rotated certificate"
    );
}

/// Series names: `public/<first name>` for each certificate of a listener
/// with several, the listener's name alone for one; `cluster/<name>` and
/// `trust_domain/<name>` for CA bundles; the cluster's name for its client
/// certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_metric_shows_every_certificates_not_after() {
    let now = unix_now();
    let (t_a, t_b, t_client, t_ca1, t_ca2, t_td) = (
        now + 30 * DAY,
        now + 60 * DAY,
        now + 90 * DAY,
        now + 100 * DAY,
        now + 120 * DAY,
        now + 200 * DAY,
    );
    let ca = TestCa::new("expiry test CA");
    let a = ca.issue_with(&LeafSpec::new().dns("a.example.com").not_after(t_a));
    let b = ca.issue_with(&LeafSpec::new().dns("b.example.com").not_after(t_b));
    let client = ca.issue_with(&LeafSpec::new().dns("gw.client").not_after(t_client));
    let up = Upstream::echo();
    let builder = Gateway::builder()
        .listener("tls: {certificates: [{cert: a.pem, key: a.key}, {cert: b.pem, key: b.key}]}")
        .cluster_yaml(
            // A dead port: the cluster is only compiled, never called.
            "{name: mtls, endpoints: [{address: \"127.0.0.1:9\"}], \
             tls: {sni: up.test, ca: bundle.pem, cert: client.pem, key: client.key}}",
        )
        .yaml("trust_domains: [{name: td.example, ca: td-ca.pem}]")
        .catch_all(&up);
    let dir = builder.dir_path();
    a.write(dir, "a.pem", "a.key");
    b.write(dir, "b.pem", "b.key");
    client.write(dir, "client.pem", "client.key");
    // A bundle of two CAs: the series is the earlier notAfter.
    let bundle = format!(
        "{}{}",
        TestCa::expiring("late CA", t_ca2).cert_pem(),
        TestCa::expiring("early CA", t_ca1).cert_pem()
    );
    std::fs::write(dir.join("bundle.pem"), bundle).expect("write bundle");
    TestCa::expiring("td CA", t_td).write_pem(dir, "td-ca.pem");
    let gw = builder.start();

    let name = "gateway_certificate_expiry_timestamp_seconds";
    for (kind, label, want) in [
        ("listener", "public/a.example.com", t_a),
        ("listener", "public/b.example.com", t_b),
        ("client", "mtls", t_client),
        ("ca", "cluster/mtls", t_ca1),
        ("ca", "trust_domain/td.example", t_td),
    ] {
        gw.metric(name, &[("kind", kind), ("name", label)])
            .eventually(|v| v == want as f64)
            .await;
    }

    // Down to one certificate: its series is the listener's name, and the
    // series of the certificates no longer held are gone.
    let gw_yaml = std::fs::read_to_string(gw.dir().join("gateway.yaml")).expect("config");
    let one = gw_yaml.replace(
        "tls: {certificates: [{cert: a.pem, key: a.key}, {cert: b.pem, key: b.key}]}",
        "tls: {cert: b.pem, key: b.key}",
    );
    assert_ne!(one, gw_yaml, "the listener line was rewritten");
    gw.write_file("gateway.yaml", &one);
    let (status, body) = gw.reload().await;
    assert!(status == 200, "reload: {body}");
    gw.metric(name, &[("kind", "listener"), ("name", "public")])
        .eventually(|v| v == t_b as f64)
        .await;
    let text = gw.metrics().await;
    for gone in ["public/a.example.com", "public/b.example.com"] {
        assert_eq!(
            metric_value(&text, name, &[("kind", "listener"), ("name", gone)]),
            None,
            "series {gone} is removed once the certificate is no longer configured"
        );
    }
    assert_eq!(
        metric_value(&text, name, &[("kind", "client"), ("name", "mtls")]),
        Some(t_client as f64),
        "the others stay"
    );
}

/// `gateway validate -c gateway.yaml` in `dir`.
fn validate(dir: &Path) -> gateway_tests::GatewayOutput {
    run_gateway(&["validate", "-c", "gateway.yaml"], dir, CMD_TIMEOUT)
}

/// A config with one TLS listener on `gw.pem` / `gw.key`.
fn tls_config(dir: &Path) {
    let yaml = tpl(
        "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    tls: {cert: gw.pem, key: gw.key}\n",
        &[
            ("admin", &gateway_tests::free_port()),
            ("port", &gateway_tests::free_port()),
        ],
    );
    std::fs::write(dir.join("gateway.yaml"), yaml).expect("write config");
}

#[test]
fn validate_refuses_expired_and_not_yet_valid_listener_certificates() {
    let ca = TestCa::new("validity CA");
    for (what, spec, says) in [
        (
            "expired",
            LeafSpec::new().dns("gw.test").expired(),
            "expired on 2021-01-01T00:00:00Z",
        ),
        (
            "not yet valid",
            LeafSpec::new().dns("gw.test").not_yet_valid(),
            "is not valid yet (notBefore 2090-01-01T00:00:00Z)",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        ca.issue_with(&spec).write(dir.path(), "gw.pem", "gw.key");
        tls_config(dir.path());
        let out = validate(dir.path());
        assert_eq!(
            out.code(),
            Some(1),
            "{what}: validate must fail; stderr:\n{}",
            out.stderr
        );
        // Positioned at the `cert:` of line 5 (the tls flow mapping).
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(says))
            .unwrap_or_else(|| panic!("{what}: no line saying `{says}`:\n{}", out.stderr));
        assert!(
            line.contains("gateway.yaml:5:") && line.contains("gw.pem"),
            "{what}: the error names the config position and the file: {line}"
        );
    }
}

#[test]
fn validate_warns_about_a_certificate_expiring_in_three_days() {
    let ca = TestCa::new("warning CA");
    let dir = tempfile::tempdir().expect("tempdir");
    let not_after = unix_now() + 3 * DAY;
    ca.issue_with(&LeafSpec::new().dns("gw.test").not_after(not_after))
        .write(dir.path(), "gw.pem", "gw.key");
    tls_config(dir.path());
    let out = validate(dir.path());
    assert_eq!(
        out.code(),
        Some(0),
        "a certificate valid for 3 more days is still accepted; stderr:\n{}",
        out.stderr
    );
    let date = civil_date(not_after);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning line in:\n{}", out.stderr));
    assert!(
        warning.contains("gw.pem")
            && warning.contains(&date)
            && warning.contains("gateway.yaml:5:"),
        "the warning names the position, the file and the date ({date}): {warning}"
    );
}

/// `YYYY-MM-DD` of a Unix time (civil-from-days, proleptic Gregorian).
fn civil_date(secs: u64) -> String {
    let days = (secs / DAY) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let doe = days - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_an_expired_listener_certificate_is_refused() {
    let up = Upstream::echo();
    let ca = TestCa::new("reload validity CA");
    let good = ca.issue(&["gw.test"]);
    let gw = Gateway::builder().tls(&good).catch_all(&up).start();
    let addr = listener_addr(&gw);
    assert!(served_cert(addr, Some("gw.test")).await == good.cert_der());

    let expired = ca.issue_with(&LeafSpec::new().dns("gw.test").expired());
    gw.write_file("gw.pem", &expired.cert_pem());
    gw.write_file("gw.key", &expired.key_pem());
    let (status, body) = gw.reload().await;
    assert_eq!(status, 422, "the reload is rejected: {body}");
    assert!(
        body.contains("gw.pem") && body.contains("expired on 2021-01-01"),
        "the reload answer names the file and the date: {body}"
    );
    assert!(
        served_cert(addr, Some("gw.test")).await == good.cert_der(),
        "the old certificate keeps serving"
    );
    assert!(
        served_cert(addr, None).await == good.cert_der(),
        "also without SNI"
    );
}

#[test]
fn validate_positions_certificate_list_mistakes() {
    let ca = TestCa::new("list CA");
    let dir = tempfile::tempdir().expect("tempdir");
    ca.issue(&["a.example.com"])
        .write(dir.path(), "a.pem", "a.key");
    // b's SAN claims a.example.com as well.
    ca.issue(&["b.example.com", "a.example.com"])
        .write(dir.path(), "b.pem", "b.key");
    let yaml = tpl(
        r#"admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - name: both
    listen: "127.0.0.1:${p1}"
    tls: {cert: a.pem, key: a.key, certificates: [{cert: b.pem, key: b.key}]}
  - name: clash
    listen: "127.0.0.1:${p2}"
    tls:
      certificates:
        - {cert: a.pem, key: a.key}
        - {cert: b.pem, key: b.key}
  - name: named
    listen: "127.0.0.1:${p3}"
    tls:
      certificates:
        - {cert: a.pem, key: a.key, default: true}
        - {cert: b.pem, key: b.key, names: [b.example.com, A.Example.com], default: true}
"#,
        &[
            ("admin", &gateway_tests::free_port()),
            ("p1", &gateway_tests::free_port()),
            ("p2", &gateway_tests::free_port()),
            ("p3", &gateway_tests::free_port()),
        ],
    );
    std::fs::write(dir.path().join("gateway.yaml"), yaml).expect("write config");
    let out = validate(dir.path());
    assert_eq!(out.code(), Some(1), "stderr:\n{}", out.stderr);
    for (pos, says) in [
        (
            "gateway.yaml:5:",
            "either `cert` and `key` (one certificate) or `certificates`",
        ),
        (
            "gateway.yaml:11:",
            "server name `a.example.com` is already claimed by certificate 0",
        ),
        (
            "gateway.yaml:17:",
            "only one certificate can be the default",
        ),
    ] {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.starts_with(pos) && l.contains(says)),
            "expected `{pos}... {says}` in:\n{}",
            out.stderr
        );
    }
}
