//! Key rotation: a `jwks_uri` refreshed in the background, a `jwks_file`
//! and the token-issuer key re-read on reload.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::jwt::{self, SigningKey};
use gateway_tests::{http_client, Gateway, Reply, Upstream};

use crate::common::*;

/// Polls `GET url` with `token` until it answers `want`; returns how long
/// that took, or panics after `limit` with the last answer.
async fn wait_status(
    gw: &Gateway,
    client: &reqwest::Client,
    url: &str,
    token: &str,
    want: u16,
    what: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let got = send(client, "GET", url, Some(token), &[]).await;
        if matches!(&got, Ok(o) if o.status == want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{what}: no {want} within {limit:?}; last answer {got:?}\n--- gateway stderr ---\n{}",
            tail(&gw.stderr(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_uri_rotation_adds_and_removes_keys() {
    let k1 = SigningKey::es256("rot-1");
    let k2 = SigningKey::rsa("rot-2");
    // The issuer's JWKS endpoint: content the test changes at will.
    let doc = Arc::new(Mutex::new(jwt::jwks_json(&[&k1])));
    let served = doc.clone();
    let issuer = Upstream::start_at(ip(B_ISSUER_IP), "jwks", move |_| {
        Reply::status(200)
            .header("content-type", "application/json")
            .body(served.lock().expect("jwks doc").clone())
    });
    let up = Upstream::named_at(ip(B_SVC_IP), "api");
    let gw = Gateway::builder()
        .config(
            r#"
admin: {listen: "${ip}:${admin}"}
trust_domains:
  - name: cluster-b.example
    jwt_issuers:
      - issuer: ${iss}
        audiences: [edge]
        jwks_uri: http://${jwks}/jwks.json
        jwks_refresh: {interval: 1s, min_refetch_interval: 1s, timeout: 2s}
listeners:
  - {name: mesh, listen: "${ip}:${port}"}
clusters:
  - {name: api, endpoints: [{address: "${up}"}]}
routes:
  - {name: api, match: {path_prefix: /api}, cluster: api, auth: {jwt: required}}
"#,
            &[
                ("ip", &B_GW_IP),
                ("iss", &B_ISSUER),
                ("jwks", &issuer.address()),
                ("up", &up.address()),
            ],
        )
        .start();
    let port = gw.port();
    let client = http_client();
    let url = format!("http://{B_GW_IP}:{port}/api/rotation");
    let claims = jwt::claims(B_ISSUER, "user-42", "edge");
    let t1 = k1.sign(&claims);
    let t2 = k2.sign(&claims);
    let limit = Duration::from_secs(6);

    // The first fetch may finish after readiness: poll.
    wait_status(
        &gw,
        &client,
        &url,
        &t1,
        200,
        "token of the published key rot-1",
        limit,
    )
    .await;
    let out = send_ok(&gw, &client, "GET", &url, Some(&t2), &[]).await;
    assert_invalid_token(&gw, "token of rot-2 before it is published", &out);

    // Publish rot-2 next to rot-1.
    *doc.lock().unwrap() = jwt::jwks_json(&[&k1, &k2]);
    let took = wait_status(
        &gw,
        &client,
        &url,
        &t2,
        200,
        "token of the newly published rot-2",
        limit,
    )
    .await;
    eprintln!("rot-2 accepted {took:?} after it was published");
    let out = send_ok(&gw, &client, "GET", &url, Some(&t1), &[]).await;
    assert_status(&gw, "rot-1 while both keys are published", &out, 200);

    // Remove rot-1.
    *doc.lock().unwrap() = jwt::jwks_json(&[&k2]);
    let took = wait_status(
        &gw,
        &client,
        &url,
        &t1,
        401,
        "token of the removed rot-1",
        limit,
    )
    .await;
    eprintln!("rot-1 refused {took:?} after it was removed");
    let out = send_ok(&gw, &client, "GET", &url, Some(&t1), &[]).await;
    assert_invalid_token(&gw, "token of the removed rot-1", &out);
    let out = send_ok(&gw, &client, "GET", &url, Some(&t2), &[]).await;
    assert_status(&gw, "rot-2 after rot-1 was removed", &out, 200);
    assert!(
        issuer.count() >= 3,
        "the JWKS was fetched at least three times, {} fetches",
        issuer.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_file_and_token_issuer_key_reload() {
    let old = SigningKey::es256("file-1");
    let new = SigningKey::rsa("file-2");
    let signer_1 = SigningKey::es256("unused");
    let signer_2 = SigningKey::es256("unused");
    let up = Upstream::named_at(ip(B_SVC_IP), "api");
    let gw = b_jwt_gateway(
        &[&old],
        Some(&signer_1),
        "mesh",
        &up,
        r#"
  - name: api
    match: {path_prefix: /api}
    cluster: api
    auth: {jwt: required}
    identity: {token: {audience: api.cluster-b}}
"#,
    );
    let port = gw.port();
    let client = http_client();
    let claims = jwt::claims(B_ISSUER, "user-42", "edge");
    let (t_old, t_new) = (old.sign(&claims), new.sign(&claims));
    let url = |p: &str| format!("http://{B_GW_IP}:{port}{p}");
    let limit = Duration::from_secs(10);

    let out = send_ok(&gw, &client, "GET", &url("/api/before"), Some(&t_old), &[]).await;
    assert_status(&gw, "token of file-1 before the change", &out, 200);
    let minted_before = bearer_of(&seen(&up, "/api/before").expect("upstream saw /api/before"));
    let jwks_before = admin_jwks(&gw).await;
    jwt::verify_es256_with_jwks(
        &minted_before,
        &jwks_before,
        "https://gw.cluster-b.example",
        "api.cluster-b",
    )
    .unwrap_or_else(|e| panic!("token minted before the key change {e}"));

    // Swap both files; each is re-read on reload.
    gw.write_file("jwks.json", &jwt::jwks_json(&[&new]));
    gw.write_file("token.key", signer_2.private_key_pem());
    wait_status(
        &gw,
        &client,
        &url("/api/poll"),
        &t_new,
        200,
        "token of file-2 after the JWKS file changed",
        limit,
    )
    .await;
    let out = send_ok(&gw, &client, "GET", &url("/api/old"), Some(&t_old), &[]).await;
    assert_invalid_token(&gw, "token of file-1 after it left the JWKS file", &out);

    // The token issuer signs with the new key, and the admin JWKS serves it.
    let start = Instant::now();
    loop {
        let path = format!("/api/after-{}", start.elapsed().as_millis());
        let out = send_ok(&gw, &client, "GET", &url(&path), Some(&t_new), &[]).await;
        assert_status(&gw, "token of file-2", &out, 200);
        let minted = bearer_of(&seen(&up, &path).expect("upstream saw the request"));
        let jwks = admin_jwks(&gw).await;
        let verified = jwt::verify_es256_with_jwks(
            &minted,
            &jwks,
            "https://gw.cluster-b.example",
            "api.cluster-b",
        );
        let old_key_still_signs = jwt::verify_es256_with_jwks(
            &minted,
            &jwks_before,
            "https://gw.cluster-b.example",
            "api.cluster-b",
        )
        .is_ok();
        if verified.is_ok() && !old_key_still_signs {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "the token issuer did not switch to the new key within {limit:?}: minted token verifies against the current JWKS: {verified:?}, still verifies with the old key: {old_key_still_signs}; JWKS now {jwks}\n--- gateway stderr ---\n{}",
            tail(&gw.stderr(), 40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
