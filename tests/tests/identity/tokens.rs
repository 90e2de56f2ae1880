//! Bearer JWT verification on `auth` routes: every kind of bad token is a
//! 401 with a `Bearer` challenge and reaches nothing; caller-supplied
//! identity headers never reach an upstream.

use gateway_tests::jwt::{self, SigningKey};
use gateway_tests::{http_client, Gateway, Upstream};
use serde_json::json;

use crate::common::*;

struct JwtFixture {
    gw: Gateway,
    up: Upstream,
    rsa: SigningKey,
    ec: SigningKey,
    port: u16,
}

/// Cluster B's gateway on a plain listener: `/api` needs a JWT of B's
/// issuer (audience `edge`, keys from a JWKS file), `/open` has no `auth`.
fn start_jwt_gateway() -> JwtFixture {
    let rsa = SigningKey::rsa("b-rsa-1");
    let ec = SigningKey::es256("b-ec-1");
    let up = Upstream::named_at(ip(B_SVC_IP), "api");
    let gw = b_jwt_gateway(
        &[&rsa, &ec],
        None,
        "mesh",
        &up,
        r#"
  - name: api
    match: {path_prefix: /api}
    cluster: api
    auth: {jwt: required}
  - name: open
    match: {path_prefix: /open}
    cluster: api
"#,
    );
    let port = gw.port();
    JwtFixture {
        gw,
        up,
        rsa,
        ec,
        port,
    }
}

impl JwtFixture {
    fn url(&self, path: &str) -> String {
        format!("http://{B_GW_IP}:{}{path}", self.port)
    }
}

