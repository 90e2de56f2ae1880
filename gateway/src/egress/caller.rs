//! Who is calling the egress proxy: a client certificate (SPIFFE ID), a
//! `Proxy-Authorization: Bearer` JWT (what a serverless function can send),
//! and the caller groups of its source address.

use std::net::IpAddr;

use filters::egress::CompiledEgress;
use filters::identity::jwt::bearer_token;
use pingora::http::RequestHeader;

use crate::identity::PeerIdentity;
use crate::metrics::METRICS;
use crate::runtime::Runtime;

/// The caller of one egress request.
#[derive(Debug)]
pub struct Caller {
    /// Source address.
    pub client_ip: Option<IpAddr>,
    /// JWT principal, SPIFFE ID, `cidr:<group>`s, in that order.
    principals: Vec<String>,
}

/// A refused `Proxy-Authorization` (407).
#[derive(Debug)]
pub struct ProxyAuthRefusal {
    /// Why (the body says `egress denied: <reason>`).
    pub reason: String,
    /// `Proxy-Authenticate` value.
    pub challenge: String,
}

impl Caller {
    /// A caller nothing is known about.
    pub fn anonymous(client_ip: Option<IpAddr>) -> Self {
        Caller {
            client_ip,
            principals: Vec::new(),
        }
    }

    /// Every principal of the caller (empty: unknown).
    pub fn principals(&self) -> &[String] {
        &self.principals
    }

    /// The principal shown in audit lines: the first one, or `-`.
    pub fn principal(&self) -> &str {
        self.principals.first().map_or("-", String::as_str)
    }
}

/// Identifies the caller. A `Proxy-Authorization` that is not a valid
/// bearer JWT of a configured issuer is refused (407), never ignored.
pub fn identify(
    runtime: &Runtime,
    rules: &CompiledEgress,
    req: &RequestHeader,
    peer: Option<PeerIdentity>,
    client_ip: Option<IpAddr>,
) -> Result<Caller, ProxyAuthRefusal> {
    let mut principals = Vec::new();
    if let Some(value) = req.headers.get(http::header::PROXY_AUTHORIZATION) {
        let token = value.to_str().ok().and_then(bearer_token).ok_or_else(|| {
            count("unknown", "malformed");
            ProxyAuthRefusal {
                reason: "Proxy-Authorization must be `Bearer <JWT>`".into(),
                challenge: "Bearer".into(),
            }
        })?;
        match runtime.identity.jwt.verify(token) {
            Ok(jwt) => {
                count(&jwt.trust_domain, "success");
                principals.push(jwt.principal());
            }
            Err(e) => {
                count("unknown", e.metric_label());
                return Err(ProxyAuthRefusal {
                    reason: format!("invalid proxy token: {e}"),
                    challenge: e.www_authenticate(),
                });
            }
        }
    }
    if let Some(p) = peer {
        principals.push(p.spiffe_id.to_string());
    }
    if let Some(ip) = client_ip {
        principals.extend(rules.caller_group_principals(ip).map(str::to_string));
    }
    Ok(Caller {
        client_ip,
        principals,
    })
}

fn count(trust_domain: &str, result: &str) {
    METRICS
        .authn
        .with_label_values(&["jwt", trust_domain, result])
        .inc();
}
