//! Upstream clusters: endpoints, load balancing, peer templates, retry budget.
//!
//! Selection takes no lock: round robin walks a precomputed weighted schedule
//! with one atomic counter, least-request reads per-endpoint atomics, and
//! consistent hashing is weighted rendezvous hashing (every key sticks to one
//! endpoint; removing an endpoint moves only its keys).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{HashOn, LbPolicy, Locality};

/// One upstream endpoint and its live counters.
pub struct Endpoint {
    /// Resolved address.
    pub addr: SocketAddr,
    /// The address as written in the config (for logs).
    pub label: String,
    /// Relative weight; 0 = out of rotation.
    pub weight: u32,
    /// Where the endpoint runs.
    pub locality: Locality,
    /// Requests currently using this endpoint (least-request LB).
    pub active: AtomicU64,
    /// Peer with every connection option set; cloned per try.
    pub peer: HttpPeer,
    /// Stable hash of the address, for rendezvous hashing.
    addr_hash: u64,
}

/// A compiled cluster.
pub struct Cluster {
    /// Cluster name.
    pub name: Arc<str>,
    /// Hash of the definition; equal fingerprints let a reload keep this
    /// cluster and its state.
    pub fingerprint: u64,
    /// Endpoints in config order.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Balancing policy.
    pub lb: LbPolicy,
    /// Consistent-hash key.
    pub hash_on: HashOn,
    /// Default per-read upstream timeout.
    pub read_timeout: Duration,
    /// Requests in flight to this cluster (retry budget base).
    pub active_requests: AtomicU64,
    /// Requests in flight that are being retried.
    pub active_retries: AtomicU64,
    /// Budget: retries may be this fraction of active requests.
    pub budget_ratio: f64,
    /// Budget floor.
    pub min_retry_concurrency: u64,
    /// Weighted round-robin schedule of endpoint indices.
    schedule: Vec<usize>,
    rr_next: AtomicUsize,
    /// Cumulative weights for weighted random picks.
    cumulative: Vec<u64>,
}

/// Connection settings shared by all endpoints of a cluster.
pub struct PeerSettings {
    /// TLS SNI, when TLS is on.
    pub tls_sni: Option<String>,
    /// CA bundle; `None` = system roots.
    pub ca: Option<Arc<[pingora::utils::tls::WrappedX509]>>,
    /// Client certificate for upstream mTLS.
    pub client_cert: Option<Arc<pingora::utils::tls::CertKey>>,
    /// Upstream protocol.
    pub protocol: crate::config::UpstreamProtocol,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Per-read timeout.
    pub read_timeout: Duration,
    /// Pool idle timeout.
    pub idle_timeout: Duration,
    /// Pool isolation key (peers of different clusters never share connections).
    pub group_key: u64,
}

impl PeerSettings {
    /// Builds the peer template for one address.
    pub fn peer(&self, addr: SocketAddr) -> HttpPeer {
        let tls = self.tls_sni.is_some();
        let mut peer = HttpPeer::new(addr, tls, self.tls_sni.clone().unwrap_or_default());
        let o = &mut peer.options;
        o.connection_timeout = Some(self.connect_timeout);
        o.total_connection_timeout = Some(self.connect_timeout);
        o.read_timeout = Some(self.read_timeout);
        o.write_timeout = Some(self.read_timeout);
        o.idle_timeout = Some(self.idle_timeout);
        o.ca = self.ca.clone();
        match self.protocol {
            crate::config::UpstreamProtocol::Http1 => o.alpn = ALPN::H1,
            crate::config::UpstreamProtocol::Http2 => {
                o.alpn = ALPN::H2;
                o.max_h2_streams = 100;
            }
            crate::config::UpstreamProtocol::Auto => {
                o.alpn = ALPN::H2H1;
                o.max_h2_streams = 100;
            }
        }
        peer.client_cert_key = self.client_cert.clone();
        peer.group_key = self.group_key;
        peer
    }
}

