//! Federated identity: who is calling, from which trust domain.
//!
//! Pure building blocks, no I/O: the gateway reads files, fetches JWKS and
//! terminates TLS, then hands bytes to these modules.
//!
//! - [`spiffe`]: SPIFFE IDs and the one `spiffe://` URI SAN of an X.509-SVID
//!   leaf (chain verification against the bundle of the trust domain the ID
//!   names is rustls's job in the gateway).
//! - [`jwks`]: JWKS parsing into verification keys bound to algorithms, a
//!   hot-swappable [`SharedKeySet`], and [`JwksRefresher`], the refresh state
//!   machine of a `jwks_uri` (interval, rate-limited refetch on unknown `kid`,
//!   stale-if-error).
//! - [`jwt`]: [`JwtVerifier`] for compact JWS tokens from `Authorization:
//!   Bearer`, and [`JwtError`] with the `WWW-Authenticate` challenge.
//! - [`principal`]: [`Identity`] (mTLS and/or JWT), the `x-gateway-identity`
//!   header value and an Envoy-format `x-forwarded-client-cert` element.
//!
//! Authorization on top of an [`Identity`] is in [`crate::authz`].
//!
//! # Configuration
//!
//! ```yaml
//! trust_domains:
//!   - name: cluster-b.example
//!     ca: certs/cluster-b-ca.pem
//!     jwt_issuers:                        # each entry is a JwtIssuerConfig
//!       - issuer: https://issuer.cluster-b.example
//!         audiences: [edge]               # required, non-empty
//!         jwks_uri: https://issuer.cluster-b.example/jwks.json   # or jwks_file
//!         jwks_refresh: {interval: 5m, min_refetch_interval: 10s, timeout: 5s}
//!         algorithms: [RS256, ES256, EdDSA]   # the default
//!         leeway: 60s                     # the default
//!         max_token_bytes: 8192           # the default
//!       - issuer: legacy-hmac
//!         audiences: [edge]
//!         algorithms: [HS256]             # HMAC only with a secret
//!         hmac_secret_file: keys/legacy.secret   # >= 32 bytes
//! ```
//!
//! # Use from the gateway
//!
//! 1. At config compile, per issuer: parse `jwks_file` with
//!    [`JwkSet::parse`] (or start empty for a `jwks_uri`), wrap it in a
//!    [`SharedKeySet`], read `hmac_secret_file` if set, then
//!    [`JwtVerifier::add_issuer`]. Carry the `SharedKeySet` and the
//!    [`JwksRefresher`] of an unchanged issuer over a reload.
//! 2. Off the request path, per `jwks_uri`: sleep until
//!    [`JwksRefresher::next_due`], start a fetch when [`JwksRefresher::poll`]
//!    says so, and report the body (or the error) to
//!    [`JwksRefresher::complete`], which publishes a good set and keeps the
//!    last good one otherwise.
//! 3. Per request: [`jwt::bearer_token`], then [`JwtVerifier::verify`]; on
//!    [`JwtError::UnknownKid`] call [`JwksRefresher::request_refetch`] (rate
//!    limited) and answer 401 with [`JwtError::www_authenticate`]. From the
//!    TLS handshake, [`spiffe::spiffe_id_from_der`]. Build an [`Identity`],
//!    evaluate [`crate::authz::CompiledAuthz`], strip caller-supplied
//!    identity headers and set [`Identity::header_value`].

pub mod jwks;
mod jwks_refresh;
pub mod jwt;
pub mod jwt_cache;
mod jwt_config;
mod jwt_error;
pub mod principal;
pub mod spiffe;

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod jwt_input_tests;
#[cfg(test)]
mod jwt_tests;
#[cfg(test)]
mod principal_tests;
#[cfg(test)]
mod test_keys;

pub use jwks::{JwkSet, JwksError, KeyKind, SkippedKey, VerificationKey};
pub use jwks_refresh::{
    FetchReason, JwksRefreshPolicy, JwksRefresher, RefreshOutcome, SharedKeySet,
};
pub use jwt::{JwtError, JwtVerifier, VerifiedJwt};
pub use jwt_config::{JwksRefreshConfig, JwtAlgorithm, JwtIssuerConfig};
pub use principal::{
    AuthMethods, Identity, IdentityHeader, XfccElement, IDENTITY_HEADER, XFCC_HEADER,
};
pub use spiffe::{SpiffeId, SpiffeIdError, SvidError};
