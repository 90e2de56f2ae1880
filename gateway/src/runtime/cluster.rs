//! Upstream clusters: endpoints, locality priorities, load balancing, peer
//! templates, retry budget and circuit breaking.
//!
//! Selection takes no lock. Each pick first chooses a locality priority by
//! Envoy's load formula (see [`super::locality`]) from endpoint health, then
//! balances within it: round robin walks a precomputed weighted schedule of
//! that priority with one atomic counter, least-request compares two
//! weighted random draws, and consistent hashing is weighted rendezvous
//! hashing (every key sticks to one endpoint; removing an endpoint moves only
//! its keys).

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use super::health::{now_ms, EndpointHealth};
use super::locality::{priority_loads, Priority, PRIORITIES};
use crate::config::{
    CircuitBreaker, HashOn, HealthCheck, LbPolicy, Locality, LocalityMode, LocalityPolicy,
    OutlierDetection, RetryBudget,
};

/// One upstream endpoint and its live state.
pub struct Endpoint {
    /// Resolved address.
    pub addr: SocketAddr,
    /// The address as written in the config (for logs).
    pub label: String,
    /// Relative weight; 0 = out of rotation.
    pub weight: u32,
    /// Where the endpoint runs.
    pub locality: Locality,
    /// Its priority seen from this gateway.
    pub priority: Priority,
    /// Active and passive health.
    pub health: EndpointHealth,
    /// Requests currently using this endpoint (least-request LB).
    pub active: AtomicU64,
    /// Peer with every connection option set; cloned per try.
    pub peer: HttpPeer,
    /// The `hostname:port` entry DNS discovery found this address for;
    /// `None` for a static endpoint.
    pub discovered_from: Option<Arc<str>>,
    /// Stable hash of the address, for rendezvous hashing.
    addr_hash: u64,
}

/// How a cluster balances and protects itself.
pub struct ClusterPolicies {
    /// Balancing policy.
    pub lb: LbPolicy,
    /// Consistent-hash key.
    pub hash_on: HashOn,
    /// Default per-read upstream timeout.
    pub read_timeout: Duration,
    /// Retry budget.
    pub retry_budget: RetryBudget,
    /// Locality policy.
    pub locality: LocalityPolicy,
    /// Active health checks.
    pub health_check: Option<HealthCheck>,
    /// Outlier detection.
    pub outlier: Option<OutlierDetection>,
    /// Circuit-breaker limits.
    pub breaker: Option<CircuitBreaker>,
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
    /// Locality policy.
    pub locality: LocalityPolicy,
    /// Active health checks (run by [`super::health::start_checks`]).
    pub health_check: Option<HealthCheck>,
    /// Whether the active checks run.
    pub checks_started: AtomicBool,
    /// Outlier detection.
    pub outlier: Option<OutlierDetection>,
    /// Circuit-breaker limits.
    pub breaker: Option<CircuitBreaker>,
    // The request counters are shared by every endpoint set of a
    // DNS-discovered cluster (see `with_endpoints`), so breaker and budget
    // keep counting the requests still running on a replaced set.
    /// Requests in flight to this cluster (retry budget base, breaker).
    pub active_requests: Arc<AtomicU64>,
    /// Requests in flight that are being retried.
    pub active_retries: Arc<AtomicU64>,
    /// Requests waiting for an upstream connection.
    pub pending: Arc<AtomicU64>,
    /// Upstream connections carrying a request.
    pub connections_in_use: Arc<AtomicU64>,
    /// Budget: retries may be this fraction of active requests.
    pub budget_ratio: f64,
    /// Budget floor.
    pub min_retry_concurrency: u64,
    /// Metric handles of this cluster.
    pub metrics: crate::metrics::handles::ClusterMetrics,
    /// DNS discovery: the current endpoint set and its refresh state.
    /// `None` for a static cluster, and for the endpoint sets discovery
    /// publishes (routes hold the cluster that has it; see [`Cluster::current`]).
    pub discovery: Option<Box<crate::discovery::Discovery>>,
    /// DNS discovery published a newer endpoint set, or a reload replaced
    /// the cluster: its health checks (and refreshes) stop.
    pub retired: AtomicBool,
    /// When this endpoint set was built (admin `/clusters`).
    pub built_at: SystemTime,
    /// Weighted round-robin schedules: all endpoints, then per priority.
    schedules: [Vec<usize>; PRIORITIES + 1],
    rr_next: [AtomicUsize; PRIORITIES + 1],
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
/// is large, keeping the schedule short. Entries index `weights`.
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

/// A picked endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    /// Endpoint index.
    pub index: usize,
    /// Its priority.
    pub priority: Priority,
}

