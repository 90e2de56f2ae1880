//! Verification of compact JWS tokens (`Authorization: Bearer`).
//!
//! Order of checks in [`JwtVerifier::verify_at`], each failing with its own
//! [`JwtError`]:
//!
//! 1. size, before any decoding (the largest `max_token_bytes` of all
//!    issuers, then the issuer's own once it is known);
//! 2. shape (three base64url parts) and the header: a JSON object without
//!    duplicate members, `alg: none` (any case) refused, unknown `alg`
//!    refused, any `crit` refused; `jwk`, `jku`, `x5u`, `x5c` headers are
//!    ignored: keys come from config only;
//! 3. the unverified `iss` selects the issuer; `alg` must be one it allows;
//! 4. the key: HMAC only with that issuer's configured secret; otherwise a
//!    key of that issuer's JWKS only: by `kid` (an absent `kid` is
//!    [`JwtError::UnknownKid`], which should trigger a rate-limited refetch),
//!    whose type and `alg` must fit the header `alg` (so an HS256 token
//!    "signed" with an RSA public key never meets an RSA key as a secret); a
//!    token without `kid` is tried against the issuer's keys that fit `alg`;
//! 5. the signature;
//! 6. claims, with the issuer's leeway: `exp` required and not passed, `nbf`
//!    reached, `iat` not in the future, `aud` (string or array) naming one of
//!    the issuer's audiences, `sub` a non-empty string.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::DecodingKey;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::jwks::VerificationKey;
use super::jwks_refresh::SharedKeySet;
use super::jwt_cache::{CachedToken, TokenCache};
use super::jwt_config::{
    JwtAlgorithm, JwtIssuerConfig, DEFAULT_MAX_TOKEN_BYTES, MIN_HMAC_SECRET_BYTES,
};
pub use super::jwt_error::{bearer_token, JwtError, MISSING_TOKEN_CHALLENGE};

/// A token that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedJwt {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// The trust domain the issuer belongs to.
    pub trust_domain: String,
    /// The header `alg`.
    pub algorithm: JwtAlgorithm,
    /// The header `kid`, if any.
    pub kid: Option<String>,
    /// All claims.
    pub claims: Map<String, Value>,
}

impl VerifiedJwt {
    /// The JWT principal, `<iss>#<sub>` (unambiguous: issuers have no `#`).
    pub fn principal(&self) -> String {
        format!("{}#{}", self.issuer, self.subject)
    }
}

struct Issuer {
    trust_domain: String,
    audiences: Vec<String>,
    algorithms: Vec<JwtAlgorithm>,
    leeway: i64,
    max_token_bytes: usize,
    keys: SharedKeySet,
    hmac: Option<DecodingKey>,
}

/// The trusted issuers with their keys, and the tokens already verified
/// ([`super::jwt_cache`]).
#[derive(Default)]
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
    max_token_bytes: usize,
    cache: TokenCache,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.issuers.keys().collect();
        names.sort();
        f.debug_struct("JwtVerifier")
            .field("issuers", &names)
            .finish()
    }
}

impl JwtVerifier {
    /// A verifier with no issuer (refuses every token).
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps up to `capacity` verified tokens per worker thread (0: none);
    /// [`super::jwt_cache::DEFAULT_CAPACITY`] unless set.
    pub fn with_cache_capacity(mut self, capacity: usize) -> Self {
        self.cache = TokenCache::new(capacity);
        self
    }

