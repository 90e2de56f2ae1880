//! Metrics of DNS discovery: `gateway_discovery_endpoints{cluster}`,
//! `gateway_discovery_changes_total{cluster,change}` and
//! `gateway_discovery_errors_total{cluster}`.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// The discovery series, registered in the gateway's registry.
pub struct DiscoveryMetrics {
    /// `gateway_discovery_endpoints{cluster}`: endpoints of the current set.
    pub endpoints: IntGaugeVec,
    /// `gateway_discovery_changes_total{cluster,change}`: endpoints added
    /// or removed by refreshes.
    pub changes: IntCounterVec,
    /// `gateway_discovery_errors_total{cluster}`: failed lookups (the last
    /// good addresses stayed).
    pub errors: IntCounterVec,
}

impl DiscoveryMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn new(registry: &Registry) -> Self {
        let endpoints = IntGaugeVec::new(
            Opts::new(
                "gateway_discovery_endpoints",
                "Endpoints of a DNS-discovered cluster now.",
            ),
            &["cluster"],
        )
        .expect("static metric definition");
        let changes = IntCounterVec::new(
            Opts::new(
                "gateway_discovery_changes_total",
                "Endpoints added to or removed from DNS-discovered clusters.",
            ),
            &["cluster", "change"],
        )
        .expect("static metric definition");
        let errors = IntCounterVec::new(
            Opts::new(
                "gateway_discovery_errors_total",
                "Failed DNS lookups of discovered clusters (the last endpoints stay).",
            ),
            &["cluster"],
        )
        .expect("static metric definition");
        for c in [
            Box::new(endpoints.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(changes.clone()),
            Box::new(errors.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        DiscoveryMetrics {
            endpoints,
            changes,
            errors,
        }
    }
}