impl Cluster {
    /// Builds a cluster from resolved endpoints.
    pub fn new(
        fingerprint: u64,
        name: &str,
        endpoints: Vec<Arc<Endpoint>>,
        p: ClusterPolicies,
    ) -> Self {
        let members = |prio: Option<Priority>| -> Vec<usize> {
            (0..endpoints.len())
                .filter(|&i| prio.is_none_or(|p| endpoints[i].priority == p))
                .collect()
        };
        let schedule_of = |idx: Vec<usize>| -> Vec<usize> {
            let weights: Vec<u32> = idx.iter().map(|&i| endpoints[i].weight).collect();
            smooth_schedule(&weights)
                .into_iter()
                .map(|k| idx[k])
                .collect()
        };
        let schedules = [
            schedule_of(members(None)),
            schedule_of(members(Some(Priority::Zone))),
            schedule_of(members(Some(Priority::Region))),
            schedule_of(members(Some(Priority::Remote))),
        ];
        let name: Arc<str> = name.into();
        Cluster {
            metrics: crate::metrics::handles::ClusterMetrics::new(name.clone()),
            name,
            fingerprint,
            schedules,
            rr_next: Default::default(),
            endpoints,
            lb: p.lb,
            hash_on: p.hash_on,
            read_timeout: p.read_timeout,
            locality: p.locality,
            health_check: p.health_check,
            checks_started: AtomicBool::new(false),
            outlier: p.outlier,
            breaker: p.breaker,
            active_requests: Default::default(),
            active_retries: Default::default(),
            pending: Default::default(),
            connections_in_use: Default::default(),
            discovery: None,
            retired: AtomicBool::new(false),
            built_at: SystemTime::now(),
            budget_ratio: p.retry_budget.budget_percent / 100.0,
            min_retry_concurrency: p.retry_budget.min_retry_concurrency as u64,
        }
    }

    /// The endpoint set requests use now: this cluster itself, or for a
    /// DNS-discovered one the set its discovery published last. A request
    /// takes it once and keeps it, so endpoint indices stay valid for all
    /// its tries. Static clusters pay one branch.
    pub fn current(self: &Arc<Self>) -> Arc<Cluster> {
        match &self.discovery {
            None => self.clone(),
            Some(d) => d.current(),
        }
    }

    /// Marks a cluster a reload replaced or removed: its DNS refreshes and
    /// health checks stop even while requests (a long tunnel) still hold it.
    pub fn retire(self: &Arc<Self>) {
        self.retired.store(true, Ordering::Relaxed);
        self.current().retired.store(true, Ordering::Relaxed);
    }

    /// A cluster with this one's policies, request counters and metric
    /// series over `endpoints` (an endpoint set DNS discovery publishes).
    pub fn with_endpoints(&self, endpoints: Vec<Arc<Endpoint>>) -> Cluster {
        let mut c = Cluster::new(
            self.fingerprint,
            &self.name,
            endpoints,
            ClusterPolicies {
                lb: self.lb,
                hash_on: self.hash_on.clone(),
                read_timeout: self.read_timeout,
                retry_budget: RetryBudget::default(),
                locality: self.locality.clone(),
                health_check: self.health_check.clone(),
                outlier: self.outlier.clone(),
                breaker: self.breaker.clone(),
            },
        );
        c.budget_ratio = self.budget_ratio;
        c.min_retry_concurrency = self.min_retry_concurrency;
        c.active_requests = self.active_requests.clone();
        c.active_retries = self.active_retries.clone();
        c.pending = self.pending.clone();
        c.connections_in_use = self.connections_in_use.clone();
        c
    }

