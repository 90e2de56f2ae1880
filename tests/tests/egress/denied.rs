//! Refusals: the exact status, the reason in the body, the
//! `x-gateway-egress-decision` header, the counter, the audit line — and
//! nothing reaching the destination.

use gateway_tests::{TestCa, Upstream};

use crate::common::*;

/// Rules shared by the tests below: `partner-http` lets fn-a reach
/// api.partner.test (and admin.partner.test) on `${port}`;
/// `partner-reports` lets anyone GET /v1/ on reports.partner.test with TLS
/// originated by the gateway; `block-admin` denies admin.partner.test.
const RULES: &str = r#"
egress:
  dns:
    static:
      api.partner.test: 127.0.0.1
      admin.partner.test: 127.0.0.1
      reports.partner.test: 127.0.0.1
      evil.test: 127.0.0.1
  rules:
    - name: partner-http
      hosts: [api.partner.test, admin.partner.test]
      ports: [${port}]
      principals: ["https://issuer.fn.example#fn-a"]
      allow_cidrs: [127.0.0.0/8]
    - name: partner-reports
      hosts: [reports.partner.test]
      ports: [${tls}]
      methods: [GET]
      path_prefixes: [/v1/]
      originate_tls: true
      ca: ca.pem
      allow_cidrs: [127.0.0.0/8]
    - {name: block-admin, hosts: [admin.partner.test], action: deny}
"#;

struct Setup {
    eg: Egress,
    key: gateway_tests::jwt::SigningKey,
    api: Upstream,
    other: Upstream,
    reports: Upstream,
}

fn setup() -> Setup {
    let ca = TestCa::new("egress partner CA");
    let api = Upstream::named("api");
    let other = Upstream::named("other-port");
    let reports = Upstream::echo_tls("reports", &ca.issue(&["reports.partner.test"]));
    let (eg, key) = Egress::for_functions(
        Some(&ca),
        RULES,
        &[("port", &api.port()), ("tls", &reports.port())],
    );
    Setup {
        eg,
        key,
        api,
        other,
        reports,
    }
}

