//! Token exchange at the border: the gateway signs a short-lived ES256 JWT
//! for the upstream, so local services trust only their local gateway and
//! never need the keys of other clusters' issuers.
//!
//! Claims: `iss` (this gateway), `sub` (the caller's principal), `aud` (per
//! route), `iat`, `nbf`, `exp`, `jti`, `trust_domain`, `auth_method`, and
//! `original_iss` when the caller presented a JWT. The public key is served
//! as a JWKS on admin `/.well-known/jwks.json`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use filters::identity::Identity;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The gateway's ES256 signing key and its public JWK.
pub struct TokenSigner {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwk: Value,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish()
    }
}

impl TokenSigner {
    /// Loads a PEM PKCS#8 P-256 key from `path`.
    pub fn load(issuer: &str, path: &Path, kid: Option<&str>) -> Result<TokenSigner, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
        Self::from_pem(issuer, &pem, kid).map_err(|e| format!("`{}`: {e}", path.display()))
    }

    /// A signer from a PEM PKCS#8 P-256 private key.
    pub fn from_pem(issuer: &str, pem: &str, kid: Option<&str>) -> Result<TokenSigner, String> {
        if issuer.is_empty() {
            return Err("issuer must not be empty".into());
        }
        let secret = p256::SecretKey::from_pkcs8_pem(pem)
            .map_err(|e| format!("not a PKCS#8 P-256 private key (ES256): {e}"))?;
        let point = secret.public_key().to_encoded_point(false);
        let (Some(x), Some(y)) = (point.x(), point.y()) else {
            return Err("public key has no affine coordinates".into());
        };
        let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
        // RFC 7638 thumbprint: required members in lexicographic order.
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(
            format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#).as_bytes(),
        ));
        let kid = kid.map_or(thumbprint, str::to_string);
        // jsonwebtoken takes the PKCS#8 DER of an EC key.
        let der = secret
            .to_pkcs8_der()
            .map_err(|e| format!("cannot encode the key for ES256: {e}"))?;
        let key = EncodingKey::from_ec_der(der.as_bytes());
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "use": "sig", "alg": "ES256", "kid": kid,
        });
        Ok(TokenSigner {
            issuer: issuer.to_string(),
            kid,
            key,
            jwk,
        })
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Mints a token for `identity`, valid for `ttl`, for `audience`.
    pub fn mint(
        &self,
        identity: &Identity,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut claims = json!({
            "iss": self.issuer,
            "sub": identity.principal(),
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl.as_secs().max(1),
            "jti": format!("{:032x}", fastrand::u128(..)),
            "trust_domain": identity.trust_domain(),
            "auth_method": identity.methods().as_str(),
        });
        if let (Some(jwt), Some(map)) = (identity.jwt(), claims.as_object_mut()) {
            map.insert("original_iss".into(), Value::String(jwt.issuer.clone()));
            if identity.peer().is_some() {
                map.insert("request_principal".into(), Value::String(jwt.principal()));
            }
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// The JWKS document of `signer` (an empty set without one).
pub fn jwks_document(signer: Option<&TokenSigner>) -> Value {
    json!({ "keys": signer.map(|s| vec![s.jwk().clone()]).unwrap_or_default() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::identity::{JwkSet, JwtIssuerConfig, JwtVerifier, SharedKeySet, SpiffeId};

    const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgLCP6x8pNVE0Phod0
c2+l0MRq7ECbP+yJg6vUIgvWhwShRANCAASDEhnC0rx7rPRIaFsQ5HDqRotQccIC
jXOYNlE0rxMxgVZMMyXDPl+uS+Gr3q/AMxLVR90VHzYDUo+unagqdnvK
-----END PRIVATE KEY-----";

    #[test]
    fn minted_tokens_verify_with_the_published_jwk() {
        let signer = TokenSigner::from_pem("https://gw.a.example", KEY, None).unwrap();
        let jwks = jwks_document(Some(&signer)).to_string();
        let mut verifier = JwtVerifier::new();
        let mut cfg = JwtIssuerConfig::new("https://gw.a.example", &["orders"]);
        cfg.jwks_file = Some("unused".into());
        let keys = SharedKeySet::new(JwkSet::parse(jwks.as_bytes()).unwrap());
        verifier.add_issuer("a.example", &cfg, keys, None).unwrap();
        let id = Identity::from_mtls(SpiffeId::parse("spiffe://b.example/ns/x/sa/y").unwrap());
        let token = signer.mint(&id, "orders", Duration::from_secs(60)).unwrap();
        let v = verifier.verify(&token).unwrap();
        assert_eq!(v.subject, "spiffe://b.example/ns/x/sa/y");
        assert_eq!(v.claims["trust_domain"], "b.example");
        assert_eq!(v.claims["auth_method"], "mtls");
        assert_eq!(v.kid.as_deref(), Some(signer.kid()));
        assert_eq!(signer.kid().len(), 43, "base64url SHA-256 thumbprint");
        let other = signer
            .mint(&id, "billing", Duration::from_secs(60))
            .unwrap();
        assert!(verifier.verify(&other).is_err(), "audience is checked");
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        let e = TokenSigner::from_pem("x", "not a key", None).unwrap_err();
        assert!(e.contains("PKCS#8 P-256"), "{e}");
        assert!(TokenSigner::from_pem("", KEY, None).is_err());
    }
}
