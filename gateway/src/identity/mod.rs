//! Federated identity in the gateway: who the caller is (mTLS SVID and/or
//! bearer JWT), checked off the request path as far as possible.
//!
//! - [`client_auth`]: the rustls client-certificate verifier that checks a
//!   chain against the bundle of the trust domain its SPIFFE ID names, and
//!   the handshake hook that puts the [`PeerIdentity`] into the connection's
//!   TLS digest.
//! - [`jwks_fetch`]: the background thread that keeps `jwks_uri` key sets
//!   fresh (the request path only reads an `ArcSwap`).
//! - [`token`]: the gateway's own ES256 signer for token exchange and its
//!   JWKS (admin `/.well-known/jwks.json`).
//! - [`request`]: the request-path step: authenticate, authorize, and what
//!   to tell the upstream.
//!
//! The pure building blocks (JWT verification, JWKS parsing, SPIFFE IDs,
//! principals, authorization rules) are in [`filters::identity`] and
//! [`filters::authz`]. The configuration is described in `gateway/docs/identity.md`.

pub mod client_auth;
pub mod jwks_fetch;
pub mod request;
pub mod token;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use filters::identity::{JwksRefreshPolicy, JwtVerifier, SharedKeySet, SpiffeId};
use pingora::tls::ClientCertVerifier;

/// The identity part of a compiled runtime.
#[derive(Default)]
pub struct IdentityRuntime {
    /// Trust domains by name.
    pub trust_domains: HashMap<String, TrustDomainRt>,
    /// Verifier of bearer tokens of every configured issuer.
    pub jwt: JwtVerifier,
    /// Key sets fetched from a `jwks_uri`.
    pub jwks_sources: Vec<JwksSource>,
    /// The gateway's own signer, if `token_issuer` is configured.
    pub token_signer: Option<Arc<token::TokenSigner>>,
}

/// A compiled trust domain.
pub struct TrustDomainRt {
    /// Verifies client chains against this domain's CA bundle only.
    pub client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The CA bundle file.
    pub ca: Option<PathBuf>,
}

/// A key set kept fresh from a `jwks_uri`.
#[derive(Clone)]
pub struct JwksSource {
    /// The issuer (`iss`).
    pub issuer: Arc<str>,
    /// Where its JWKS is published.
    pub uri: String,
    /// Refresh timing.
    pub policy: JwksRefreshPolicy,
    /// The set the verifier reads; shared with the fetcher.
    pub keys: SharedKeySet,
}

/// The client certificate identity of a TLS connection, stored by the
/// handshake hook in the connection's `SslDigest` extension.
#[derive(Clone, Debug)]
pub struct PeerIdentity {
    /// The SPIFFE ID of the leaf.
    pub spiffe_id: SpiffeId,
    /// Hex SHA-256 of the leaf DER (`Hash=` of `x-forwarded-client-cert`).
    pub cert_sha256: String,
}
