//! Configuration of the egress proxy, as written in YAML (the `egress:`
//! block). Validated by [`CompiledEgress::compile`](super::CompiledEgress::compile).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Default cap on distinct (principal, host, port, decision) keys of the
/// observed-traffic table.
pub const DEFAULT_OBSERVED_MAX_ENTRIES: usize = 10_000;

/// Ports an `allow` rule allows when it names none.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The `egress` block: the forward proxy (`HTTPS_PROXY`) for workloads.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Dry run: requests the rules would refuse are logged and counted
    /// (decision `audit_deny`) but let through. Malformed targets are still
    /// refused.
    #[serde(default)]
    pub audit_only: bool,
    /// When true, a caller without credentials (no client certificate, no
    /// JWT; a caller group alone is not a credential) gets 407.
    #[serde(default)]
    pub require_credentials: bool,
    /// For CONNECT: the server name (SNI) of the TLS ClientHello sent through
    /// the tunnel must equal the CONNECT host (default true).
    #[serde(default = "default_true")]
    pub sni_must_match_connect: bool,
    /// Source-address groups: a caller connecting from one of a group's
    /// CIDRs gets the principal `cidr:<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caller_groups: Vec<CallerGroup>,
    /// Name resolution overrides.
    #[serde(default)]
    pub dns: DnsConfig,
    /// The rules: a matching `deny` rule refuses (403); else the first
    /// matching `allow` rule lets the request through; else it is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<EgressRuleConfig>,
    /// Most distinct (principal, host, port, decision) keys kept in the
    /// observed-traffic table (default 10000); further keys are only counted
    /// as overflow.
    #[serde(default = "default_observed_max_entries")]
    pub observed_max_entries: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        EgressConfig {
            audit_only: false,
            require_credentials: false,
            sni_must_match_connect: true,
            caller_groups: Vec::new(),
            dns: DnsConfig::default(),
            rules: Vec::new(),
            observed_max_entries: DEFAULT_OBSERVED_MAX_ENTRIES,
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_observed_max_entries() -> usize {
    DEFAULT_OBSERVED_MAX_ENTRIES
}

/// A named set of source networks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallerGroup {
    /// The group name; callers from its CIDRs get the principal
    /// `cidr:<name>`.
    pub name: String,
    /// Source networks (`10.0.0.0/8`, `fd00::/8`, or single addresses).
    /// Also `cidr:`.
    #[serde(alias = "cidr", deserialize_with = "one_or_many")]
    #[schemars(with = "OneOrMany<String>")]
    pub cidrs: Vec<String>,
}

/// Name resolution overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Name → IP address, used instead of DNS. Keys are exact names or
    /// `*.suffix` (any name below `suffix`); an exact name wins over a
    /// suffix, a longer suffix over a shorter one. The address is still
    /// checked against the SSRF ranges like any resolved address, so a rule
    /// reaching a private address needs `allow_cidrs`.
    #[serde(default, rename = "static", skip_serializing_if = "BTreeMap::is_empty")]
    pub static_hosts: BTreeMap<String, String>,
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Let the request through (unless a `deny` rule also matches).
    #[default]
    Allow,
    /// Refuse the request with 403; wins over every `allow` rule.
    Deny,
}
crate::config_enum!(RuleAction { Allow = "allow", Deny = "deny" });

/// One egress rule: every condition given must hold for it to match.
///
/// A CONNECT tunnel hides the method and path, so a rule with `methods` or
/// `path_prefixes` never matches a CONNECT (neither to allow nor to deny);
/// to allow by method or path, have callers send plain HTTP to the proxy
/// and set `originate_tls` so the gateway speaks TLS to the destination.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressRuleConfig {
    /// Unique name, reported in decisions, logs and metrics.
    pub name: String,
    /// Destination hosts: exact names, `*.suffix` (any name below `suffix`,
    /// at any depth, not `suffix` itself), IP addresses, or `*` for every
    /// host. Case-insensitive; a trailing dot is ignored. Also `host:`.
    #[serde(alias = "host", deserialize_with = "one_or_many")]
    #[schemars(with = "OneOrMany<String>")]
    pub hosts: Vec<String>,
    /// Destination ports. Absent: `[80, 443]` for an `allow` rule, every
    /// port for a `deny` rule (so denying a host denies it on every port).
    /// With `originate_tls`, a plain-HTTP request to port 80 goes to port
    /// 443, and 443 is what is matched. Also `port:`.
    #[serde(
        default,
        alias = "port",
        deserialize_with = "some_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<OneOrMany<u16>>")]
    pub ports: Option<Vec<u16>>,
    /// Callers this rule applies to: exact principals, prefixes ending in
    /// `*`, or `*` for any caller with credentials. SPIFFE IDs
    /// (`spiffe://td/path`), JWT principals (`<iss>#<sub>`) and caller
    /// groups (`cidr:<name>`; only matched by patterns naming them, not by
    /// `*`). Absent: every caller, including unknown ones. Also
    /// `principal:`.
    #[serde(
        default,
        alias = "principal",
        deserialize_with = "some_one_or_many",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<OneOrMany<String>>")]
    pub principals: Option<Vec<String>>,
    /// HTTP methods (plain HTTP only, see above). Also `method:`.
    #[serde(default, alias = "method", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany<String>")]
    pub methods: Vec<String>,
    /// Path prefixes, each starting with `/`, matched against the path
    /// without the query (plain HTTP only). Also `path_prefix:`.
    #[serde(default, alias = "path_prefix", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany<String>")]
    pub path_prefixes: Vec<String>,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub action: RuleAction,
    /// Destination networks this rule may reach although they are in a
    /// blocked (SSRF) range, e.g. `127.0.0.0/8`. A cloud metadata address
    /// is only permitted by a CIDR naming exactly it. Allow rules only.
    #[serde(default, alias = "allow_cidr", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany<String>")]
    pub allow_cidrs: Vec<String>,
    /// The caller sends plain HTTP (`http://host/...`) to the proxy and the
    /// gateway connects to the destination over TLS. Allow rules only; such
    /// a rule does not match a CONNECT.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub originate_tls: bool,
    /// PEM file of the CA that verifies the destination when originating
    /// TLS (default: the system roots). Only with `originate_tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// A value or a list of values.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
