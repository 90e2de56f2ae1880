//! JWT input handling: size limits, malformed tokens, challenges, issuer setup.

use jsonwebtoken::Algorithm;
use serde_json::json;

use super::jwt::{bearer_token, MISSING_TOKEN_CHALLENGE};
use super::test_keys::*;
use super::*;

#[test]
fn size_limits_come_first() {
    let d = ed("d1");
    let v = verifier(&[&d]);
    let junk = "x".repeat(8 * 1024 + 1);
    assert_eq!(
        v.verify_at(&junk, NOW),
        Err(JwtError::TooLarge {
            size: junk.len(),
            max: 8192
        })
    );
    let big = claims_set("pad", json!("p".repeat(9000)));
    assert_eq!(
        v.verify_at(&sign(&d, &big), NOW).unwrap_err().reason(),
        "token too large"
    );
    // The issuer's own smaller limit applies once `iss` is known.
    let mut small = verifier_with(&[&d], |c| c.max_token_bytes = 512, None);
    let mut roomy = JwtIssuerConfig::new("roomy", &["edge"]);
    roomy.jwks_file = Some("r.json".into());
    small
        .add_issuer("r", &roomy, SharedKeySet::default(), None)
        .unwrap();
    let mid = claims_set("pad", json!("p".repeat(600)));
    assert!(matches!(
        small.verify_at(&sign(&d, &mid), NOW),
        Err(JwtError::TooLarge { max: 512, .. })
    ));
    assert!(small.verify_at(&sign(&d, &claims()), NOW).is_ok());
}

#[test]
fn malformed_tokens() {
    let d = ed("d1");
    let v = verifier(&[&d]);
    let good = sign(&d, &claims());
    let c = claims().to_string();
    let hdr = r#"{"alg":"EdDSA","kid":"d1"}"#;
    let cases: Vec<(String, JwtError)> = vec![
        (
            "".into(),
            JwtError::Malformed("expected three dot-separated parts"),
        ),
        (
            "a.b".into(),
            JwtError::Malformed("expected three dot-separated parts"),
        ),
        (
            format!("{good}.x"),
            JwtError::Malformed("expected three dot-separated parts"),
        ),
        (
            format!("!!.{}", &good[good.find('.').unwrap() + 1..]),
            JwtError::Malformed("bad header"),
        ),
        (
            raw_token("[1]", &c, b"s"),
            JwtError::Malformed("bad header"),
        ),
        (
            raw_token(r#"{"alg":"EdDSA","alg":"none"}"#, &c, b"s"),
            JwtError::Malformed("bad header"),
        ),
        (
            raw_token(r#"{"typ":"JWT"}"#, &c, b"s"),
            JwtError::Malformed("header has no alg"),
        ),
        (
            raw_token(r#"{"alg":"EdDSA","kid":5}"#, &c, b"s"),
            JwtError::Malformed("kid is not a string"),
        ),
        (
            raw_token(r#"{"alg":"EdDSA","crit":["exp"]}"#, &c, b"s"),
            JwtError::CriticalHeader,
        ),
        (
            raw_token(hdr, "not json", b"s"),
            JwtError::Malformed("bad claims"),
        ),
        (
            raw_token(hdr, r#"{"sub":"a","sub":"b"}"#, b"s"),
            JwtError::Malformed("bad claims"),
        ),
        (
            format!("{}.", &good[..good.rfind('.').unwrap()]),
            JwtError::Malformed("bad signature encoding"),
        ),
        (
            format!("{}.a+b/", &good[..good.rfind('.').unwrap()]),
            JwtError::Malformed("bad signature encoding"),
        ),
    ];
    for (token, want) in cases {
        assert_eq!(v.verify_at(&token, NOW), Err(want.clone()), "{token}");
        assert_eq!(want.status(), 401);
    }
    // An embedded `jwk` header is not a key source.
    let stranger = ed("d1");
    let header = json!({"alg": "EdDSA", "kid": "d1", "jwk": stranger.jwk});
    let token = sign_raw(&header, &claims(), &stranger.enc, Algorithm::EdDSA);
    assert_eq!(v.verify_at(&token, NOW), Err(JwtError::BadSignature));
}

#[test]
fn challenges_and_bearer_parsing() {
    assert_eq!(
        JwtError::Expired.www_authenticate(),
        r#"Bearer error="invalid_token", error_description="token expired""#
    );
    let all = [
        JwtError::TooLarge { size: 1, max: 0 },
        JwtError::Malformed("x"),
        JwtError::AlgNone,
        JwtError::AlgorithmNotAllowed("HS256"),
        JwtError::UnknownKid {
            issuer: "i".into(),
            kid: "k\"".into(),
        },
        JwtError::BadSignature,
        JwtError::WrongAudience,
    ];
    for e in all {
        assert!(
            e.reason()
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
                && !e.reason().contains('"')
        );
    }
    assert_eq!(MISSING_TOKEN_CHALLENGE, "Bearer");
    assert_eq!(bearer_token("Bearer abc.def.ghi"), Some("abc.def.ghi"));
    assert_eq!(bearer_token("bearer  abc"), Some("abc"));
    for bad in ["Basic abc", "Bearer", "Bearer ", "Bearer a b", "abc"] {
        assert_eq!(bearer_token(bad), None, "{bad}");
    }
}

#[test]
fn add_issuer_checks_config_and_secrets() {
    let mut v = JwtVerifier::new();
    assert_eq!(
        v.verify_at("a.b.c", NOW),
        Err(JwtError::Malformed("bad header"))
    );
    let mut cfg = JwtIssuerConfig::new(ISS, &["edge"]);
    cfg.jwks_uri = Some("https://issuer.cluster-b.example/jwks".into());
    v.add_issuer("b", &cfg, SharedKeySet::default(), None)
        .unwrap();
    assert_eq!(
        v.add_issuer("b", &cfg, SharedKeySet::default(), None)
            .unwrap_err()
            .len(),
        1
    );
    // No keys fetched yet: tokens fail as unknown key (and should trigger a fetch).
    let d = ed("d1");
    assert!(matches!(
        v.verify_at(&sign(&d, &claims()), NOW),
        Err(JwtError::UnknownKid { .. })
    ));

    let mut hmac = JwtIssuerConfig::new("legacy", &["edge"]);
    hmac.algorithms = vec![JwtAlgorithm::HS256];
    hmac.hmac_secret_file = Some("s".into());
    assert!(v
        .add_issuer("b", &hmac, SharedKeySet::default(), None)
        .is_err());
    assert!(v
        .add_issuer("b", &hmac, SharedKeySet::default(), Some(&[1; 16]))
        .is_err());
    assert!(v
        .add_issuer(
            "b",
            &JwtIssuerConfig::new("x", &["edge"]),
            SharedKeySet::default(),
            Some(&[1; 32])
        )
        .is_err());
    v.add_issuer("b", &hmac, SharedKeySet::default(), Some(&[1; 32]))
        .unwrap();
    let mut names: Vec<_> = v.issuers().collect();
    names.sort();
    assert_eq!(names, [ISS, "legacy"]);
}
