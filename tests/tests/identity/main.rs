//! Federated identity, black-box: the contract of gateway/docs/identity.md.
//!
//! Two clusters live on different loopback addresses (Linux routes all of
//! 127/8 to `lo`): cluster A's gateway and services on 127.0.1.x, cluster
//! B's on 127.0.2.x. Each cluster has its own CA ([`gateway_tests::TestCa`])
//! and JWT keys ([`gateway_tests::jwt::SigningKey`]), all made by the tests.
//!
//! - `federation`: workload in B -> B gateway -> mTLS -> A gateway ->
//!   service, with `x-gateway-identity`, XFCC and token exchange checked
//!   end to end;
//! - `mtls`: every bad client certificate fails the TLS handshake; CA
//!   bundles reload without a restart;
//! - `tokens`: every bad bearer token is a 401 with a `Bearer` challenge;
//!   caller-supplied identity headers never reach an upstream;
//! - `authz`: the allow/deny matrix and its metrics;
//! - `jwks`: key rotation through `jwks_uri` and on reload;
//! - `pyjwt`: PyJWT as an independent implementation (needs
//!   tests/install-deps.sh).
//!
//! Run: `cargo test -p gateway-tests --test identity`.

mod authz;
mod common;
mod federation;
mod jwks;
mod mtls;
mod paths;
mod pyjwt;
mod tokens;
