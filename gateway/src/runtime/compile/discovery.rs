//! Compiling DNS discovery: the `hostname:port` entries of a cluster with
//! `discovery`, its resolver settings (the cluster's `discovery.dns` or the
//! top-level `dns`), and the first lookup of a new cluster.

use super::super::*;
use crate::discovery::{self, DiscoverySpec, DnsEntry, Resolver};

impl Compiler<'_> {
    /// Checks the top-level `dns` block.
    pub(in crate::runtime) fn top_level_dns(&mut self, cfg: &Config) {
        if let Some(dns) = &cfg.dns {
            for (path, msg) in dns_problems(dns) {
                let d = self.src.top(&format!("dns.{path}"), msg);
                self.errors.push(d);
            }
        }
    }

    /// The entry of endpoint `j` of cluster `i`, a `hostname:port` that
    /// discovery resolves; `None` (with an error) when it is not one.
    pub(in crate::runtime) fn dns_entry(
        &mut self,
        i: usize,
        j: usize,
        e: &config::Endpoint,
        c: &config::Cluster,
    ) -> Option<DnsEntry> {
        let at = format!("endpoints[{j}].address");
        let parsed = e
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
            .filter(|(h, _)| filters::egress::host::is_dns_name(&h.to_ascii_lowercase()));
        let Some((host, port)) = parsed else {
            self.err(
                Section::Clusters,
                i,
                &at,
                format!("`{}` is not `ip:port` or `hostname:port`", e.address),
            );
            return None;
        };
        let locality = config::Locality {
            region: e.region.clone(),
            zone: e.zone.clone(),
            cluster: e.cluster.clone(),
        };
        Some(DnsEntry {
            index: j,
            host: host.to_string(),
            port,
            label: e.address.as_str().into(),
            weight: e.weight,
            priority: locality::classify(&self.gateway_locality, &locality, c.locality.mode),
            locality,
            initially_healthy: c.health_check.as_ref().is_none_or(|h| h.initially_healthy),
        })
    }

    /// Validates cluster `i`'s `discovery` and builds its spec and resolver.
    pub(in crate::runtime) fn discovery_spec(
        &mut self,
        i: usize,
        d: &config::Discovery,
        cfg: &Config,
        entries: Vec<DnsEntry>,
        static_endpoints: &[Arc<Endpoint>],
        peer: PeerSettings,
    ) -> Option<(DiscoverySpec, Resolver)> {
        let before = self.errors.len();
        if d.refresh.get().is_zero() {
            self.err(
                Section::Clusters,
                i,
                "discovery.refresh",
                "refresh must be greater than zero",
            );
        }
        if d.jitter_percent > 100 {
            self.err(
                Section::Clusters,
                i,
                "discovery.jitter_percent",
                "must be between 0 and 100",
            );
        }
        let named = !entries.is_empty() || static_endpoints.len() < cfg_endpoints(cfg, i);
        if !named {
            // Nothing to resolve: almost certainly a mistake (a copied
            // block, or names replaced by addresses and the block forgotten).
            self.err(
                Section::Clusters,
                i,
                "discovery",
                "discovery needs at least one `hostname:port` endpoint; every endpoint here is an `ip:port`",
            );
        }
        if let Some(dns) = &d.dns {
            for (path, msg) in dns_problems(dns) {
                self.err(Section::Clusters, i, &format!("discovery.dns.{path}"), msg);
            }
        }
        if self.errors.len() != before {
            return None;
        }
        let settings = d
            .dns
            .as_ref()
            .or(cfg.dns.as_ref())
            .cloned()
            .unwrap_or_default();
        let resolver = match Resolver::new(&settings) {
            Ok(r) => r,
            Err(e) => {
                self.err(Section::Clusters, i, "discovery", e.to_string());
                return None;
            }
        };
        let spec = DiscoverySpec {
            kind: d.kind,
            refresh: d.refresh.get(),
            respect_ttl: d.respect_ttl,
            jitter_percent: d.jitter_percent,
            entries,
            static_endpoints: static_endpoints.to_vec(),
            peer,
        };
        Some((spec, resolver))
    }

    /// The first lookup of a new discovery cluster; a name that does not
    /// resolve is a warning (the cluster starts without it, or with the
    /// addresses the cluster it replaces had for it, and keeps trying),
    /// not an error: DNS being down must not block a reload.
    pub(in crate::runtime) fn resolve_discovered(&mut self, i: usize, cluster: Cluster) -> Cluster {
        let Some(d) = &cluster.discovery else {
            return cluster;
        };
        let previous = self.previous.and_then(|p| p.clusters.get(&*cluster.name));
        if let Some(prev) = previous.and_then(|p| p.discovery.as_deref()) {
            d.seed(&prev.addresses());
        }
        for (j, msg) in d.resolve_initial(&cluster) {
            let d = self.src.at(
                Section::Clusters,
                i,
                &format!("endpoints[{j}].address"),
                format!("DNS lookup failed ({msg}); the cluster starts without it and retries every refresh"),
            );
            self.warnings.push(d);
        }
        cluster
    }
}

/// Endpoints in the config of cluster `i`.
fn cfg_endpoints(cfg: &Config, i: usize) -> usize {
    cfg.clusters.get(i).map_or(0, |c| c.endpoints.len())
}

/// Problems of a `dns` block, by field path.
fn dns_problems(dns: &config::DnsResolver) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, ns) in dns.nameservers.iter().enumerate() {
        if let Err(msg) = discovery::parse_nameserver(ns) {
            out.push((format!("nameservers[{k}]"), msg));
        }
    }
    if dns.timeout.get().is_zero() {
        out.push(("timeout".into(), "timeout must be greater than zero".into()));
    }
    if dns.attempts == 0 {
        out.push(("attempts".into(), "attempts must be at least 1".into()));
    }
    out
}