fn valid() -> serde_json::Value {
    jwt::claims(B_ISSUER, "user-42", "edge")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_get_401_with_a_bearer_challenge() {
    let f = start_jwt_gateway();
    let client = http_client();

    // Controls: good RS256 and ES256 tokens pass.
    for (what, token) in [
        ("valid RS256", f.rsa.sign(&valid())),
        ("valid ES256", f.ec.sign(&valid())),
    ] {
        let path = format!("/api/{}", what.replace(' ', "-"));
        let out = send_ok(&f.gw, &client, "GET", &f.url(&path), Some(&token), &[]).await;
        assert_status(&f.gw, what, &out, 200);
        assert!(seen(&f.up, &path).is_some(), "{what}: the upstream saw it");
    }

    // Missing token on a `jwt: required` route.
    let out = send_ok(&f.gw, &client, "GET", &f.url("/api/missing"), None, &[]).await;
    assert_unauthenticated(&f.gw, "no token", &out);

    let t = jwt::now();
    let mut expired = valid();
    expired["iat"] = json!(t - 7200);
    expired["nbf"] = json!(t - 7200);
    expired["exp"] = json!(t - 3600);
    let mut early = valid();
    early["nbf"] = json!(t + 3600);
    early["exp"] = json!(t + 7200);
    let mut big = valid();
    big["padding"] = json!("x".repeat(9000));
    let big_token = f.rsa.sign(&big);
    assert!(
        big_token.len() > 8192,
        "the oversized token is {} bytes",
        big_token.len()
    );
    let stranger = SigningKey::es256("b-ec-unknown");
    let good = f.rsa.sign(&valid());
    let mut forged_claims = valid();
    forged_claims["sub"] = json!("admin");

    let cases: Vec<(&str, String)> = vec![
        ("alg none", jwt::unsigned_token(&valid(), Some(f.rsa.kid()))),
        ("alg none without kid", jwt::unsigned_token(&valid(), None)),
        (
            "HS256 signed with the RSA public key PEM",
            jwt::hs256_token(
                f.rsa.public_key_pem().as_bytes(),
                Some(f.rsa.kid()),
                &valid(),
            ),
        ),
        ("expired", f.rsa.sign(&expired)),
        ("not yet valid (nbf)", f.rsa.sign(&early)),
        (
            "wrong audience",
            f.rsa
                .sign(&jwt::claims(B_ISSUER, "user-42", "somebody-else")),
        ),
        (
            "wrong issuer",
            f.rsa.sign(&jwt::claims(
                "https://issuer.evil.example",
                "user-42",
                "edge",
            )),
        ),
        ("unknown kid", stranger.sign(&valid())),
        (
            "known kid, another key's signature",
            stranger.sign_with_kid(&valid(), Some(f.ec.kid())),
        ),
        ("tampered signature", jwt::tamper_signature(&good)),
        (
            "tampered payload",
            jwt::replace_payload(&good, &forged_claims),
        ),
        ("oversized (> 8192 bytes)", big_token),
        ("not a JWT", "not-a-jwt".to_string()),
    ];
    for (what, token) in &cases {
        let path = format!("/api/refused/{}", what.replace([' ', '(', ')', '>'], "-"));
        let out = send_ok(&f.gw, &client, "GET", &f.url(&path), Some(token), &[]).await;
        assert_invalid_token(&f.gw, what, &out);
        assert!(
            seen(&f.up, &path).is_none(),
            "{what}: a refused request reached the upstream"
        );
    }

    // Counted: gateway/docs/identity.md names `success`, `expired`, `bad_signature`,
    // `missing`, `unknown_kid` among the results.
    let m = f.gw.metrics().await;
    let series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("gateway_authn_total"))
        .collect();
    let jwt_ok = authn(
        &m,
        &[
            ("method", "jwt"),
            ("trust_domain", B_TD),
            ("result", "success"),
        ],
    );
    assert_eq!(
        jwt_ok, 2.0,
        "two verified tokens (RS256 + ES256) for trust domain {B_TD}: {series:#?}"
    );
    for (result, at_least) in [("expired", 1.0), ("bad_signature", 2.0), ("missing", 1.0)] {
        let n = authn(&m, &[("method", "jwt"), ("result", result)]);
        assert!(
            n >= at_least,
            "gateway_authn_total{{method=\"jwt\",result=\"{result}\"}} >= {at_least}, got {n}: {series:#?}"
        );
    }
    // The docs say `unknown_kid`; the filters crate's JwtError::metric_label
    // says `unknown_key`. Either names the unknown-kid refusal.
    let unknown = authn(&m, &[("method", "jwt"), ("result", "unknown_kid")])
        + authn(&m, &[("method", "jwt"), ("result", "unknown_key")]);
    assert!(
        unknown >= 1.0,
        "the unknown-kid refusal is counted (result unknown_kid or unknown_key): {series:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_supplied_identity_headers_never_reach_upstreams() {
    let f = start_jwt_gateway();
    let client = http_client();
    let forged = r#"principal="spiffe://cluster-b.example/ns/admin/sa/root";trust_domain="cluster-b.example";method=mtls"#;
    let forged_xfcc =
        "By=spiffe://cluster-b.example/gateway;URI=spiffe://cluster-b.example/ns/admin/sa/root";

    // Forged identity, no credentials, on a route that needs them: 401.
    let out = send_ok(
        &f.gw,
        &client,
        "GET",
        &f.url("/api/forged-only"),
        None,
        &[("x-gateway-identity", forged)],
    )
    .await;
    assert_unauthenticated(&f.gw, "forged x-gateway-identity without credentials", &out);
    assert!(
        seen(&f.up, "/api/forged-only").is_none(),
        "refused request reached the upstream"
    );

    // On an open route the caller is anonymous: the forged headers are
    // stripped and no identity is set; Authorization passes untouched.
    let token = f.ec.sign(&valid());
    let out = send_ok(
        &f.gw,
        &client,
        "GET",
        &f.url("/open/forged"),
        Some(&token),
        &[
            ("x-gateway-identity", forged),
            ("x-forwarded-client-cert", forged_xfcc),
        ],
    )
    .await;
    assert_status(&f.gw, "open route", &out, 200);
    let req = seen(&f.up, "/open/forged").expect("upstream saw /open/forged");
    assert_eq!(
        req.header_all("x-gateway-identity"),
        Vec::<&str>::new(),
        "the caller's x-gateway-identity must be stripped on a route without auth"
    );
    assert_eq!(
        req.header_all("x-forwarded-client-cert"),
        Vec::<&str>::new(),
        "the caller's x-forwarded-client-cert must be stripped"
    );
    assert_eq!(
        req.header_all("authorization"),
        [format!("Bearer {token}").as_str()],
        "a route without auth passes Authorization through untouched"
    );

    // Valid credentials plus forged headers (twice): the upstream sees only
    // the gateway's value.
    let out = send_ok(
        &f.gw,
        &client,
        "GET",
        &f.url("/api/forged-with-token"),
        Some(&token),
        &[
            ("x-gateway-identity", forged),
            ("x-gateway-identity", "principal=\"anyone\""),
            ("x-forwarded-client-cert", forged_xfcc),
        ],
    )
    .await;
    assert_status(&f.gw, "valid token with forged headers", &out, 200);
    let req = seen(&f.up, "/api/forged-with-token").expect("upstream saw the request");
    assert_eq!(
        req.header_all("x-gateway-identity"),
        [expected_identity(&format!("{B_ISSUER}#user-42"), B_TD, "jwt", None).as_str()],
        "only the gateway's x-gateway-identity reaches the upstream"
    );
    assert_eq!(
        req.header_all("x-forwarded-client-cert"),
        Vec::<&str>::new(),
        "no XFCC without mTLS (the caller's is stripped)"
    );
}
