//! The identity step of the request path: who is calling (the connection's
//! SVID and, on routes with `auth`, a bearer JWT), whether the route lets
//! them in, and the identity headers for the upstream.

use std::time::Duration;

use filters::authz::{AuthzRequest, CompiledAuthz};
use filters::identity::jwt::{bearer_token, MISSING_TOKEN_CHALLENGE};
use filters::identity::{Identity, JwtError, XfccElement, IDENTITY_HEADER, XFCC_HEADER};
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::{jwks_fetch, IdentityRuntime, PeerIdentity};
use crate::metrics::METRICS;

/// Identity settings of a compiled route.
#[derive(Debug, Default)]
pub struct RouteIdentity {
    /// The route's `auth` rules; `None`: no JWT check, no authorization.
    pub authz: Option<CompiledAuthz>,
    /// Set `x-forwarded-client-cert` for mTLS callers.
    pub xfcc: bool,
    /// Mint a token for the upstream.
    pub token: Option<MintSpec>,
}

/// A compiled `identity.token`.
#[derive(Debug)]
pub struct MintSpec {
    /// `aud` of minted tokens.
    pub audience: String,
    /// Their lifetime.
    pub ttl: Duration,
    /// The header that carries them.
    pub header: http::HeaderName,
}

/// A refused request: status, body, and the `WWW-Authenticate` challenge
/// of a 401.
#[derive(Debug)]
pub struct Refusal {
    /// 401 or 403.
    pub status: u16,
    /// One line for the body.
    pub reason: String,
    /// `WWW-Authenticate` value (401 only).
    pub challenge: Option<String>,
}

/// The client certificate identity of the request's connection.
pub fn peer_identity(session: &Session) -> Option<PeerIdentity> {
    session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<PeerIdentity>())
        .cloned()
}

/// Authenticates and authorizes a request for a route. `Ok(None)`: an
/// anonymous caller the route lets through.
pub fn check(
    ids: &IdentityRuntime,
    route_name: &str,
    rid: &RouteIdentity,
    peer: Option<&PeerIdentity>,
    req: &RequestHeader,
) -> Result<Option<Identity>, Refusal> {
    let peer_id = peer.map(|p| p.spiffe_id.clone());
    let Some(authz) = &rid.authz else {
        return Ok(peer_id.map(Identity::from_mtls));
    };
    // Present but not exactly one well-formed bearer credential: refused,
    // never treated as anonymous (the value would reach the upstream).
    let mut values = req.headers.get_all(http::header::AUTHORIZATION).iter();
    let token = match (values.next(), values.next()) {
        (None, _) => None,
        (Some(v), None) => match v.to_str().ok().and_then(bearer_token) {
            Some(t) => Some(t),
            None => return Err(malformed_credentials()),
        },
        (Some(_), Some(_)) => return Err(malformed_credentials()),
    };
    let jwt = match token {
        None => None,
        Some(t) => match ids.jwt.verify(t) {
            Ok(v) => {
                count_jwt(&v.trust_domain, "success");
                Some(v)
            }
            Err(e) => {
                count_jwt("unknown", e.metric_label());
                if let JwtError::UnknownKid { issuer, .. } = &e {
                    if let Some(src) = ids.jwks_sources.iter().find(|s| *s.issuer == **issuer) {
                        jwks_fetch::request_refetch(&src.issuer);
                    }
                }
                return Err(Refusal {
                    status: 401,
                    reason: format!("invalid bearer token: {e}"),
                    challenge: Some(e.www_authenticate()),
                });
            }
        },
    };
    let identity = Identity::new(peer_id, jwt);
    let decision = authz.evaluate(&AuthzRequest {
        identity: identity.as_ref(),
        method: req.method.as_str(),
        path: req.uri.path(),
    });
    match decision.status() {
        None => Ok(identity),
        Some(status) => {
            if status == 401 && token.is_none() {
                count_jwt("unknown", "missing");
            }
            METRICS.authz_denied.with_label_values(&[route_name]).inc();
            Err(Refusal {
                status,
                reason: decision.reason(),
                challenge: (status == 401).then(|| MISSING_TOKEN_CHALLENGE.to_string()),
            })
        }
    }
}

fn malformed_credentials() -> Refusal {
    count_jwt("unknown", "malformed");
    Refusal {
        status: 401,
        reason: "Authorization must be exactly one `Bearer <token>`".into(),
        challenge: Some(
            "Bearer error=\"invalid_request\", error_description=\"malformed credentials\"".into(),
        ),
    }
}

fn count_jwt(trust_domain: &str, result: &str) {
    METRICS
        .authn
        .with_label_values(&["jwt", trust_domain, result])
        .inc();
}

/// Removes identity headers a caller may have forged. Runs on every
/// request, whatever the route.
pub fn strip_caller_headers(req: &mut RequestHeader) {
    // `remove_header` also rebuilds Pingora's case map: look first.
    if req.headers.contains_key(IDENTITY_HEADER) {
        req.remove_header(IDENTITY_HEADER);
    }
    if req.headers.contains_key(XFCC_HEADER) {
        req.remove_header(XFCC_HEADER);
    }
}

/// Sets the identity headers of the upstream request.
pub fn set_upstream_headers(
    ids: &IdentityRuntime,
    rid: &RouteIdentity,
    identity: Option<&Identity>,
    peer: Option<&PeerIdentity>,
    upstream: &mut RequestHeader,
) -> pingora::Result<()> {
    if let Some(spec) = &rid.token {
        // Only a token this gateway minted may travel in this header, and
        // the caller's own bearer token stays here (it is meant for us).
        upstream.remove_header(&spec.header);
        if identity.is_some_and(|i| i.jwt().is_some()) {
            upstream.remove_header(&http::header::AUTHORIZATION);
        }
    }
    let Some(identity) = identity else {
        return Ok(());
    };
    upstream.insert_header(IDENTITY_HEADER, identity.header_value())?;
    if rid.xfcc {
        if let Some(p) = peer {
            // `By` (the gateway's own URI SAN) is left out: listener
            // certificates need not carry one.
            let element = XfccElement {
                hash: Some(p.cert_sha256.clone()),
                uri: vec![p.spiffe_id.to_string()],
                ..Default::default()
            };
            upstream.insert_header(XFCC_HEADER, element.to_string())?;
        }
    }
    if let (Some(spec), Some(signer)) = (&rid.token, &ids.token_signer) {
        match signer.mint(identity, &spec.audience, spec.ttl) {
            Ok(token) if spec.header == http::header::AUTHORIZATION => {
                upstream.insert_header(spec.header.clone(), format!("Bearer {token}"))?;
            }
            Ok(token) => upstream.insert_header(spec.header.clone(), token)?,
            Err(e) => {
                // A signing failure must not pass the caller's token on.
                upstream.remove_header(&spec.header);
                tracing::error!("cannot mint a token for the upstream: {e}");
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    "token minting failed",
                ));
            }
        }
    }
    Ok(())
}
