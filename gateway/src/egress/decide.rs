//! The egress decision: from a parsed request to either an [`Allowed`]
//! destination (the address checked, to connect to) or a typed
//! [`Refusal`]. Nothing here answers the caller or writes a log line;
//! [`super::audit`] does both for every outcome.

use std::net::{IpAddr, SocketAddr};

use filters::egress::RequestKind;
use filters::egress::{ssrf, CompiledEgress, DenyReason, EgressDecision, EgressRequest};
use pingora::protocols::http::v1::server::HttpSession;

use super::caller::{self, Caller, ProxyAuthRefusal};
use super::EgressRuntime;
use crate::identity::PeerIdentity;
use crate::runtime::Runtime;

/// The destination as the caller named it.
#[derive(Debug)]
pub struct Target {
    /// Host as named (a name or an IP literal).
    pub host: String,
    /// Port as named (80 when an `http://` URL or `Host` names none).
    pub port: u16,
    /// Tunnel or plain HTTP.
    pub kind: RequestKind,
}

/// A destination the rules and the SSRF check let through.
#[derive(Debug)]
pub struct Allowed {
    /// Where the caller wants to go.
    pub target: Target,
    /// The verdict (`allow`, or `audit_deny` in `audit_only`), with what
    /// connecting needs.
    pub decision: EgressDecision,
    /// The address checked: the only one to connect to.
    pub addr: SocketAddr,
}

/// A destination the rules looked at.
#[derive(Debug)]
pub struct Checked {
    /// Where the caller wanted to go.
    pub target: Target,
    /// What the rules (and the SSRF or SNI check) said.
    pub decision: EgressDecision,
}

/// Why a request target names no usable destination (400).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("request target is not UTF-8")]
    NotUtf8,
    #[error("CONNECT needs host:port, got {0:?}")]
    ConnectNeedsPort(String),
    #[error("only http:// URLs can be proxied; use CONNECT for https")]
    HttpsUrl,
    #[error("invalid URL {0:?}")]
    InvalidUrl(String),
    #[error("URL has no host")]
    NoHost,
    #[error("unsupported request target {0:?}")]
    Unsupported(String),
    #[error("request has no destination (absolute URL or Host)")]
    NoDestination,
    #[error("invalid Host {0:?}")]
    InvalidHost(String),
}

/// Every way an egress request is refused. [`Refusal::answer`] gives, per
/// variant, the status the caller gets, the body and the audit line's
/// `note`; [`Refusal::checked`] the verdict that the audit line's
/// `decision` and `rule` and `gateway_egress_requests_total` come from; the
/// [`Display`](std::fmt::Display) text is the `reason`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The request could not be parsed (400).
    #[error("unparsable request: {0}")]
    Unparsable(String),
    /// The connection's client certificate no longer verifies (a resumed
    /// TLS session after a reload or an expiry) (403).
    #[error("client certificate no longer valid: {0}")]
    CertificateRevoked(String),
    /// The runtime has no `egress:` block (the listener outlived it) (503).
    #[error("egress is not configured")]
    NotConfigured,
    /// `Proxy-Authorization` is not a valid bearer JWT (407).
    #[error("{}", .0.reason)]
    ProxyCredentials(ProxyAuthRefusal),
    /// The request target names no usable destination (400).
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// The path does not normalise (400).
    #[error("bad request: {0}")]
    BadPath(filters::path::PathError),
    /// The rules, the SSRF check or the SNI check refused (403, or the
    /// status the rules chose: 407 without credentials).
    #[error("{}", denial(&.0.decision))]
    Denied(Box<Checked>),
    /// Allowed, but the name does not resolve (502).
    #[error("cannot resolve {}", .0.target.host)]
    Unresolvable(Box<Checked>),
    /// Allowed, but the destination does not accept a connection (502).
    #[error("cannot connect to {}:{}", .0.target.host, .0.target.port)]
    Unreachable(Box<Checked>),
}

