//! Shared fixtures of the identity tests: names, addresses, requests and
//! the assertions every refusal needs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use gateway_tests::jwt::{self, SigningKey};
pub use gateway_tests::{error_chain, tail};
use gateway_tests::{metric_value, Gateway, RequestInfo, Upstream};

pub const B_TD: &str = "cluster-b.example";
pub const C_TD: &str = "cluster-c.example";
/// Cluster B's workload JWT issuer.
pub const B_ISSUER: &str = "https://issuer.cluster-b.example";
/// Cluster A gateway's own token issuer (token exchange).
pub const A_TOKEN_ISSUER: &str = "https://gw.cluster-a.example";
/// The DNS name of cluster A's gateway (SNI of the interconnect).
pub const A_GW_HOST: &str = "gw.cluster-a.example";
/// The DNS name of cluster B's gateway.
pub const B_GW_HOST: &str = "gw.cluster-b.example";
/// SPIFFE IDs of the two gateways.
pub const A_GW_ID: &str = "spiffe://cluster-a.example/gateway";
pub const B_GW_ID: &str = "spiffe://cluster-b.example/gateway";

/// Cluster A's gateway address, its upstream services, its helpers.
pub const A_GW_IP: &str = "127.0.1.1";
pub const A_SVC_IP: &str = "127.0.1.2";
/// Cluster B's gateway address, its upstream services, its issuer.
pub const B_GW_IP: &str = "127.0.2.1";
pub const B_SVC_IP: &str = "127.0.2.2";
pub const B_ISSUER_IP: &str = "127.0.2.9";

/// A loopback address from a constant.
pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP literal")
}

/// `ip:port` as a socket address.
pub fn sock(ip_str: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip(ip_str), port)
}

/// What a client got back, or the transport error (TLS failures land here).
#[derive(Debug)]
pub struct Outcome {
    pub status: u16,
    pub www_authenticate: Option<String>,
    pub body: String,
}

/// Sends `method url` with an optional bearer token and extra headers.
pub async fn send(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Outcome, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = client.request(method, url);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let www_authenticate = resp
                .headers()
                .get("www-authenticate")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
            let body = resp.text().await.unwrap_or_default();
            Ok(Outcome {
                status,
                www_authenticate,
                body,
            })
        }
        Err(e) => Err(error_chain(&e)),
    }
}

/// [`send`], panicking on a transport error (with gateway stderr).
pub async fn send_ok(
    gw: &Gateway,
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Outcome {
    send(client, method, url, token, headers)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{method} {url}: request failed: {e}\n--- gateway stderr ---\n{}",
                tail(&gw.stderr(), 40)
            )
        })
}

/// Asserts a 401 for an invalid token: `WWW-Authenticate` starts with
/// `Bearer` and says `error="invalid_token"` with an `error_description`.
pub fn assert_invalid_token(gw: &Gateway, what: &str, out: &Outcome) {
    assert_status(gw, what, out, 401);
    let challenge = out
        .www_authenticate
        .as_deref()
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"));
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: WWW-Authenticate must start with `Bearer`: {challenge:?}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#) && challenge.contains("error_description="),
        "{what}: WWW-Authenticate must carry error=\"invalid_token\" and an error_description: {challenge:?}"
    );
}

/// Asserts a 401 for a missing credential: `WWW-Authenticate: Bearer...`.
pub fn assert_unauthenticated(gw: &Gateway, what: &str, out: &Outcome) {
    assert_status(gw, what, out, 401);
    let challenge = out.www_authenticate.as_deref().unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "{what}: a 401 must carry WWW-Authenticate starting with `Bearer`, got {:?}",
        out.www_authenticate
    );
}

/// Asserts `status` with the gateway's stderr on failure.
pub fn assert_status(gw: &Gateway, what: &str, out: &Outcome, status: u16) {
    assert_eq!(
        out.status,
        status,
        "{what}: expected {status}, got {} (body {:?}, www-authenticate {:?})\n--- gateway stderr ---\n{}",
        out.status,
        out.body,
        out.www_authenticate,
        tail(&gw.stderr(), 30)
    );
}

/// The request the upstream saw whose path is exactly `path` (with query).
pub fn seen(up: &Upstream, path: &str) -> Option<RequestInfo> {
    up.requests().into_iter().find(|r| r.path == path)
}

