//! JWT compact parsing and verification (`filters::identity::jwt`) against a
//! fixed JWKS (RSA, P-256 and two Ed25519 keys) and an HMAC secret.
//!
//! The first input byte picks a mode: `0` (mod 4) takes the rest as the
//! token; otherwise the rest is `header NUL claims NUL tweak`, encoded and
//! signed here (1: Ed25519 `d1`, 2: ES256 `e1`, 3: HS256), so the fuzzer
//! reaches the checks after the signature. Bit 2 signs with an attacker's
//! key instead (same `kid`); bit 3 XORs the signature with the tweak.
//!
//! Properties:
//! - never panics; a token signed with an attacker's key is never accepted;
//! - an accepted token's signature verifies with `ring` (an implementation
//!   other than the verifier's RustCrypto) under the JWKS key its `kid` names
//!   (any key of the family without `kid`), or the HMAC secret, for the
//!   header `alg` it reports, which is never `none`;
//! - an accepted token has `iss` the issuer, an `aud` of the issuer, a
//!   non-empty `sub` and an `exp` not passed (with the leeway);
//! - the verifier with its token cache answers exactly as one without.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use filters::identity::{JwkSet, JwtAlgorithm, JwtIssuerConfig, JwtVerifier, SharedKeySet};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer;
use ring::signature::{self as sig, KeyPair};
use serde_json::{json, Value};

const NOW: i64 = 1_700_000_000;
const ISS: &str = "https://issuer.example";
const AUDIENCES: [&str; 2] = ["edge", "other"];
const LEEWAY: i64 = 60;
const SECRET: &[u8; 32] = b"fuzz-hmac-secret-of-32-bytes-ok!";
const ATTACKER_SECRET: &[u8; 32] = b"attacker-secret-also-32-bytes-xx";
/// The modulus of a throwaway 2048-bit RSA key (public half only: nobody
/// here can sign with it, so every RS/PS token must be refused).
const RSA_N: &str = "vinxb5cEJn-U7YhBdRbUaqCIytxAjvGLWjQU5qcFtFRqhARa-xwVcd5tYGwm9D-r8JXjKY9nNWesQu0O796cHTHnXgZoz79zx4UMMYLMuoaWIUw2kceRWytG-6CWPXXUD-4cW9HyVNR69bv6CX5imk_Ak7TjGaioelBCZKOGNa8rVcKnblnRtdkabpxqcXV0BlWUV3a5pmIoDDHpfD__AJnyLQsqV03zrIyNKlWijRlOuVZoX_KDY6p-GbLnEO9L-m0g7D8ZHaWJIG6dfomq1HIN7lMTvHjrrgpQagobwhaVg6PF5aQIYc1QqPNPYCpqCuDwVhnyc0PdDT61dlW-Ew";

struct Keys {
    ed: sig::Ed25519KeyPair,
    ed_attacker: sig::Ed25519KeyPair,
    ed_nokid_public: Vec<u8>,
    es: p256::ecdsa::SigningKey,
    es_attacker: p256::ecdsa::SigningKey,
    es_point: Vec<u8>,
    rsa_n: Vec<u8>,
    /// Without and with the token cache.
    plain: JwtVerifier,
    cached: JwtVerifier,
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ed = sig::Ed25519KeyPair::from_seed_unchecked(&[1; 32]).expect("seed");
        let ed_attacker = sig::Ed25519KeyPair::from_seed_unchecked(&[2; 32]).expect("seed");
        let ed_nokid = sig::Ed25519KeyPair::from_seed_unchecked(&[3; 32]).expect("seed");
        let es = p256::ecdsa::SigningKey::from_slice(&[5; 32]).expect("scalar");
        let es_attacker = p256::ecdsa::SigningKey::from_slice(&[6; 32]).expect("scalar");
        let point = es.verifying_key().to_encoded_point(false);
        let es_point = point.as_bytes().to_vec();
        let rsa_n = URL_SAFE_NO_PAD.decode(RSA_N).expect("modulus");
        let jwks = json!({"keys": [
            {"kty": "RSA", "kid": "r1", "n": RSA_N, "e": "AQAB"},
            {"kty": "EC", "crv": "P-256", "kid": "e1", "x": b64(&es_point[1..33]), "y": b64(&es_point[33..])},
            {"kty": "OKP", "crv": "Ed25519", "kid": "d1", "x": b64(ed.public_key().as_ref())},
            {"kty": "OKP", "crv": "Ed25519", "x": b64(ed_nokid.public_key().as_ref())},
        ]});
        let set = JwkSet::parse(jwks.to_string().as_bytes()).expect("fixed JWKS");
        assert_eq!(set.len(), 4, "{:?}", set.skipped());
        let mut cfg = JwtIssuerConfig::new(ISS, &AUDIENCES);
        cfg.jwks_file = Some("fuzz.jwks.json".into());
        cfg.hmac_secret_file = Some("fuzz.secret".into());
        cfg.algorithms = ALL.to_vec();
        let make = |capacity| {
            let mut v = JwtVerifier::new().with_cache_capacity(capacity);
            v.add_issuer("fuzz.example", &cfg, SharedKeySet::new(set.clone()), Some(SECRET))
                .expect("fixed issuer");
            v
        };
        Keys {
            ed_nokid_public: ed_nokid.public_key().as_ref().to_vec(),
            ed,
            ed_attacker,
            es,
            es_attacker,
            es_point,
            rsa_n,
            plain: make(0),
            cached: make(64),
        }
    })
}

