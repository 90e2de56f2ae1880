//! The egress forward proxy: what workloads (serverless functions with
//! `HTTPS_PROXY`/`HTTP_PROXY` pointing at the gateway) may reach outside.
//!
//! Pure building blocks, no I/O: the gateway accepts the proxy connection,
//! resolves names and dials; these modules decide.
//!
//! - [`config`]: the YAML `egress:` block ([`EgressConfig`]).
//! - [`rules`]: [`CompiledEgress`], the validated rules, and
//!   [`CompiledEgress::evaluate`] giving an [`EgressDecision`].
//! - [`ssrf`]: IP literal parsing in every `inet_aton` spelling, the blocked
//!   address ranges ([`ssrf::classify`], [`ssrf::check`]) and [`Cidr`].
//! - [`sni`]: the server name of the TLS ClientHello inside a CONNECT tunnel.
//! - [`observed`]: [`ObservedTable`], bounded counts of who went where.
//! - [`host`]: host normalization and host patterns.
//!
//! # Configuration
//!
//! ```yaml
//! egress:
//!   audit_only: false            # would-be denials are logged+counted but allowed
//!   require_credentials: false   # when true, a caller with no credentials gets 407
//!   sni_must_match_connect: true # for CONNECT: ClientHello SNI must equal the CONNECT host
//!   caller_groups:               # a caller from these CIDRs gets principal "cidr:<name>"
//!     - {name: functions, cidrs: [10.0.0.0/8, "127.0.0.0/8"]}
//!   dns:
//!     static: {api.partner.test: 127.0.0.1, "*.mock.test": "::1"}
//!   rules:
//!     - name: partner-api
//!       hosts: [api.partner.test, "*.partner.test"]
//!       ports: [443]                # default [80, 443]; deny rules: every port
//!       principals: ["https://issuer.example#fn-billing", "spiffe://cluster-b.example/*", "cidr:functions"]
//!       action: allow               # allow (default) | deny
//!       allow_cidrs: [127.0.0.0/8]  # blocked destinations this rule may reach
//!     - name: partner-reports
//!       hosts: reports.partner.test
//!       methods: [GET]              # plain HTTP only: needs originate_tls for HTTPS
//!       path_prefixes: [/v1/]
//!       originate_tls: true         # caller sends http://, the gateway speaks TLS
//!       ca: certs/partner-ca.pem    # default: system roots
//! ```
//!
//! See [`EgressRuleConfig`] for every field and [`rules`] for the decision
//! order and the 403/407 choice.
//!
//! # Per request in the gateway
//!
//! 1. **Identify the caller**: its principals are the SPIFFE ID of its
//!    client certificate and/or the `<iss>#<sub>` of a verified JWT
//!    ([`Identity::principals`](crate::identity::principal::Identity::principals);
//!    for a proxy the JWT comes in `Proxy-Authorization: Bearer`), plus
//!    [`CompiledEgress::caller_group_principals`] of its source address.
//! 2. **Decide** with [`CompiledEgress::evaluate`]: the host and port from
//!    the CONNECT authority ([`RequestKind::Connect`]) or the absolute URL
//!    ([`RequestKind::PlainHttp`], with method and path). If
//!    `!decision.allowed`, answer `decision.status` (407 with
//!    `Proxy-Authenticate`) and the reason's message. Count
//!    [`EgressDecision::outcome`] in metrics and [`ObservedTable::record`].
//! 3. **Resolve once**: an IP literal host ([`host::Host::parse`]) is used
//!    as is; else [`CompiledEgress::resolve_static`], else system DNS.
//! 4. **Check the address** the gateway will dial with
//!    [`ssrf::check`]`(ip, &decision.allow_cidrs)`; on `Err(range)`, refuse
//!    with [`DenyReason::BlockedAddress`] (see [`EgressDecision::refuse`]).
//!    Checking after resolution, on the very address dialed, closes DNS
//!    rebinding: a name that resolves to an internal address is refused no
//!    matter which rule allowed the name.
//! 5. **Connect to exactly that address** (never re-resolve), on
//!    [`EgressDecision::upstream_port`]; with `originate_tls`, over TLS to
//!    the host name, verified with `ca` or the system roots.
//! 6. **For CONNECT**, with `sni_must_match_connect`: answer `200`, peek at
//!    the tunnel's first bytes with [`sni::parse_client_hello_sni`] and
//!    refuse ([`DenyReason::SniMismatch`]) unless the name matches the
//!    CONNECT host ([`sni::sni_matches_host`]), before relaying a byte.
//!
//! In `audit_only`, steps that would refuse report `allowed` with
//! [`EgressDecision::would_deny`] instead; whether an SSRF-blocked address
//! is audited or always refused is the gateway's choice
//! ([`EgressDecision::refuse`] takes it as a flag).

pub mod cidr;
pub mod config;
pub mod host;
pub mod observed;
pub mod rules;
pub mod sni;
pub mod ssrf;

#[cfg(test)]
mod rules_tests;

pub use cidr::{Cidr, CidrError};
pub use config::{
    CallerGroup, DnsConfig, EgressConfig, EgressRuleConfig, RuleAction,
    DEFAULT_OBSERVED_MAX_ENTRIES, DEFAULT_PORTS,
};
pub use observed::{ObservedEntry, ObservedReport, ObservedTable};
pub use rules::{
    CompiledEgress, DenyReason, EgressDecision, EgressRequest, Outcome, RequestKind,
    GROUP_PRINCIPAL_PREFIX,
};
pub use sni::{parse_client_hello_sni, SniResult};
pub use ssrf::BlockedRange;