/// Why the rules refused: the reason they gave.
fn denial(d: &EgressDecision) -> String {
    d.denial()
        .map_or_else(|| "not allowed".to_string(), ToString::to_string)
}

impl Refusal {
    /// What the caller gets and the audit line says, variant by variant:
    /// the HTTP status, the response body (short, names the reason, never
    /// a secret) and the short `note` of the audit line.
    pub fn answer(&self) -> (u16, String, Option<&'static str>) {
        use Refusal::*;
        let (status, prefix, note) = match self {
            Unparsable(_) => return (400, "bad request\n".into(), Some("bad_request")),
            CertificateRevoked(_) => {
                let body = "egress denied: client certificate no longer valid\n";
                return (403, body.into(), Some("certificate_revoked"));
            }
            NotConfigured => (503, "", Some("not_configured")),
            ProxyCredentials(_) => (407, "egress denied: ", Some("invalid proxy credentials")),
            BadTarget(_) => (400, "", Some("bad_target")),
            BadPath(_) => (400, "", Some("bad_path")),
            Denied(c) => (c.decision.status.unwrap_or(403), "egress denied: ", None),
            Unresolvable(_) => (502, "egress error: ", Some("unresolvable")),
            Unreachable(_) => (502, "egress error: ", Some("connect_failed")),
        };
        (status, format!("{prefix}{self}\n"), note)
    }

    /// The `Proxy-Authenticate` challenge of a 407.
    pub fn challenge(&self) -> Option<&str> {
        match self {
            Refusal::ProxyCredentials(r) => Some(&r.challenge),
            Refusal::Denied(c) if c.decision.status == Some(407) => Some("Bearer"),
            _ => None,
        }
    }

    /// The destination and verdict, once the rules saw the request: what
    /// the audit line's `decision` (`deny` without) and `rule` come from.
    pub fn checked(&self) -> Option<&Checked> {
        match self {
            Refusal::Denied(c) | Refusal::Unresolvable(c) | Refusal::Unreachable(c) => Some(c),
            _ => None,
        }
    }
}

/// What the connection says about the caller before the request is read.
pub struct Connection {
    /// The verified client certificate's identity.
    pub peer: Option<PeerIdentity>,
    /// Why the connection's client certificate no longer counts.
    pub revoked: Option<String>,
    /// Source address.
    pub client_ip: Option<IpAddr>,
}

/// Decides on the request read into `session`: who calls (set in `caller`
/// as soon as it is known, for the audit line of a refusal), where to,
/// whether the rules allow it, and the address to connect to. Normalises
/// the path of plain-HTTP requests (the rules see, and the destination
/// gets, the normalised path).
pub async fn decide<'r>(
    runtime: &'r Runtime,
    conn: Connection,
    session: &mut HttpSession,
    caller: &mut Caller,
) -> Result<(Allowed, &'r EgressRuntime), Refusal> {
    if let Some(why) = conn.revoked {
        return Err(Refusal::CertificateRevoked(why));
    }
    let egress = runtime.egress.as_deref().ok_or(Refusal::NotConfigured)?;
    *caller = caller::identify(
        runtime,
        &egress.rules,
        session.req_header(),
        conn.peer,
        conn.client_ip,
    )
    .map_err(Refusal::ProxyCredentials)?;
    let target = target_of(session)?;
    let plain = target.kind == RequestKind::PlainHttp;
    if plain {
        crate::proxy::forwarding::normalize_path(session.req_header_mut())
            .map_err(Refusal::BadPath)?;
    }
    let req = session.req_header();
    let decision = egress.rules.evaluate(&EgressRequest {
        principals: caller.principals(),
        host: &target.host,
        port: target.port,
        method: plain.then(|| req.method.as_str()),
        path: if plain {
            req.uri.path_and_query().map(|p| p.as_str())
        } else {
            None
        },
        kind: target.kind,
    });
    let checked = Box::new(Checked { target, decision });
    if !checked.decision.allowed {
        return Err(Refusal::Denied(checked));
    }
    Ok((destination(&egress.rules, checked).await?, egress))
}

