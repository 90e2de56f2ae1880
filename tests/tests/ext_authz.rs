//! External authorization (`routes[].ext_authz`) against a real
//! authorization service started by the test: allow (with a header added
//! for the upstream), deny (the service's answer reaches the client, the
//! upstream sees nothing), the service down and too slow in both failure
//! modes, and the cache of answers.

use std::time::{Duration, Instant};

use gateway_tests::{free_port, http_client, Gateway, Reply, Upstream};

/// The authorization service: `Bearer good` is alice, anything else is
/// refused with a challenge (and a header that must not reach clients).
fn authz(delay: Duration) -> Upstream {
    Upstream::start("authz", move |req| {
        if req.header("authorization") == Some("Bearer good") {
            Reply::status(200)
                .header("x-user", "alice")
                .header("x-not-listed", "1")
                .delay(delay)
        } else {
            Reply::text(403, "denied by authz\n")
                .header("www-authenticate", "Bearer realm=\"test\"")
                .header("x-internal", "secret")
                .delay(delay)
        }
    })
}

const EXT_AUTHZ: &str = "cluster: authz, path_prefix: /check, timeout: 500ms, \
    headers_to_authz: [authorization], headers_to_upstream: [x-user], \
    headers_to_client: [www-authenticate]";

async fn get(gw: &Gateway, path: &str, token: &str) -> reqwest::Response {
    http_client()
        .get(gw.url(path))
        .header("authorization", format!("Bearer {token}"))
        .header("x-user", "mallory")
        .send()
        .await
        .expect("request through the gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_allows_with_a_header_and_denies_with_its_answer() {
    let auth = authz(Duration::ZERO);
    let app = Upstream::named("app");
    let gw = Gateway::builder()
        .cluster("authz", &[&auth], "")
        .cluster("app", &[&app], "")
        .route(&format!(
            "{{name: app, cluster: app, ext_authz: {{{EXT_AUTHZ}}}}}"
        ))
        .start();

    let resp = get(&gw, "/orders?id=1", "good").await;
    assert_eq!(resp.status(), 200);
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header_all("x-user"),
        ["alice"],
        "the service's header replaces the client's"
    );
    assert_eq!(seen[0].header("x-not-listed"), None);
    let check = &auth.requests()[0];
    assert_eq!(check.method, "GET");
    assert_eq!(check.path, "/check/orders?id=1");
    assert_eq!(check.header("authorization"), Some("Bearer good"));
    assert_eq!(
        check.header("x-user"),
        None,
        "only headers_to_authz are sent"
    );
    assert!(check.header("host").is_some());

    let resp = get(&gw, "/orders", "bad").await;
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"test\"");
    assert!(resp.headers().get("x-internal").is_none());
    assert_eq!(resp.text().await.expect("body"), "denied by authz\n");
    assert_eq!(
        app.count(),
        1,
        "a denied request never reaches the upstream"
    );

    for (result, want) in [("allowed", 1.0), ("denied", 1.0)] {
        gw.metric(
            "gateway_ext_authz_total",
            &[("route", "app"), ("result", result)],
        )
        .eventually_eq(want)
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_down_fails_closed_or_open_as_configured() {
    let app = Upstream::named("app");
    let closed = free_port();
    let gw = Gateway::builder()
        .cluster_yaml(&format!(
            "{{name: authz, endpoints: [{{address: \"127.0.0.1:{closed}\"}}]}}"
        ))
        .cluster("app", &[&app], "")
        .route(&format!(
            "{{name: strict, cluster: app, match: {{path_prefix: /strict}}, ext_authz: {{{EXT_AUTHZ}}}}}"
        ))
        .route(&format!(
            "{{name: lenient, cluster: app, match: {{path_prefix: /lenient}}, ext_authz: {{{EXT_AUTHZ}, failure_mode_allow: true}}}}"
        ))
        .route(&format!(
            "{{name: retry-later, cluster: app, match: {{path_prefix: /later}}, ext_authz: {{{EXT_AUTHZ}, status_on_error: 503}}}}"
        ))
        .start();

    let resp = get(&gw, "/strict/x", "good").await;
    assert_eq!(resp.status(), 403);
    assert!(resp
        .text()
        .await
        .expect("body")
        .contains("authorization service unavailable"));
    assert_eq!(get(&gw, "/later/x", "good").await.status(), 503);
    assert_eq!(app.count(), 0);

    let resp = get(&gw, "/lenient/x", "good").await;
    assert_eq!(resp.status(), 200, "failure_mode_allow lets it through");
    assert_eq!(app.count(), 1);
    assert_eq!(
        app.requests()[0].header("x-user"),
        Some("mallory"),
        "no verdict, no header from the service"
    );
    for route in ["strict", "lenient", "retry-later"] {
        gw.metric(
            "gateway_ext_authz_total",
            &[("route", route), ("result", "error")],
        )
        .eventually_eq(1.0)
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_slower_than_the_timeout_fails_the_check() {
    let slow = authz(Duration::from_secs(2));
    let app = Upstream::named("app");
    let fast = EXT_AUTHZ.replace("timeout: 500ms", "timeout: 200ms");
    let gw = Gateway::builder()
        .cluster("authz", &[&slow], "")
        .cluster("app", &[&app], "")
        .route(&format!(
            "{{name: strict, cluster: app, match: {{path_prefix: /strict}}, ext_authz: {{{fast}}}}}"
        ))
        .route(&format!(
            "{{name: lenient, cluster: app, ext_authz: {{{fast}, failure_mode_allow: true}}}}"
        ))
        .start();
    let start = Instant::now();
    assert_eq!(get(&gw, "/strict/x", "good").await.status(), 403);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(app.count(), 0);
    assert_eq!(get(&gw, "/other", "good").await.status(), 200);
    assert_eq!(app.count(), 1);
    assert!(slow.count() >= 1, "the service was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_per_request_and_credentials() {
    let auth = authz(Duration::ZERO);
    let app = Upstream::named("app");
    let gw = Gateway::builder()
        .cluster("authz", &[&auth], "")
        .cluster("app", &[&app], "")
        .route(&format!(
            "{{name: app, cluster: app, ext_authz: {{{EXT_AUTHZ}, cache_ttl: 30s}}}}"
        ))
        .start();
    assert_eq!(get(&gw, "/a", "good").await.status(), 200);
    assert_eq!(get(&gw, "/a", "good").await.status(), 200);
    assert_eq!(auth.count(), 1, "the second answer came from the cache");
    assert_eq!(app.count(), 2);
    let seen = app.requests();
    assert_eq!(
        seen[1].header("x-user"),
        Some("alice"),
        "cached headers too"
    );
    // Other credentials or another path are asked about.
    assert_eq!(get(&gw, "/a", "bad").await.status(), 403);
    assert_eq!(get(&gw, "/a", "bad").await.status(), 403);
    assert_eq!(get(&gw, "/b", "good").await.status(), 200);
    assert_eq!(auth.count(), 3);
    gw.metric(
        "gateway_ext_authz_total",
        &[("route", "app"), ("result", "cache_hit")],
    )
    .eventually_eq(2.0)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_is_told_the_verified_caller_and_never_a_forged_one() {
    use gateway_tests::jwt;
    let key = jwt::SigningKey::es256("k1");
    let iss = "https://issuer.b.example";
    let auth = Upstream::start("authz", |_| Reply::status(200));
    let app = Upstream::named("app");
    let gw = Gateway::builder()
        .file("jwks.json", &jwt::jwks_json(&[&key]))
        .yaml(&format!(
            "trust_domains:\n  - name: b.example\n    jwt_issuers:\n      - {{issuer: \"{iss}\", audiences: [edge], jwks_file: jwks.json}}"
        ))
        .cluster("authz", &[&auth], "")
        .cluster("app", &[&app], "")
        .route(
            "{name: app, cluster: app, auth: {jwt: required}, \
             ext_authz: {cluster: authz, headers_to_authz: [authorization]}}",
        )
        .start();
    let token = key.sign(&jwt::claims(iss, "alice", "edge"));
    let resp = http_client()
        .get(gw.url("/x"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-gateway-principal", "spiffe://evil/admin")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let check = &auth.requests()[0];
    assert_eq!(
        check.header_all("x-gateway-principal"),
        [format!("{iss}#alice").as_str()]
    );
    assert_eq!(check.header("x-gateway-trust-domain"), Some("b.example"));
    // Without a token the route's own authentication answers: the service
    // is not asked.
    let resp = http_client()
        .get(gw.url("/x"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    assert_eq!(auth.count(), 1);
}

#[test]
fn bad_ext_authz_settings_are_refused_with_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "admin: {{listen: \"127.0.0.1:{}\"}}\nlisteners:\n  - {{name: public, listen: \"127.0.0.1:{}\"}}\n\
         clusters:\n  - {{name: app, endpoints: [{{address: \"127.0.0.1:9\"}}]}}\n\
         routes:\n  - name: app\n    cluster: app\n    ext_authz:\n      cluster: nowhere\n\
         \x20     headers_to_authz: [\"bad header\"]\n  - name: other\n    cluster: app\n    ext_authz:\n\
         \x20     cluster: app\n      status_on_error: 700\n      headers_to_upstream: [x-gateway-principal]\n",
        free_port(),
        free_port(),
    );
    std::fs::write(dir.path().join("gateway.yaml"), &yaml).expect("write config");
    let out = gateway_tests::run_gateway(
        &["validate", "-c", "gateway.yaml"],
        dir.path(),
        Duration::from_secs(20),
    );
    assert_ne!(out.code(), Some(0), "{yaml}");
    let all = format!("{}{}", out.stdout, out.stderr);
    let line = |n: usize, what: &str| {
        all.lines()
            .any(|l| l.starts_with(&format!("gateway.yaml:{n}:")) && l.contains(what))
    };
    assert!(line(10, "unknown cluster `nowhere`"), "{all}\n{yaml}");
    assert!(
        line(11, "invalid header name `bad header`"),
        "{all}\n{yaml}"
    );
    assert!(line(16, "700 is not a status"), "{all}\n{yaml}");
    assert!(line(17, "set by the gateway"), "{all}\n{yaml}");
}
