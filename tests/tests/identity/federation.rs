//! The end-to-end federation path: a workload in cluster B calls a service
//! in cluster A through both gateways.
//!
//! ```text
//! workload --HTTP, B-issued JWT--> B gateway (127.0.2.1)
//!   --mTLS, B gateway SVID--> A gateway (127.0.1.1, client_auth: require)
//!   --HTTP, x-gateway-identity + XFCC + A-minted JWT--> orders (127.0.1.2)
//! ```

use gateway_tests::jwt::{self, SigningKey};
use gateway_tests::{http_client, mtls_client, sha256_hex, Gateway, TestCa, Upstream};
use serde_json::json;

use crate::common::*;

/// Audience of the token A mints for the orders service.
const ORDERS_AUD: &str = "orders.cluster-a";

/// Both clusters, running.
struct Federation {
    a: Gateway,
    b: Gateway,
    orders: Upstream,
    a_ca: TestCa,
    b_svid_der: Vec<u8>,
    b_key: SigningKey,
    a_tls_port: u16,
    b_port: u16,
}

fn start_federation() -> Federation {
    let a_ca = TestCa::new("cluster-a.example CA");
    let b_ca = TestCa::new("cluster-b.example CA");
    let b_key = SigningKey::rsa("b-rsa-1");
    let a_signer = SigningKey::es256("unused-kid");
    let orders = Upstream::named_at(ip(A_SVC_IP), "orders");

    // Cluster A's gateway: its server SVID, both CAs, B's issuer keys, its
    // token-exchange key.
    let a_dir = tempfile::tempdir().expect("tempdir");
    a_ca.write_pem(a_dir.path(), "a-ca.pem");
    b_ca.write_pem(a_dir.path(), "b-ca.pem");
    a_ca.issue_svid(A_GW_ID, &[A_GW_HOST])
        .write(a_dir.path(), "gw-a.pem", "gw-a.key");
    std::fs::write(a_dir.path().join("b-jwks.json"), jwt::jwks_json(&[&b_key])).unwrap();
    std::fs::write(a_dir.path().join("token-a.key"), a_signer.private_key_pem()).unwrap();
    let a = Gateway::builder()
        .in_dir(a_dir)
        .config(
            r#"
admin: {listen: "${a_ip}:${admin}"}
trust_domains:
  - name: cluster-a.example
    ca: a-ca.pem
  - name: cluster-b.example
    ca: b-ca.pem
    jwt_issuers:
      - issuer: ${b_issuer}
        audiences: [cluster-a]
        jwks_file: b-jwks.json
token_issuer:
  issuer: ${a_token_issuer}
  key: token-a.key
  kid: gw-a-1
listeners:
  - name: border
    listen: "${a_ip}:${port}"
    tls:
      cert: gw-a.pem
      key: gw-a.key
      client_auth: require
      client_trust_domains: [cluster-b.example]
clusters:
  - {name: orders, endpoints: [{address: "${orders}"}]}
routes:
  - name: orders
    match: {path_prefix: /orders}
    cluster: orders
    auth:
      jwt: required
      allow:
        - {principal: "spiffe://cluster-b.example/gateway"}
    identity:
      xfcc: true
      token: {audience: ${aud}, ttl: 2m}
"#,
            &[
                ("a_ip", &A_GW_IP),
                ("b_issuer", &B_ISSUER),
                ("a_token_issuer", &A_TOKEN_ISSUER),
                ("orders", &orders.address()),
                ("aud", &ORDERS_AUD),
            ],
        )
        .start();
    let a_tls_port = a.port();

    // Cluster B's gateway: a plain listener for its workloads, and cluster
    // A's gateway as an interconnect cluster verified against A's CA.
    let b_dir = tempfile::tempdir().expect("tempdir");
    a_ca.write_pem(b_dir.path(), "a-ca.pem");
    b_ca.write_pem(b_dir.path(), "b-ca.pem");
    let b_svid = b_ca.issue_svid(B_GW_ID, &[B_GW_HOST]);
    b_svid.write(b_dir.path(), "gw-b.pem", "gw-b.key");
    let b = Gateway::builder()
        .in_dir(b_dir)
        .config(
            r#"
admin: {listen: "${b_ip}:${admin}"}
trust_domains:
  - name: cluster-a.example
    ca: a-ca.pem
  - name: cluster-b.example
    ca: b-ca.pem
listeners:
  - {name: mesh, listen: "${b_ip}:${port}"}
clusters:
  - name: cluster-a-gateway
    endpoints: [{address: "${a_ip}:${a_tls}"}]
    tls:
      sni: ${a_host}
      trust_domain: cluster-a.example
      cert: gw-b.pem
      key: gw-b.key
routes:
  - {name: to-cluster-a, match: {path_prefix: /orders}, cluster: cluster-a-gateway}
"#,
            &[
                ("b_ip", &B_GW_IP),
                ("a_ip", &A_GW_IP),
                ("a_tls", &a_tls_port),
                ("a_host", &A_GW_HOST),
            ],
        )
        .start();
    let b_port = b.port();
    Federation {
        a,
        b,
        orders,
        a_ca,
        b_svid_der: b_svid.cert_der().to_vec(),
        b_key,
        a_tls_port,
        b_port,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_in_b_reaches_service_in_a_with_exchanged_identity() {
    let f = start_federation();
    let client = http_client();
    let url = format!("http://{B_GW_IP}:{}/orders/42", f.b_port);
    let user_token = f.b_key.sign(&jwt::claims(B_ISSUER, "user-42", "cluster-a"));

    // The workload also forges identity headers: both gateways must drop them.
    let forged = r#"principal="spiffe://cluster-a.example/admin";trust_domain="cluster-a.example";method=mtls"#;
    let out = send(
        &client,
        "GET",
        &url,
        Some(&user_token),
        &[
            ("x-gateway-identity", forged),
            (
                "x-forwarded-client-cert",
                "URI=spiffe://cluster-a.example/admin",
            ),
        ],
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "workload -> B gateway failed: {e}\n--- B stderr ---\n{}\n--- A stderr ---\n{}",
            tail(&f.b.stderr(), 30),
            tail(&f.a.stderr(), 30)
        )
    });
    assert_eq!(
        out.status,
        200,
        "workload -> B -> A -> orders should succeed, got {} ({:?}, www-authenticate {:?})\n--- B stderr ---\n{}\n--- A stderr ---\n{}",
        out.status,
        out.body,
        out.www_authenticate,
        tail(&f.b.stderr(), 30),
        tail(&f.a.stderr(), 30)
    );
    let req = seen(&f.orders, "/orders/42").expect("the orders service saw the request");

    // Who called: B's gateway (mTLS) on behalf of user-42 of B's issuer (JWT).
    assert_eq!(
        identity_header(&req).as_deref(),
        Some(
            expected_identity(
                B_GW_ID,
                B_TD,
                "mtls+jwt",
                Some(&format!("{B_ISSUER}#user-42"))
            )
            .as_str()
        ),
        "x-gateway-identity at the orders service (the forged value must be gone)"
    );

    // XFCC: set by A (Envoy SANITIZE_SET), naming B's gateway certificate.
    let xfcc = req.header_all("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1, "exactly one XFCC header: {xfcc:?}");
    assert!(
        !xfcc[0].contains(','),
        "one XFCC element (the caller's was not appended to): {:?}",
        xfcc[0]
    );
    let fields = parse_xfcc(xfcc[0]);
    let field = |k: &str| {
        fields
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(field("URI"), [B_GW_ID], "XFCC URI: {:?}", xfcc[0]);
    assert_eq!(
        field("Hash"),
        [sha256_hex(&f.b_svid_der).as_str()],
        "XFCC Hash is the SHA-256 of B's gateway certificate DER: {:?}",
        xfcc[0]
    );
    for by in field("By") {
        assert_eq!(by, A_GW_ID, "XFCC By is A's own URI SAN: {:?}", xfcc[0]);
    }

    // Token exchange: A replaced the user's token with its own ES256 token.
    let minted = bearer_of(&req);
    assert_ne!(minted, user_token, "A must replace the caller's token");
    let jwks = admin_jwks(&f.a).await;
    let keys = jwks["keys"].as_array().expect("JWKS has `keys`");
    let gw_key = keys
        .iter()
        .find(|k| k["kid"] == "gw-a-1")
        .unwrap_or_else(|| panic!("JWKS has no key with kid gw-a-1: {jwks}"));
    assert_eq!(
        (
            &gw_key["kty"],
            &gw_key["crv"],
            &gw_key["alg"],
            &gw_key["use"]
        ),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        ),
        "the served JWK: {gw_key}"
    );
    assert!(
        gw_key.get("d").is_none(),
        "the JWKS leaks the private key: {gw_key}"
    );
    let (header, _) = jwt::decode_unverified(&minted);
    assert_eq!(header["kid"], "gw-a-1", "minted token header: {header}");
    let claims = jwt::verify_es256_with_jwks(&minted, &jwks, A_TOKEN_ISSUER, ORDERS_AUD)
        .unwrap_or_else(|e| panic!("the minted token {minted} {e}"));
    assert_eq!(claims["sub"], B_GW_ID, "sub is the principal: {claims}");
    assert_eq!(claims["original_iss"], B_ISSUER, "original_iss: {claims}");
    assert_eq!(claims["trust_domain"], B_TD, "trust_domain: {claims}");
    assert_eq!(claims["auth_method"], "mtls+jwt", "auth_method: {claims}");
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "jti: {claims}"
    );
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert!(
        (119..=121).contains(&(exp - iat)),
        "exp - iat is the route's ttl (2m): {claims}"
    );
    assert!((iat - jwt::now()).abs() <= 30, "iat is now: {claims}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_refuses_bad_tokens_and_foreign_domains() {
    let f = start_federation();
    let client = http_client();
    let url = |p: &str| format!("http://{B_GW_IP}:{}{p}", f.b_port);

    // No token on A's `jwt: required` route: A answers 401, B relays it.
    let out = send_ok(&f.a, &client, "GET", &url("/orders/no-token"), None, &[]).await;
    assert_unauthenticated(&f.a, "no token through B", &out);

    // A token for another audience.
    let wrong_aud = f.b_key.sign(&jwt::claims(B_ISSUER, "user-42", "cluster-b"));
    let out = send_ok(
        &f.a,
        &client,
        "GET",
        &url("/orders/wrong-aud"),
        Some(&wrong_aud),
        &[],
    )
    .await;
    assert_invalid_token(&f.a, "wrong audience through B", &out);

    // A's own workload with a valid cluster-a SVID connecting straight to A:
    // cluster-a.example is not in A's client_trust_domains.
    let a_workload = f
        .a_ca
        .issue_svid("spiffe://cluster-a.example/ns/shop/sa/web", &[]);
    let direct = mtls_client(
        &f.a_ca,
        Some(&a_workload),
        A_GW_HOST,
        sock(A_GW_IP, f.a_tls_port),
    );
    let token = f.b_key.sign(&jwt::claims(B_ISSUER, "user-42", "cluster-a"));
    let got = send(
        &direct,
        "GET",
        &format!("https://{A_GW_HOST}:{}/orders/direct", f.a_tls_port),
        Some(&token),
        &[],
    )
    .await;
    assert!(
        got.is_err(),
        "a cluster-a.example SVID must fail the handshake on a listener with client_trust_domains [cluster-b.example], got {got:?}"
    );
    assert_eq!(
        f.orders.count(),
        0,
        "no refused request may reach the orders service: {:?}",
        f.orders.requests()
    );
}
