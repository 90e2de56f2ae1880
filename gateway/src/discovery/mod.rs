//! DNS discovery of cluster endpoints (Envoy's `STRICT_DNS` and
//! `LOGICAL_DNS`).
//!
//! A cluster with `discovery` keeps its `hostname:port` endpoints resolved:
//! a background task on the discovery thread asks the resolver again every
//! `refresh` (or at the answer's TTL, with jitter) and, when the addresses
//! changed, publishes a new endpoint set with one `arc-swap` store. The
//! request path never resolves or waits: it takes the current set once per
//! request ([`crate::runtime::cluster::Cluster::current`]); static clusters
//! have no set to swap and pay one branch.
//!
//! Endpoints are keyed by address: one that is still answered keeps its
//! `Endpoint` (health, outlier ejection, active requests). A failed lookup
//! keeps the name's last addresses; it is counted, logged and shown in
//! admin `/clusters`. An empty answer counts as a failure too, so DNS alone
//! never takes a cluster to zero endpoints.

mod endpoints;
pub mod metrics;
mod refresh;
mod resolver;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use serde::Serialize;

pub use resolver::{parse_nameserver, Answer, ResolveError, Resolver};

use crate::config::{DiscoveryKind, Locality};
use crate::runtime::cluster::{Cluster, Endpoint, PeerSettings};
use crate::runtime::locality::Priority;

/// One `hostname:port` endpoint of a discovery cluster, with the settings
/// every address found for it inherits.
pub struct DnsEntry {
    /// Index of the endpoint in the cluster's config (for positions).
    pub index: usize,
    /// The name looked up.
    pub host: String,
    /// The port of every address found.
    pub port: u16,
    /// `hostname:port` as written.
    pub label: Arc<str>,
    /// Weight of each address.
    pub weight: u32,
    /// Locality of each address.
    pub locality: Locality,
    /// Its priority seen from this gateway.
    pub priority: Priority,
    /// Health before the first active check.
    pub initially_healthy: bool,
}

/// What a discovery cluster resolves and how it builds endpoints.
pub struct DiscoverySpec {
    /// Strict or logical.
    pub kind: DiscoveryKind,
    /// Time between lookups.
    pub refresh: Duration,
    /// Next lookup at the answer's TTL instead of `refresh`.
    pub respect_ttl: bool,
    /// Random extra delay, percent of the interval.
    pub jitter_percent: u32,
    /// The names.
    pub entries: Vec<DnsEntry>,
    /// `ip:port` endpoints of the same cluster, in every set.
    pub static_endpoints: Vec<Arc<Endpoint>>,
    /// Connection settings of new endpoints.
    pub peer: PeerSettings,
}

/// Refresh state of a discovery cluster, as admin `/clusters` shows it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    /// When the last refresh finished (RFC 3339).
    pub last_refresh: Option<String>,
    /// When every name last resolved (RFC 3339).
    pub last_success: Option<String>,
    /// The last failure, `hostname:port: reason`.
    pub last_error: Option<String>,
    /// When it happened (RFC 3339).
    pub last_error_at: Option<String>,
    /// Refreshes in a row with a failed lookup.
    pub consecutive_failures: u64,
    /// Refreshes done.
    pub refreshes: u64,
    /// Endpoint-set changes published.
    pub changes: u64,
}

struct State {
    /// Last good addresses of each entry.
    addrs: Vec<Vec<IpAddr>>,
    /// Delay before the next refresh (without jitter).
    next: Duration,
    status: Status,
}

