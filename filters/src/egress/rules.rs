//! Compiled egress rules and the per-request decision.
//!
//! # Decision order
//!
//! 1. A target host that is neither an IP literal nor a valid DNS name is
//!    refused with 400 ([`DenyReason::InvalidHost`]), also in `audit_only`.
//! 2. `require_credentials` and a caller without credentials → 407
//!    ([`DenyReason::CredentialsRequired`]).
//! 3. A matching `deny` rule → 403 ([`DenyReason::DeniedByRule`]); deny wins.
//! 4. The first matching `allow` rule (in config order) → allowed.
//! 5. Otherwise refused, with the most specific reason found: among the
//!    `allow` rules, the one that got furthest through host → port →
//!    principal → tunnel → method → path names the condition that failed
//!    (`port 8443 not allowed for host x`, …); `host x not allowed` when no
//!    rule names the host. The status is 403, except 407 when the failing
//!    condition is the principal and the caller has no credentials: asking
//!    for credentials (`Proxy-Authenticate`) is then more helpful than a
//!    flat refusal, since presenting them may succeed.
//!
//! In `audit_only`, steps 2, 3 and 5 report `allowed = true` with
//! [`EgressDecision::would_deny`] set (and the status that would have been
//! sent).
//!
//! # Callers
//!
//! The caller's principals are its SPIFFE ID and/or JWT principal
//! ([`Identity::principals`](crate::identity::principal::Identity::principals))
//! plus `cidr:<name>` for each caller group its source address is in
//! ([`CompiledEgress::caller_group_principals`]). Credentials are the
//! principals other than `cidr:` ones: a source address is not proof of
//! identity, so a caller group alone does not satisfy
//! `require_credentials`, is not matched by the pattern `*`, and gets 407
//! rather than 403 in step 5. Rules name groups with `cidr:<name>` (or
//! `cidr:*`).
//!
//! # Tunnels
//!
//! A CONNECT ([`RequestKind::Connect`]) is a TLS tunnel: the gateway sees
//! neither method nor path. A rule with `methods` or `path_prefixes` does not
//! match it (an `allow` rule would otherwise let through what it means to
//! filter; a `deny` rule would otherwise refuse a whole host), nor does an
//! `originate_tls` rule (its caller sends plain HTTP). For method or path
//! rules over HTTPS, callers send plain HTTP (`http://host/...`) through
//! the proxy to a rule with `originate_tls`. For plain HTTP
//! ([`RequestKind::PlainHttp`]) to an `originate_tls` rule, port 80 becomes
//! 443 before the rule's `ports` are checked (as Istio's TLS origination
//! maps it); [`EgressDecision::upstream_port`] is the port to connect to.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::Serialize;

use super::cidr::Cidr;
use super::config::{EgressConfig, EgressRuleConfig, RuleAction, DEFAULT_PORTS};
use super::host::{Host, HostPattern};
use super::ssrf::BlockedRange;

/// Prefix of the principal a caller group gives: `cidr:<name>`.
pub const GROUP_PRINCIPAL_PREFIX: &str = "cidr:";

/// How the caller asked for the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `CONNECT host:port`: an opaque (TLS) tunnel.
    Connect,
    /// A plain HTTP request in absolute form (`GET http://host/path`).
    PlainHttp,
}

/// A request as the egress rules see it.
#[derive(Clone, Copy, Debug)]
pub struct EgressRequest<'a> {
    /// The caller's principals (see the module docs); empty for an unknown
    /// caller.
    pub principals: &'a [String],
    /// The destination host without the port: a name or an IP literal
    /// (IPv6 with or without brackets).
    pub host: &'a str,
    /// The destination port as the caller addressed it.
    pub port: u16,
    /// The HTTP method (plain HTTP only).
    pub method: Option<&'a str>,
    /// The path, possibly with a query (plain HTTP only).
    pub path: Option<&'a str>,
    /// CONNECT or plain HTTP.
    pub kind: RequestKind,
}

/// The decision as counted in metrics and the observed table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Let through.
    Allow,
    /// Refused.
    Deny,
    /// Let through by `audit_only`, but the rules would refuse it.
    AuditDeny,
}