    /// Adds an issuer of trust domain `trust_domain`, verifying with `keys`
    /// and, for `HS*`, with `hmac_secret` (the content of
    /// `hmac_secret_file`). Returns every config problem.
    pub fn add_issuer(
        &mut self,
        trust_domain: &str,
        cfg: &JwtIssuerConfig,
        keys: SharedKeySet,
        hmac_secret: Option<&[u8]>,
    ) -> Result<(), Vec<String>> {
        let mut errs = cfg.validate();
        if self.issuers.contains_key(&cfg.issuer) {
            errs.push(format!("issuer `{}` is configured twice", cfg.issuer));
        }
        match (hmac_secret, cfg.hmac_secret_file.is_some()) {
            (Some(s), true) if s.len() < MIN_HMAC_SECRET_BYTES => errs.push(format!(
                "hmac_secret_file: secret must be at least {MIN_HMAC_SECRET_BYTES} bytes"
            )),
            (None, true) => errs.push("hmac_secret_file: secret not provided".into()),
            (Some(_), false) => errs.push("HMAC secret given without hmac_secret_file".into()),
            _ => {}
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let leeway = i64::try_from(cfg.leeway.get().as_secs()).unwrap_or(i64::MAX);
        self.max_token_bytes = self.max_token_bytes.max(cfg.max_token_bytes);
        self.issuers.insert(
            cfg.issuer.clone(),
            Issuer {
                trust_domain: trust_domain.to_string(),
                audiences: cfg.audiences.clone(),
                algorithms: cfg.algorithms.clone(),
                leeway,
                max_token_bytes: cfg.max_token_bytes,
                keys,
                hmac: hmac_secret.map(DecodingKey::from_secret),
            },
        );
        Ok(())
    }

    /// Tokens cached by the calling thread (tests).
    #[cfg(test)]
    pub(crate) fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// The key set of `issuer` (to hand to its refresher).
    pub fn keys(&self, issuer: &str) -> Option<&SharedKeySet> {
        self.issuers.get(issuer).map(|i| &i.keys)
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Verifies `token` at the current time.
    pub fn verify(&self, token: &str) -> Result<VerifiedJwt, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, i64::try_from(now).unwrap_or(i64::MAX))
    }

    /// Verifies `token` at `now` (Unix seconds); see the module docs.
    pub fn verify_at(&self, token: &str, now: i64) -> Result<VerifiedJwt, JwtError> {
        let too_large = |max| JwtError::TooLarge {
            size: token.len(),
            max,
        };
        let global_max = match self.max_token_bytes {
            0 => DEFAULT_MAX_TOKEN_BYTES,
            max => max,
        };
        if token.len() > global_max {
            return Err(too_large(global_max));
        }
        if let Some(hit) = self.cache.get(token) {
            if let Some(result) = self.recheck(&hit, now) {
                if result.is_err() {
                    self.cache.remove(token);
                }
                return result.map(|()| hit.jwt);
            }
            // The issuer or its keys changed since: check from scratch.
            self.cache.remove(token);
        }
        let mut parts = token.split('.');
        let (Some(h64), Some(c64), Some(sig64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("expected three dot-separated parts"));
        };
        let header = decode_object(h64).ok_or(JwtError::Malformed("bad header"))?;
        let alg = match header.get("alg") {
            Some(Value::String(a)) if a.eq_ignore_ascii_case("none") => {
                return Err(JwtError::AlgNone)
            }
            Some(Value::String(a)) => {
                JwtAlgorithm::from_name(a).ok_or(JwtError::UnsupportedAlgorithm)?
            }
            _ => return Err(JwtError::Malformed("header has no alg")),
        };
        if header.contains_key("crit") {
            return Err(JwtError::CriticalHeader);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(JwtError::Malformed("kid is not a string")),
        };
        let claims = decode_object(c64).ok_or(JwtError::Malformed("bad claims"))?;
        let iss = string_claim(&claims, "iss")?;
        let issuer = self.issuers.get(iss).ok_or(JwtError::UnknownIssuer)?;
        if token.len() > issuer.max_token_bytes {
            return Err(too_large(issuer.max_token_bytes));
        }
        if !issuer.algorithms.contains(&alg) {
            return Err(JwtError::AlgorithmNotAllowed(alg.as_str()));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig64)
            .ok()
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::Malformed("bad signature encoding"))?;
        let message = &token.as_bytes()[..h64.len() + 1 + c64.len()];
        let mut checked_with = None;
        let verified = if alg.is_hmac() {
            let secret = issuer
                .hmac
                .as_ref()
                .ok_or(JwtError::AlgorithmNotAllowed(alg.as_str()))?;
            check_signature(&sig, message, secret, alg)
        } else {
            let set = issuer.keys.load();
            checked_with = Some(set.clone());
            let candidates: Vec<&VerificationKey> = match kid {
                Some(kid) => {
                    let key = set.find(kid).ok_or_else(|| JwtError::UnknownKid {
                        issuer: iss.to_string(),
                        kid: kid.chars().take(128).collect(),
                    })?;
                    if !key.accepts(alg) {
                        return Err(JwtError::KeyAlgorithmMismatch(
                            kid.chars().take(128).collect(),
                        ));
                    }
                    vec![key]
                }
                None => set.keys().iter().filter(|k| k.accepts(alg)).collect(),
            };
            if candidates.is_empty() {
                return Err(JwtError::NoMatchingKey);
            }
            candidates
                .iter()
                .any(|k| check_signature(&sig, message, k.decoding_key(), alg))
        };
        if !verified {
            return Err(JwtError::BadSignature);
        }
        let times = check_claims(&claims, issuer, now)?;
        let jwt = VerifiedJwt {
            issuer: iss.to_string(),
            subject: string_claim(&claims, "sub")?.to_string(),
            trust_domain: issuer.trust_domain.clone(),
            algorithm: alg,
            kid: kid.map(str::to_string),
            claims,
        };
        self.cache.insert(
            token,
            CachedToken {
                jwt: jwt.clone(),
                keys: checked_with,
                times,
            },
        );
        Ok(jwt)
    }

    /// Re-checks a cached token at `now`: `None` when its issuer is gone or
    /// the issuer's key set was replaced since (check it again from scratch).
    fn recheck(&self, hit: &CachedToken, now: i64) -> Option<Result<(), JwtError>> {
        let issuer = self.issuers.get(&hit.jwt.issuer)?;
        if let Some(keys) = &hit.keys {
            if !Arc::ptr_eq(keys, &issuer.keys.load()) {
                return None;
            }
        }
        Some(hit.times.check(issuer.leeway, now))
    }
}