/// The discovery of one cluster: its spec, resolver, current endpoint set
/// and refresh state. Lives in the cluster routes hold.
pub struct Discovery {
    spec: DiscoverySpec,
    resolver: Resolver,
    current: ArcSwap<Cluster>,
    state: Mutex<State>,
    started: AtomicBool,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Discovery {
    /// Discovery for `spec`, serving `initial` (the static endpoints of the
    /// cluster) until [`Discovery::resolve_initial`].
    pub fn new(spec: DiscoverySpec, resolver: Resolver, initial: Cluster) -> Self {
        let state = State {
            addrs: vec![Vec::new(); spec.entries.len()],
            next: spec.refresh,
            status: Status::default(),
        };
        Discovery {
            spec,
            resolver,
            current: ArcSwap::from_pointee(initial),
            state: Mutex::new(state),
            started: AtomicBool::new(false),
        }
    }

    /// The endpoint set requests use now.
    pub fn current(&self) -> Arc<Cluster> {
        self.current.load_full()
    }

    /// The spec (admin `/clusters`).
    pub fn spec(&self) -> &DiscoverySpec {
        &self.spec
    }

    /// The refresh state (admin `/clusters`).
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The addresses each entry (`hostname:port`) uses now.
    pub fn addresses(&self) -> Vec<(Arc<str>, Vec<IpAddr>)> {
        let st = self.lock();
        let labels = self.spec.entries.iter().map(|e| e.label.clone());
        labels.zip(st.addrs.iter().cloned()).collect()
    }

    /// Starts the entries that `previous` also has (a reload changed the
    /// cluster) from its addresses, so that a first lookup that fails
    /// keeps them rather than starting the cluster empty.
    pub fn seed(&self, previous: &[(Arc<str>, Vec<IpAddr>)]) {
        let mut st = self.lock();
        for (i, e) in self.spec.entries.iter().enumerate() {
            if let Some((_, addrs)) = previous.iter().find(|(l, _)| *l == e.label) {
                st.addrs[i] = addrs.clone();
            }
        }
    }

    /// The first lookup, when the config is compiled (blocking, off the
    /// request path; `head` is the cluster this discovery belongs to).
    /// Returns the entries that failed (config index, message): the
    /// cluster starts without them and the refreshes keep trying.
    pub fn resolve_initial(&self, head: &Cluster) -> Vec<(usize, String)> {
        let resolver = self.resolver.clone();
        let hosts: Vec<String> = self.spec.entries.iter().map(|e| e.host.clone()).collect();
        let answers =
            block_on(async move { lookup_all(&resolver, &hosts).await }).unwrap_or_else(|| {
                (0..self.spec.entries.len())
                    .map(|_| {
                        Err(ResolveError::Lookup(
                            "the discovery thread is not running".into(),
                        ))
                    })
                    .collect()
            });
        let failed = self.apply(head, answers, true);
        failed
            .into_iter()
            .map(|(i, msg)| (self.spec.entries[i].index, msg))
            .collect()
    }

    /// Applies one round of answers (one per entry): updates the addresses
    /// of the entries that resolved, publishes a new endpoint set if it
    /// changed, records the status and metrics. The `initial` lookup (at
    /// load) fills the set without counting changes: the metrics count
    /// what refreshes changed. Returns the failed entries (entry index,
    /// message).
    fn apply(
        &self,
        head: &Cluster,
        answers: Vec<Result<Answer, ResolveError>>,
        initial: bool,
    ) -> Vec<(usize, String)> {
        let now = SystemTime::now();
        let m = &crate::metrics::METRICS.discovery;
        let mut st = self.lock();
        let mut failed = Vec::new();
        let mut ttl: Option<Duration> = None;
        for (i, answer) in answers.into_iter().enumerate() {
            let entry = &self.spec.entries[i];
            match answer {
                Ok(a) => {
                    st.addrs[i] = endpoints::next_addrs(self.spec.kind, &st.addrs[i], &a.addrs);
                    ttl = Some(ttl.map_or(a.ttl, |t| t.min(a.ttl)));
                }
                Err(e) => failed.push((i, format!("{}: {e}", entry.label))),
            }
        }
        st.status.refreshes += 1;
        st.status.last_refresh = Some(rfc3339(now));
        if failed.is_empty() {
            st.status.last_success = Some(rfc3339(now));
            st.status.consecutive_failures = 0;
        } else {
            st.status.consecutive_failures += 1;
            st.status.last_error_at = Some(rfc3339(now));
            st.status.last_error = failed.last().map(|(_, msg)| msg.clone());
            m.errors
                .with_label_values(&[&*head.name])
                .inc_by(failed.len() as u64);
            for (_, msg) in &failed {
                tracing::warn!(cluster = %head.name, "DNS lookup failed, keeping the last endpoints: {msg}");
            }
        }
        st.next = match (self.spec.respect_ttl, ttl) {
            (true, Some(t)) if failed.is_empty() => t.max(Duration::from_secs(1)),
            _ => self.spec.refresh,
        };
        let old = self.current.load_full();
        let eps = endpoints::build(&self.spec, &st.addrs, &old.endpoints);
        let changed = eps.len() != old.endpoints.len()
            || eps
                .iter()
                .zip(&old.endpoints)
                .any(|(a, b)| a.addr != b.addr);
        m.endpoints
            .with_label_values(&[&*head.name])
            .set(eps.len() as i64);
        if changed && !initial {
            let (added, removed) = endpoints::diff(&old.endpoints, &eps);
            let changes = &m.changes;
            changes
                .with_label_values(&[&*head.name, "added"])
                .inc_by(added);
            changes
                .with_label_values(&[&*head.name, "removed"])
                .inc_by(removed);
            st.status.changes += 1;
            let addrs: Vec<String> = eps.iter().map(|e| e.addr.to_string()).collect();
            tracing::info!(cluster = %head.name, added, removed, endpoints = ?addrs, "DNS discovery changed the endpoints");
        }
        if changed {
            let new = Arc::new(head.with_endpoints(eps));
            self.current.store(new.clone());
            old.retired.store(true, Ordering::Relaxed);
            if self.started.load(Ordering::Relaxed) {
                crate::runtime::health::start_checks(&new);
            }
        }
        failed
    }

    /// Delay before the next refresh, jitter included.
    fn next_delay(&self) -> Duration {
        let base = self.lock().next;
        let jitter = base.as_millis() as u64 * self.spec.jitter_percent as u64 / 100;
        base + Duration::from_millis(if jitter > 0 {
            fastrand::u64(0..=jitter)
        } else {
            0
        })
    }
}

/// Looks every host up at once (names of one cluster do not wait for
/// each other's timeouts); answers in the order of `hosts`.
async fn lookup_all(resolver: &Resolver, hosts: &[String]) -> Vec<Result<Answer, ResolveError>> {
    let tasks: Vec<_> = hosts
        .iter()
        .map(|h| {
            let (r, h) = (resolver.clone(), h.clone());
            tokio::spawn(async move { r.lookup(&h).await })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .unwrap_or_else(|e| Err(ResolveError::Lookup(e.to_string()))),
        );
    }
    out
}

/// Makes `cluster` (built with no endpoints) DNS-discovered: its discovery
/// serves the static endpoints of `spec` until the first lookup
/// ([`Discovery::resolve_initial`]).
pub fn attach(mut cluster: Cluster, spec: DiscoverySpec, resolver: Resolver) -> Cluster {
    let initial = cluster.with_endpoints(spec.static_endpoints.clone());
    cluster.discovery = Some(Box::new(Discovery::new(spec, resolver, initial)));
    cluster
}

/// Starts the refreshes of `cluster` if it is DNS-discovered and they are
/// not running yet. The task holds the cluster weakly and ends when a
/// reload has dropped it.
pub fn start(cluster: &Arc<Cluster>) {
    let Some(d) = &cluster.discovery else { return };
    if d.started.swap(true, Ordering::Relaxed) {
        return;
    }
    let Some(rt) = discovery_runtime() else {
        tracing::error!(cluster = %cluster.name, "DNS discovery disabled: no discovery thread");
        return;
    };
    rt.spawn(refresh::run(Arc::downgrade(cluster)));
}

/// The runtime of the discovery thread, started on first use.
fn discovery_runtime() -> Option<&'static tokio::runtime::Handle> {
    static HANDLE: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("dns-discovery".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => {
                            let _ = tx.send(Some(rt.handle().clone()));
                            rt.block_on(std::future::pending::<()>());
                        }
                        Err(e) => {
                            tracing::error!("DNS discovery disabled: {e}");
                            let _ = tx.send(None);
                        }
                    }
                });
            spawned.ok().and_then(|_| rx.recv().ok().flatten())
        })
        .as_ref()
}

