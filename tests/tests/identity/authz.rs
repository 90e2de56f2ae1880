//! The authorization matrix: one route with allow and deny rules over
//! SPIFFE and JWT principals, claims, methods and path prefixes, and the
//! metrics that count the decisions.

use gateway_tests::jwt::{self, SigningKey};
use gateway_tests::{
    free_port, http_client, metric_value, mtls_client, Gateway, LeafCert, TestCa, Upstream,
};
use serde_json::{json, Value};

use crate::common::*;

const WEB: &str = "spiffe://cluster-b.example/ns/shop/sa/web";
const BATCH: &str = "spiffe://cluster-b.example/ns/batch/sa/nightly";

/// Who calls in one row.
#[derive(Clone)]
enum Caller {
    /// No credentials, plain HTTP.
    Anonymous,
    /// No credentials, over the TLS listener (client_auth: optional).
    AnonymousTls,
    /// A client certificate with this SPIFFE ID.
    Svid(&'static str),
    /// A JWT of B's issuer: `sub` plus extra claims.
    Jwt(&'static str, Value),
    /// A JWT whose signature was tampered with.
    BadJwt,
    /// Both a client certificate and a JWT.
    Both(&'static str, &'static str, Value),
}

struct Row {
    caller: Caller,
    method: &'static str,
    path: &'static str,
    status: u16,
}

fn row(caller: Caller, method: &'static str, path: &'static str, status: u16) -> Row {
    Row {
        caller,
        method,
        path,
        status,
    }
}

const RULES: &str = r#"
    auth:
      deny:
        - {principal: "https://issuer.cluster-b.example#mallory"}
        - {principal: "spiffe://*", path_prefix: /m/admin}
      allow:
        - {principal: "spiffe://cluster-b.example/ns/shop/sa/web", methods: [GET]}
        - principals: ["https://issuer.cluster-b.example#*"]
          claims: {scope: {contains: "orders:read"}}
          methods: [GET, HEAD]
        - {claims: {roles: {contains: admin}}, path_prefix: /m/admin}
        - {claims: {tenant: acme}, methods: [POST]}
        - {claims: {groups: {equals: ops}}, path_prefix: /m/ops}
        - {principal: "spiffe://cluster-b.example/ns/batch/*", path_prefix: /m/batch}
"#;

fn matrix() -> Vec<Row> {
    use Caller::*;
    let scope = |s: &str| json!({"scope": s});
    vec![
        // Anonymous callers are asked to authenticate.
        row(Anonymous, "GET", "/m/items", 401),
        row(Anonymous, "POST", "/m/items", 401),
        row(AnonymousTls, "GET", "/m/items", 401),
        // SPIFFE principals, methods, path prefixes, deny wins.
        row(Svid(WEB), "GET", "/m/items", 200),
        row(Svid(WEB), "POST", "/m/items", 403),
        row(Svid(WEB), "GET", "/m/admin/panel", 403),
        row(Svid(BATCH), "GET", "/m/batch/run", 200),
        row(Svid(BATCH), "GET", "/m/items", 403),
        // JWT principal pattern + scope `contains` (a word of the string).
        row(
            Jwt("alice", scope("orders:read orders:write")),
            "GET",
            "/m/items",
            200,
        ),
        row(Jwt("alice", scope("orders:write")), "GET", "/m/items", 403),
        row(
            Jwt("alice", scope("orders:readonly")),
            "GET",
            "/m/items",
            403,
        ),
        row(Jwt("alice", scope("orders:read")), "POST", "/m/items", 403),
        // `contains` and `equals` on array claims, `equals` on a string.
        row(
            Jwt("bob", json!({"roles": ["dev", "admin"]})),
            "GET",
            "/m/admin/panel",
            200,
        ),
        row(
            Jwt("bob", json!({"roles": ["dev"]})),
            "GET",
            "/m/admin/panel",
            403,
        ),
        row(
            Jwt("carol", json!({"tenant": "acme"})),
            "POST",
            "/m/items",
            200,
        ),
        row(
            Jwt("carol", json!({"tenant": "acme-corp"})),
            "POST",
            "/m/items",
            403,
        ),
        row(
            Jwt("dave", json!({"groups": ["ops", "dev"]})),
            "GET",
            "/m/ops/deploy",
            200,
        ),
        row(
            Jwt("dave", json!({"groups": ["dev"]})),
            "GET",
            "/m/ops/deploy",
            403,
        ),
        // Deny wins over a matching allow, for either principal.
        row(Jwt("mallory", scope("orders:read")), "GET", "/m/items", 403),
        row(Both(WEB, "mallory", json!({})), "GET", "/m/items", 403),
        row(
            Both(WEB, "bob", json!({"roles": ["admin"]})),
            "GET",
            "/m/admin/panel",
            403,
        ),
        row(
            Both(WEB, "alice", scope("orders:read")),
            "GET",
            "/m/items",
            200,
        ),
        // An invalid token is an authentication failure.
        row(BadJwt, "GET", "/m/items", 401),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_and_its_metrics() {
    let b_ca = TestCa::new("cluster-b.example CA");
    let key = SigningKey::es256("b-ec-1");
    let up = Upstream::named_at(ip(B_SVC_IP), "matrix");
    let dir = tempfile::tempdir().expect("tempdir");
    b_ca.write_pem(dir.path(), "b-ca.pem");
    b_ca.issue_svid(B_GW_ID, &[B_GW_HOST])
        .write(dir.path(), "gw-b.pem", "gw-b.key");
    std::fs::write(dir.path().join("jwks.json"), jwt::jwks_json(&[&key])).unwrap();
    let gw = Gateway::builder()
        .in_dir(dir)
        .config(
            r#"
admin: {listen: "${ip}:${admin}"}
trust_domains:
  - name: cluster-b.example
    ca: b-ca.pem
    jwt_issuers:
      - issuer: ${iss}
        audiences: [edge]
        jwks_file: jwks.json
listeners:
  - {name: plain, listen: "${ip}:${port}"}
  - name: mesh
    listen: "${ip}:${tls}"
    tls: {cert: gw-b.pem, key: gw-b.key, client_auth: optional}
clusters:
  - {name: matrix, endpoints: [{address: "${up}"}]}
routes:
  - name: matrix
    match: {path_prefix: /m}
    cluster: matrix
${rules}
"#,
            &[
                ("ip", &B_GW_IP),
                ("tls", &free_port()),
                ("iss", &B_ISSUER),
                ("up", &up.address()),
                ("rules", &RULES),
            ],
        )
        .start();
    let (http_port, tls_port) = (gw.port(), gw.listener_addrs()[1].port());

    let plain = http_client();
    let tls_addr = sock(B_GW_IP, tls_port);
    let svids: Vec<(&str, LeafCert)> = [WEB, BATCH]
        .into_iter()
        .map(|id| (id, b_ca.issue_svid(id, &[])))
        .collect();
    let (mut n401, mut n403, mut jwt_ok, mut mtls_ok) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for (i, r) in matrix().iter().enumerate() {
        let path = format!("{}?row={i}", r.path);
        let token_for = |sub: &str, extra: &Value| {
            let mut c = jwt::claims(B_ISSUER, sub, "edge");
            for (k, v) in extra.as_object().expect("claims object") {
                c[k] = v.clone();
            }
            key.sign(&c)
        };
        let (svid, token, expect_identity) = match &r.caller {
            Caller::Anonymous | Caller::AnonymousTls => (None, None, None),
            Caller::Svid(id) => (
                Some(*id),
                None,
                Some(expected_identity(id, B_TD, "mtls", None)),
            ),
            Caller::Jwt(sub, extra) => (
                None,
                Some(token_for(sub, extra)),
                Some(expected_identity(
                    &format!("{B_ISSUER}#{sub}"),
                    B_TD,
                    "jwt",
                    None,
                )),
            ),
            Caller::BadJwt => (
                None,
                Some(jwt::tamper_signature(&token_for(
                    "alice",
                    &json!({"scope": "orders:read"}),
                ))),
                None,
            ),
            Caller::Both(id, sub, extra) => (
                Some(*id),
                Some(token_for(sub, extra)),
                Some(expected_identity(
                    id,
                    B_TD,
                    "mtls+jwt",
                    Some(&format!("{B_ISSUER}#{sub}")),
                )),
            ),
        };
        let use_tls = svid.is_some() || matches!(r.caller, Caller::AnonymousTls);
        let out = if use_tls {
            let cert = svid.map(|id| {
                &svids
                    .iter()
                    .find(|(s, _)| *s == id)
                    .expect("an SVID issued for every ID in the matrix")
                    .1
            });
            let client = mtls_client(&b_ca, cert, B_GW_HOST, tls_addr);
            let url = format!("https://{B_GW_HOST}:{tls_port}{path}");
            send_ok(&gw, &client, r.method, &url, token.as_deref(), &[]).await
        } else {
            let url = format!("http://{B_GW_IP}:{http_port}{path}");
            send_ok(&gw, &plain, r.method, &url, token.as_deref(), &[]).await
        };
        let who = match &r.caller {
            Caller::Anonymous => "anonymous".to_string(),
            Caller::AnonymousTls => "anonymous over TLS".to_string(),
            Caller::Svid(id) => (*id).to_string(),
            Caller::Jwt(sub, extra) => format!("jwt {sub} {extra}"),
            Caller::BadJwt => "tampered jwt".to_string(),
            Caller::Both(id, sub, extra) => format!("{id} + jwt {sub} {extra}"),
        };
        let what = format!("row {i}: {who} {} {}", r.method, r.path);
        if out.status != r.status {
            failures.push(format!(
                "{what}: expected {}, got {} (body {:?}, www-authenticate {:?})",
                r.status, out.status, out.body, out.www_authenticate
            ));
            continue;
        }
        match r.status {
            401 if matches!(r.caller, Caller::BadJwt) => assert_invalid_token(&gw, &what, &out),
            401 => assert_unauthenticated(&gw, &what, &out),
            _ => {}
        }
        match (r.status, seen(&up, &path)) {
            (200, None) => failures.push(format!("{what}: allowed, but the upstream saw nothing")),
            (200, Some(req)) => {
                let got = identity_header(&req);
                if got != expect_identity {
                    failures.push(format!(
                        "{what}: x-gateway-identity {got:?}, expected {expect_identity:?}"
                    ));
                }
            }
            (_, Some(_)) => failures.push(format!("{what}: refused, but reached the upstream")),
            (_, None) => {}
        }
        n401 += usize::from(r.status == 401);
        n403 += usize::from(r.status == 403);
        if !matches!(r.caller, Caller::BadJwt) {
            jwt_ok += usize::from(token.is_some());
        }
        mtls_ok += usize::from(svid.is_some());
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}\n--- gateway stderr ---\n{}",
        failures.len(),
        matrix().len(),
        failures.join("\n"),
        tail(&gw.stderr(), 30)
    );

    let m = gw.metrics().await;
    let series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("gateway_auth"))
        .collect();
    let denied = metric_value(&m, "gateway_authz_denied_total", &[("route", "matrix")])
        .unwrap_or_else(|| {
            panic!("no gateway_authz_denied_total{{route=\"matrix\"}}: {series:#?}")
        });
    // Every 403 is an authorization denial. Whether the 401s (anonymous
    // callers, the invalid token) count too is not specified: both readings
    // pass, nothing else does.
    assert!(
        denied >= n403 as f64 && denied <= (n403 + n401) as f64,
        "gateway_authz_denied_total{{route=\"matrix\"}} = {denied}, expected {n403} (the 403s) to {} (403s + 401s): {series:#?}",
        n403 + n401
    );
    let jwt_success = authn(
        &m,
        &[
            ("method", "jwt"),
            ("trust_domain", B_TD),
            ("result", "success"),
        ],
    );
    assert_eq!(
        jwt_success, jwt_ok as f64,
        "gateway_authn_total{{method=\"jwt\",trust_domain=\"{B_TD}\",result=\"success\"}}: one per request with a valid token: {series:#?}"
    );
    let mtls_success = authn(
        &m,
        &[
            ("method", "mtls"),
            ("trust_domain", B_TD),
            ("result", "success"),
        ],
    );
    assert_eq!(
        mtls_success, mtls_ok as f64,
        "gateway_authn_total{{method=\"mtls\",trust_domain=\"{B_TD}\",result=\"success\"}}: one per request with a client certificate (one connection each): {series:#?}"
    );
    let bad = authn(&m, &[("method", "jwt"), ("result", "bad_signature")]);
    assert!(
        bad >= 1.0,
        "gateway_authn_total{{method=\"jwt\",result=\"bad_signature\"}} counts the tampered token: {series:#?}"
    );
}