    fn eligible(&self, i: usize, exclude: &[usize]) -> bool {
        self.endpoints[i].weight > 0 && !exclude.contains(&i)
    }

    /// Picks an endpoint: a locality priority by health (Envoy's loads),
    /// then the LB policy within it, avoiding `exclude` (endpoints that
    /// already failed this request) when another one exists. `hash` is the
    /// consistent-hash key, if the policy uses one.
    pub fn select(&self, hash: Option<u64>, exclude: &[usize]) -> Option<Pick> {
        let now = now_ms();
        let mut healthy = [0.0; PRIORITIES];
        let mut total = [0.0; PRIORITIES];
        for e in &self.endpoints {
            let p = e.priority as usize;
            total[p] += e.weight as f64;
            if e.health.available(now) {
                healthy[p] += e.weight as f64;
            }
        }
        let loads = priority_loads(healthy, total, &self.locality);
        let local_only = self.locality.mode == LocalityMode::LocalOnly;
        let in_scope = |i: usize| !local_only || self.endpoints[i].priority == Priority::Zone;
        let available = |i: usize| self.endpoints[i].health.available(now);
        let index = if loads.panic {
            // Too little healthy capacity: health is ignored.
            self.pick(None, hash, |i| in_scope(i) && self.eligible(i, exclude))
                .or_else(|| self.pick(None, hash, |i| in_scope(i) && self.eligible(i, &[])))
        } else {
            let r = fastrand::f64();
            let mut acc = 0.0;
            let mut chosen = (0..PRIORITIES)
                .rev()
                .find(|&p| loads.share[p] > 0.0)
                .unwrap_or(0);
            for p in 0..PRIORITIES {
                acc += loads.share[p];
                if loads.share[p] > 0.0 && r < acc {
                    chosen = p;
                    break;
                }
            }
            let prio = Priority::from_index(chosen);
            self.pick(Some(prio), hash, |i| {
                self.endpoints[i].priority == prio && available(i) && self.eligible(i, exclude)
            })
            .or_else(|| {
                self.pick(None, hash, |i| {
                    in_scope(i) && available(i) && self.eligible(i, exclude)
                })
            })
            .or_else(|| {
                self.pick(None, hash, |i| {
                    in_scope(i) && available(i) && self.eligible(i, &[])
                })
            })
        }?;
        Some(Pick {
            index,
            priority: self.endpoints[index].priority,
        })
    }