impl Outcome {
    /// `allow`, `deny` or `audit_deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Deny => "deny",
            Outcome::AuditDeny => "audit_deny",
        }
    }
}

/// Why a request is (or would be) refused. [`fmt::Display`] gives the
/// human-readable message; [`code`](DenyReason::code) a short label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// The target host is neither an IP literal nor a valid name.
    InvalidHost {
        /// The host as given.
        host: String,
    },
    /// `require_credentials` and the caller has none.
    CredentialsRequired,
    /// No rule names the host.
    HostNotAllowed {
        /// The normalized host.
        host: String,
    },
    /// Rules name the host, but not this port.
    PortNotAllowed {
        /// The normalized host.
        host: String,
        /// The port checked (after the `originate_tls` 80 → 443 mapping).
        port: u16,
    },
    /// Rules name the host and port, but not this caller.
    PrincipalNotAllowed {
        /// The normalized host.
        host: String,
        /// The caller's first principal; `None` for an unknown caller.
        principal: Option<String>,
    },
    /// The only rules for the host need to see the request (method, path,
    /// or TLS origination), which a CONNECT tunnel hides.
    TunnelNotAllowed {
        /// The normalized host.
        host: String,
        /// The rule that would need plain HTTP.
        rule: Arc<str>,
    },
    /// Rules name the host, but not this method.
    MethodNotAllowed {
        /// The normalized host.
        host: String,
        /// The method; empty when none was given.
        method: String,
    },
    /// Rules name the host and method, but no prefix of this path.
    PathNotAllowed {
        /// The normalized host.
        host: String,
        /// The path without the query; empty when none was given.
        path: String,
    },
    /// A `deny` rule matched.
    DeniedByRule {
        /// Its name.
        rule: Arc<str>,
    },
    /// Set by the gateway: the resolved address is in a blocked range and
    /// not in the rule's `allow_cidrs` (see [`super::ssrf::check`]).
    BlockedAddress {
        /// The normalized host.
        host: String,
        /// The address it resolved to.
        ip: IpAddr,
        /// Why the address is blocked.
        range: BlockedRange,
    },
    /// Set by the gateway: the TLS server name in a CONNECT tunnel is not
    /// the CONNECT host (`sni_must_match_connect`).
    SniMismatch {
        /// The CONNECT host.
        host: String,
        /// The server name sent; `None` without one (or without TLS).
        sni: Option<String>,
    },
}

impl DenyReason {
    /// A short snake-case label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::InvalidHost { .. } => "invalid_host",
            DenyReason::CredentialsRequired => "credentials_required",
            DenyReason::HostNotAllowed { .. } => "host",
            DenyReason::PortNotAllowed { .. } => "port",
            DenyReason::PrincipalNotAllowed { .. } => "principal",
            DenyReason::TunnelNotAllowed { .. } => "tunnel",
            DenyReason::MethodNotAllowed { .. } => "method",
            DenyReason::PathNotAllowed { .. } => "path",
            DenyReason::DeniedByRule { .. } => "deny_rule",
            DenyReason::BlockedAddress { .. } => "blocked_address",
            DenyReason::SniMismatch { .. } => "sni_mismatch",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::InvalidHost { host } => write!(f, "invalid host {host:?}"),
            DenyReason::CredentialsRequired => f.write_str("proxy credentials required"),
            DenyReason::HostNotAllowed { host } => write!(f, "host {host} not allowed"),
            DenyReason::PortNotAllowed { host, port } => {
                write!(f, "port {port} not allowed for host {host}")
            }
            DenyReason::PrincipalNotAllowed {
                host,
                principal: Some(p),
            } => write!(f, "principal {p} not allowed for host {host}"),
            DenyReason::PrincipalNotAllowed {
                host,
                principal: None,
            } => write!(f, "unknown caller not allowed for host {host}"),
            DenyReason::TunnelNotAllowed { host, rule } => write!(
                f,
                "CONNECT to {host} not allowed: rule {rule} checks the HTTP request; \
                 send plain HTTP through the proxy"
            ),
            DenyReason::MethodNotAllowed { host, method } => {
                write!(f, "method {method} not allowed for host {host}")
            }
            DenyReason::PathNotAllowed { host, path } => {
                write!(f, "path {path} not allowed for host {host}")
            }
            DenyReason::DeniedByRule { rule } => write!(f, "denied by rule {rule}"),
            DenyReason::BlockedAddress { host, ip, range } => {
                write!(f, "host {host} resolved to {ip}, a {range}")
            }
            DenyReason::SniMismatch {
                host,
                sni: Some(sni),
            } => write!(
                f,
                "TLS server name {sni} does not match CONNECT host {host}"
            ),
            DenyReason::SniMismatch { host, sni: None } => write!(
                f,
                "CONNECT to {host}: the tunnel did not start with a TLS ClientHello naming it"
            ),
        }
    }
}