fn stable_hash<T: Hash + ?Sized>(v: &T) -> u64 {
    // DefaultHasher::new() uses fixed keys: stable across processes.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Smooth weighted round robin (nginx's), unrolled into a schedule so that
/// picking is one atomic increment. Weights are scaled down when their sum
/// is large, keeping the schedule short.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    const MAX_LEN: u64 = 4096;
    let total: u64 = weights.iter().map(|w| *w as u64).sum();
    if total == 0 {
        return Vec::new();
    }
    let scale = total.div_ceil(MAX_LEN).max(1);
    let w: Vec<i64> = weights
        .iter()
        .map(|&x| {
            if x == 0 {
                0
            } else {
                ((x as u64).div_ceil(scale)) as i64
            }
        })
        .collect();
    let sum: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(sum as usize);
    for _ in 0..sum {
        let mut best = 0;
        for i in 0..w.len() {
            current[i] += w[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= sum;
        out.push(best);
    }
    out
}

impl Cluster {
    /// Builds a cluster from resolved endpoints.
    pub fn new(
        fingerprint: u64,
        name: &str,
        lb: LbPolicy,
        hash_on: HashOn,
        endpoints: Vec<Arc<Endpoint>>,
        read_timeout: Duration,
        budget: &crate::config::RetryBudget,
    ) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let mut acc = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += *w as u64;
                acc
            })
            .collect();
        Cluster {
            name: name.into(),
            fingerprint,
            schedule: smooth_schedule(&weights),
            rr_next: AtomicUsize::new(0),
            cumulative,
            endpoints,
            lb,
            hash_on,
            read_timeout,
            active_requests: AtomicU64::new(0),
            active_retries: AtomicU64::new(0),
            budget_ratio: budget.budget_percent / 100.0,
            min_retry_concurrency: budget.min_retry_concurrency as u64,
        }
    }

    fn eligible(&self, i: usize, exclude: &[usize]) -> bool {
        self.endpoints[i].weight > 0 && !exclude.contains(&i)
    }

    /// Picks an endpoint index, avoiding `exclude` (endpoints that already
    /// failed this request) when another one exists. `hash` is the
    /// consistent-hash key, if the policy uses one.
    pub fn select(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        self.select_avoiding(hash, exclude)
            .or_else(|| self.select_avoiding(hash, &[]))
    }

    fn select_avoiding(&self, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        let n = self.endpoints.len();
        if !(0..n).any(|i| self.eligible(i, exclude)) {
            return None;
        }
        match self.lb {
            LbPolicy::RoundRobin => {
                let len = self.schedule.len();
                let start = self.rr_next.fetch_add(1, Ordering::Relaxed);
                (0..len)
                    .map(|k| self.schedule[(start + k) % len])
                    .find(|&i| self.eligible(i, exclude))
            }
            LbPolicy::Random => self.weighted_random(exclude, None),
            LbPolicy::LeastRequest => {
                // Power of two choices, drawn without replacement so that
                // two endpoints always compare both.
                let a = self.weighted_random(exclude, None)?;
                let Some(b) = self.weighted_random(exclude, Some(a)) else {
                    return Some(a);
                };
                let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            LbPolicy::ConsistentHash => {
                let key = hash.unwrap_or(0);
                (0..n)
                    .filter(|&i| self.eligible(i, exclude))
                    .map(|i| {
                        let ep = &self.endpoints[i];
                        // Weighted rendezvous: score = -w / ln(u), u in (0,1).
                        let h = stable_hash(&(key, ep.addr_hash));
                        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                        (i, -(ep.weight as f64) / u.ln())
                    })
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            }
        }
    }

    fn weighted_random(&self, exclude: &[usize], also: Option<usize>) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let ok = |i: usize| self.eligible(i, exclude) && Some(i) != also;
        // A few weighted draws, then a scan: exclusions are rare and short.
        for _ in 0..4 {
            let r = fastrand::u64(0..total);
            let i = self.cumulative.partition_point(|&c| c <= r);
            if ok(i) {
                return Some(i);
            }
        }
        (0..self.endpoints.len()).find(|&i| ok(i))
    }

    /// Whether one more retry fits the budget (Envoy semantics: retries in
    /// flight at most `budget_percent` of active requests, but never fewer
    /// than `min_retry_concurrency`).
    pub fn retry_allowed(&self) -> bool {
        let active = self.active_requests.load(Ordering::Relaxed) as f64;
        let limit = ((active * self.budget_ratio) as u64).max(self.min_retry_concurrency);
        self.active_retries.load(Ordering::Relaxed) < limit
    }
}