pub(crate) enum OneOrMany<T> {
    /// One value.
    One(T),
    /// Several values.
    Many(Vec<T>),
}

fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(v) => vec![v],
        OneOrMany::Many(v) => v,
    })
}

fn some_one_or_many<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    one_or_many(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
audit_only: false
require_credentials: false
sni_must_match_connect: true
caller_groups:
  - {name: functions, cidrs: [10.0.0.0/8, "127.0.0.0/8"]}
dns:
  static: {api.partner.test: 127.0.0.1, "*.mock.test": "::1"}
rules:
  - name: partner-api
    hosts: [api.partner.test, "*.partner.test"]
    ports: [443]
    principals: ["https://issuer.example#fn-billing", "spiffe://cluster-b.example/*", "cidr:functions"]
    methods: [GET]
    path_prefixes: [/v1/]
    action: allow
    allow_cidrs: [127.0.0.0/8]
    originate_tls: false
    ca: certs/partner-ca.pem
"#;

    #[test]
    fn reads_the_documented_example() {
        let cfg: EgressConfig = serde_yaml::from_str(FULL).unwrap();
        assert!(cfg.sni_must_match_connect);
        assert_eq!(cfg.caller_groups[0].cidrs, ["10.0.0.0/8", "127.0.0.0/8"]);
        assert_eq!(cfg.dns.static_hosts["*.mock.test"], "::1");
        let r = &cfg.rules[0];
        assert_eq!(r.ports, Some(vec![443]));
        assert_eq!(r.principals.as_ref().unwrap().len(), 3);
        assert_eq!(r.action, RuleAction::Allow);
        assert_eq!(r.ca.as_deref(), Some("certs/partner-ca.pem"));
        assert_eq!(cfg.observed_max_entries, DEFAULT_OBSERVED_MAX_ENTRIES);
    }

    #[test]
    fn defaults_and_aliases() {
        let cfg: EgressConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(cfg, EgressConfig::default());
        assert!(cfg.sni_must_match_connect);
        let cfg: EgressConfig = serde_yaml::from_str(
            "rules: [{name: a, host: x.test, principal: '*', method: GET, path_prefix: /v1, port: 8443, action: deny, allow_cidr: 10.0.0.0/8}]",
        )
        .unwrap();
        let r = &cfg.rules[0];
        assert_eq!(r.hosts, ["x.test"]);
        assert_eq!(r.principals, Some(vec!["*".to_string()]));
        assert_eq!(r.methods, ["GET"]);
        assert_eq!(r.path_prefixes, ["/v1"]);
        assert_eq!(r.ports, Some(vec![8443]));
        assert_eq!(r.action, RuleAction::Deny);
        assert_eq!(r.allow_cidrs, ["10.0.0.0/8"]);
        let cfg: EgressConfig = serde_yaml::from_str("rules: [{name: a, hosts: x.test}]").unwrap();
        let r = &cfg.rules[0];
        assert_eq!(r.ports, None);
        assert_eq!(r.principals, None);
        assert!(!r.originate_tls);
        let cfg: EgressConfig =
            serde_yaml::from_str("rules: [{name: a, hosts: x.test, principals: []}]").unwrap();
        assert_eq!(cfg.rules[0].principals, Some(vec![]));
    }

    #[test]
    fn refuses_unknown_fields_and_missing_names() {
        for bad in [
            "unknown: 1",
            "rules: [{name: a, hosts: [x], extra: 1}]",
            "rules: [{hosts: [x]}]",
            "rules: [{name: a}]",
            "rules: [{name: a, hosts: [x], action: maybe}]",
            "rules: [{name: a, hosts: [x], ports: [70000]}]",
            "caller_groups: [{name: g}]",
            "dns: {resolvers: [1.1.1.1]}",
        ] {
            assert!(serde_yaml::from_str::<EgressConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serializes_back() {
        let cfg: EgressConfig = serde_yaml::from_str(FULL).unwrap();
        let text = serde_yaml::to_string(&cfg).unwrap();
        assert_eq!(serde_yaml::from_str::<EgressConfig>(&text).unwrap(), cfg);
    }

    #[test]
    fn has_a_schema() {
        let schema = schemars::schema_for!(EgressConfig);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("sni_must_match_connect"), "{text}");
        assert!(text.contains("originate_tls"), "{text}");
    }
}