/// Runs `f` on the discovery thread and waits for it (at most a minute, a
/// bound far above any resolver timeout). Callers are off the request path
/// (config compile) and may themselves be inside a Tokio runtime, which is
/// why the future does not run on the calling thread.
fn block_on<F>(f: F) -> Option<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = discovery_runtime()?;
    let (tx, rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv_timeout(Duration::from_secs(60)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DnsResolver, UpstreamProtocol};
    use crate::runtime::cluster::ClusterPolicies;

    fn head() -> Cluster {
        let spec = DiscoverySpec {
            kind: DiscoveryKind::StrictDns,
            refresh: Duration::from_secs(1),
            respect_ttl: true,
            jitter_percent: 0,
            entries: vec![DnsEntry {
                index: 0,
                host: "api.test".into(),
                port: 80,
                label: "api.test:80".into(),
                weight: 1,
                locality: Locality::default(),
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
        };
        let dns = DnsResolver {
            nameservers: vec!["127.0.0.1:9".into()],
            ..Default::default()
        };
        let policies = ClusterPolicies {
            lb: Default::default(),
            hash_on: Default::default(),
            read_timeout: Duration::from_secs(1),
            retry_budget: Default::default(),
            locality: Default::default(),
            health_check: None,
            outlier: None,
            breaker: None,
        };
        let resolver = Resolver::new(&dns).expect("resolver");
        attach(
            Cluster::new(0, "unit-dns", Vec::new(), policies),
            spec,
            resolver,
        )
    }

    fn answer(ips: &[&str], ttl: u64) -> Result<Answer, ResolveError> {
        Ok(Answer {
            addrs: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ttl: Duration::from_secs(ttl),
        })
    }

    #[test]
    fn refreshes_publish_sets_that_share_counters_and_kept_endpoints() {
        let head = Arc::new(head());
        let d = head.discovery.as_deref().expect("discovery");
        assert!(head.current().endpoints.is_empty());
        d.apply(&head, vec![answer(&["10.0.0.1", "10.0.0.2"], 30)], true);
        let first = head.current();
        assert_eq!(first.endpoints.len(), 2);
        assert!(first.discovery.is_none(), "a set is not a discovery head");
        head.active_requests.fetch_add(1, Ordering::Relaxed);
        assert_eq!(first.active_requests.load(Ordering::Relaxed), 1, "shared");
        assert_eq!(d.lock().next, Duration::from_secs(30), "respect_ttl");

        // Failure: the set stays, the interval falls back to `refresh`.
        let err = Err(ResolveError::Lookup("timed out".into()));
        assert_eq!(d.apply(&head, vec![err], false).len(), 1);
        assert!(Arc::ptr_eq(&first, &head.current()));
        assert_eq!(d.status().consecutive_failures, 1);
        assert_eq!(d.lock().next, Duration::from_secs(1));

        d.apply(&head, vec![answer(&["10.0.0.2", "10.0.0.3"], 0)], false);
        let second = head.current();
        assert!(first.retired.load(Ordering::Relaxed), "old set retired");
        assert!(Arc::ptr_eq(&first.endpoints[1], &second.endpoints[0]));
        assert_eq!(d.lock().next, Duration::from_secs(1), "TTL 0: at least 1 s");
        assert_eq!(d.status().changes, 1);
        assert_eq!(d.status().consecutive_failures, 0);
        assert!(d.status().last_error.is_some(), "kept for /clusters");
    }
}
