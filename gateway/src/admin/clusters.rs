//! Admin `/clusters` (Envoy's admin vocabulary, as JSON): every cluster
//! with its endpoints as requests see them now: address, locality,
//! weight, active health, outlier ejection, requests in flight, and how
//! each was found (static, or DNS and the name); for a DNS-discovered
//! cluster, when it was last refreshed and its last error.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

use crate::runtime::cluster::{Cluster, Endpoint};
use crate::runtime::health::now_ms;
use crate::runtime::Runtime;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The `/clusters` document of `runtime`, clusters by name.
pub fn report(runtime: &Runtime) -> Value {
    let mut names: Vec<&String> = runtime.clusters.keys().collect();
    names.sort();
    let clusters: Vec<Value> = names
        .into_iter()
        .filter_map(|n| runtime.clusters.get(n))
        .map(cluster)
        .collect();
    json!({ "clusters": clusters })
}

fn cluster(head: &std::sync::Arc<Cluster>) -> Value {
    let set = head.current();
    let now = now_ms();
    let endpoints: Vec<Value> = set
        .endpoints
        .iter()
        .map(|e| endpoint(head, e, now))
        .collect();
    let discovery = match &head.discovery {
        None => json!({
            "type": "static",
            // Static names are resolved once, when the config is loaded.
            "resolved_at": rfc3339(set.built_at),
        }),
        Some(d) => {
            let spec = d.spec();
            let status = d.status();
            let names: Vec<&str> = spec.entries.iter().map(|e| &*e.label).collect();
            json!({
                "type": spec.kind.label(),
                "names": names,
                "refresh_ms": spec.refresh.as_millis() as u64,
                "respect_ttl": spec.respect_ttl,
                "endpoints_since": rfc3339(set.built_at),
                "last_refresh": status.last_refresh,
                "last_success": status.last_success,
                "last_error": status.last_error,
                "last_error_at": status.last_error_at,
                "consecutive_failures": status.consecutive_failures,
                "refreshes": status.refreshes,
                "changes": status.changes,
            })
        }
    };
    json!({
        "name": &*head.name,
        "lb": head.lb,
        "active_requests": head.active_requests.load(std::sync::atomic::Ordering::Relaxed),
        "discovery": discovery,
        "endpoints": endpoints,
    })
}

fn endpoint(head: &Cluster, e: &Endpoint, now: u64) -> Value {
    let until = e.health.ejected_until_ms();
    let ejected = until > now;
    let ejected_until =
        ejected.then(|| rfc3339(SystemTime::now() + Duration::from_millis(until - now)));
    let active = if head.health_check.is_none() {
        "unchecked"
    } else if e.health.actively_healthy() {
        "healthy"
    } else {
        "unhealthy"
    };
    let discovered = match &e.discovered_from {
        None => json!({"type": "static", "address": e.label}),
        Some(name) => json!({"type": "dns", "hostname": &**name}),
    };
    json!({
        "address": e.addr.to_string(),
        "locality": {
            "region": e.locality.region,
            "zone": e.locality.zone,
            "cluster": e.locality.cluster,
        },
        "priority": e.priority.label(),
        "weight": e.weight,
        "health_check": active,
        "outlier": {
            "ejected": ejected,
            "ejected_until": ejected_until,
            "ejections": e.health.ejections(),
        },
        "available": e.health.available(now),
        "active_requests": e.active.load(std::sync::atomic::Ordering::Relaxed),
        "discovered": discovered,
    })
}
