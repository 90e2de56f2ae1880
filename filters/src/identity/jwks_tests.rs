//! JWKS parsing and the refresh state machine.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::jwks::{MAX_JWKS_BYTES, MAX_JWKS_KEYS};
use super::test_keys::*;
use super::*;

fn doc(keys: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

#[test]
fn mixed_jwks_keeps_supported_keys_and_says_why_others_are_skipped() {
    let (r, e, d) = (rsa("r1", 0), ec("e1"), ed("d1"));
    let with = |base: &Value, k: &str, v: Value| {
        let mut j = base.clone();
        j[k] = v;
        j
    };
    let mut pinned = e.jwk.clone();
    pinned["alg"] = json!("ES256");
    let small_rsa = json!({"kty": "RSA", "kid": "small", "n": b64(&[0xc5; 128]), "e": "AQAB"});
    let off_curve =
        json!({"kty": "EC", "crv": "P-256", "kid": "off", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
    let entries = vec![
        r.jwk.clone(),                                                               // 0 ok
        with(&e.jwk, "kid", json!("e-pinned")), // 1 ok (kid changed)
        d.jwk.clone(),                          // 2 ok
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}), // 3
        json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}), // 4
        json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(&[9; 32])}), // 5
        small_rsa,                              // 6
        with(&e.jwk, "use", json!("enc")),      // 7
        with(&d.jwk, "key_ops", json!(["sign"])), // 8
        with(&d.jwk, "d", json!("c2VjcmV0")),   // 9
        with(&e.jwk, "alg", json!("RS256")),    // 10
        json!("not a key"),                     // 11
        with(&d.jwk, "kid", json!("e-pinned")), // 12 duplicate kid
        with(&d.jwk, "x", json!("***")),        // 13
        with(&e.jwk, "x", json!(b64(&[1; 31]))), // 14
        off_curve,                              // 15
        json!({"kid": "no-kty"}),               // 16
        with(&pinned, "kid", json!("pinned")),  // 17 ok
    ];
    let set = JwkSet::parse(&doc(entries)).unwrap();
    let kids: Vec<_> = set.keys().iter().map(|k| k.kid().unwrap()).collect();
    assert_eq!(kids, ["r1", "e-pinned", "d1", "pinned"]);
    assert_eq!(set.len(), 4);
    let skipped: Vec<_> = set.skipped().iter().map(|s| s.index).collect();
    assert_eq!(skipped, (3..=16).collect::<Vec<_>>());
    let reason = |i: usize| {
        set.skipped()
            .iter()
            .find(|s| s.index == i)
            .unwrap()
            .reason
            .clone()
    };
    assert!(reason(3).contains("symmetric"), "{}", reason(3));
    assert!(reason(4).contains("P-384"));
    assert!(reason(6).contains("1024 bits"), "{}", reason(6));
    assert!(reason(9).contains("private"));
    assert!(reason(10).contains("does not fit"));
    assert!(reason(12).contains("duplicate kid"));
    assert!(reason(15).contains("invalid key"), "{}", reason(15));
    assert_eq!(set.skipped()[0].kid.as_deref(), Some("hmac"));

    let rsa_key = set.find("r1").unwrap();
    assert_eq!(rsa_key.kind(), KeyKind::Rsa { bits: 2048 });
    assert!(rsa_key.accepts(JwtAlgorithm::RS256) && rsa_key.accepts(JwtAlgorithm::PS512));
    assert!(!rsa_key.accepts(JwtAlgorithm::HS256) && !rsa_key.accepts(JwtAlgorithm::ES256));
    assert_eq!(
        set.find("e-pinned").unwrap().algorithms(),
        [JwtAlgorithm::ES256]
    );
    assert_eq!(set.find("d1").unwrap().kind(), KeyKind::Ed25519);
    assert_eq!(
        set.find("pinned").unwrap().algorithms(),
        [JwtAlgorithm::ES256]
    );
    assert!(set.find("hmac").is_none() && set.find("nope").is_none());
    assert!(!format!("{rsa_key:?}").contains(r.jwk["n"].as_str().unwrap()));
}