    /// The LB policy over the endpoints `allowed` accepts. `prio` selects
    /// the round-robin schedule (`None` = all endpoints).
    fn pick(
        &self,
        prio: Option<Priority>,
        hash: Option<u64>,
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        match self.lb {
            LbPolicy::RoundRobin => {
                let slot = prio.map_or(0, |p| p as usize + 1);
                let schedule = &self.schedules[slot];
                let len = schedule.len();
                if len == 0 {
                    return None;
                }
                let start = self.rr_next[slot].fetch_add(1, Ordering::Relaxed);
                let in_slot = |i: usize| prio.is_none_or(|p| self.endpoints[i].priority == p);
                let weight = |i: usize| self.endpoints[i].weight as u64;
                let (mut full, mut open) = (0u64, 0u64);
                for i in (0..self.endpoints.len()).filter(|&i| in_slot(i)) {
                    full += weight(i);
                    if allowed(i) {
                        open += weight(i);
                    }
                }
                if open == full {
                    return Some(schedule[start % len]);
                }
                // Some endpoints are out (unhealthy, ejected, tried): skipping
                // them in the schedule would hand their turns to their
                // successors, so rotate over the remaining weight instead.
                if open == 0 {
                    return None;
                }
                let mut pos = start as u64 % open;
                (0..self.endpoints.len())
                    .filter(|&i| in_slot(i) && allowed(i))
                    .find(|&i| {
                        if pos < weight(i) {
                            return true;
                        }
                        pos -= weight(i);
                        false
                    })
            }
            LbPolicy::Random => self.weighted_random(&allowed, None),
            LbPolicy::LeastRequest => {
                // Power of two choices, drawn without replacement so that
                // two endpoints always compare both.
                let a = self.weighted_random(&allowed, None)?;
                let Some(b) = self.weighted_random(&allowed, Some(a)) else {
                    return Some(a);
                };
                let load = |i: usize| self.endpoints[i].active.load(Ordering::Relaxed);
                Some(if load(b) < load(a) { b } else { a })
            }
            LbPolicy::ConsistentHash => {
                let key = hash.unwrap_or(0);
                (0..self.endpoints.len())
                    .filter(|&i| allowed(i))
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

    /// A weighted random endpoint among those `allowed` accepts (one pass).
    fn weighted_random(
        &self,
        allowed: &impl Fn(usize) -> bool,
        except: Option<usize>,
    ) -> Option<usize> {
        let ok = |i: usize| allowed(i) && Some(i) != except && self.endpoints[i].weight > 0;
        let total: u64 = (0..self.endpoints.len())
            .filter(|&i| ok(i))
            .map(|i| self.endpoints[i].weight as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = fastrand::u64(0..total);
        for i in (0..self.endpoints.len()).filter(|&i| ok(i)) {
            let w = self.endpoints[i].weight as u64;
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }

    /// Whether one more retry fits the budget (Envoy semantics: retries in
    /// flight at most `budget_percent` of active requests, but never fewer
    /// than `min_retry_concurrency`).
    pub fn retry_allowed(&self) -> bool {
        let active = self.active_requests.load(Ordering::Relaxed) as f64;
        let limit = ((active * self.budget_ratio) as u64).max(self.min_retry_concurrency);
        self.active_retries.load(Ordering::Relaxed) < limit
    }

    /// Admits a request under `max_requests`, counting it as active; on
    /// `false` the request must be refused (nothing was counted).
    pub fn admit_request(&self) -> bool {
        let n = self.active_requests.fetch_add(1, Ordering::AcqRel) + 1;
        match self.breaker.as_ref().and_then(|b| b.max_requests) {
            Some(max) if n > max => {
                self.active_requests.fetch_sub(1, Ordering::AcqRel);
                false
            }
            _ => true,
        }
    }

    /// Admits a request into the "waiting for a connection" state under
    /// `max_pending` and `max_connections`; on `false` nothing was counted.
    pub fn admit_pending(&self) -> bool {
        let Some(b) = &self.breaker else {
            self.pending.fetch_add(1, Ordering::AcqRel);
            return true;
        };
        let pending = self.pending.fetch_add(1, Ordering::AcqRel) + 1;
        let over_pending = b.max_pending.is_some_and(|m| pending > m);
        let over_conns = b
            .max_connections
            .is_some_and(|m| self.connections_in_use.load(Ordering::Acquire) + pending > m);
        if over_pending || over_conns {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl Endpoint {
    /// Builds an endpoint with its peer template.
    pub fn new(
        addr: SocketAddr,
        label: String,
        weight: u32,
        locality: Locality,
        priority: Priority,
        initially_healthy: bool,
        peer: HttpPeer,
    ) -> Self {
        Endpoint {
            addr_hash: stable_hash(&label),
            addr,
            label,
            weight,
            locality,
            priority,
            health: EndpointHealth::new(initially_healthy),
            active: AtomicU64::new(0),
            peer,
            discovered_from: None,
        }
    }

    /// Marks the endpoint as found by DNS discovery for `entry`
    /// (`hostname:port`).
    pub fn discovered_from(mut self, entry: Arc<str>) -> Self {
        self.discovered_from = Some(entry);
        self
    }
}

/// Hash of a consistent-hash key.
pub fn hash_key(key: &[u8]) -> u64 {
    stable_hash(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamProtocol;

    fn settings() -> PeerSettings {
        PeerSettings {
            tls_sni: None,
            ca: None,
            client_cert: None,
            protocol: UpstreamProtocol::Http1,
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            group_key: 0,
        }
    }

    fn policies(lb: LbPolicy) -> ClusterPolicies {
        ClusterPolicies {
            lb,
            hash_on: HashOn::default(),
            read_timeout: Duration::from_secs(1),
            retry_budget: RetryBudget::default(),
            locality: LocalityPolicy::default(),
            health_check: None,
            outlier: None,
            breaker: None,
        }
    }

    fn cluster_with(lb: LbPolicy, eps: &[(u32, Priority)]) -> Cluster {
        let eps = eps
            .iter()
            .enumerate()
            .map(|(i, (w, p))| {
                let addr: SocketAddr = format!("127.0.0.1:{}", 9000 + i).parse().unwrap();
                Arc::new(Endpoint::new(
                    addr,
                    addr.to_string(),
                    *w,
                    Locality::default(),
                    *p,
                    true,
                    settings().peer(addr),
                ))
            })
            .collect();
        Cluster::new(0, "c", eps, policies(lb))
    }

    fn cluster(lb: LbPolicy, weights: &[u32]) -> Cluster {
        let eps: Vec<_> = weights.iter().map(|w| (*w, Priority::Zone)).collect();
        cluster_with(lb, &eps)
    }

    fn pick(c: &Cluster, hash: Option<u64>, exclude: &[usize]) -> Option<usize> {
        c.select(hash, exclude).map(|p| p.index)
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
            assert_ne!(pick(&c, None, &[1]), Some(1));
        }
        // Everything excluded: fall back to any endpoint rather than fail.
        assert!(pick(&c, None, &[0, 1, 2]).is_some());
    }

    #[test]
    fn round_robin_is_even_within_the_local_priority() {
        let c = cluster_with(
            LbPolicy::RoundRobin,
            &[
                (1, Priority::Remote),
                (1, Priority::Zone),
                (1, Priority::Region),
                (1, Priority::Zone),
            ],
        );
        let mut seen = [0; 4];
        for _ in 0..100 {
            seen[pick(&c, None, &[]).unwrap()] += 1;
        }
        assert_eq!(seen, [0, 50, 0, 50]);
    }

    #[test]
    fn round_robin_stays_even_when_endpoints_are_out() {
        let c = cluster(LbPolicy::RoundRobin, &[1, 1, 1, 1]);
        let mut seen = [0; 4];
        for _ in 0..200 {
            seen[pick(&c, None, &[1, 2]).unwrap()] += 1;
        }
        assert_eq!(seen, [100, 0, 0, 100]);
    }

    #[test]
    fn zero_weight_clusters_have_no_endpoint() {
        assert_eq!(pick(&cluster(LbPolicy::Random, &[0, 0]), None, &[]), None);
        assert_eq!(
            pick(&cluster(LbPolicy::ConsistentHash, &[0]), Some(1), &[]),
            None
        );
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let c = cluster(LbPolicy::ConsistentHash, &[1, 1, 1, 1]);
        let mut seen = [0; 4];
        for k in 0..400u64 {
            let key = hash_key(&k.to_le_bytes());
            let first = pick(&c, Some(key), &[]).unwrap();
            assert_eq!(pick(&c, Some(key), &[]), Some(first));
            seen[first] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "uneven spread {seen:?}");
    }

    #[test]
    fn least_request_prefers_idle_endpoints() {
        let c = cluster(LbPolicy::LeastRequest, &[1, 1]);
        c.endpoints[0].active.store(100, Ordering::Relaxed);
        let picks = (0..200).filter(|_| pick(&c, None, &[]) == Some(1)).count();
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

    #[test]
    fn circuit_breaker_caps_active_requests() {
        let mut p = policies(LbPolicy::Random);
        p.breaker = Some(CircuitBreaker {
            max_requests: Some(2),
            ..Default::default()
        });
        let c = Cluster::new(0, "c", Vec::new(), p);
        assert!(c.admit_request() && c.admit_request());
        assert!(!c.admit_request());
        assert_eq!(c.active_requests.load(Ordering::Relaxed), 2);
    }
}