use JwtAlgorithm::*;
const ALL: [JwtAlgorithm; 11] = [
    RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA, HS256, HS384, HS512,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let k = keys();
    let attacker = mode & 4 != 0 && mode & 3 != 0;
    let token = if mode & 3 == 0 {
        match std::str::from_utf8(body) {
            Ok(t) => t.to_string(),
            Err(_) => return,
        }
    } else {
        let mut parts = body.splitn(3, |b| *b == 0);
        let header = parts.next().unwrap_or_default();
        let claims = parts.next().unwrap_or_default();
        let tweak = parts.next().unwrap_or_default();
        let message = format!("{}.{}", b64(header), b64(claims));
        let mut signature = match (mode & 3, attacker) {
            (1, false) => k.ed.sign(message.as_bytes()).as_ref().to_vec(),
            (1, true) => k.ed_attacker.sign(message.as_bytes()).as_ref().to_vec(),
            (2, a) => {
                let key = if a { &k.es_attacker } else { &k.es };
                let s: p256::ecdsa::Signature = key.sign(message.as_bytes());
                s.to_bytes().to_vec()
            }
            (_, a) => {
                let key = ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    if a { ATTACKER_SECRET } else { SECRET },
                );
                ring::hmac::sign(&key, message.as_bytes()).as_ref().to_vec()
            }
        };
        if mode & 8 != 0 {
            for (s, t) in signature.iter_mut().zip(tweak.iter().cycle()) {
                *s ^= t;
            }
        }
        format!("{message}.{}", b64(&signature))
    };

    let plain = k.plain.verify_at(&token, NOW);
    // Twice through the cached verifier: a miss, then (if valid) a hit.
    assert_eq!(
        k.cached.verify_at(&token, NOW),
        plain,
        "cache changes the answer"
    );
    assert_eq!(
        k.cached.verify_at(&token, NOW),
        plain,
        "cache hit changes the answer"
    );
    let Ok(jwt) = plain else {
        return;
    };
    assert!(!attacker, "accepted a token signed by the attacker's key");

    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        panic!("accepted a token without three parts");
    };
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h64).expect("header b64"))
        .expect("header JSON");
    assert_eq!(header["alg"].as_str(), Some(jwt.algorithm.as_str()));
    assert_eq!(
        header.get("kid").and_then(Value::as_str),
        jwt.kid.as_deref()
    );
    let signature = URL_SAFE_NO_PAD.decode(s64).expect("signature b64");
    let message = format!("{h64}.{c64}");
    assert!(
        signed_by_our_keys(
            k,
            jwt.algorithm,
            jwt.kid.as_deref(),
            message.as_bytes(),
            &signature
        ),
        "accepted a token our keys did not sign: {token}"
    );

    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c64).expect("claims b64"))
        .expect("claims JSON");
    assert_eq!(claims["iss"], ISS);
    assert_eq!(jwt.issuer, ISS);
    assert_eq!(jwt.trust_domain, "fuzz.example");
    let sub = claims["sub"].as_str().expect("sub is a string");
    assert!(!sub.is_empty() && sub == jwt.subject);
    let aud_ok = |a: &Value| a.as_str().is_some_and(|a| AUDIENCES.contains(&a));
    match &claims["aud"] {
        Value::Array(list) => assert!(list.iter().any(aud_ok), "aud {list:?}"),
        single => assert!(aud_ok(single), "aud {single}"),
    }
    let exp = claims["exp"].as_f64().expect("exp is a number");
    assert!(exp.floor() + LEEWAY as f64 > NOW as f64, "expired: {exp}");
});

/// The reference check, with ring.
fn signed_by_our_keys(
    k: &Keys,
    alg: JwtAlgorithm,
    kid: Option<&str>,
    msg: &[u8],
    s: &[u8],
) -> bool {
    let ring_ok = |algo: &'static dyn sig::VerificationAlgorithm, key: &[u8]| {
        sig::UnparsedPublicKey::new(algo, key)
            .verify(msg, s)
            .is_ok()
    };
    let rsa = |algo: &'static sig::RsaParameters| {
        sig::RsaPublicKeyComponents {
            n: k.rsa_n.as_slice(),
            e: &[1u8, 0, 1][..],
        }
        .verify(algo, msg, s)
        .is_ok()
    };
    let hmac = |algo| ring::hmac::verify(&ring::hmac::Key::new(algo, SECRET), msg, s).is_ok();
    match (alg, kid) {
        (RS256, None | Some("r1")) => rsa(&sig::RSA_PKCS1_2048_8192_SHA256),
        (RS384, None | Some("r1")) => rsa(&sig::RSA_PKCS1_2048_8192_SHA384),
        (RS512, None | Some("r1")) => rsa(&sig::RSA_PKCS1_2048_8192_SHA512),
        (PS256, None | Some("r1")) => rsa(&sig::RSA_PSS_2048_8192_SHA256),
        (PS384, None | Some("r1")) => rsa(&sig::RSA_PSS_2048_8192_SHA384),
        (PS512, None | Some("r1")) => rsa(&sig::RSA_PSS_2048_8192_SHA512),
        (ES256, None | Some("e1")) => ring_ok(&sig::ECDSA_P256_SHA256_FIXED, &k.es_point),
        (EdDSA, Some("d1")) => ring_ok(&sig::ED25519, k.ed.public_key().as_ref()),
        (EdDSA, None) => {
            ring_ok(&sig::ED25519, k.ed.public_key().as_ref())
                || ring_ok(&sig::ED25519, &k.ed_nokid_public)
        }
        // HMAC never consults the JWKS, whatever the kid says.
        (HS256, _) => hmac(ring::hmac::HMAC_SHA256),
        (HS384, _) => hmac(ring::hmac::HMAC_SHA384),
        (HS512, _) => hmac(ring::hmac::HMAC_SHA512),
        _ => false,
    }
}