/// The verdict on one request, with what the gateway needs to connect.
#[derive(Clone, Debug, PartialEq)]
pub struct EgressDecision {
    /// Whether the request goes on (also with `would_deny` in `audit_only`).
    pub allowed: bool,
    /// The refusal status (400, 403 or 407) when refused, or the status that
    /// would have been sent with `would_deny`; `None` otherwise.
    pub status: Option<u16>,
    /// The rule that decided: the matching `deny` rule, else the matching
    /// `allow` rule; `None` for a default refusal.
    pub rule: Option<Arc<str>>,
    /// Why it is refused; set exactly when `!allowed`.
    pub reason: Option<DenyReason>,
    /// In `audit_only`: why it would have been refused.
    pub would_deny: Option<DenyReason>,
    /// From the matching `allow` rule: connect to the destination over TLS.
    pub originate_tls: bool,
    /// From the matching `allow` rule: blocked destination networks it may
    /// reach (pass to [`super::ssrf::check`]).
    pub allow_cidrs: Arc<[Cidr]>,
    /// From the matching `allow` rule: the CA file for originated TLS.
    pub ca: Option<Arc<str>>,
    /// The port to connect to: the requested one, or 443 for plain HTTP to
    /// port 80 under `originate_tls`.
    pub upstream_port: u16,
}

impl EgressDecision {
    /// `allow`, `deny` or `audit_deny`.
    pub fn outcome(&self) -> Outcome {
        match (self.allowed, &self.would_deny) {
            (false, _) => Outcome::Deny,
            (true, Some(_)) => Outcome::AuditDeny,
            (true, None) => Outcome::Allow,
        }
    }

    /// The refusal reason, or the would-be one in `audit_only`.
    pub fn denial(&self) -> Option<&DenyReason> {
        self.reason.as_ref().or(self.would_deny.as_ref())
    }

    /// Refuses an allowed request for a reason found after the rules (an
    /// SSRF-blocked address, an SNI mismatch). With `audit`, only records it
    /// as `would_deny` (keeping an earlier one). A request already refused
    /// keeps its first reason.
    pub fn refuse(&mut self, reason: DenyReason, status: u16, audit: bool) {
        if !self.allowed {
            return;
        }
        if audit {
            if self.would_deny.is_none() {
                self.would_deny = Some(reason);
                self.status = Some(status);
            }
        } else {
            self.allowed = false;
            self.reason = Some(reason);
            self.would_deny = None;
            self.status = Some(status);
        }
    }
}

/// A principal pattern.
#[derive(Clone, Debug, PartialEq)]
enum Pattern {
    /// `*`: any principal that is a credential (not `cidr:`).
    Any,
    Exact(String),
    Prefix(String),
}

impl Pattern {
    fn matches(&self, principal: &str) -> bool {
        match self {
            Pattern::Any => !is_group_principal(principal),
            Pattern::Exact(e) => e == principal,
            Pattern::Prefix(p) => principal.starts_with(p.as_str()),
        }
    }
}

fn is_group_principal(p: &str) -> bool {
    p.starts_with(GROUP_PRINCIPAL_PREFIX)
}

/// The first condition of a rule that fails, in evaluation order (a later
/// one means the rule came closer to matching).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    Host,
    Port,
    Principal,
    Tunnel,
    Method,
    Path,
}

#[derive(Clone, Debug)]
struct Rule {
    name: Arc<str>,
    hosts: Vec<HostPattern>,
    /// `None`: every port.
    ports: Option<Vec<u16>>,
    principals: Option<Vec<Pattern>>,
    methods: Vec<String>,
    path_prefixes: Vec<String>,
    originate_tls: bool,
    allow_cidrs: Arc<[Cidr]>,
    ca: Option<Arc<str>>,
}

