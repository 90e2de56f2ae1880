//! Keys, JWKS documents and tokens made by the identity tests.

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde_json::{json, Value};

use super::{JwkSet, JwtIssuerConfig, JwtVerifier, SharedKeySet};

/// The test clock, Unix seconds.
pub const NOW: i64 = 1_700_000_000;
/// The issuer of the test tokens.
pub const ISS: &str = "https://issuer.cluster-b.example";

/// A signing key with its public JWK.
pub struct TestKey {
    pub kid: String,
    pub alg: Algorithm,
    pub enc: EncodingKey,
    pub jwk: Value,
}

/// RSA key generation is slow in debug builds: two keys per test binary.
fn rsa_private(slot: usize) -> &'static RsaPrivateKey {
    static KEYS: [OnceLock<RsaPrivateKey>; 2] = [OnceLock::new(), OnceLock::new()];
    KEYS[slot].get_or_init(|| RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap())
}

/// An RS256 key (`slot` 0 or 1 picks one of two RSA keys).
pub fn rsa(kid: &str, slot: usize) -> TestKey {
    let key = rsa_private(slot);
    let der = key.to_pkcs1_der().unwrap();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        enc: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "use": "sig",
            "n": b64(&key.n().to_bytes_be()), "e": b64(&key.e().to_bytes_be()),
        }),
    }
}

/// The PEM of an RSA test key's public half (the classic confusion secret).
pub fn rsa_public_pem(slot: usize) -> String {
    rsa_private(slot)
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap()
}

/// An ES256 key on P-256.
pub fn ec(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let point = pair.public_key_raw();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        enc: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&point[1..33]), "y": b64(&point[33..])}),
    }
}

/// An EdDSA key on Ed25519.
pub fn ed(kid: &str) -> TestKey {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        enc: EncodingKey::from_ed_der(&pair.serialize_der()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(pair.public_key_raw())}),
    }
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn unb64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// A JWKS document holding these keys.
pub fn jwks(keys: &[&TestKey]) -> Vec<u8> {
    let keys: Vec<&Value> = keys.iter().map(|k| &k.jwk).collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// Valid claims for [`ISS`] and audience `edge` at [`NOW`].
pub fn claims() -> Value {
    json!({"iss": ISS, "sub": "user-42", "aud": "edge", "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300, "scope": "orders:read orders:write"})
}

/// `claims()` with `name` set to `value`.
pub fn claims_set(name: &str, value: Value) -> Value {
    let mut c = claims();
    c[name] = value;
    c
}

/// `claims()` without `name`.
pub fn claims_without(name: &str) -> Value {
    let mut c = claims();
    if let Value::Object(m) = &mut c {
        m.remove(name);
    }
    c
}

/// A token signed by `key` with its `kid`.
pub fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.enc).unwrap()
}

/// A token with an arbitrary header, signed by `enc` with `alg`.
pub fn sign_raw(header: &Value, claims: &Value, enc: &EncodingKey, alg: Algorithm) -> String {
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), enc, alg).unwrap();
    format!("{msg}.{sig}")
}

/// A token from raw parts.
pub fn raw_token(header: &str, claims: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.as_bytes()),
        b64(claims.as_bytes()),
        b64(sig)
    )
}

/// A verifier trusting [`ISS`] (trust domain `cluster-b.example`, audience
/// `edge`, defaults otherwise) with these keys.
pub fn verifier(keys: &[&TestKey]) -> JwtVerifier {
    verifier_with(keys, |_| {}, None)
}

/// Like [`verifier`], with the issuer config edited and an HMAC secret.
pub fn verifier_with(
    keys: &[&TestKey],
    edit: impl FnOnce(&mut JwtIssuerConfig),
    hmac: Option<&[u8]>,
) -> JwtVerifier {
    let mut cfg = JwtIssuerConfig::new(ISS, &["edge", "other"]);
    cfg.jwks_file = Some("b.jwks.json".into());
    edit(&mut cfg);
    let set = if keys.is_empty() {
        JwkSet::default()
    } else {
        JwkSet::parse(&jwks(keys)).unwrap()
    };
    let mut v = JwtVerifier::new();
    v.add_issuer("cluster-b.example", &cfg, SharedKeySet::new(set), hmac)
        .unwrap();
    v
}
