//! Endpoint health: active checks (HTTP or TCP, on a background runtime) and
//! passive outlier detection (consecutive 5xx or connect failures eject an
//! endpoint for `base_ejection_time` x ejections, capped). State lives in the
//! endpoint, so it survives reloads together with an unchanged cluster.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cluster::Cluster;
use crate::config::{HealthCheck, HealthCheckKind, OutlierDetection};
use crate::metrics::METRICS;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since process start (monotonic).
pub fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// Health state of one endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    /// Result of active checks (true without checks).
    active_healthy: AtomicBool,
    check_streak: AtomicU32,
    /// Ejected until this time (`now_ms`); 0 = not ejected.
    ejected_until: AtomicU64,
    ejections: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_connect_failures: AtomicU32,
}

impl EndpointHealth {
    /// A fresh state; `healthy` is the `initially_healthy` setting.
    pub fn new(healthy: bool) -> Self {
        EndpointHealth {
            active_healthy: AtomicBool::new(healthy),
            check_streak: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_connect_failures: AtomicU32::new(0),
        }
    }

    /// Whether the endpoint may take traffic at `now`.
    pub fn available(&self, now: u64) -> bool {
        self.active_healthy.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// Whether outlier detection has ejected it at `now`.
    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    /// Whether the last active checks found it healthy.
    pub fn actively_healthy(&self) -> bool {
        self.active_healthy.load(Ordering::Relaxed)
    }

    /// Until when (`now_ms`) outlier detection ejected it; 0 = never.
    pub fn ejected_until_ms(&self) -> u64 {
        self.ejected_until.load(Ordering::Relaxed)
    }

    /// How many times it was ejected.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Records an active check result against the thresholds.
    fn record_check(&self, ok: bool, hc: &HealthCheck) -> Option<bool> {
        let healthy = self.active_healthy.load(Ordering::Relaxed);
        if ok == healthy {
            self.check_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.check_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if ok {
            hc.healthy_threshold
        } else {
            hc.unhealthy_threshold
        };
        if streak >= needed.max(1) {
            self.active_healthy.store(ok, Ordering::Relaxed);
            self.check_streak.store(0, Ordering::Relaxed);
            return Some(ok);
        }
        None
    }
}

/// What an upstream try told outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryResult {
    /// Connected and answered below 500.
    Success,
    /// Answered 5xx.
    ServerError,
    /// Could not connect.
    ConnectFailure,
    /// Connected (no verdict on the response yet).
    Connected,
}

/// Feeds a try result to outlier detection; ejects the endpoint when a
/// threshold is crossed and the cluster's ejection cap allows.
pub fn record_try(cluster: &Cluster, idx: usize, result: TryResult) {
    let Some(od) = &cluster.outlier else { return };
    let Some(ep) = cluster.endpoints.get(idx) else {
        return;
    };
    let h = &ep.health;
    let tripped = match result {
        TryResult::Success => {
            h.consecutive_5xx.store(0, Ordering::Relaxed);
            h.consecutive_connect_failures.store(0, Ordering::Relaxed);
            false
        }
        TryResult::Connected => {
            h.consecutive_connect_failures.store(0, Ordering::Relaxed);
            false
        }
        TryResult::ServerError => {
            od.consecutive_5xx > 0
                && h.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1 >= od.consecutive_5xx
        }
        TryResult::ConnectFailure => {
            od.consecutive_connect_failures > 0
                && h.consecutive_connect_failures
                    .fetch_add(1, Ordering::Relaxed)
                    + 1
                    >= od.consecutive_connect_failures
        }
    };
    if tripped {
        try_eject(cluster, idx, od);
    }
}

fn try_eject(cluster: &Cluster, idx: usize, od: &OutlierDetection) {
    let now = now_ms();
    let ep = &cluster.endpoints[idx];
    if ep.health.is_ejected(now) {
        return;
    }
    let ejected = cluster
        .endpoints
        .iter()
        .filter(|e| e.health.is_ejected(now))
        .count();
    let cap = cluster.endpoints.len() * od.max_ejection_percent as usize / 100;
    if ejected + 1 > cap.max(if od.max_ejection_percent > 0 { 1 } else { 0 }) {
        return;
    }
    let n = ep.health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
    let time = (od.base_ejection_time.get() * n).min(od.max_ejection_time.get());
    ep.health
        .ejected_until
        .store(now + time.as_millis() as u64, Ordering::Relaxed);
    ep.health.consecutive_5xx.store(0, Ordering::Relaxed);
    ep.health
        .consecutive_connect_failures
        .store(0, Ordering::Relaxed);
    METRICS
        .outlier_ejections
        .with_label_values(&[&*cluster.name])
        .inc();
    tracing::warn!(cluster = %cluster.name, endpoint = %ep.label, ejection = n, "endpoint ejected for {time:?}");
}

/// The runtime that runs health checks, started on first use.
fn checker_runtime() -> Option<&'static tokio::runtime::Handle> {
    static HANDLE: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("health-check".into())
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
                            tracing::error!("health checks disabled: {e}");
                            let _ = tx.send(None);
                        }
                    }
                });
            spawned.ok().and_then(|_| rx.recv().ok().flatten())
        })
        .as_ref()
}