/// The time claims of a token (Unix seconds).
#[derive(Clone, Copy, Debug)]
pub(super) struct TimeClaims {
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
}

impl TimeClaims {
    /// `exp` not passed, `nbf` reached and `iat` not in the future, with `leeway`.
    fn check(&self, leeway: i64, now: i64) -> Result<(), JwtError> {
        if now >= self.exp.saturating_add(leeway) {
            return Err(JwtError::Expired);
        }
        if let Some(nbf) = self.nbf {
            if nbf > now.saturating_add(leeway) {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = self.iat {
            if iat > now.saturating_add(leeway) {
                return Err(JwtError::IssuedInFuture);
            }
        }
        Ok(())
    }
}

/// Verifies with the RustCrypto provider directly, so the result does not
/// depend on which jsonwebtoken provider is the process default.
fn check_signature(sig: &[u8], msg: &[u8], key: &DecodingKey, alg: JwtAlgorithm) -> bool {
    // Cheap length gate before the crypto (ES256 and EdDSA are fixed-size).
    if matches!(alg, JwtAlgorithm::ES256 | JwtAlgorithm::EdDSA) && sig.len() != 64 {
        return false;
    }
    let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
    (provider.verifier_factory)(&alg.to_jwt(), key)
        .is_ok_and(|v| v.verify(msg, &sig.to_vec()).is_ok())
}

fn check_claims(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    now: i64,
) -> Result<TimeClaims, JwtError> {
    let times = TimeClaims {
        exp: numeric_date(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?,
        nbf: numeric_date(claims, "nbf")?,
        iat: numeric_date(claims, "iat")?,
    };
    times.check(issuer.leeway, now)?;
    let accepted = |a: &Value| {
        a.as_str()
            .is_some_and(|a| issuer.audiences.iter().any(|x| x == a))
    };
    let ok = match claims.get("aud") {
        None => return Err(JwtError::MissingClaim("aud")),
        Some(Value::Array(list)) => list.iter().any(accepted),
        Some(single @ Value::String(_)) => accepted(single),
        Some(_) => return Err(JwtError::InvalidClaim("aud")),
    };
    if !ok {
        return Err(JwtError::WrongAudience);
    }
    if string_claim(claims, "sub")?.is_empty() {
        return Err(JwtError::InvalidClaim("sub"));
    }
    Ok(times)
}

fn string_claim<'a>(
    claims: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, JwtError> {
    match claims.get(name) {
        None => Err(JwtError::MissingClaim(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

/// A NumericDate claim as whole seconds (fractions floored).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(Some(i)),
            // Saturating float-to-int cast; NaN cannot come from JSON.
            (None, Some(f)) if f.is_finite() => Ok(Some(f.floor() as i64)),
            _ => Err(JwtError::InvalidClaim(name)),
        },
        Some(_) => Err(JwtError::InvalidClaim(name)),
    }
}

/// Decodes a base64url (no padding) JSON object, refusing duplicate members.
fn decode_object(b64: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(b64).ok()?;
    serde_json::from_slice::<UniqueObject>(&bytes)
        .ok()
        .map(|o| o.0)
}

struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    if map.contains_key(&k) {
                        return Err(de::Error::custom("duplicate member"));
                    }
                    let v: Value = a.next_value()?;
                    map.insert(k, v);
                }
                Ok(UniqueObject(map))
            }
        }
        d.deserialize_map(V)
    }
}
