//! JWKS documents (`filters::identity::jwks`), as fetched from a
//! `jwks_uri` or read from a `jwks_file`.
//!
//! Properties, on any bytes:
//! - never panics; over [`MAX_JWKS_BYTES`] is `TooLarge`; `Json` exactly
//!   when serde_json refuses the document, `NoKeysArray` exactly when it has
//!   no `keys` array;
//! - every entry of `keys` is either kept or skipped (with its index), in
//!   document order; at most [`MAX_JWKS_KEYS`] kept, with distinct `kid`s;
//! - a kept key comes from an object entry with the same `kid`, its `kty`
//!   (RSA 2048-4096 bits, EC P-256, OKP Ed25519), no private members, `use`
//!   absent or `sig`, `key_ops` absent or naming `verify`, and algorithms
//!   fitting its type (only the JWK's `alg` if it has one, never HMAC);
//! - a kept P-256 key is a point on the curve according to the `p256`
//!   crate.
#![no_main]

use filters::identity::jwks::{MAX_JWKS_BYTES, MAX_JWKS_KEYS};
use filters::identity::{JwkSet, JwksError, JwtAlgorithm, KeyKind};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let result = JwkSet::parse(data);
    if data.len() > MAX_JWKS_BYTES {
        assert!(
            matches!(result, Err(JwksError::TooLarge { .. })),
            "{result:?}"
        );
        return;
    }
    let doc = match serde_json::from_slice::<Value>(data) {
        Ok(doc) => doc,
        Err(_) => {
            assert!(matches!(result, Err(JwksError::Json(_))), "{result:?}");
            return;
        }
    };
    let Some(Value::Array(entries)) = doc.get("keys") else {
        assert!(matches!(result, Err(JwksError::NoKeysArray)), "{result:?}");
        return;
    };
    let set = match result {
        Ok(set) => set,
        Err(JwksError::NoUsableKeys(reasons)) => {
            assert_eq!(reasons.len(), entries.len(), "every entry has a reason");
            return;
        }
        Err(e) => panic!("a document with a keys array refused as {e:?}"),
    };
    assert!(!set.is_empty() && set.len() <= MAX_JWKS_KEYS);
    assert_eq!(
        set.len() + set.skipped().len(),
        entries.len(),
        "an entry neither kept nor skipped"
    );
    let skipped: Vec<usize> = set.skipped().iter().map(|s| s.index).collect();
    assert!(
        skipped.windows(2).all(|w| w[0] < w[1]),
        "skipped out of order"
    );
    let kept = (0..entries.len()).filter(|i| !skipped.contains(i));
    for (key, index) in set.keys().iter().zip(kept) {
        let Value::Object(jwk) = &entries[index] else {
            panic!("kept a non-object entry {index}");
        };
        assert_eq!(
            jwk.get("kid").and_then(Value::as_str),
            key.kid(),
            "entry {index}"
        );
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(!jwk.contains_key(private), "kept a key with `{private}`");
        }
        assert!(
            jwk.get("use").is_none_or(|u| u == "sig"),
            "use {:?}",
            jwk.get("use")
        );
        if let Some(ops) = jwk.get("key_ops") {
            let ops = ops.as_array().expect("kept key_ops is an array");
            assert!(ops.iter().any(|o| o == "verify"), "key_ops {ops:?}");
        }
        let algs = key.algorithms();
        assert!(!algs.is_empty());
        assert!(!algs.iter().any(|a| matches!(
            a,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )));
        let kty = jwk.get("kty").and_then(Value::as_str);
        match key.kind() {
            KeyKind::Rsa { bits } => {
                assert_eq!(kty, Some("RSA"));
                assert!((2048..=4096).contains(&bits), "{bits} bits");
                assert!(
                    algs.iter().all(|a| JwtAlgorithm::RSA.contains(a)),
                    "{algs:?}"
                );
            }
            KeyKind::EcP256 => {
                assert_eq!(kty, Some("EC"));
                assert_eq!(algs, [JwtAlgorithm::ES256]);
                let coord = |m: &str| {
                    let s = jwk.get(m).and_then(Value::as_str).expect("coordinate");
                    decode_b64url(s)
                };
                let point = [&[4u8][..], &coord("x"), &coord("y")].concat();
                assert!(
                    p256::PublicKey::from_sec1_bytes(&point).is_ok(),
                    "kept an off-curve point"
                );
            }
            KeyKind::Ed25519 => {
                assert_eq!(kty, Some("OKP"));
                assert_eq!(algs, [JwtAlgorithm::EdDSA]);
            }
        }
        if let Some(alg) = jwk.get("alg") {
            assert_eq!(Some(algs[0].as_str()), alg.as_str());
            assert_eq!(algs.len(), 1);
        }
    }
    let mut kids: Vec<&str> = set.keys().iter().filter_map(|k| k.kid()).collect();
    let n = kids.len();
    kids.sort_unstable();
    kids.dedup();
    assert_eq!(kids.len(), n, "duplicate kid kept");
});

/// base64url with or without padding, as JWKs are written.
fn decode_b64url(s: &str) -> Vec<u8> {
    use base64::Engine;
    let trimmed = s.trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .expect("kept coordinate is base64url")
}
