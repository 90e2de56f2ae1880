//! Locality priorities and Envoy's priority-load formula.
//!
//! Endpoints fall in three priorities relative to the gateway: its zone,
//! its region, anywhere else (other clusters). A priority's health is
//! `min(1, overprovisioning x healthy weight / total weight)`; the first
//! priority takes that share, the rest spills to the next. When the total
//! health is under 1 the shares are scaled up (normalized); under the panic
//! threshold health is ignored and every endpoint is used.

use crate::config::{Locality, LocalityMode, LocalityPolicy};

/// Number of priorities.
pub const PRIORITIES: usize = 3;

/// Where an endpoint is, seen from the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// The gateway's zone (or no locality known).
    Zone = 0,
    /// Same region, another zone.
    Region = 1,
    /// Another region or another cluster.
    Remote = 2,
}

impl Priority {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Priority::Zone => "zone",
            Priority::Region => "region",
            Priority::Remote => "remote",
        }
    }

    /// From an index (0..3).
    pub fn from_index(i: usize) -> Priority {
        match i {
            0 => Priority::Zone,
            1 => Priority::Region,
            _ => Priority::Remote,
        }
    }
}

/// The gateway's locality: config, overridden by `GATEWAY_REGION`,
/// `GATEWAY_ZONE` and `GATEWAY_CLUSTER` (fleets sharing one file).
pub fn gateway_locality(configured: &Locality) -> Locality {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    Locality {
        region: env("GATEWAY_REGION").or_else(|| configured.region.clone()),
        zone: env("GATEWAY_ZONE").or_else(|| configured.zone.clone()),
        cluster: env("GATEWAY_CLUSTER").or_else(|| configured.cluster.clone()),
    }
}

/// The priority of an endpoint. Endpoints (or gateways) without a locality
/// are local: configs that never mention localities behave as before.
pub fn classify(gateway: &Locality, ep: &Locality, mode: LocalityMode) -> Priority {
    if mode == LocalityMode::None
        || (ep.region.is_none() && ep.zone.is_none() && ep.cluster.is_none())
    {
        return Priority::Zone;
    }
    let differs =
        |a: &Option<String>, b: &Option<String>| matches!((a, b), (Some(x), Some(y)) if x != y);
    if differs(&gateway.cluster, &ep.cluster) || differs(&gateway.region, &ep.region) {
        return Priority::Remote;
    }
    if differs(&gateway.zone, &ep.zone) {
        return Priority::Region;
    }
    Priority::Zone
}

/// Share of traffic per priority, or panic (use every endpoint).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loads {
    /// Fraction of requests per priority (sums to 1 unless panic).
    pub share: [f64; PRIORITIES],
    /// Too little healthy capacity: ignore health.
    pub panic: bool,
}

/// Envoy's priority loads from healthy and total weight per priority.
pub fn priority_loads(
    healthy: [f64; PRIORITIES],
    total: [f64; PRIORITIES],
    policy: &LocalityPolicy,
) -> Loads {
    let mut health = [0.0; PRIORITIES];
    for p in 0..PRIORITIES {
        if total[p] > 0.0 {
            health[p] = (policy.overprovisioning_factor * healthy[p] / total[p]).min(1.0);
        }
    }
    if policy.mode == LocalityMode::LocalOnly {
        health[1] = 0.0;
        health[2] = 0.0;
    }
    let normalized = health.iter().sum::<f64>().min(1.0);
    // A threshold of 0 turns panic mode off (Envoy's): with no healthy
    // endpoint left the cluster has none to offer (503), not all of them.
    let panic = policy.panic_threshold > 0.0
        && (normalized <= 0.0 || normalized * 100.0 < policy.panic_threshold);
    if panic || normalized <= 0.0 {
        return Loads {
            share: [0.0; PRIORITIES],
            panic,
        };
    }
    let mut share = [0.0; PRIORITIES];
    let mut remaining = 1.0_f64;
    for p in 0..PRIORITIES {
        share[p] = (health[p] / normalized).min(remaining);
        remaining -= share[p];
    }
    Loads {
        share,
        panic: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(region: &str, zone: &str) -> Locality {
        Locality {
            region: Some(region.into()),
            zone: Some(zone.into()),
            cluster: None,
        }
    }

    fn policy() -> LocalityPolicy {
        LocalityPolicy::default()
    }

    #[test]
    fn endpoints_are_classified_by_zone_region_and_cluster() {
        let gw = loc("eu", "eu-a");
        let m = LocalityMode::Failover;
        assert_eq!(classify(&gw, &loc("eu", "eu-a"), m), Priority::Zone);
        assert_eq!(classify(&gw, &loc("eu", "eu-b"), m), Priority::Region);
        assert_eq!(classify(&gw, &loc("us", "us-a"), m), Priority::Remote);
        let mut other = loc("eu", "eu-a");
        other.cluster = Some("b".into());
        let mut gw_c = gw.clone();
        gw_c.cluster = Some("a".into());
        assert_eq!(classify(&gw_c, &other, m), Priority::Remote);
        assert_eq!(classify(&gw, &Locality::default(), m), Priority::Zone);
        assert_eq!(
            classify(&gw, &loc("us", "us-a"), LocalityMode::None),
            Priority::Zone
        );
    }

    #[test]
    fn all_healthy_stays_local() {
        let l = priority_loads([2.0, 2.0, 2.0], [2.0, 2.0, 2.0], &policy());
        assert_eq!(l.share, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn half_the_zone_down_spills_thirty_percent() {
        let l = priority_loads([1.0, 2.0, 2.0], [2.0, 2.0, 2.0], &policy());
        assert!(
            (l.share[0] - 0.7).abs() < 1e-9 && (l.share[1] - 0.3).abs() < 1e-9,
            "{l:?}"
        );
        assert!(!l.panic);
    }

    #[test]
    fn a_dead_zone_fails_over_to_the_region_then_remote() {
        assert_eq!(
            priority_loads([0.0, 2.0, 2.0], [2.0, 2.0, 2.0], &policy()).share,
            [0.0, 1.0, 0.0]
        );
        assert_eq!(
            priority_loads([0.0, 0.0, 2.0], [2.0, 2.0, 2.0], &policy()).share,
            [0.0, 0.0, 1.0]
        );
    }

    #[test]
    fn a_zero_panic_threshold_never_panics() {
        let mut p = policy();
        p.panic_threshold = 0.0;
        let l = priority_loads([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], &p);
        assert!(!l.panic && l.share == [0.0; PRIORITIES], "{l:?}");
    }

    #[test]
    fn low_total_health_is_normalized_then_panics() {
        // 0.35 + 0.35 = 0.7 total: scaled up to 0.5 / 0.5.
        let l = priority_loads([1.0, 1.0, 0.0], [4.0, 4.0, 0.0], &policy());
        assert!((l.share[0] - 0.5).abs() < 1e-9 && !l.panic, "{l:?}");
        // 0.35 total health is under the 50% panic threshold.
        assert!(priority_loads([1.0, 0.0, 0.0], [4.0, 4.0, 0.0], &policy()).panic);
        assert!(priority_loads([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], &policy()).panic);
    }

    #[test]
    fn local_only_never_spills() {
        let p = LocalityPolicy {
            mode: LocalityMode::LocalOnly,
            ..policy()
        };
        assert_eq!(
            priority_loads([1.0, 2.0, 2.0], [2.0, 2.0, 2.0], &p).share,
            [1.0, 0.0, 0.0]
        );
        assert!(priority_loads([0.0, 2.0, 2.0], [2.0, 2.0, 2.0], &p).panic);
    }
}
