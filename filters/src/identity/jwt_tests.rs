//! JWT verification with keys and tokens made here.

use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

use super::test_keys::*;
use super::*;

#[test]
fn valid_rs256_es256_eddsa() {
    let (r, e, d) = (rsa("r1", 0), ec("e1"), ed("d1"));
    let v = verifier(&[&r, &e, &d]);
    for (key, alg) in [
        (&r, JwtAlgorithm::RS256),
        (&e, JwtAlgorithm::ES256),
        (&d, JwtAlgorithm::EdDSA),
    ] {
        let ok = v
            .verify_at(&sign(key, &claims()), NOW)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!((ok.issuer.as_str(), ok.subject.as_str()), (ISS, "user-42"));
        assert_eq!(
            (ok.algorithm, ok.kid.as_deref()),
            (alg, Some(key.kid.as_str()))
        );
        assert_eq!(ok.trust_domain, "cluster-b.example");
        assert_eq!(ok.principal(), format!("{ISS}#user-42"));
        assert_eq!(ok.claims["scope"], "orders:read orders:write");
    }
}

#[test]
fn alg_none_is_refused() {
    let v = verifier(&[&ed("d1")]);
    let c = claims().to_string();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT"}).to_string();
        assert_eq!(
            v.verify_at(&raw_token(&header, &c, b""), NOW),
            Err(JwtError::AlgNone)
        );
        assert_eq!(
            v.verify_at(&raw_token(&header, &c, b"sig"), NOW),
            Err(JwtError::AlgNone)
        );
    }
    let unsigned = format!("{}.{}.", b64(br#"{"alg":"none"}"#), b64(c.as_bytes()));
    assert_eq!(v.verify_at(&unsigned, NOW), Err(JwtError::AlgNone));
    let odd = raw_token(r#"{"alg":"ES512"}"#, &c, b"x");
    assert_eq!(v.verify_at(&odd, NOW), Err(JwtError::UnsupportedAlgorithm));
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let r = rsa("r1", 0);
    let pem = rsa_public_pem(0);
    let confused = EncodingKey::from_secret(pem.as_bytes());
    let header = json!({"alg": "HS256", "kid": "r1", "typ": "JWT"});
    let token = sign_raw(&header, &claims(), &confused, Algorithm::HS256);

    // Default issuer: no HMAC at all.
    let v = verifier(&[&r]);
    assert_eq!(
        v.verify_at(&token, NOW),
        Err(JwtError::AlgorithmNotAllowed("HS256"))
    );
    // HMAC enabled with its own secret: the JWKS key is never an HMAC secret.
    let secret = [7u8; 32];
    let edit = |c: &mut JwtIssuerConfig| {
        c.algorithms = vec![JwtAlgorithm::RS256, JwtAlgorithm::HS256];
        c.hmac_secret_file = Some("s".into());
    };
    let v = verifier_with(&[&r], edit, Some(&secret));
    assert_eq!(v.verify_at(&token, NOW), Err(JwtError::BadSignature));
    // ...while a token with the configured secret passes.
    let good = sign_raw(
        &json!({"alg": "HS256"}),
        &claims(),
        &EncodingKey::from_secret(&secret),
        Algorithm::HS256,
    );
    assert_eq!(
        v.verify_at(&good, NOW).unwrap().algorithm,
        JwtAlgorithm::HS256
    );
    assert!(v.verify_at(&sign(&r, &claims()), NOW).is_ok());
}

#[test]
fn key_type_must_fit_the_header_alg() {
    let (r, e) = (rsa("r1", 0), ec("e1"));
    let v = verifier(&[&r, &e]);
    // An ES256 token that names the RSA key, and the reverse.
    let es_on_rsa = sign_raw(
        &json!({"alg": "ES256", "kid": "r1"}),
        &claims(),
        &e.enc,
        Algorithm::ES256,
    );
    assert_eq!(
        v.verify_at(&es_on_rsa, NOW),
        Err(JwtError::KeyAlgorithmMismatch("r1".into()))
    );
    let rs_on_ec = sign_raw(
        &json!({"alg": "RS256", "kid": "e1"}),
        &claims(),
        &r.enc,
        Algorithm::RS256,
    );
    assert_eq!(
        v.verify_at(&rs_on_ec, NOW),
        Err(JwtError::KeyAlgorithmMismatch("e1".into()))
    );
    // A JWK `alg` narrows the key: RS256-only key, PS256 token.
    let mut pinned = rsa("p1", 0);
    pinned.jwk["alg"] = json!("RS256");
    let v = verifier_with(&[&pinned], |c| c.algorithms.push(JwtAlgorithm::PS256), None);
    let ps = sign_raw(
        &json!({"alg": "PS256", "kid": "p1"}),
        &claims(),
        &pinned.enc,
        Algorithm::PS256,
    );
    assert_eq!(
        v.verify_at(&ps, NOW),
        Err(JwtError::KeyAlgorithmMismatch("p1".into()))
    );
    // An algorithm the issuer does not list.
    let v = verifier_with(&[&r], |c| c.algorithms = vec![JwtAlgorithm::ES256], None);
    assert_eq!(
        v.verify_at(&sign(&r, &claims()), NOW),
        Err(JwtError::AlgorithmNotAllowed("RS256"))
    );
}

#[test]
fn time_claims_with_leeway() {
    let d = ed("d1");
    let v = verifier(&[&d]);
    let at = |c: &Value| v.verify_at(&sign(&d, c), NOW);
    let expired = |secs: i64| claims_set("exp", json!(NOW - secs));
    assert!(at(&expired(30)).is_ok(), "within the 60s leeway");
    assert_eq!(at(&expired(60)), Err(JwtError::Expired));
    assert_eq!(at(&expired(3600)), Err(JwtError::Expired));
    let nbf = |secs: i64| claims_set("nbf", json!(NOW + secs));
    assert!(at(&nbf(60)).is_ok());
    assert_eq!(at(&nbf(61)), Err(JwtError::NotYetValid));
    let iat = |secs: i64| claims_set("iat", json!(NOW + secs));
    assert!(at(&iat(60)).is_ok());
    assert_eq!(at(&iat(600)), Err(JwtError::IssuedInFuture));
    let fractional = claims_set("exp", json!(NOW as f64 + 0.5));
    assert!(at(&fractional).is_ok());
    let no_exp = claims_without("exp");
    assert_eq!(at(&no_exp), Err(JwtError::MissingClaim("exp")));
    let text_exp = claims_set("exp", json!("tomorrow"));
    assert_eq!(at(&text_exp), Err(JwtError::InvalidClaim("exp")));

    let strict = verifier_with(
        &[&d],
        |c| c.leeway = crate::units::Duration::from_secs(0),
        None,
    );
    assert_eq!(
        strict.verify_at(&sign(&d, &expired(1)), NOW),
        Err(JwtError::Expired)
    );
    assert_eq!(
        strict.verify_at(&sign(&d, &nbf(1)), NOW),
        Err(JwtError::NotYetValid)
    );
}

#[test]
fn audience_issuer_and_subject() {
    let d = ed("d1");
    let v = verifier(&[&d]);
    let with = |k: &str, val: Value| claims_set(k, val);
    let at = |c: &Value| v.verify_at(&sign(&d, c), NOW);
    assert_eq!(
        at(&with("aud", json!("billing"))),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        at(&with("aud", json!(["billing", "x"]))),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(at(&with("aud", json!([]))), Err(JwtError::WrongAudience));
    assert!(at(&with("aud", json!(["billing", "other"]))).is_ok());
    assert_eq!(
        at(&with("aud", json!(7))),
        Err(JwtError::InvalidClaim("aud"))
    );
    assert_eq!(
        at(&claims_without("aud")),
        Err(JwtError::MissingClaim("aud"))
    );

    assert_eq!(
        at(&with("iss", json!("https://evil.example"))),
        Err(JwtError::UnknownIssuer)
    );
    assert_eq!(
        at(&with("iss", json!(format!("{ISS}/")))),
        Err(JwtError::UnknownIssuer)
    );
    assert_eq!(
        at(&claims_without("iss")),
        Err(JwtError::MissingClaim("iss"))
    );
    assert_eq!(
        at(&claims_without("sub")),
        Err(JwtError::MissingClaim("sub"))
    );
    assert_eq!(
        at(&with("sub", json!(""))),
        Err(JwtError::InvalidClaim("sub"))
    );
}

#[test]
fn keys_are_per_issuer_and_unknown_kid_is_distinct() {
    let (ours, theirs) = (ed("ours"), ed("theirs"));
    let mut v = verifier(&[&ours]);
    let mut cfg = JwtIssuerConfig::new("https://issuer.cluster-c.example", &["edge"]);
    cfg.jwks_file = Some("c.json".into());
    let set = JwkSet::parse(&jwks(&[&theirs])).unwrap();
    v.add_issuer("cluster-c.example", &cfg, SharedKeySet::new(set), None)
        .unwrap();

    // Signed by cluster C's key but claiming cluster B's issuer.
    let err = v.verify_at(&sign(&theirs, &claims()), NOW).unwrap_err();
    assert_eq!(
        err,
        JwtError::UnknownKid {
            issuer: ISS.into(),
            kid: "theirs".into()
        }
    );
    assert_eq!(
        (err.reason(), err.metric_label()),
        ("unknown signing key", "unknown_key")
    );
    // The right kid with the wrong key's signature.
    let mut forged = ed("ours");
    forged.enc = theirs.enc;
    assert_eq!(
        v.verify_at(&sign(&forged, &claims()), NOW),
        Err(JwtError::BadSignature)
    );

    // Rotation through the shared set: the old kid becomes unknown.
    let new = ed("new");
    let keys = v.keys(ISS).unwrap().clone();
    assert_eq!(
        v.verify_at(&sign(&new, &claims()), NOW)
            .unwrap_err()
            .metric_label(),
        "unknown_key"
    );
    keys.store(JwkSet::parse(&jwks(&[&new])).unwrap());
    assert!(v.verify_at(&sign(&new, &claims()), NOW).is_ok());
    assert!(matches!(
        v.verify_at(&sign(&ours, &claims()), NOW),
        Err(JwtError::UnknownKid { .. })
    ));
}

#[test]
fn token_without_kid_tries_fitting_keys() {
    let (e1, e2, r) = (ec("e1"), ec("e2"), rsa("r1", 1));
    let v = verifier(&[&e1, &e2, &r]);
    let no_kid = |k: &TestKey| {
        sign_raw(
            &json!({"alg": format!("{:?}", k.alg)}),
            &claims(),
            &k.enc,
            k.alg,
        )
    };
    assert!(v.verify_at(&no_kid(&e2), NOW).is_ok());
    assert!(v.verify_at(&no_kid(&r), NOW).is_ok());
    assert_eq!(
        v.verify_at(&no_kid(&ed("x")), NOW),
        Err(JwtError::NoMatchingKey)
    );
    assert_eq!(
        v.verify_at(&no_kid(&ec("stranger")), NOW),
        Err(JwtError::BadSignature)
    );
}

#[test]
fn tampering_is_detected() {
    let (r, e) = (rsa("r1", 0), ec("e1"));
    let v = verifier(&[&r, &e]);
    for key in [&r, &e] {
        let token = sign(key, &claims());
        let (head, sig) = token.rsplit_once('.').unwrap();
        let mut bytes = unb64(sig);
        bytes[5] ^= 0x01;
        assert_eq!(
            v.verify_at(&format!("{head}.{}", b64(&bytes)), NOW),
            Err(JwtError::BadSignature)
        );
        // New claims under the old signature.
        let parts: Vec<&str> = token.split('.').collect();
        let richer = claims_set("sub", json!("admin"));
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            b64(richer.to_string().as_bytes()),
            parts[2]
        );
        assert_eq!(v.verify_at(&swapped, NOW), Err(JwtError::BadSignature));
        let truncated = format!("{head}.{}", b64(&bytes[..bytes.len() - 1]));
        assert_eq!(v.verify_at(&truncated, NOW), Err(JwtError::BadSignature));
    }
}

#[test]
fn cached_tokens_are_rechecked_for_time_and_keys() {
    let (e, other) = (ec("e1"), ec("e2"));
    let v = verifier(&[&e]);
    let token = sign(&e, &claims());
    let first = v.verify_at(&token, NOW).unwrap();
    assert_eq!(v.cache_len(), 1, "a verified token is cached");
    assert_eq!(v.verify_at(&token, NOW + 1).unwrap(), first, "a hit");
    // Time claims still apply to a hit: `exp` is NOW + 300 (leeway 60 s by default).
    let expired = v.verify_at(&token, NOW + 10_000);
    assert_eq!(expired, Err(JwtError::Expired));
    assert_eq!(v.cache_len(), 0, "an expired entry is dropped");
    assert!(v.verify_at(&token, NOW).is_ok());
    // A token that fails is never cached; a different signature is its own entry.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert!(v.verify_at(&tampered, NOW).is_err());
    assert!(v.verify_at(&tampered, NOW).is_err());
    assert_eq!(v.cache_len(), 1);
    // The issuer's keys replaced (rotation, revocation): the hit is checked again.
    v.keys(ISS)
        .unwrap()
        .store(JwkSet::parse(&jwks(&[&other])).unwrap());
    assert!(matches!(
        v.verify_at(&token, NOW),
        Err(JwtError::UnknownKid { .. })
    ));
    assert_eq!(v.cache_len(), 0);
}

#[test]
fn the_cache_is_bounded_and_can_be_off() {
    let e = ec("e1");
    let v = verifier(&[&e]).with_cache_capacity(4);
    for i in 0..10 {
        let t = sign(&e, &claims_set("jti", json!(i)));
        assert!(v.verify_at(&t, NOW).is_ok());
    }
    assert_eq!(v.cache_len(), 4);
    let off = verifier(&[&e]).with_cache_capacity(0);
    assert!(off.verify_at(&sign(&e, &claims()), NOW).is_ok());
    assert_eq!(off.cache_len(), 0);
}

#[test]
fn each_thread_has_its_own_entries() {
    let e = ec("e1");
    let v = std::sync::Arc::new(verifier(&[&e]));
    let token = sign(&e, &claims());
    assert!(v.verify_at(&token, NOW).is_ok());
    let (v2, t2) = (v.clone(), token.clone());
    let other = std::thread::spawn(move || {
        let before = v2.cache_len();
        assert!(v2.verify_at(&t2, NOW).is_ok());
        (before, v2.cache_len())
    })
    .join()
    .unwrap();
    assert_eq!(other, (0, 1));
    assert_eq!(v.cache_len(), 1);
}
