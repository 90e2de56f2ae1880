//! JSON Web Key Sets: parsing into verification keys, each bound to the
//! algorithms its key type allows.
//!
//! Accepted keys: `RSA` (2048 to 4096 bits; PKCS#1 v1.5 and PSS), `EC` on
//! `P-256` (ES256 only) and `OKP` `Ed25519` (EdDSA only). A key's `alg`, when
//! present, narrows it to that one algorithm and must fit its type. Skipped,
//! each with a reason in [`JwkSet::skipped`]: other key types and curves,
//! symmetric (`oct`) keys (HMAC secrets come only from issuer config), keys
//! with `use` other than `sig` or `key_ops` without `verify`, keys carrying
//! private material, malformed keys, duplicate `kid`s and keys past
//! [`MAX_JWKS_KEYS`]. A set with no usable key is an error, so a refresh that
//! returns one keeps the last good set.

use std::fmt;

use base64::alphabet::URL_SAFE;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};

use super::JwtAlgorithm;

/// Largest JWKS document accepted, in bytes (256 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most usable keys kept from one JWKS.
pub const MAX_JWKS_KEYS: usize = 64;
/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (the verifier's limit).
pub const MAX_RSA_BITS: usize = 4096;

/// JWK members base64url-encoded, padding tolerated.
const B64: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The type of a verification key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with its modulus size in bits.
    Rsa {
        /// Modulus size in bits.
        bits: usize,
    },
    /// ECDSA on P-256.
    EcP256,
    /// Ed25519.
    Ed25519,
}

/// A public key from a JWKS, with the algorithms it may verify.
#[derive(Clone)]
pub struct VerificationKey {
    kid: Option<String>,
    kind: KeyKind,
    algorithms: Vec<JwtAlgorithm>,
    key: DecodingKey,
}

impl VerificationKey {
    /// The key id, if the JWK had one.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }
    /// The key type.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }
    /// The algorithms this key may verify.
    pub fn algorithms(&self) -> &[JwtAlgorithm] {
        &self.algorithms
    }
    /// Whether this key may verify a token with header `alg`.
    pub fn accepts(&self, alg: JwtAlgorithm) -> bool {
        self.algorithms.contains(&alg)
    }
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// A JWK that was not taken, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedKey {
    /// Position in the `keys` array.
    pub index: usize,
    /// Its `kid`, if it had a string one.
    pub kid: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// Why a JWKS document was refused as a whole.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    /// Larger than [`MAX_JWKS_BYTES`].
    #[error("JWKS is {size} bytes, more than {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON.
    #[error("JWKS is not valid JSON: {0}")]
    Json(String),
    /// JSON without a `keys` array.
    #[error("JWKS has no `keys` array")]
    NoKeysArray,
    /// No key was usable; the reasons of the skipped ones.
    #[error("JWKS has no usable key ({})", .0.join("; "))]
    NoUsableKeys(Vec<String>),
}

/// The usable keys of one JWKS document.
#[derive(Clone, Debug, Default)]
pub struct JwkSet {
    keys: Vec<VerificationKey>,
    skipped: Vec<SkippedKey>,
}