/// One refusal: what it is, curl arguments, the host and port of the
/// audit line, fragments of the reason, and the principal logged.
type Case = (
    &'static str,
    Vec<String>,
    &'static str,
    u16,
    Vec<String>,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_403_name_the_reason_and_are_counted() {
    let Setup {
        eg,
        key,
        api,
        other,
        reports,
    } = setup();
    let proxy = eg.proxy_url();
    let (fn_a, fn_b) = (fn_token(&key, "fn-a"), fn_token(&key, "fn-b"));
    let auth_a = format!("Proxy-Authorization: Bearer {fn_a}");
    let auth_b = format!("Proxy-Authorization: Bearer {fn_b}");
    let (p, p2, pt) = (api.port(), other.port(), reports.port());
    // curl arguments of `url` with a function's proxy token.
    let as_fn = |auth: &String, url: String| vec![url, "--proxy-header".into(), auth.clone()];

    // (what, curl args, host, port, reason fragments, principal)
    let cases: Vec<Case> = vec![
        (
            "host not listed",
            as_fn(&auth_a, format!("http://evil.test:{p}/x")),
            "evil.test",
            p,
            vec!["host evil.test".into(), "not allowed".into()],
            FN_A,
        ),
        (
            "port not listed",
            as_fn(&auth_a, format!("http://{PARTNER}:{p2}/x")),
            PARTNER,
            p2,
            vec![
                format!("port {p2}"),
                format!("host {PARTNER}"),
                "not allowed".into(),
            ],
            FN_A,
        ),
        (
            "principal not listed",
            as_fn(&auth_b, format!("http://{PARTNER}:{p}/x")),
            PARTNER,
            p,
            vec![
                format!("principal {FN_B}"),
                format!("host {PARTNER}"),
                "not allowed".into(),
            ],
            FN_B,
        ),
        (
            "method not allowed on an originated route",
            vec![
                format!("http://reports.partner.test:{pt}/v1/items"),
                "-X".into(),
                "POST".into(),
                "--data".into(),
                "a=1".into(),
            ],
            "reports.partner.test",
            pt,
            vec![
                "method POST".into(),
                "host reports.partner.test".into(),
                "not allowed".into(),
            ],
            "-",
        ),
        (
            "path not allowed on an originated route",
            vec![format!("http://reports.partner.test:{pt}/v2/items")],
            "reports.partner.test",
            pt,
            vec![
                "path /v2/items".into(),
                "host reports.partner.test".into(),
                "not allowed".into(),
            ],
            "-",
        ),
        (
            "deny rule wins over an allow rule",
            as_fn(&auth_a, format!("http://admin.partner.test:{p}/x")),
            "admin.partner.test",
            p,
            vec!["denied by rule block-admin".into()],
            FN_A,
        ),
    ];
    for (what, args, host, port, needles, principal) in &cases {
        let mut all: Vec<&str> = vec!["-x", &proxy];
        all.extend(args.iter().map(String::as_str));
        let r = curl_exchange(&eg, &all).await;
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        assert_refused(&eg, &format!("{what} (curl {args:?})"), &r, 403, &needles);
        let line = format!(
            "{what}: the line with decision deny, host {host}, port {port} and a reason naming {:?}",
            needles[0]
        );
        let lines = eg.expect_lines(1, &line, |v| {
            v["decision"] == "deny"
                && v["host"] == *host
                && v["port"] == *port
                && v["reason"].as_str().is_some_and(|s| s.contains(needles[0]))
        });
        assert_eq!(lines[0]["principal"], *principal, "{what}: {}", lines[0]);
        assert_eq!(lines[0]["status"], 403, "{what}: {}", lines[0]);
    }

    // Controls: the same routes let the right requests through.
    let ok = curl_exchange(
        &eg,
        &[
            "-x",
            &proxy,
            &format!("http://{PARTNER}:{p}/ok"),
            "--proxy-header",
            &auth_a,
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "fn-a to {PARTNER}:{p}: {:?}", ok.body);
    let ok = curl_exchange(
        &eg,
        &[
            "-x",
            &proxy,
            &format!("http://reports.partner.test:{pt}/v1/items"),
        ],
    )
    .await;
    assert_eq!(
        ok.status, 200,
        "GET /v1/items on the originated route: {:?}",
        ok.body
    );
    assert!(
        ok.body.contains("\"path\":\"/v1/items\""),
        "the TLS upstream must echo the request: {:?}",
        ok.body
    );

    // Five default refusals (rule `none`) and one by the deny rule.
    eg.assert_requests("deny", "none", 5.0).await;
    eg.assert_requests("deny", "block-admin", 1.0).await;
    eg.assert_requests("allow", "partner-http", 1.0).await;
    eg.assert_requests("allow", "partner-reports", 1.0).await;
    // Nothing refused reached a destination.
    assert_eq!(
        api.count(),
        1,
        "only the allowed request may reach {PARTNER}:{p}"
    );
    assert_eq!(other.count(), 0, "nothing may reach the unlisted port {p2}");
    assert_eq!(
        reports.count(),
        1,
        "only GET /v1/items may reach the reports server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_refusals_are_403_and_name_the_reason() {
    let Setup {
        eg,
        key: _key,
        api,
        other,
        reports,
    } = setup();
    let (p2, pt) = (other.port(), reports.port());
    let cases = [
        (
            "CONNECT to a host not listed",
            "evil.test:443".to_string(),
            vec!["host evil.test".to_string(), "not allowed".into()],
        ),
        (
            "CONNECT to a port not listed",
            format!("{PARTNER}:{p2}"),
            vec![format!("port {p2}"), format!("host {PARTNER}")],
        ),
        (
            "CONNECT to a route that checks methods and paths",
            format!("reports.partner.test:{pt}"),
            vec![
                "CONNECT to reports.partner.test not allowed".to_string(),
                "partner-reports".into(),
            ],
        ),
    ];
    for (what, authority, needles) in &cases {
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        match connect(eg.addr(), authority, &[]).await {
            Ok(Connect::Refused(r)) => {
                assert_refused(&eg, &format!("{what} ({authority})"), &r, 403, &needles)
            }
            Ok(Connect::Tunnel(..)) => {
                panic!("{what}: CONNECT {authority} must be refused, got 200")
            }
            Err(e) => panic!("{what}: CONNECT {authority}: {e}\n{}", eg.stderr()),
        }
    }
    // curl sees the refusal of its CONNECT.
    let run = curl(
        &[
            "-x",
            &eg.proxy_url(),
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect}",
            "https://evil.test:443/",
        ],
        &[],
        eg.dir(),
    )
    .await;
    assert_eq!(
        run.stdout, "403",
        "curl https://evil.test via the proxy: the CONNECT must get 403; curl stderr: {}",
        run.stderr
    );
    eg.assert_requests("deny", "none", 4.0).await;
    assert_eq!(
        api.count() + other.count() + reports.count(),
        0,
        "nothing may reach any upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_absolute_url_is_not_forwarded_in_plaintext() {
    // `GET https://host/` to a forward proxy asks for TLS to the
    // destination; a proxy that sends it as plain HTTP leaks the request.
    // The contract takes `http://` absolute URLs and CONNECT for https.
    let Setup { eg, key, api, .. } = setup();
    let p = api.port();
    let authority = format!("{PARTNER}:{p}");
    let auth = format!("Bearer {}", fn_token(&key, "fn-a"));
    let r = raw_exchange(
        eg.addr(),
        &absolute_get(
            &format!("https://{authority}/secret"),
            &authority,
            &[("Proxy-Authorization", &auth)],
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("GET https://{authority}/secret via proxy: {e}"));
    assert_eq!(
        r.status, 400,
        "`GET https://{authority}/secret` must be refused (400: only http:// URLs can be proxied), got {} {:?}",
        r.status, r.body
    );
    assert_eq!(
        api.count(),
        0,
        "the https:// request must not reach {authority} in plaintext: {:?}",
        api.requests()
    ); // Refused before naming a usable destination: still audited and counted.
    let lines = eg.egress_lines(1, |v| v["status"] == 400);
    assert_eq!(lines[0]["decision"], "deny", "{}", eg.egress_log());
    assert_eq!(lines[0]["rule"], "none", "{}", eg.egress_log());
    eg.assert_requests("deny", "none", 1.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_kept_alive_proxy_connection_is_decided_alone() {
    let Setup { eg, key, api, .. } = setup();
    let p = api.port();
    let auth = format!("Proxy-Authorization: Bearer {}", fn_token(&key, "fn-a"));
    // One curl, three URLs: curl reuses its proxy connection while it can.
    let (one, two, three) = (
        format!("http://{PARTNER}:{p}/one"),
        format!("http://evil.test:{p}/two"),
        format!("http://{PARTNER}:{p}/three"),
    );
    let run = curl(
        &[
            "-x",
            &eg.proxy_url(),
            "--proxy-header",
            &auth,
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &one,
            &two,
            &three,
        ],
        &[],
        eg.dir(),
    )
    .await;
    assert_eq!(
        run.stdout,
        "200\n403\n200\n",
        "allowed, refused, allowed on one proxy client: stderr {}\n{}",
        run.stderr,
        eg.stderr()
    );
    let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/one", "/three"],
        "only the allowed requests reach the upstream"
    );
}

/// Transparent egress: an origin-form request is routed by its `Host`, under
/// the same rules as an absolute URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_form_requests_are_decided_by_their_host() {
    let Setup { eg, key, api, .. } = setup();
    let p = api.port();
    let token = fn_token(&key, "fn-a");
    let auth = format!("Bearer {token}");
    let allowed = format!(
        "GET /transparent?x=1 HTTP/1.1\r\nHost: {PARTNER}:{p}\r\nProxy-Authorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    let ok = raw_exchange(eg.addr(), &allowed)
        .await
        .unwrap_or_else(|e| panic!("transparent request: {e}\n{}", eg.stderr()));
    assert_eq!(
        ok.status,
        200,
        "allowed Host: {:?}\n{}",
        ok.head,
        eg.stderr()
    );
    let seen = api
        .requests()
        .into_iter()
        .find(|r| r.path == "/transparent?x=1")
        .expect("the upstream got the transparent request");
    assert_eq!(seen.header("host"), Some(format!("{PARTNER}:{p}").as_str()));
    assert_eq!(seen.header("proxy-authorization"), None);

    let refused = format!(
        "GET /transparent HTTP/1.1\r\nHost: evil.test:{p}\r\nProxy-Authorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    let before = api.requests().len();
    let r = raw_exchange(eg.addr(), &refused).await.expect("answer");
    assert_refused(
        &eg,
        "transparent request to an unlisted Host",
        &r,
        403,
        &["evil.test"],
    );
    assert_eq!(api.requests().len(), before, "nothing reached the upstream");
}
