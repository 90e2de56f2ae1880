//! The DNS resolver of discovery: hickory-resolver on Tokio, configured
//! from the `dns` block (nameservers, timeout, attempts, search domains).
//! Its own cache is off: discovery decides when to ask again (`refresh`,
//! or the answer's TTL with `respect_ttl`), so every refresh is a query.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
    ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::DnsResolver;

/// Why a lookup gave no addresses.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The system resolver config (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system resolver config: {0}")]
    SystemConfig(String),
    /// The resolver could not be built.
    #[error("cannot build the resolver: {0}")]
    Build(String),
    /// The query failed (timeout, refused, NXDOMAIN, ...).
    #[error("{0}")]
    Lookup(String),
    /// The name exists but has no A/AAAA records.
    #[error("no A/AAAA records")]
    NoAddresses,
}

/// The addresses of one name and how long they are valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The A and AAAA records, in answer order.
    pub addrs: Vec<IpAddr>,
    /// The smallest TTL of those records.
    pub ttl: Duration,
}

/// A configured resolver; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

/// Parses a `nameservers` entry: `ip` (port 53) or `ip:port`.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("`{s}` is not an `ip` or `ip:port` nameserver address"))
}

impl Resolver {
    /// A resolver for `cfg` (its nameservers already validated).
    pub fn new(cfg: &DnsResolver) -> Result<Self, ResolveError> {
        let mut opts = ResolverOpts::default();
        let config = if cfg.nameservers.is_empty() {
            let (system, system_opts) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ResolveError::SystemConfig(e.to_string()))?;
            opts = system_opts;
            if cfg.search_domains {
                system
            } else {
                ResolverConfig::from_parts(None, Vec::new(), system.name_servers().to_vec())
            }
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .filter_map(|s| parse_nameserver(s).ok())
                .map(|addr| {
                    let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
                    udp.port = addr.port();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let (domain, search) = match cfg.search_domains {
                true => hickory_resolver::system_conf::read_system_conf()
                    .map(|(c, _)| (c.domain().cloned(), c.search().to_vec()))
                    .unwrap_or_default(),
                false => (None, Vec::new()),
            };
            // Explicit nameservers are the whole truth: no /etc/hosts.
            opts.use_hosts_file = ResolveHosts::Never;
            ResolverConfig::from_parts(domain, search, servers)
        };
        opts.timeout = cfg.timeout.get();
        opts.attempts = cfg.attempts.max(1) as usize;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Discovery schedules its own queries; a cache would hide changes
        // until the records' TTL ran out whatever `refresh` says.
        opts.cache_size = 0;
        let inner = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(opts)
            .build()
            .map_err(|e| ResolveError::Build(e.to_string()))?;
        Ok(Resolver { inner })
    }

    /// The A and AAAA records of `host` (must run on a Tokio runtime).
    pub async fn lookup(&self, host: &str) -> Result<Answer, ResolveError> {
        let lookup = self
            .inner
            .lookup_ip(host)
            .await
            .map_err(|e| ResolveError::Lookup(e.to_string()))?;
        let mut addrs = Vec::new();
        let mut ttl = u32::MAX;
        for r in lookup.as_lookup().answers() {
            if let Some(ip) = r.data.ip_addr() {
                addrs.push(ip);
                ttl = ttl.min(r.ttl);
            }
        }
        if addrs.is_empty() {
            return Err(ResolveError::NoAddresses);
        }
        // Prefer the records' own TTL; the lookup's deadline is the fallback.
        let ttl = if ttl == u32::MAX {
            lookup
                .valid_until()
                .saturating_duration_since(Instant::now())
        } else {
            Duration::from_secs(ttl as u64)
        };
        Ok(Answer { addrs, ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_take_a_default_port() {
        assert_eq!(
            parse_nameserver("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_nameserver("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert!(parse_nameserver("dns.example:53").is_err());
    }
}