/// Starts the active checks of `cluster` (of its current endpoint set,
/// when DNS discovery keeps it) unless already running. Each endpoint's
/// loop holds the set weakly and ends when a reload has dropped it or
/// discovery has replaced it.
pub fn start_checks(cluster: &Arc<Cluster>) {
    let cluster = &cluster.current();
    let Some(hc) = cluster.health_check.clone() else {
        return;
    };
    if cluster.checks_started.swap(true, Ordering::Relaxed) {
        return;
    }
    let Some(rt) = checker_runtime() else { return };
    for idx in 0..cluster.endpoints.len() {
        let weak = Arc::downgrade(cluster);
        let hc = hc.clone();
        rt.spawn(check_loop(weak, idx, hc));
    }
}

async fn check_loop(cluster: Weak<Cluster>, idx: usize, hc: HealthCheck) {
    let interval = hc.interval.get();
    loop {
        let jitter = interval.as_millis() as u64 * hc.jitter_percent as u64 / 100;
        let pause = interval
            + Duration::from_millis(if jitter > 0 {
                fastrand::u64(0..=jitter)
            } else {
                0
            });
        let Some(c) = cluster.upgrade() else { return };
        if c.retired.load(Ordering::Relaxed) {
            // A newer endpoint set checks the endpoints that stayed.
            return;
        }
        let ep = c.endpoints[idx].clone();
        drop(c);
        let ok = matches!(
            tokio::time::timeout(hc.timeout.get(), probe(&ep, &hc)).await,
            Ok(true)
        );
        let Some(c) = cluster.upgrade() else { return };
        if let Some(now_healthy) = ep.health.record_check(ok, &hc) {
            tracing::warn!(cluster = %c.name, endpoint = %ep.label, healthy = now_healthy, "health check changed state");
        }
        drop(c);
        tokio::time::sleep(pause).await;
    }
}

async fn probe(ep: &super::cluster::Endpoint, hc: &HealthCheck) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(ep.addr).await else {
        return false;
    };
    if hc.kind == HealthCheckKind::Tcp {
        return true;
    }
    let host = match (&hc.host, &ep.discovered_from) {
        (Some(h), _) => h.clone(),
        (None, Some(name)) => name.to_string(),
        (None, None) => ep.label.clone(),
    };
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-health-check\r\nConnection: close\r\n\r\n",
        hc.path
    );
    if stream.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    // The status line is all we need: "HTTP/1.1 200 ...".
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match stream.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => return false,
            Ok(k) => n += k,
        }
    }
    let status = std::str::from_utf8(&buf[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(s) if hc.expected_statuses.is_empty() => (200..300).contains(&s),
        Some(s) => hc.expected_statuses.contains(&s),
        None => false,
    }
}