/// Where the caller wants to go. Pingora keeps only the path in
/// `uri` for absolute-form targets (and nothing for CONNECT), so the
/// request line's raw target is parsed here.
fn target_of(session: &HttpSession) -> Result<Target, TargetError> {
    let req = session.req_header();
    let raw = std::str::from_utf8(req.raw_path()).map_err(|_| TargetError::NotUtf8)?;
    if req.method == http::Method::CONNECT {
        let port = raw
            .parse::<http::uri::Authority>()
            .ok()
            .and_then(|auth| Some((auth.port_u16()?, auth)));
        let (port, auth) = port.ok_or_else(|| TargetError::ConnectNeedsPort(raw.into()))?;
        return Ok(Target {
            host: auth.host().to_string(),
            port,
            kind: RequestKind::Connect,
        });
    }
    let lower = raw
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("https://") {
        return Err(TargetError::HttpsUrl);
    }
    let authority = if lower.starts_with("http://") {
        let uri: http::Uri = raw
            .parse()
            .map_err(|_| TargetError::InvalidUrl(raw.into()))?;
        uri.authority().ok_or(TargetError::NoHost)?.clone()
    } else if raw.starts_with('/') || raw == "*" {
        // Transparent egress: the destination is the Host header.
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or(TargetError::NoDestination)?;
        host.parse()
            .map_err(|_| TargetError::InvalidHost(host.into()))?
    } else {
        return Err(TargetError::Unsupported(raw.into()));
    };
    Ok(Target {
        host: authority.host().to_string(),
        port: authority.port_u16().unwrap_or(80),
        kind: RequestKind::PlainHttp,
    })
}

/// Resolves the allowed target once and checks the address: blocked ones
/// are refused (SSRF protection is a safety property, enforced in
/// `audit_only` too).
async fn destination(rules: &CompiledEgress, mut c: Box<Checked>) -> Result<Allowed, Refusal> {
    let port = c.decision.upstream_port;
    let ip = resolve(rules, &c.target.host, port).await;
    let Some(ip) = ip else {
        return Err(Refusal::Unresolvable(c));
    };
    if let Err(range) = ssrf::check(ip, &c.decision.allow_cidrs) {
        let reason = DenyReason::BlockedAddress {
            host: c.target.host.clone(),
            ip,
            range,
        };
        c.decision.refuse(reason, 403, false);
        return Err(Refusal::Denied(c));
    }
    let Checked { target, decision } = *c;
    Ok(Allowed {
        target,
        decision,
        addr: SocketAddr::new(ip, port),
    })
}