impl Endpoint {
    /// Builds an endpoint with its peer template.
    pub fn new(
        addr: SocketAddr,
        label: String,
        weight: u32,
        locality: Locality,
        peer: HttpPeer,
    ) -> Self {
        Endpoint {
            addr_hash: stable_hash(&label),
            addr,
            label,
            weight,
            locality,
            active: AtomicU64::new(0),
            peer,
        }
    }
}

/// Hash of a consistent-hash key.
pub fn hash_key(key: &[u8]) -> u64 {
    stable_hash(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RetryBudget, UpstreamProtocol};

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Cluster {
        let settings = PeerSettings {
            tls_sni: None,
            ca: None,
            client_cert: None,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            group_key: 0,
        };
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                Arc::new(Endpoint::new(
                    addr,
                    addr.to_string(),
                    *w,
                    Locality::default(),
                    settings.peer(addr),
                ))
            })
            .collect();
        Cluster::new(
            0,
            "c",
            lb,
            HashOn::default(),
            eps,
            Duration::from_secs(1),
            &RetryBudget::default(),
        )
    }

    #[test]
    fn smooth_round_robin_interleaves_by_weight() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_schedule(&[1, 0, 1]), vec![0, 2]);
        assert!(smooth_schedule(&[0, 0]).is_empty());
        assert!(smooth_schedule(&[u32::MAX, 1]).len() <= 4097);
    }

    #[test]
    fn round_robin_skips_excluded_endpoints() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1]);
        for _ in 0..10 {
            assert_ne!(c.select(None, &[1]), Some(1));
        }
        // Everything excluded: fall back to any endpoint rather than fail.
        assert!(c.select(None, &[0, 1, 2]).is_some());
    }

    #[test]
    fn zero_weight_clusters_have_no_endpoint() {
        assert_eq!(cluster(LbPolicy::Random, &[0, 0]).select(None, &[]), None);
        assert_eq!(
            cluster(LbPolicy::ConsistentHash, &[0]).select(Some(1), &[]),
            None
        );
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let c = cluster(LbPolicy::ConsistentHash, &[1, 1, 1, 1]);
        let mut seen = [0; 4];
        for k in 0..400u64 {
            let key = hash_key(&k.to_le_bytes());
            let first = c.select(Some(key), &[]).unwrap();
            assert_eq!(c.select(Some(key), &[]), Some(first));
            seen[first] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread {seen:?}");
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        c.endpoints[0].active.store(100, Ordering::Relaxed);
        let picks = (0..200).filter(|_| c.select(None, &[]) == Some(1)).count();
        // Drawn without replacement: with two endpoints both are compared.
        assert_eq!(picks, 200, "idle endpoint picked {picks}/200");
    }

    #[test]
    fn retry_budget_has_a_floor_and_a_ratio() {
        let c = cluster(LbPolicy::Random, &[1]);
        c.active_requests.store(100, Ordering::Relaxed);
        c.active_retries.store(19, Ordering::Relaxed);
        assert!(c.retry_allowed());
        c.active_retries.store(20, Ordering::Relaxed);
        assert!(!c.retry_allowed());
        c.active_requests.store(1, Ordering::Relaxed);
        c.active_retries.store(2, Ordering::Relaxed);
        assert!(c.retry_allowed(), "floor of 3 concurrent retries");
    }
}
