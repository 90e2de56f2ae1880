//! Per-function rules: two JWT subjects of one issuer, each with its own
//! allowlist; `Proxy-Authorization: Bearer <jwt>` from curl
//! (`--proxy-header`) and reqwest (`Proxy::custom_http_auth`); bad tokens
//! and missing credentials get 407 with `Proxy-Authenticate`.

use gateway_tests::{jwt, TestCa, Upstream};

use crate::common::*;

const RULES: &str = r#"
egress:
  dns: {static: {a.partner.test: 127.0.0.1, b.partner.test: 127.0.0.1}}
  rules:
    - name: fn-a-api
      hosts: [a.partner.test]
      ports: [${a}, ${a_tls}]
      principals: ["https://issuer.fn.example#fn-a"]
      allow_cidrs: [127.0.0.0/8]
    - name: fn-b-api
      hosts: [b.partner.test]
      ports: [${b}]
      principals: ["https://issuer.fn.example#fn-b"]
      allow_cidrs: [127.0.0.0/8]
"#;

struct Setup {
    eg: Egress,
    key: jwt::SigningKey,
    ca: TestCa,
    a: Upstream,
    a_tls: Upstream,
    b: Upstream,
}

fn setup() -> Setup {
    let ca = TestCa::new("egress partner CA");
    let a = Upstream::named("A");
    let a_tls = Upstream::echo_tls("A-tls", &ca.issue(&["a.partner.test"]));
    let b = Upstream::named("B");
    let (eg, key) = Egress::for_functions(
        Some(&ca),
        RULES,
        &[("a", &a.port()), ("a_tls", &a_tls.port()), ("b", &b.port())],
    );
    Setup {
        eg,
        key,
        ca,
        a,
        a_tls,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_reaches_only_its_own_hosts() {
    let Setup { eg, key, a, b, .. } = setup();
    let proxy = eg.proxy_url();
    let tokens = [
        ("fn-a", fn_token(&key, "fn-a")),
        ("fn-b", fn_token(&key, "fn-b")),
    ];
    let hosts = [
        ("a.partner.test", a.port(), "A"),
        ("b.partner.test", b.port(), "B"),
    ];
    for (sub, token) in &tokens {
        let principal = format!("{ISSUER}#{sub}");
        let auth = format!("Proxy-Authorization: Bearer {token}");
        let client = proxied_client(&proxy, None, Some(token));
        for (host, port, name) in hosts {
            let url = format!("http://{host}:{port}/{sub}");
            let own = (*sub == "fn-a") == (name == "A");
            // curl --proxy-header
            let r = curl_exchange(&eg, &["-x", &proxy, "--proxy-header", &auth, &url]).await;
            // reqwest Proxy::custom_http_auth
            let resp = client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("reqwest {sub} {url}: {}", error_chain(&e)));
            let (rs, rbody) = (
                resp.status().as_u16(),
                resp.text().await.unwrap_or_default(),
            );
            if own {
                assert_eq!(
                    r.status,
                    200,
                    "curl as {sub} to its own host {url}: {:?}\n{}",
                    r.body,
                    eg.stderr()
                );
                assert_eq!(r.header("x-upstream").as_deref(), Some(name), "{sub} {url}");
                assert_eq!(rs, 200, "reqwest as {sub} to its own host {url}: {rbody:?}");
            } else {
                let needles = [
                    format!("principal {principal}"),
                    format!("host {host}"),
                    "not allowed".to_string(),
                ];
                let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
                assert_refused(&eg, &format!("curl as {sub} to {url}"), &r, 403, &needles);
                assert_eq!(rs, 403, "reqwest as {sub} to {url}: {rbody:?}");
                assert!(
                    rbody.contains(&format!("principal {principal}")),
                    "reqwest as {sub} to {url}: body must name the principal: {rbody:?}"
                );
            }
        }
    }
    // Each upstream saw its own function only (curl + reqwest), and never
    // the proxy credentials.
    for (up, sub) in [(&a, "fn-a"), (&b, "fn-b")] {
        let reqs = up.requests();
        assert_eq!(reqs.len(), 2, "{} must see 2 requests of {sub}", up.name());
        for r in &reqs {
            assert_eq!(r.path, format!("/{sub}"), "{r:?}");
            assert!(
                r.header("proxy-authorization").is_none(),
                "Proxy-Authorization must be removed before forwarding: {r:?}"
            );
        }
    }
    eg.assert_requests("allow", "fn-a-api", 2.0).await;
    eg.assert_requests("allow", "fn-b-api", 2.0).await;
    eg.assert_requests("deny", "none", 4.0).await;
    let lines = eg.expect_lines(2, "audit lines of fn-a's allowed requests", |v| {
        v["principal"] == FN_A && v["decision"] == "allow"
    });
    assert!(
        lines.iter().all(|l| l["host"] == "a.partner.test"),
        "fn-a only reached a.partner.test: {lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_token_also_governs_connect_tunnels() {
    let Setup {
        eg,
        key,
        ca,
        a_tls,
        b,
        ..
    } = setup();
    let proxy = eg.proxy_url();
    let auth = format!("Proxy-Authorization: Bearer {}", fn_token(&key, "fn-a"));
    let url = format!("https://a.partner.test:{}/tunnel", a_tls.port());
    let run = curl(
        &[
            "-x",
            &proxy,
            "--proxy-header",
            &auth,
            "--cacert",
            "ca.pem",
            "-w",
            "\n%{http_code} %{http_connect}",
            &url,
        ],
        &[],
        eg.dir(),
    )
    .await;
    assert!(
        run.stdout.ends_with("\n200 200"),
        "fn-a: CONNECT a.partner.test with its token must tunnel (expected `200 200`): stdout {:?}, stderr {}\n{}",
        run.stdout,
        run.stderr,
        eg.stderr()
    );
    assert!(
        run.stdout.contains("\"path\":\"/tunnel\""),
        "the TLS upstream must answer through the tunnel: {:?}",
        run.stdout
    );
    // reqwest, CONNECT with custom_http_auth, to the other function's host.
    let client = proxied_client(&proxy, Some(&ca), Some(&fn_token(&key, "fn-b")));
    let res = client
        .get(format!("https://a.partner.test:{}/wrong", a_tls.port()))
        .send()
        .await;
    assert!(
        res.is_err(),
        "fn-b's CONNECT to a.partner.test must be refused (reqwest reports a failed tunnel), got {res:?}"
    );
    let refused = connect(
        eg.addr(),
        &format!("a.partner.test:{}", a_tls.port()),
        &[(
            "Proxy-Authorization",
            &format!("Bearer {}", fn_token(&key, "fn-b")),
        )],
    )
    .await;
    match refused {
        Ok(Connect::Refused(r)) => assert_refused(
            &eg,
            "fn-b CONNECT a.partner.test",
            &r,
            403,
            &[&format!("principal {FN_B}")],
        ),
        other => panic!("fn-b CONNECT a.partner.test must be refused with 403, got {other:?}"),
    }
    assert_eq!(
        a_tls.count(),
        1,
        "only fn-a's tunnel may reach a.partner.test"
    );
    assert_eq!(b.count(), 0);
    eg.assert_requests("allow", "fn-a-api", 1.0).await;
    eg.assert_requests("deny", "none", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_credentials_get_407_with_a_challenge() {
    let Setup { eg, key, a, .. } = setup();
    let url = format!("http://a.partner.test:{}/x", a.port());
    let authority = format!("a.partner.test:{}", a.port());
    let good = fn_token(&key, "fn-a");
    let stranger = jwt::SigningKey::es256("fn-key-1"); // same kid, other key
    let mut expired = jwt::claims(ISSUER, "fn-a", AUDIENCE);
    expired["exp"] = serde_json::json!(jwt::now() - 3600);
    expired["iat"] = serde_json::json!(jwt::now() - 7200);
    expired["nbf"] = serde_json::json!(jwt::now() - 7200);
    let invalid: Vec<(&str, String)> = vec![
        ("tampered signature", jwt::tamper_signature(&good)),
        (
            "wrong audience",
            key.sign(&jwt::claims(ISSUER, "fn-a", "other-aud")),
        ),
        (
            "unknown issuer",
            key.sign(&jwt::claims("https://evil.example", "fn-a", AUDIENCE)),
        ),
        ("signed by another key", fn_token(&stranger, "fn-a")),
        ("expired", key.sign(&expired)),
        (
            "alg none",
            jwt::unsigned_token(&jwt::claims(ISSUER, "fn-a", AUDIENCE), Some("fn-key-1")),
        ),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    for (what, token) in &invalid {
        let value = format!("Bearer {token}");
        let r = raw_exchange(
            eg.addr(),
            &absolute_get(&url, &authority, &[("Proxy-Authorization", &value)]),
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            r.status,
            407,
            "{what}: an invalid proxy token must get 407, got {} {:?}\n{}",
            r.status,
            r.body,
            eg.stderr()
        );
        let challenge = r
            .header("proxy-authenticate")
            .unwrap_or_else(|| panic!("{what}: 407 without Proxy-Authenticate; head:\n{}", r.head));
        assert!(
            challenge.starts_with("Bearer") && challenge.contains(r#"error="invalid_token""#),
            "{what}: Proxy-Authenticate must be `Bearer error=\"invalid_token\", ...`, got {challenge:?}"
        );
    }
    // curl with a tampered token sees the same.
    let bad = format!(
        "Proxy-Authorization: Bearer {}",
        jwt::tamper_signature(&good)
    );
    let r = curl_exchange(&eg, &["-x", &eg.proxy_url(), "--proxy-header", &bad, &url]).await;
    assert_eq!(r.status, 407, "curl with a tampered token: {:?}", r.body);
    assert!(
        r.header("proxy-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "curl with a tampered token: Proxy-Authenticate missing; head:\n{}",
        r.head
    );
    // Not a bearer credential at all.
    let r = raw_exchange(
        eg.addr(),
        &absolute_get(
            &url,
            &authority,
            &[("Proxy-Authorization", "Basic dXNlcjpwYXNz")],
        ),
    )
    .await
    .expect("Basic credentials");
    assert_eq!(r.status, 407, "Basic proxy credentials: {:?}", r.body);
    assert_eq!(
        r.header("proxy-authenticate").as_deref(),
        Some("Bearer"),
        "Basic proxy credentials: the challenge asks for a bearer token"
    );
    // No credentials for a host whose rule names principals: 407 (asking
    // for them), not 403.
    let r = raw_exchange(eg.addr(), &absolute_get(&url, &authority, &[]))
        .await
        .expect("no credentials");
    assert_eq!(r.status, 407, "no token for a.partner.test: {:?}", r.body);
    assert_eq!(r.header("proxy-authenticate").as_deref(), Some("Bearer"));
    assert!(
        r.body.contains("unknown caller") && r.body.contains("a.partner.test"),
        "no token: the body must say the unknown caller is not allowed: {:?}",
        r.body
    );
    assert_eq!(
        a.count(),
        0,
        "no request without valid credentials may reach A"
    );
    // A failed verification is counted as an authentication failure.
    let metrics = eg.gw.metrics().await;
    let failures: f64 = gateway_tests::parse_prometheus(&metrics)
        .expect("metrics parse")
        .iter()
        .filter(|s| {
            s.name == "gateway_authn_total"
                && s.labels.get("method").map(String::as_str) == Some("jwt")
                && s.labels.get("result").map(String::as_str) != Some("success")
        })
        .map(|s| s.value)
        .sum();
    assert!(
        failures >= invalid.len() as f64 + 1.0,
        "gateway_authn_total{{method=\"jwt\",result!=\"success\"}} must count the {} bad tokens, got {failures}",
        invalid.len() + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_credentials_refuses_anonymous_callers_with_407() {
    let up = Upstream::named("open");
    let (eg, key) = Egress::for_functions(
        None,
        r#"
egress:
  require_credentials: true
  caller_groups: [{name: functions, cidrs: [127.0.0.0/8]}]
  dns: {static: {open.partner.test: 127.0.0.1}}
  rules:
    - {name: open, hosts: [open.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &up.port())],
    );
    let url = format!("http://open.partner.test:{}/x", up.port());
    // No token (a caller group is not a credential): 407 with a bare challenge.
    let r = curl_exchange(&eg, &["-x", &eg.proxy_url(), &url]).await;
    assert_eq!(
        r.status,
        407,
        "require_credentials, no token: expected 407, got {} {:?}\n{}",
        r.status,
        r.body,
        eg.stderr()
    );
    assert_eq!(
        r.header("proxy-authenticate").as_deref(),
        Some("Bearer"),
        "require_credentials, no token: `Proxy-Authenticate: Bearer`; head:\n{}",
        r.head
    );
    assert!(
        r.body.contains("proxy credentials required"),
        "the body must name the reason: {:?}",
        r.body
    );
    assert_eq!(
        up.count(),
        0,
        "an anonymous caller must not reach the upstream"
    );
    // The same request with a valid token goes through.
    let auth = format!("Proxy-Authorization: Bearer {}", fn_token(&key, "fn-a"));
    let r = curl_exchange(&eg, &["-x", &eg.proxy_url(), "--proxy-header", &auth, &url]).await;
    assert_eq!(
        r.status, 200,
        "require_credentials, valid token: {:?}",
        r.body
    );
    assert_eq!(up.count(), 1);
    eg.assert_requests("deny", "none", 1.0).await;
    eg.assert_requests("allow", "open", 1.0).await;
}