/// The address of `host`: an IP literal, `dns.static`, else system DNS.
async fn resolve(rules: &CompiledEgress, host: &str, port: u16) -> Option<IpAddr> {
    if let Some(ip) = ssrf::parse_host_literal(host).or_else(|| rules.resolve_static(host)) {
        return Some(ip);
    }
    let mut addrs = tokio::net::lookup_host((host, port)).await.ok()?;
    addrs.next().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;
    use filters::egress::Outcome;

    fn checked(decision: EgressDecision) -> Box<Checked> {
        Box::new(Checked {
            target: Target {
                host: "api.partner.test".into(),
                port: 443,
                kind: RequestKind::Connect,
            },
            decision,
        })
    }

    /// A verdict of the rules for `api.partner.test:443`.
    fn verdict(yaml: &str, principals: &[String]) -> EgressDecision {
        let cfg: filters::egress::EgressConfig = serde_yaml::from_str(yaml).expect("egress YAML");
        let rules = CompiledEgress::compile(&cfg).expect("rules compile");
        rules.evaluate(&EgressRequest {
            principals,
            host: "api.partner.test",
            port: 443,
            method: None,
            path: None,
            kind: RequestKind::Connect,
        })
    }

    /// A refusal, its status, body, outcome, note and reason.
    type Case = (
        Refusal,
        u16,
        &'static str,
        &'static str,
        Option<&'static str>,
        &'static str,
    );

    const ALLOW: &str = "rules: [{name: partner, hosts: [api.partner.test]}]";

    #[test]
    fn every_refusal_has_its_status_body_and_audit_fields() {
        let denied = verdict("rules: [{name: other, hosts: [other.test]}]", &[]);
        let allowed = || verdict(ALLOW, &[]);
        let auth = ProxyAuthRefusal {
            reason: "invalid proxy token: expired".into(),
            challenge: "Bearer error=\"invalid_token\"".into(),
        };
        let cases: Vec<Case> = vec![
            (
                Refusal::Unparsable("invalid header".into()),
                400,
                "bad request\n",
                "deny",
                Some("bad_request"),
                "unparsable request: invalid header",
            ),
            (
                Refusal::CertificateRevoked("trust domain `b` is no longer accepted".into()),
                403,
                "egress denied: client certificate no longer valid\n",
                "deny",
                Some("certificate_revoked"),
                "client certificate no longer valid: trust domain `b` is no longer accepted",
            ),
            (
                Refusal::NotConfigured,
                503,
                "egress is not configured\n",
                "deny",
                Some("not_configured"),
                "egress is not configured",
            ),
            (
                Refusal::ProxyCredentials(auth),
                407,
                "egress denied: invalid proxy token: expired\n",
                "deny",
                Some("invalid proxy credentials"),
                "invalid proxy token: expired",
            ),
            (
                Refusal::BadTarget(TargetError::HttpsUrl),
                400,
                "only http:// URLs can be proxied; use CONNECT for https\n",
                "deny",
                Some("bad_target"),
                "only http:// URLs can be proxied; use CONNECT for https",
            ),
            (
                Refusal::BadTarget(TargetError::ConnectNeedsPort("x".into())),
                400,
                "CONNECT needs host:port, got \"x\"\n",
                "deny",
                Some("bad_target"),
                "CONNECT needs host:port, got \"x\"",
            ),
            (
                Refusal::Denied(checked(denied)),
                403,
                "egress denied: host api.partner.test not allowed\n",
                "deny",
                None,
                "host api.partner.test not allowed",
            ),
            (
                Refusal::Unresolvable(checked(allowed())),
                502,
                "egress error: cannot resolve api.partner.test\n",
                "allow",
                Some("unresolvable"),
                "cannot resolve api.partner.test",
            ),
            (
                Refusal::Unreachable(checked(allowed())),
                502,
                "egress error: cannot connect to api.partner.test:443\n",
                "allow",
                Some("connect_failed"),
                "cannot connect to api.partner.test:443",
            ),
        ];
        for (r, status, body, outcome, note, reason) in cases {
            assert_eq!(r.answer(), (status, body.to_string(), note), "{r:?}");
            let decision = r.checked().map_or(Outcome::Deny, |c| c.decision.outcome());
            assert_eq!(decision.as_str(), outcome, "{r:?}");
            assert_eq!(r.to_string(), reason, "{r:?}");
        }
    }

    #[test]
    fn rules_name_the_rule_and_may_ask_for_credentials() {
        let rule = |r: &Refusal| r.checked().and_then(|c| c.decision.rule.clone());
        let allowed = Refusal::Unreachable(checked(verdict(ALLOW, &[])));
        assert_eq!(rule(&allowed).as_deref(), Some("partner"));
        assert_eq!(allowed.challenge(), None);
        assert!(Refusal::NotConfigured.checked().is_none());
        let mut blocked = verdict(ALLOW, &[]);
        blocked.refuse(DenyReason::CredentialsRequired, 407, false);
        let r = Refusal::Denied(checked(blocked));
        let (status, body, _) = r.answer();
        assert_eq!((status, r.challenge()), (407, Some("Bearer")));
        assert_eq!(rule(&r).as_deref(), Some("partner"));
        assert_eq!(body, "egress denied: proxy credentials required\n");
        let auth = Refusal::ProxyCredentials(ProxyAuthRefusal {
            reason: "x".into(),
            challenge: "Bearer".into(),
        });
        assert_eq!(auth.challenge(), Some("Bearer"));
    }
}
