//! SSRF: every spelling of an internal address is refused with 403 naming
//! the blocked range, also when a rule allows the host, and nothing
//! reaches the destination — checked with taps listening on exactly the
//! addresses the refused targets name (127.0.0.1 and ::1, same port).

use std::net::SocketAddr;

use gateway_tests::Upstream;

use crate::common::*;

/// Rules: `internal` names a host mapped to 10.1.2.3 (no `allow_cidrs`);
/// `metadata-16` allows 169.254.169.254 with a /16 (which must not open
/// the metadata address); `ok`/`ok6` reach the taps on purpose (controls);
/// `anywhere` allows every host on the tap port, without `allow_cidrs`.
const RULES: &str = r#"
egress:
  dns:
    static:
      internal.partner.test: 10.1.2.3
      loop.partner.test: 127.0.0.1
      ok.partner.test: 127.0.0.1
      ok6.partner.test: "::1"
  rules:
    - {name: internal, hosts: [internal.partner.test], ports: [${port}]}
    - {name: metadata-16, hosts: [169.254.169.254], ports: [${port}], allow_cidrs: [169.254.0.0/16]}
    - {name: ok, hosts: [ok.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
    - {name: ok6, hosts: [ok6.partner.test], ports: [${port}], allow_cidrs: ["::1/128"]}
    - {name: anywhere, hosts: ["*"], ports: [${port}]}
"#;

struct Setup {
    eg: Egress,
    echo: Upstream,
    v4: Tap,
    v6: Tap,
}

async fn setup() -> Setup {
    let echo = Upstream::named("ssrf-target");
    let v4 = Tap::start("127.0.0.1:0".parse().unwrap(), TapMode::Relay(echo.addr()))
        .await
        .expect("bind tap on 127.0.0.1");
    let v6_addr: SocketAddr = format!("[::1]:{}", v4.port()).parse().unwrap();
    let v6 = Tap::start(v6_addr, TapMode::Relay(echo.addr()))
        .await
        .unwrap_or_else(|e| panic!("bind tap on {v6_addr} (IPv6 loopback needed): {e}"));
    let eg = Egress::start(None, RULES, &[("port", &v4.port())]);
    Setup { eg, echo, v4, v6 }
}

/// (host as written in the URL / CONNECT authority, range named in the body,
/// rule that matched).
fn matrix() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("127.0.0.1", "loopback address", "anywhere"),
        ("[::1]", "loopback address", "anywhere"),
        ("169.254.169.254", "cloud metadata address", "metadata-16"),
        ("0.0.0.0", "unspecified address", "anywhere"),
        ("2130706433", "loopback address", "anywhere"),
        ("0x7f000001", "loopback address", "anywhere"),
        ("0177.1", "loopback address", "anywhere"),
        ("127.1", "loopback address", "anywhere"),
        ("[::ffff:127.0.0.1]", "loopback address", "anywhere"),
        ("[::]", "unspecified address", "anywhere"),
        ("localhost", "loopback address", "anywhere"),
        ("loop.partner.test", "loopback address", "anywhere"),
        ("internal.partner.test", "private address", "internal"),
    ]
}

