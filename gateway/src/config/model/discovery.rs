//! DNS discovery of cluster endpoints (Envoy's `STRICT_DNS` and
//! `LOGICAL_DNS`) and the settings of the resolver it uses.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// How a cluster keeps its `hostname:port` endpoints resolved.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Discovery {
    /// `strict_dns`: every A/AAAA record of a name is an endpoint;
    /// `logical_dns`: one address per name at a time, kept while the name
    /// still resolves to it.
    #[serde(rename = "type")]
    pub kind: DiscoveryKind,
    /// Time between lookups (off the request path).
    #[serde(default = "default_refresh")]
    pub refresh: Duration,
    /// Use the smallest TTL of the answer as the time to the next lookup
    /// instead of `refresh` (at least 1 s).
    #[serde(default)]
    pub respect_ttl: bool,
    /// Random extra delay, up to this percentage of the interval, so that
    /// gateways (and clusters) do not query in lockstep.
    #[serde(default = "default_jitter")]
    pub jitter_percent: u32,
    /// Resolver of this cluster; default: the top-level `dns`.
    #[serde(default)]
    pub dns: Option<DnsResolver>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}
fn default_jitter() -> u32 {
    10
}

/// Discovery types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// Every address a name resolves to is an endpoint.
    StrictDns,
    /// One address of each name at a time.
    LogicalDns,
}
filters::config_enum!(DiscoveryKind { StrictDns = "strict_dns", LogicalDns = "logical_dns" });

impl DiscoveryKind {
    /// The config spelling.
    pub fn label(self) -> &'static str {
        match self {
            DiscoveryKind::StrictDns => "strict_dns",
            DiscoveryKind::LogicalDns => "logical_dns",
        }
    }
}

/// The DNS resolver the gateway uses for discovery.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DnsResolver {
    /// `ip` or `ip:port` (default port 53) of the nameservers, asked over
    /// UDP with TCP fallback; empty: the system's (`/etc/resolv.conf`,
    /// whose `/etc/hosts` entries then apply too).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// How long one query may take.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Duration,
    /// Tries per query and nameserver.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// Append the system's search domains to names with fewer dots than
    /// its `ndots`; `false` (the default) looks names up as written.
    #[serde(default)]
    pub search_domains: bool,
}

impl Default for DnsResolver {
    fn default() -> Self {
        DnsResolver {
            nameservers: Vec::new(),
            timeout: default_dns_timeout(),
            attempts: default_attempts(),
            search_domains: false,
        }
    }
}

fn default_dns_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_attempts() -> u32 {
    2
}
