//! Interoperability with an independent JWT implementation: PyJWT signs
//! tokens the gateway must accept, and verifies the tokens the gateway
//! mints against the JWKS the gateway serves.

use gateway_tests::jwt::{self, SigningKey};
use gateway_tests::{http_client, Upstream};

use crate::common::*;

const API_AUD: &str = "api.cluster-b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyjwt_tokens_are_accepted_and_minted_tokens_verify_in_pyjwt() {
    // Fail (not skip) without PyJWT, before starting anything.
    let python = jwt::pyjwt_python();
    eprintln!("PyJWT via {}", python.display());

    let rsa = SigningKey::rsa("py-rsa");
    let ec = SigningKey::es256("py-ec");
    let signer = SigningKey::es256("unused");
    let up = Upstream::named_at(ip(B_SVC_IP), "api");
    let gw = b_jwt_gateway(
        &[&rsa, &ec],
        Some(&signer),
        "mesh",
        &up,
        &format!(
            "  - name: api\n    match: {{path_prefix: /api}}\n    cluster: api\n    auth: {{jwt: required}}\n    identity: {{token: {{audience: {API_AUD}}}}}"
        ),
    );
    let port = gw.port();
    let client = http_client();
    let jwks = admin_jwks(&gw).await;

    // No `kid` configured: it is the RFC 7638 thumbprint of the key.
    let served = jwks["keys"]
        .as_array()
        .and_then(|k| k.first())
        .unwrap_or_else(|| panic!("admin JWKS has no key: {jwks}"));
    assert_eq!(
        served["kid"].as_str(),
        Some(jwt::jwk_thumbprint(signer.jwk()).as_str()),
        "default kid is the RFC 7638 thumbprint of the token issuer key: {served}"
    );

    let keys_dir = tempfile::tempdir().expect("tempdir");
    for key in [&rsa, &ec] {
        let alg = key.alg_name();
        let sub = format!("py-user-{alg}");
        // The PEM private key, in a file PyJWT reads (outside the
        // gateway's watched directory).
        let key_file = keys_dir.path().join(format!("{}.key.pem", key.kid()));
        std::fs::write(&key_file, key.private_key_pem()).expect("write PEM key");
        let token = jwt::pyjwt_sign(
            &key_file,
            alg,
            key.kid(),
            &jwt::claims(B_ISSUER, &sub, "edge"),
        );
        let path = format!("/api/pyjwt-{alg}");
        let out = send_ok(
            &gw,
            &client,
            "GET",
            &format!("http://{B_GW_IP}:{port}{path}"),
            Some(&token),
            &[],
        )
        .await;
        assert_status(&gw, &format!("a PyJWT {alg} token"), &out, 200);

        let req = seen(&up, &path).expect("the upstream saw the request");
        let minted = bearer_of(&req);
        let claims = jwt::pyjwt_verify(&minted, &jwks, "ES256", B_TOKEN_ISSUER, API_AUD)
            .unwrap_or_else(|e| {
                panic!("PyJWT must verify the minted token {minted} against {jwks}: {e}")
            });
        assert_eq!(claims["sub"], format!("{B_ISSUER}#{sub}"), "sub: {claims}");
        assert_eq!(claims["original_iss"], B_ISSUER, "original_iss: {claims}");
        assert_eq!(claims["auth_method"], "jwt", "auth_method: {claims}");
        assert_eq!(claims["trust_domain"], B_TD, "trust_domain: {claims}");

        // The check has teeth: PyJWT refuses a tampered minted token.
        let tampered = jwt::tamper_signature(&minted);
        assert!(
            jwt::pyjwt_verify(&tampered, &jwks, "ES256", B_TOKEN_ISSUER, API_AUD).is_err(),
            "PyJWT accepted a tampered token"
        );
    }
}