async fn assert_nothing_reached(s: &Setup, what: &str) {
    assert_eq!(
        (s.v4.accepted(), s.v6.accepted(), s.echo.count()),
        (0, 0, 0),
        "{what}: no connection may reach the destination (taps on 127.0.0.1 and [::1] accepted, upstream requests)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_absolute_form_targets_are_refused_before_connecting() {
    let s = setup().await;
    let (eg, port) = (&s.eg, s.v4.port());
    let mut per_rule = std::collections::BTreeMap::<&str, f64>::new();
    for (host, range, rule) in matrix() {
        let authority = format!("{host}:{port}");
        let url = format!("http://{authority}/ssrf");
        // Raw requests: curl would rewrite `2130706433` to `127.0.0.1`.
        let r = raw_exchange(eg.addr(), &absolute_get(&url, &authority, &[]))
            .await
            .unwrap_or_else(|e| panic!("GET {url} via proxy: {e}\n{}", eg.stderr()));
        assert_refused(eg, &format!("GET {url}"), &r, 403, &["resolved to", range]);
        *per_rule.entry(rule).or_default() += 1.0;
    }
    // A private address from dns.static names itself in the body.
    let r = raw_exchange(
        eg.addr(),
        &absolute_get(
            &format!("http://internal.partner.test:{port}/"),
            &format!("internal.partner.test:{port}"),
            &[],
        ),
    )
    .await
    .expect("internal.partner.test via proxy");
    assert_refused(
        eg,
        "internal.partner.test",
        &r,
        403,
        &["10.1.2.3", "private address"],
    );
    *per_rule.entry("internal").or_default() += 1.0;

    // Real clients: curl and reqwest get the same refusal.
    for url in [
        format!("http://2130706433:{port}/curl"),
        format!("http://[::1]:{port}/curl"),
        format!("http://169.254.169.254:{port}/latest/meta-data/"),
    ] {
        let r = curl_exchange(eg, &["-x", &eg.proxy_url(), &url]).await;
        assert_refused(eg, &format!("curl {url}"), &r, 403, &["resolved to"]);
    }
    *per_rule.entry("anywhere").or_default() += 2.0;
    *per_rule.entry("metadata-16").or_default() += 1.0;
    let client = proxied_client(&eg.proxy_url(), None, None);
    let url = format!("http://0x7f000001:{port}/reqwest");
    let resp = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("reqwest {url}: {}", error_chain(&e)));
    assert_eq!(resp.status().as_u16(), 403, "reqwest GET {url} via proxy");
    *per_rule.entry("anywhere").or_default() += 1.0;

    assert_nothing_reached(&s, "absolute-form SSRF targets").await;
    for (rule, n) in &per_rule {
        eg.assert_requests("deny", rule, *n).await;
    }

    // Controls: the taps do count what the gateway is allowed to reach.
    for (host, tap) in [("ok.partner.test", &s.v4), ("ok6.partner.test", &s.v6)] {
        let authority = format!("{host}:{port}");
        let r = raw_exchange(
            eg.addr(),
            &absolute_get(&format!("http://{authority}/ok"), &authority, &[]),
        )
        .await
        .unwrap_or_else(|e| panic!("control {host}: {e}\n{}", eg.stderr()));
        assert_eq!(r.status, 200, "control {host} (allow_cidrs): {:?}", r.body);
        assert_eq!(
            tap.accepted(),
            1,
            "control {host}: the tap must count the connection"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssrf_connect_targets_are_refused_before_connecting() {
    let s = setup().await;
    let (eg, port) = (&s.eg, s.v4.port());
    let targets = [
        ("127.0.0.1", "loopback address", "anywhere"),
        ("[::1]", "loopback address", "anywhere"),
        ("2130706433", "loopback address", "anywhere"),
        ("0x7f000001", "loopback address", "anywhere"),
        ("[::ffff:127.0.0.1]", "loopback address", "anywhere"),
        ("0.0.0.0", "unspecified address", "anywhere"),
        ("169.254.169.254", "cloud metadata address", "metadata-16"),
        ("internal.partner.test", "private address", "internal"),
    ];
    let mut per_rule = std::collections::BTreeMap::<&str, f64>::new();
    for (host, range, rule) in targets {
        let authority = format!("{host}:{port}");
        match connect(eg.addr(), &authority, &[]).await {
            Ok(Connect::Refused(r)) => assert_refused(
                eg,
                &format!("CONNECT {authority}"),
                &r,
                403,
                &["resolved to", range],
            ),
            Ok(Connect::Tunnel(..)) => {
                panic!("CONNECT {authority} must be refused (403), got 200 Connection established")
            }
            Err(e) => panic!("CONNECT {authority}: {e}\n{}", eg.stderr()),
        }
        *per_rule.entry(rule).or_default() += 1.0;
    }
    assert_nothing_reached(&s, "CONNECT SSRF targets").await;
    for (rule, n) in &per_rule {
        eg.assert_requests("deny", rule, *n).await;
    }
}
