//! Federated identity: trust domains, the gateway's own token issuer, and
//! how a route passes the caller's identity on. See `gateway/docs/identity.md`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// A SPIFFE trust domain: the CA bundle of its X.509-SVIDs and its JWT issuers.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustDomain {
    /// Trust domain name, as in `spiffe://<name>/...`.
    pub name: String,
    /// PEM CA bundle that signs this domain's X.509-SVIDs. A client
    /// certificate naming this domain is verified against this bundle only.
    #[serde(default)]
    pub ca: Option<String>,
    /// JWT issuers of this domain.
    #[serde(default)]
    pub jwt_issuers: Vec<filters::identity::JwtIssuerConfig>,
}

/// The gateway's own signing key for token exchange (ES256).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuer {
    /// `iss` of minted tokens, e.g. `https://gw.cluster-a.example`.
    pub issuer: String,
    /// PEM PKCS#8 P-256 private key; re-read on reload (key rotation).
    pub key: String,
    /// Key id; default: the RFC 7638 JWK thumbprint of the public key.
    #[serde(default)]
    pub kid: Option<String>,
}

/// Whether a TLS listener asks for client certificates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Handshakes without a valid client certificate fail.
    Require,
    /// A client certificate is verified when sent; without one the caller
    /// is anonymous.
    Optional,
}
filters::config_enum!(ClientAuth { Require = "require", Optional = "optional" });

/// How a route passes the caller's identity to its upstream.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityForwarding {
    /// Set `x-forwarded-client-cert` (Envoy format) for mTLS callers.
    #[serde(default)]
    pub xfcc: bool,
    /// Mint a short-lived token signed by `token_issuer` for the upstream.
    #[serde(default)]
    pub token: Option<MintedToken>,
}

/// A token minted by the gateway for the upstream (token exchange).
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintedToken {
    /// `aud` of the token.
    pub audience: String,
    /// Lifetime of the token.
    #[serde(default = "default_token_ttl")]
    pub ttl: Duration,
    /// Header that carries it; `authorization` gets `Bearer <token>` and
    /// replaces the caller's credentials, any other header the bare token.
    #[serde(default = "default_token_header")]
    pub header: String,
}

fn default_token_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_token_header() -> String {
    "authorization".to_string()
}