impl JwkSet {
    /// Parses a JWKS document (`{"keys": [...]}`), skipping unusable keys.
    pub fn parse(json: &[u8]) -> Result<JwkSet, JwksError> {
        if json.len() > MAX_JWKS_BYTES {
            return Err(JwksError::TooLarge {
                size: json.len(),
                max: MAX_JWKS_BYTES,
            });
        }
        let doc: Value =
            serde_json::from_slice(json).map_err(|e| JwksError::Json(e.to_string()))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(JwksError::NoKeysArray);
        };
        let mut set = JwkSet::default();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_string);
            let result = match entry {
                Value::Object(jwk) => parse_jwk(jwk).and_then(|key| set.check_room(key)),
                _ => Err("not a JSON object".to_string()),
            };
            match result {
                Ok(key) => set.keys.push(key),
                Err(reason) => set.skipped.push(SkippedKey { index, kid, reason }),
            }
        }
        if set.keys.is_empty() {
            let reasons = set
                .skipped
                .iter()
                .map(|s| format!("key {}: {}", s.index, s.reason));
            return Err(JwksError::NoUsableKeys(reasons.collect()));
        }
        Ok(set)
    }

    fn check_room(&self, key: VerificationKey) -> Result<VerificationKey, String> {
        if self.keys.len() >= MAX_JWKS_KEYS {
            return Err(format!("more than {MAX_JWKS_KEYS} keys"));
        }
        if key.kid.is_some() && self.keys.iter().any(|k| k.kid == key.kid) {
            return Err("duplicate kid".to_string());
        }
        Ok(key)
    }

    /// The key with this `kid`.
    pub fn find(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }

    /// All usable keys, in document order.
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// The keys that were skipped, with reasons (for logs).
    pub fn skipped(&self) -> &[SkippedKey] {
        &self.skipped
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no usable key (only for a set not made by `parse`).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn parse_jwk(jwk: &Map<String, Value>) -> Result<VerificationKey, String> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err("kid is not a string".into()),
    };
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("use is not `sig`".into()),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops
            .as_array()
            .is_some_and(|o| o.iter().any(|v| v == "verify"));
        if !verify {
            return Err("key_ops does not include `verify`".into());
        }
    }
    if ["d", "p", "q", "dp", "dq", "qi"]
        .iter()
        .any(|m| jwk.contains_key(*m))
    {
        return Err("has private or secret key material".into());
    }
    let kty = str_member(jwk, "kty")?;
    let (kind, family, key) = match kty {
        "RSA" => {
            let n = strip_zeros(b64_member(jwk, "n")?);
            let e = strip_zeros(b64_member(jwk, "e")?);
            let bits = n
                .first()
                .map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!(
                    "RSA modulus of {bits} bits (need {MIN_RSA_BITS}..={MAX_RSA_BITS})"
                ));
            }
            let odd = e.last().is_some_and(|b| b & 1 == 1);
            if e.len() > 4 || !odd || e.as_slice() == [1] {
                return Err("bad RSA exponent".into());
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (KeyKind::Rsa { bits }, JwtAlgorithm::RSA.to_vec(), key)
        }
        "EC" => {
            let crv = str_member(jwk, "crv")?;
            if crv != "P-256" {
                return Err(format!("EC curve `{crv}` is not supported"));
            }
            let (x, y) = (b64_member(jwk, "x")?, b64_member(jwk, "y")?);
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes".into());
            }
            // The uncompressed SEC1 point, the form the ES256 verifier reads
            // (what `from_ec_components` builds, minus its strict base64).
            let point = [&[0x04][..], &x, &y].concat();
            let key = DecodingKey::from_ec_der(&point);
            (KeyKind::EcP256, vec![JwtAlgorithm::ES256], key)
        }
        "OKP" => {
            let crv = str_member(jwk, "crv")?;
            if crv != "Ed25519" {
                return Err(format!("OKP curve `{crv}` is not supported"));
            }
            let x = b64_member(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 key must be 32 bytes".into());
            }
            // The raw 32-byte key, as `from_ed_components` stores it.
            let key = DecodingKey::from_ed_der(&x);
            (KeyKind::Ed25519, vec![JwtAlgorithm::EdDSA], key)
        }
        "oct" => return Err("symmetric keys are not taken from a JWKS".into()),
        other => return Err(format!("key type `{other}` is not supported")),
    };
    let algorithms = match jwk.get("alg") {
        None => family,
        Some(Value::String(name)) => match JwtAlgorithm::from_name(name) {
            Some(alg) if family.contains(&alg) => vec![alg],
            _ => return Err(format!("alg `{name}` does not fit key type `{kty}`")),
        },
        Some(_) => return Err("alg is not a string".into()),
    };
    check_key(&key, algorithms[0])?;
    Ok(VerificationKey {
        kid,
        kind,
        algorithms,
        key,
    })
}

/// Builds the verifier once so that a bad point or key fails here, not later
/// (the same RustCrypto provider verifies tokens in `jwt`).
fn check_key(key: &DecodingKey, alg: JwtAlgorithm) -> Result<(), String> {
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    (provider.verifier_factory)(&alg.to_jwt(), key)
        .map(|_| ())
        .map_err(|e| format!("invalid key: {e}"))
}

fn str_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing or non-string `{name}`"))
}

fn b64_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    B64.decode(str_member(jwk, name)?)
        .map_err(|_| format!("`{name}` is not base64url"))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}
