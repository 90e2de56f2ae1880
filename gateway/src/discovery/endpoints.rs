//! From answers to endpoint sets: which addresses an entry keeps (strict:
//! all of them; logical: one, the current one while it is still answered)
//! and the endpoint set built from them, where an address that stays keeps
//! its `Endpoint` (health, outlier ejection, active requests).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::DiscoverySpec;
use crate::config::DiscoveryKind;
use crate::runtime::cluster::Endpoint;

/// The addresses an entry uses after an answer of `answer` (not empty),
/// when it used `current`.
pub fn next_addrs(kind: DiscoveryKind, current: &[IpAddr], answer: &[IpAddr]) -> Vec<IpAddr> {
    match kind {
        DiscoveryKind::StrictDns => {
            // Sorted: round-robin DNS servers rotate the order of the same
            // records, which is no change.
            let mut all = answer.to_vec();
            all.sort();
            all.dedup();
            all
        }
        DiscoveryKind::LogicalDns => {
            let keep = current.first().filter(|ip| answer.contains(ip));
            keep.or(answer.first()).into_iter().copied().collect()
        }
    }
}

/// The endpoint set for `addrs` (one list per entry of `spec`): the static
/// endpoints, then each entry's addresses with the entry's weight and
/// locality. An address of `previous` keeps its endpoint; an address two
/// entries share is used once (the first entry's).
pub fn build(
    spec: &DiscoverySpec,
    addrs: &[Vec<IpAddr>],
    previous: &[Arc<Endpoint>],
) -> Vec<Arc<Endpoint>> {
    let old: HashMap<SocketAddr, &Arc<Endpoint>> = previous.iter().map(|e| (e.addr, e)).collect();
    let mut seen: HashSet<SocketAddr> = spec.static_endpoints.iter().map(|e| e.addr).collect();
    let mut out = spec.static_endpoints.clone();
    for (entry, ips) in spec.entries.iter().zip(addrs) {
        for ip in ips {
            let addr = SocketAddr::new(*ip, entry.port);
            if !seen.insert(addr) {
                continue;
            }
            let kept = old
                .get(&addr)
                .filter(|e| e.discovered_from.as_deref() == Some(&*entry.label));
            let ep = match kept {
                Some(e) => Arc::clone(e),
                None => Arc::new(
                    Endpoint::new(
                        addr,
                        addr.to_string(),
                        entry.weight,
                        entry.locality.clone(),
                        entry.priority,
                        entry.initially_healthy,
                        spec.peer.peer(addr),
                    )
                    .discovered_from(entry.label.clone()),
                ),
            };
            out.push(ep);
        }
    }
    out
}

/// Endpoints (by address) in `new` and not in `old`, and the reverse.
pub fn diff(old: &[Arc<Endpoint>], new: &[Arc<Endpoint>]) -> (u64, u64) {
    let a: HashSet<SocketAddr> = old.iter().map(|e| e.addr).collect();
    let b: HashSet<SocketAddr> = new.iter().map(|e| e.addr).collect();
    (
        b.difference(&a).count() as u64,
        a.difference(&b).count() as u64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Locality, UpstreamProtocol};
    use crate::discovery::DnsEntry;
    use crate::runtime::cluster::PeerSettings;
    use crate::runtime::locality::Priority;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec(kind: DiscoveryKind) -> DiscoverySpec {
        DiscoverySpec {
            kind,
            refresh: Duration::from_secs(1),
            respect_ttl: false,
            jitter_percent: 0,
            entries: vec![DnsEntry {
                index: 0,
                host: "api.test".into(),
                port: 8080,
                label: "api.test:8080".into(),
                weight: 3,
                locality: Locality {
                    zone: Some("z1".into()),
                    ..Default::default()
                },
                priority: Priority::Zone,
                initially_healthy: true,
            }],
            static_endpoints: Vec::new(),
            peer: PeerSettings {
                tls_sni: None,
                ca: None,
                client_cert: None,
                protocol: UpstreamProtocol::Http1,
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(1),
                group_key: 0,
            },
        }
    }

    #[test]
    fn strict_takes_every_record_in_a_stable_order() {
        let got = next_addrs(
            DiscoveryKind::StrictDns,
            &[],
            &[ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.2")],
        );
        assert_eq!(got, vec![ip("10.0.0.1"), ip("10.0.0.2")]);
    }

    #[test]
    fn logical_keeps_its_address_while_it_is_answered() {
        let k = DiscoveryKind::LogicalDns;
        let cur = [ip("10.0.0.2")];
        assert_eq!(
            next_addrs(k, &cur, &[ip("10.0.0.1"), ip("10.0.0.2")]),
            cur.to_vec()
        );
        assert_eq!(
            next_addrs(k, &cur, &[ip("10.0.0.3"), ip("10.0.0.1")]),
            vec![ip("10.0.0.3")]
        );
        assert_eq!(next_addrs(k, &[], &[ip("10.0.0.1")]), vec![ip("10.0.0.1")]);
    }

    #[test]
    fn addresses_that_stay_keep_their_endpoint() {
        let s = spec(DiscoveryKind::StrictDns);
        let first = build(&s, &[vec![ip("10.0.0.1"), ip("10.0.0.2")]], &[]);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].weight, 3);
        assert_eq!(first[0].locality.zone.as_deref(), Some("z1"));
        assert_eq!(first[0].discovered_from.as_deref(), Some("api.test:8080"));
        assert_eq!(first[0].label, "10.0.0.1:8080");
        let second = build(&s, &[vec![ip("10.0.0.2"), ip("10.0.0.3")]], &first);
        assert!(
            Arc::ptr_eq(&first[1], &second[0]),
            "10.0.0.2 kept its state"
        );
        assert_eq!(second[1].addr, "10.0.0.3:8080".parse().unwrap());
        assert_eq!(diff(&first, &second), (1, 1));
    }
}