/// The one `x-gateway-identity` value the upstream saw (panics on more).
pub fn identity_header(req: &RequestInfo) -> Option<String> {
    let all = req.header_all("x-gateway-identity");
    assert!(
        all.len() <= 1,
        "the upstream got {} x-gateway-identity headers: {all:?}",
        all.len()
    );
    all.first().map(|s| s.to_string())
}

/// The `x-gateway-identity` value gateway/docs/identity.md specifies.
pub fn expected_identity(
    principal: &str,
    trust_domain: &str,
    method: &str,
    request_principal: Option<&str>,
) -> String {
    let mut v = format!(r#"principal="{principal}";trust_domain="{trust_domain}";method={method}"#);
    if let Some(rp) = request_principal {
        let _ = write!(v, r#";request_principal="{rp}""#);
    }
    v
}

/// Splits one `x-forwarded-client-cert` element (`K=V;K="V"`) into pairs,
/// unquoting quoted values.
pub fn parse_xfcc(element: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut chars = element.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
            // Up to and including the `;` after the closing quote.
            for c in chars.by_ref() {
                if c == ';' {
                    break;
                }
            }
        } else {
            value = chars.by_ref().take_while(|&c| c != ';').collect();
        }
        pairs.push((key.trim().to_string(), value));
    }
    pairs
}

/// `gateway_authn_total` summed over the series with these labels (0 when none).
pub fn authn(metrics: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(metrics, "gateway_authn_total", labels).unwrap_or(0.0)
}

/// The admin JWKS (`GET /.well-known/jwks.json`), parsed; panics unless 200 JSON.
pub async fn admin_jwks(gw: &Gateway) -> serde_json::Value {
    let (status, body) = gw.admin_get("/.well-known/jwks.json").await;
    assert_eq!(
        status,
        200,
        "admin GET /.well-known/jwks.json answered {status}: {body}\n--- gateway stderr ---\n{}",
        tail(&gw.stderr(), 30)
    );
    serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("admin /.well-known/jwks.json is not JSON ({e}): {body}"))
}

/// The bearer token of an `Authorization` value the upstream saw.
pub fn bearer_of(req: &RequestInfo) -> String {
    let auth = req.header("authorization").unwrap_or_else(|| {
        panic!(
            "the upstream got no Authorization header: {:?}",
            req.headers
        )
    });
    let (scheme, token) = auth
        .split_once(' ')
        .unwrap_or_else(|| panic!("Authorization is not `Bearer <jwt>`: {auth:?}"));
    assert!(
        scheme.eq_ignore_ascii_case("bearer"),
        "Authorization is not `Bearer <jwt>`: {auth:?}"
    );
    token.trim().to_string()
}

/// The issuer of the tokens cluster B's gateway mints.
pub const B_TOKEN_ISSUER: &str = "https://gw.cluster-b.example";

/// A cluster-B gateway on [`B_GW_IP`] for the JWT tests: trust domain
/// `cluster-b.example` whose issuer [`B_ISSUER`] (audience `edge`) has
/// `keys` (file `jwks.json`); with `signer`, a token issuer
/// [`B_TOKEN_ISSUER`] signing with it (file `token.key`); listener
/// `listener`, one cluster named like `up`, and `routes` (YAML lines under
/// `routes:`).
pub fn b_jwt_gateway(
    keys: &[&SigningKey],
    signer: Option<&SigningKey>,
    listener: &str,
    up: &Upstream,
    routes: &str,
) -> Gateway {
    let mut b = Gateway::builder().file("jwks.json", &jwt::jwks_json(keys));
    let mut token_issuer = String::new();
    if let Some(signer) = signer {
        b = b.file("token.key", signer.private_key_pem());
        token_issuer = format!("token_issuer: {{issuer: \"{B_TOKEN_ISSUER}\", key: token.key}}");
    }
    b.config(
        r#"
admin: {listen: "${ip}:${admin}"}
trust_domains:
  - name: cluster-b.example
    jwt_issuers:
      - {issuer: "${iss}", audiences: [edge], jwks_file: jwks.json}
${token_issuer}
listeners:
  - {name: ${listener}, listen: "${ip}:${port}"}
clusters:
  - {name: ${cluster}, endpoints: [{address: "${up}"}]}
routes:
${routes}
"#,
        &[
            ("ip", &B_GW_IP),
            ("iss", &B_ISSUER),
            ("token_issuer", &token_issuer),
            ("listener", &listener),
            ("cluster", &up.name()),
            ("up", &up.address()),
            ("routes", &routes.trim_matches('\n')),
        ],
    )
    .start()
}
