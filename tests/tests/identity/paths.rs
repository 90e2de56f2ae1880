//! Path tricks cannot slip past authorization: routing, `auth` rules and
//! the upstream all see the normalised path, and ambiguous escapes are 400.

use std::time::Duration;

use gateway_tests::{Gateway, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// Sends `GET <path>` as written (no client-side normalisation).
async fn raw_get(port: u16, path: &str) -> u16 {
    raw_get_with(port, path, &[]).await
}

#[tokio::test]
async fn path_tricks_are_normalised_before_routing_and_authorization() {
    let up = Upstream::named_at(ip(B_SVC_IP), "orders");
    let gw = Gateway::builder()
        .config(
            r#"
admin: {listen: "${ip}:${admin}"}
listeners:
  - {name: edge, listen: "${ip}:${port}"}
clusters:
  - {name: orders, endpoints: [{address: "${up}"}]}
routes:
  - name: orders
    match: {path_prefix: /orders}
    cluster: orders
    auth:
      deny: [{path_prefix: /orders/admin}]
  - name: public
    match: {path_prefix: /public}
    cluster: orders
"#,
            &[("ip", &B_GW_IP), ("up", &up.address())],
        )
        .start();
    let port = gw.port();
    for (path, want, upstream_path) in [
        ("/orders/list", 200, Some("/orders/list")),
        ("/orders/./list", 200, Some("/orders/list")),
        ("/orders//list?x=1", 200, Some("/orders/list?x=1")),
        ("/orders/%6cist", 200, Some("/orders/list")),
        ("/orders/admin", 403, None),
        ("/orders//admin", 403, None),
        ("/orders/./admin", 403, None),
        ("/orders/x/../admin", 403, None),
        ("/orders/%61dmin", 403, None),
        ("/orders/%2e%2e/orders/admin", 403, None),
        ("/public/../orders/admin", 403, None),
        ("/orders%2Fadmin", 400, None),
        ("/orders/%5Cadmin", 400, None),
        ("/orders/a\\admin", 400, None),
    ] {
        let before = up.requests().len();
        let got = raw_get(port, path).await;
        assert_eq!(got, want, "{path}\n{}", tail(&gw.stderr(), 20));
        match upstream_path {
            Some(p) => assert!(
                seen(&up, p).is_some(),
                "{path}: the upstream should have seen {p}, saw {:?}",
                up.requests()
                    .iter()
                    .map(|r| r.path.clone())
                    .collect::<Vec<_>>()
            ),
            None => assert_eq!(up.requests().len(), before, "{path} reached the upstream"),
        }
    }
}

/// Sends `GET <path>` as written, with extra raw header lines; returns
/// the status code.
async fn raw_get_with(port: u16, path: &str, headers: &[&str]) -> u16 {
    let mut s = tokio::net::TcpStream::connect(sock(B_GW_IP, port))
        .await
        .expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: paths.test\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("answer within 5 s")
        .expect("read");
    let head = String::from_utf8_lossy(&buf);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line for {path}: {head:?}"))
}

#[tokio::test]
async fn malformed_credentials_are_refused_and_token_headers_are_the_gateways() {
    use gateway_tests::jwt::{self, SigningKey};
    let key = SigningKey::es256("b-1");
    let signer = SigningKey::es256("gw-1");
    let up = Upstream::named_at(ip(B_SVC_IP), "svc");
    let gw = b_jwt_gateway(
        &[&key],
        Some(&signer),
        "edge",
        &up,
        r#"
  - name: optional
    match: {path_prefix: /optional}
    cluster: svc
    auth: {jwt: optional}
    identity: {token: {audience: svc, header: x-gw-token}}
"#,
    );
    let port = gw.port();
    let good = key.sign(&jwt::claims(B_ISSUER, "user-1", "edge"));
    let good_header = format!("Authorization: Bearer {good}");
    for (what, headers, want) in [
        (
            "Basic credentials",
            vec!["Authorization: Basic dXNlcjpwdw=="],
            401,
        ),
        ("bearer with junk", vec!["Authorization: Bearer a b"], 401),
        (
            "two Authorization headers",
            vec![good_header.as_str(), "Authorization: Bearer forged"],
            401,
        ),
        (
            "anonymous with a forged gateway token",
            vec!["x-gw-token: forged"],
            200,
        ),
        ("a valid token", vec![good_header.as_str()], 200),
    ] {
        let before = up.requests().len();
        let got = raw_get_with(port, "/optional", &headers).await;
        assert_eq!(got, want, "{what}\n{}", tail(&gw.stderr(), 20));
        if want != 200 {
            assert_eq!(up.requests().len(), before, "{what} reached the upstream");
        }
    }
    let reqs = up.requests();
    assert_eq!(reqs.len(), 2, "two requests went through");
    let anon = &reqs[0];
    assert_eq!(
        anon.header("x-gw-token"),
        None,
        "a caller's own x-gw-token must never reach the upstream"
    );
    let known = &reqs[1];
    let minted = known
        .header("x-gw-token")
        .expect("minted token for a known caller");
    assert_ne!(minted, "forged");
    assert_eq!(
        known.header("authorization"),
        None,
        "the caller's token (meant for the gateway) stays at the gateway on token-exchange routes"
    );
}