#[test]
fn jwks_documents_refused_whole() {
    assert!(matches!(JwkSet::parse(b"{"), Err(JwksError::Json(_))));
    assert_eq!(JwkSet::parse(b"{}").unwrap_err(), JwksError::NoKeysArray);
    assert_eq!(
        JwkSet::parse(br#"{"keys": {}}"#).unwrap_err(),
        JwksError::NoKeysArray
    );
    assert!(
        matches!(JwkSet::parse(br#"{"keys": []}"#), Err(JwksError::NoUsableKeys(r)) if r.is_empty())
    );
    let only_bad = doc(vec![json!({"kty": "oct", "k": "AA"})]);
    let err = JwkSet::parse(&only_bad).unwrap_err();
    assert!(err.to_string().contains("key 0: symmetric"), "{err}");
    let huge = vec![b' '; MAX_JWKS_BYTES + 1];
    assert!(matches!(
        JwkSet::parse(&huge),
        Err(JwksError::TooLarge { .. })
    ));
}

#[test]
fn jwks_key_count_is_bounded() {
    let keys: Vec<Value> = (0..MAX_JWKS_KEYS + 3)
        .map(|i| ed(&format!("k{i}")).jwk)
        .collect();
    let set = JwkSet::parse(&doc(keys)).unwrap();
    assert_eq!((set.len(), set.skipped().len()), (MAX_JWKS_KEYS, 3));
}

fn policy() -> JwksRefreshPolicy {
    JwksRefreshPolicy::from(&JwksRefreshConfig::default())
}

#[test]
fn refresh_schedule_and_unknown_kid_rate_limit() {
    let t0 = Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let keys = SharedKeySet::default();
    let mut r = JwksRefresher::new(policy(), keys.clone(), t0);
    assert_eq!(r.next_due(), t0);
    assert_eq!(r.poll(t0), Some(FetchReason::Initial));
    assert!(r.in_flight(s(1)));
    assert_eq!(r.poll(s(1)), None, "one fetch at a time");
    assert!(!r.request_refetch(s(1)), "in flight");

    let (k1, k2) = (ed("k1"), ed("k2"));
    let out = r.complete(s(1), Ok(&jwks(&[&k1])));
    assert_eq!(
        out,
        RefreshOutcome::Updated {
            keys: 1,
            skipped: 0
        }
    );
    assert!(
        keys.load().find("k1").is_some(),
        "published to every holder"
    );
    assert_eq!((r.next_due(), r.last_success()), (s(301), Some(s(1))));
    assert_eq!(r.poll(s(300)), None);

    // Unknown kid: at most one fetch per 10 s since the last start.
    assert!(!r.request_refetch(s(5)));
    assert!(r.request_refetch(s(10)));
    assert!(!r.request_refetch(s(11)));
    r.complete(s(11), Ok(&jwks(&[&k1, &k2])));
    assert!(keys.load().find("k2").is_some());
    assert!(!r.request_refetch(s(19)));
    assert!(r.request_refetch(s(20)));
    r.complete(s(20), Ok(&jwks(&[&k2])));
    assert!(keys.load().find("k1").is_none(), "a removed key is gone");
    assert_eq!(r.poll(s(320)), Some(FetchReason::Scheduled));
}

#[test]
fn refresh_is_stale_if_error_with_backoff() {
    let t0 = Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let keys = SharedKeySet::default();
    let mut r = JwksRefresher::new(policy(), keys.clone(), t0);

    r.poll(t0);
    let first = r.complete(s(1), Err("connection refused".into()));
    assert_eq!(
        first,
        RefreshOutcome::NoKeys {
            error: "connection refused".into()
        }
    );
    assert_eq!(r.next_due(), s(11));
    assert_eq!(r.poll(s(11)), Some(FetchReason::Retry));
    let k1 = ed("k1");
    r.complete(s(12), Ok(&jwks(&[&k1])));

    // Failures keep the last good set; retries back off 10, 20, 40 ... <= 300 s.
    let mut at = 312;
    for (n, delay) in [10, 20, 40, 80, 160, 300, 300].into_iter().enumerate() {
        assert_eq!(
            r.poll(s(at)),
            Some(if n == 0 {
                FetchReason::Scheduled
            } else {
                FetchReason::Retry
            })
        );
        let body: Result<&[u8], String> = if n % 2 == 0 {
            Err("HTTP 503".into())
        } else {
            Ok(b"<html>")
        };
        assert!(matches!(
            r.complete(s(at), body),
            RefreshOutcome::KeptStale { .. }
        ));
        assert_eq!(r.consecutive_failures(), n as u32 + 1);
        assert_eq!(r.next_due(), s(at + delay), "failure {}", n + 1);
        assert!(keys.load().find("k1").is_some());
        at += delay;
    }
    let empty = doc(vec![json!({"kty": "oct", "k": "AA"})]);
    r.poll(s(at));
    assert!(matches!(
        r.complete(s(at), Ok(&empty)),
        RefreshOutcome::KeptStale { .. }
    ));
    assert_eq!(keys.load().len(), 1);
    r.poll(s(at + 300));
    r.complete(s(at + 300), Ok(&jwks(&[&k1])));
    assert_eq!((r.consecutive_failures(), r.next_due()), (0, s(at + 600)));
}

#[test]
fn refresh_in_flight_times_out_and_carried_over_keys_count() {
    let t0 = Instant::now();
    let s = |secs: u64| t0 + Duration::from_secs(secs);
    let keys = SharedKeySet::new(JwkSet::parse(&jwks(&[&ed("k1")])).unwrap());
    let mut r = JwksRefresher::new(policy(), keys.clone(), t0);
    assert!(r.keys().ptr_eq(&keys));
    assert_eq!(
        r.poll(t0),
        Some(FetchReason::Scheduled),
        "keys carried over a reload"
    );
    assert_eq!(r.poll(s(4)), None);
    assert!(!r.in_flight(s(5)), "the fetch timed out");
    assert_eq!(r.poll(s(5)), Some(FetchReason::Scheduled));
    assert!(r.request_refetch(s(15)));
}