/// A request prepared once for matching against every rule.
struct Prepared<'a> {
    host: Host<'a>,
    port: u16,
    principals: &'a [String],
    method: Option<&'a str>,
    path: Option<&'a str>,
    tunnel: bool,
}

impl Rule {
    /// The port this rule checks and connects to.
    fn port(&self, req: &Prepared<'_>) -> u16 {
        if self.originate_tls && !req.tunnel && req.port == 80 {
            443
        } else {
            req.port
        }
    }

    fn check(&self, req: &Prepared<'_>) -> Result<(), Miss> {
        if !self.hosts.iter().any(|h| h.matches(&req.host)) {
            return Err(Miss::Host);
        }
        if self
            .ports
            .as_ref()
            .is_some_and(|p| !p.contains(&self.port(req)))
        {
            return Err(Miss::Port);
        }
        if let Some(patterns) = &self.principals {
            let ok = req
                .principals
                .iter()
                .any(|p| patterns.iter().any(|pat| pat.matches(p)));
            if !ok {
                return Err(Miss::Principal);
            }
        }
        let sees_request = !self.methods.is_empty() || !self.path_prefixes.is_empty();
        if req.tunnel && (sees_request || self.originate_tls) {
            return Err(Miss::Tunnel);
        }
        if !self.methods.is_empty()
            && !req
                .method
                .is_some_and(|m| self.methods.iter().any(|x| x.eq_ignore_ascii_case(m)))
        {
            return Err(Miss::Method);
        }
        if !self.path_prefixes.is_empty()
            && !req
                .path
                .is_some_and(|p| self.path_prefixes.iter().any(|x| p.starts_with(x.as_str())))
        {
            return Err(Miss::Path);
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Group {
    name: Arc<str>,
    principal: Arc<str>,
    cidrs: Vec<Cidr>,
}

/// A validated `egress` config, ready to evaluate requests.
#[derive(Clone, Debug)]
pub struct CompiledEgress {
    audit_only: bool,
    require_credentials: bool,
    sni_must_match_connect: bool,
    observed_max_entries: usize,
    groups: Vec<Group>,
    dns_exact: HashMap<String, IpAddr>,
    /// Keyed by the suffix without `*.`.
    dns_suffix: HashMap<String, IpAddr>,
    deny: Vec<Rule>,
    allow: Vec<Rule>,
    no_cidrs: Arc<[Cidr]>,
}

/// A rule or group name: 1–64 printable ASCII characters, no spaces.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

impl CompiledEgress {
    /// Validates `cfg`, reporting every problem as `field: message` (e.g.
    /// `rules[2].hosts: ...`).
    pub fn compile(cfg: &EgressConfig) -> Result<CompiledEgress, Vec<String>> {
        let mut errs = Vec::new();
        let groups = compile_groups(cfg, &mut errs);
        let group_names: HashSet<&str> = groups.iter().map(|g| &*g.name).collect();
        let (dns_exact, dns_suffix) = compile_dns(cfg, &mut errs);
        let mut names = HashSet::new();
        let no_cidrs: Arc<[Cidr]> = Arc::from(Vec::new());
        let (mut allow, mut deny) = (Vec::new(), Vec::new());
        for (i, r) in cfg.rules.iter().enumerate() {
            let mut err =
                |field: &str, msg: String| errs.push(format!("rules[{i}].{field}: {msg}"));
            if !valid_name(&r.name) {
                err("name", "1-64 printable ASCII characters, no spaces".into());
            } else if !names.insert(r.name.as_str()) {
                err("name", format!("duplicate rule name `{}`", r.name));
            }
            let rule = compile_rule(r, &group_names, &no_cidrs, &mut err);
            match r.action {
                RuleAction::Allow => allow.push(rule),
                RuleAction::Deny => deny.push(rule),
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(CompiledEgress {
            audit_only: cfg.audit_only,
            require_credentials: cfg.require_credentials,
            sni_must_match_connect: cfg.sni_must_match_connect,
            observed_max_entries: cfg.observed_max_entries,
            groups,
            dns_exact,
            dns_suffix,
            deny,
            allow,
            no_cidrs,
        })
    }

    /// `audit_only` of the config.
    pub fn audit_only(&self) -> bool {
        self.audit_only
    }

    /// `require_credentials` of the config.
    pub fn require_credentials(&self) -> bool {
        self.require_credentials
    }

    /// `sni_must_match_connect` of the config.
    pub fn sni_must_match_connect(&self) -> bool {
        self.sni_must_match_connect
    }

    /// `observed_max_entries` of the config.
    pub fn observed_max_entries(&self) -> usize {
        self.observed_max_entries
    }

    /// The first caller group (in config order) whose CIDRs contain `ip`.
    pub fn caller_group(&self, ip: IpAddr) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.cidrs.iter().any(|c| c.contains(ip)))
            .map(|g| &*g.name)
    }

    /// `cidr:<name>` for every caller group containing `ip`, in config
    /// order: the principals to add to the caller's.
    pub fn caller_group_principals(&self, ip: IpAddr) -> impl Iterator<Item = &str> + '_ {
        self.groups
            .iter()
            .filter(move |g| g.cidrs.iter().any(|c| c.contains(ip)))
            .map(|g| &*g.principal)
    }

    /// The `dns.static` address for a name: an exact entry, else the longest
    /// matching `*.suffix` entry. `None` for names without one and for IP
    /// literals (which need no resolution).
    pub fn resolve_static(&self, host: &str) -> Option<IpAddr> {
        let Some(Host::Name(name)) = Host::parse(host) else {
            return None;
        };
        if let Some(ip) = self.dns_exact.get(name.as_ref()) {
            return Some(*ip);
        }
        let mut rest = name.as_ref();
        while let Some((_, tail)) = rest.split_once('.') {
            if let Some(ip) = self.dns_suffix.get(tail) {
                return Some(*ip);
            }
            rest = tail;
        }
        None
    }

    /// The decision for `req` (see the module docs for the order).
    pub fn evaluate(&self, req: &EgressRequest<'_>) -> EgressDecision {
        let Some(host) = Host::parse(req.host) else {
            let reason = DenyReason::InvalidHost {
                host: req.host.to_string(),
            };
            return self.refused(req.port, reason, 400, None, None, false);
        };
        let has_credentials = req.principals.iter().any(|p| !is_group_principal(p));
        let prepared = Prepared {
            host,
            port: req.port,
            principals: req.principals,
            method: req.method,
            path: req.path.map(|p| p.split('?').next().unwrap_or_default()),
            tunnel: req.kind == RequestKind::Connect,
        };
        if self.require_credentials && !has_credentials {
            let reason = DenyReason::CredentialsRequired;
            return self.refused(req.port, reason, 407, None, None, true);
        }
        let deny = self.deny.iter().find(|r| r.check(&prepared).is_ok());
        let mut closest: Option<(Miss, &Rule)> = None;
        let mut allow = None;
        for rule in &self.allow {
            match rule.check(&prepared) {
                Ok(()) => {
                    allow = Some(rule);
                    break;
                }
                Err(miss) => {
                    if closest.is_none_or(|(best, _)| miss > best) {
                        closest = Some((miss, rule));
                    }
                }
            }
        }
        if let Some(d) = deny {
            let reason = DenyReason::DeniedByRule {
                rule: d.name.clone(),
            };
            return self.refused(req.port, reason, 403, Some(d), allow, true);
        }
        if let Some(rule) = allow {
            return self.allowed(rule, rule.port(&prepared));
        }
        let host = host_text(&prepared.host);
        let (reason, status) = match closest {
            None | Some((Miss::Host, _)) => (DenyReason::HostNotAllowed { host }, 403),
            Some((Miss::Port, rule)) => {
                let port = rule.port(&prepared);
                (DenyReason::PortNotAllowed { host, port }, 403)
            }
            Some((Miss::Principal, _)) => {
                let principal = req.principals.first().cloned();
                let status = if has_credentials { 403 } else { 407 };
                (DenyReason::PrincipalNotAllowed { host, principal }, status)
            }
            Some((Miss::Tunnel, rule)) => {
                let rule = rule.name.clone();
                (DenyReason::TunnelNotAllowed { host, rule }, 403)
            }
            Some((Miss::Method, _)) => {
                let method = req.method.unwrap_or_default().to_string();
                (DenyReason::MethodNotAllowed { host, method }, 403)
            }
            Some((Miss::Path, _)) => {
                let path = prepared.path.unwrap_or_default().to_string();
                (DenyReason::PathNotAllowed { host, path }, 403)
            }
        };
        self.refused(req.port, reason, status, None, None, true)
    }

    /// An allowed decision with the settings of `rule`.
    fn allowed(&self, rule: &Rule, upstream_port: u16) -> EgressDecision {
        EgressDecision {
            allowed: true,
            status: None,
            rule: Some(rule.name.clone()),
            reason: None,
            would_deny: None,
            originate_tls: rule.originate_tls,
            allow_cidrs: rule.allow_cidrs.clone(),
            ca: rule.ca.clone(),
            upstream_port,
        }
    }

    /// A refusal, or in `audit_only` (when `auditable`) an allowed decision
    /// with `would_deny`; connection settings come from `allow`, if any.
    fn refused(
        &self,
        port: u16,
        reason: DenyReason,
        status: u16,
        deny: Option<&Rule>,
        allow: Option<&Rule>,
        auditable: bool,
    ) -> EgressDecision {
        let upstream_port = match allow {
            Some(r) if r.originate_tls && port == 80 => 443,
            _ => port,
        };
        let settings = EgressDecision {
            allowed: true,
            status: Some(status),
            rule: deny.or(allow).map(|r| r.name.clone()),
            reason: None,
            would_deny: None,
            originate_tls: allow.is_some_and(|r| r.originate_tls),
            allow_cidrs: allow.map_or_else(|| self.no_cidrs.clone(), |r| r.allow_cidrs.clone()),
            ca: allow.and_then(|r| r.ca.clone()),
            upstream_port,
        };
        if auditable && self.audit_only {
            EgressDecision {
                would_deny: Some(reason),
                ..settings
            }
        } else {
            EgressDecision {
                allowed: false,
                reason: Some(reason),
                ..settings
            }
        }
    }
}

fn host_text(host: &Host<'_>) -> String {
    match host {
        Host::Ip(ip) => ip.to_string(),
        Host::Name(n) => n.to_string(),
    }
}

fn compile_groups(cfg: &EgressConfig, errs: &mut Vec<String>) -> Vec<Group> {
    let mut seen = HashSet::new();
    let mut groups = Vec::new();
    for (i, g) in cfg.caller_groups.iter().enumerate() {
        let mut err = |field: &str, msg: String| {
            errs.push(format!("caller_groups[{i}].{field}: {msg}"));
        };
        if !valid_name(&g.name) || g.name.contains('*') {
            err(
                "name",
                "1-64 printable ASCII characters, no spaces or `*`".into(),
            );
        } else if !seen.insert(g.name.as_str()) {
            err("name", format!("duplicate group name `{}`", g.name));
        }
        if g.cidrs.is_empty() {
            err("cidrs", "at least one CIDR".into());
        }
        let cidrs = parse_cidrs(&g.cidrs, &mut |msg| err("cidrs", msg));
        groups.push(Group {
            name: Arc::from(g.name.as_str()),
            principal: Arc::from(format!("{GROUP_PRINCIPAL_PREFIX}{}", g.name)),
            cidrs,
        });
    }
    groups
}

fn parse_cidrs(list: &[String], err: &mut dyn FnMut(String)) -> Vec<Cidr> {
    list.iter()
        .filter_map(|c| c.parse::<Cidr>().map_err(|e| err(e.to_string())).ok())
        .collect()
}

type DnsMaps = (HashMap<String, IpAddr>, HashMap<String, IpAddr>);

fn compile_dns(cfg: &EgressConfig, errs: &mut Vec<String>) -> DnsMaps {
    let (mut exact, mut suffix) = (HashMap::new(), HashMap::new());
    for (name, addr) in &cfg.dns.static_hosts {
        let mut err = |msg: String| errs.push(format!("dns.static.{name}: {msg}"));
        let bare = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let ip = match bare.parse::<IpAddr>() {
            Ok(ip) => ip,
            Err(_) => {
                err(format!("`{addr}` is not an IP address"));
                continue;
            }
        };
        let (map, key) = match HostPattern::parse(name) {
            Ok(HostPattern::Exact(n)) => (&mut exact, n),
            Ok(HostPattern::Suffix(s)) => (&mut suffix, s[1..].to_string()),
            Ok(_) => {
                err("a name or `*.suffix`, not an address or `*`".into());
                continue;
            }
            Err(e) => {
                err(e);
                continue;
            }
        };
        if map.insert(key, ip).is_some() {
            err("given twice (names are case-insensitive)".into());
        }
    }
    (exact, suffix)
}

fn compile_rule(
    r: &EgressRuleConfig,
    groups: &HashSet<&str>,
    no_cidrs: &Arc<[Cidr]>,
    err: &mut dyn FnMut(&str, String),
) -> Rule {
    if r.hosts.is_empty() {
        err("hosts", "at least one host".into());
    }
    let hosts = r
        .hosts
        .iter()
        .filter_map(|h| HostPattern::parse(h).map_err(|e| err("hosts", e)).ok())
        .collect();
    let ports = match (&r.ports, r.action) {
        (Some(ports), _) => {
            if ports.is_empty() {
                err("ports", "at least one port (or omit `ports`)".into());
            }
            if ports.contains(&0) {
                err("ports", "port 0 is not a destination port".into());
            }
            Some(ports.clone())
        }
        (None, RuleAction::Allow) => Some(DEFAULT_PORTS.to_vec()),
        (None, RuleAction::Deny) => None,
    };
    let principals = r
        .principals
        .as_ref()
        .map(|list| compile_principals(list, groups, err));
    for m in &r.methods {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
            err("methods", format!("`{m}` is not an HTTP method"));
        } else if m.eq_ignore_ascii_case("CONNECT") {
            err(
                "methods",
                "`CONNECT` is not a method here: a rule without methods or paths matches CONNECT"
                    .into(),
            );
        }
    }
    if let Some(p) = r.path_prefixes.iter().find(|p| !p.starts_with('/')) {
        err("path_prefixes", format!("`{p}` must start with `/`"));
    }
    if r.action == RuleAction::Deny {
        let settings = [
            ("allow_cidrs", !r.allow_cidrs.is_empty()),
            ("originate_tls", r.originate_tls),
            ("ca", r.ca.is_some()),
        ];
        for (field, set) in settings {
            if set {
                err(field, "only for `allow` rules".into());
            }
        }
    }
    match &r.ca {
        Some(ca) if ca.is_empty() => err("ca", "an empty path".into()),
        Some(_) if !r.originate_tls => err("ca", "only with `originate_tls: true`".into()),
        _ => {}
    }
    let allow_cidrs = parse_cidrs(&r.allow_cidrs, &mut |msg| err("allow_cidrs", msg));
    Rule {
        name: Arc::from(r.name.as_str()),
        hosts,
        ports,
        principals,
        methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        path_prefixes: r.path_prefixes.clone(),
        originate_tls: r.originate_tls,
        allow_cidrs: if allow_cidrs.is_empty() {
            no_cidrs.clone()
        } else {
            Arc::from(allow_cidrs)
        },
        ca: r.ca.as_deref().map(Arc::from),
    }
}

fn compile_principals(
    list: &[String],
    groups: &HashSet<&str>,
    err: &mut dyn FnMut(&str, String),
) -> Vec<Pattern> {
    if list.is_empty() {
        err(
            "principals",
            "an empty list matches nobody; omit `principals` to match every caller".into(),
        );
    }
    let mut out = Vec::new();
    for p in list {
        match p.find('*') {
            _ if p == "*" => out.push(Pattern::Any),
            None if !p.is_empty() => {
                if let Some(group) = p.strip_prefix(GROUP_PRINCIPAL_PREFIX) {
                    if !groups.contains(group) {
                        err("principals", format!("`{p}`: no caller group `{group}`"));
                    }
                }
                out.push(Pattern::Exact(p.clone()));
            }
            Some(i) if i + 1 == p.len() => out.push(Pattern::Prefix(p[..i].to_string())),
            _ => err(
                "principals",
                format!("`{p}`: use an exact value or one trailing `*`"),
            ),
        }
    }
    out
}
