//! Prometheus metrics (prefix `gateway_`, base units, bounded labels: route,
//! cluster and listener names come from the config, never from requests).

pub mod handles;

use std::collections::HashMap;
use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::runtime::tls::validity::CertExpiry;

/// All gateway metrics, in their own registry.
pub struct Metrics {
    registry: Registry,
    /// `gateway_requests_total{listener,route,cluster,code_class}`
    pub requests: IntCounterVec,
    /// `gateway_request_duration_seconds{route}`
    pub request_duration: HistogramVec,
    /// `gateway_upstream_duration_seconds{cluster}`: time to upstream response headers.
    pub upstream_duration: HistogramVec,
    /// `gateway_upstream_errors_total{cluster,kind}`
    pub upstream_errors: IntCounterVec,
    /// `gateway_retries_total{route}`
    pub retries: IntCounterVec,
    /// `gateway_active_requests`
    pub active_requests: IntGauge,
    /// `gateway_access_log_dropped_total`: lines dropped because the writer lagged.
    pub access_log_dropped: IntCounter,
    /// `gateway_endpoint_healthy{cluster,zone}`: endpoints taking traffic,
    /// refreshed when metrics are scraped.
    pub endpoint_healthy: IntGaugeVec,
    /// `gateway_upstream_requests_total{cluster,locality}`: tries by locality.
    pub upstream_requests: IntCounterVec,
    /// `gateway_outlier_ejections_total{cluster}`
    pub outlier_ejections: IntCounterVec,
    /// `gateway_circuit_open_total{cluster}`: requests refused by a circuit breaker.
    pub circuit_open: IntCounterVec,
    /// `gateway_proxy_protocol_total{listener,result}`: PROXY protocol
    /// headers accepted, and connections refused (refused_source,
    /// malformed, timeout, closed: no byte sent).
    pub proxy_protocol: IntCounterVec,
    /// `gateway_upgrades_total{route,protocol,outcome}`: upgrade requests
    /// by outcome (switched, declined, refused).
    pub upgrades: IntCounterVec,
    /// `gateway_upgraded_bytes_total{route,direction}`: bytes carried by
    /// upgraded connections, `up` (from the client) and `down`.
    pub upgraded_bytes: IntCounterVec,
    /// `gateway_faults_total{route,kind}`: injected faults (delay, abort,
    /// delay_over_limit).
    pub faults: IntCounterVec,
    /// `gateway_cors_total{route,result}`: CORS requests from allowed
    /// origins (preflight, actual).
    pub cors: IntCounterVec,
    /// `gateway_compressed_responses_total{route,algorithm}`: responses
    /// compressed by the gateway.
    pub compressed_responses: IntCounterVec,
    /// `gateway_ext_authz_total{route,result}`: external authorization
    /// checks (allowed, denied, error, cache_hit).
    pub ext_authz: IntCounterVec,
    /// `gateway_cross_zone_bytes_total{cluster}`: body bytes to and from
    /// endpoints outside the gateway's zone.
    pub cross_zone_bytes: IntCounterVec,
    /// `gateway_ratelimit_decisions_total{route,rule,decision}`
    pub ratelimit_decisions: IntCounterVec,
    /// `gateway_trace_spans_dropped_total`: spans dropped because the export queue was full.
    pub trace_spans_dropped: IntCounter,
    /// `gateway_trace_export_errors_total`: failed span export batches.
    pub trace_export_errors: IntCounter,
    /// `gateway_mirror_requests_total{route,result}`: sent, dropped, error, too_large.
    pub mirror_requests: IntCounterVec,
    /// `gateway_mirror_mismatch_total{route,kind}`: status, body.
    pub mirror_mismatch: IntCounterVec,
    /// `gateway_ratelimit_store_errors_total`
    pub ratelimit_store_errors: IntCounter,
    /// `gateway_config_reloads_total{result}`: success, error, unchanged.
    pub config_reloads: IntCounterVec,
    /// `gateway_authn_total{method,trust_domain,result}`: credentials
    /// checked (mTLS at the handshake, JWT per request).
    pub authn: IntCounterVec,
    /// `gateway_authz_denied_total{route}`: requests refused by a route's
    /// authorization rules (401 or 403).
    pub authz_denied: IntCounterVec,
    /// `gateway_egress_requests_total{decision,rule}`: egress requests and
    /// tunnels by decision (allow, deny, audit_deny) and deciding rule.
    pub egress_requests: IntCounterVec,
    /// `gateway_egress_bytes_total{direction}`: body and tunnel bytes, `up`
    /// (caller to destination) and `down`.
    pub egress_bytes: IntCounterVec,
    /// `gateway_egress_tunnel_duration_seconds`: life of CONNECT tunnels.
    pub egress_tunnel_duration: prometheus::Histogram,
    /// `gateway_listener_refusals_total{listener,reason}`: connections and
    /// requests refused by a listener's limits (header_timeout,
    /// connection_limit, header_too_large, body_too_large).
    pub listener_refusals: IntCounterVec,
    /// `gateway_config_generation`: generation of the serving config.
    pub config_generation: IntGauge,
    /// `gateway_config_last_reload_success_timestamp_seconds`
    pub config_last_success: prometheus::Gauge,
    /// `gateway_certificate_expiry_timestamp_seconds{kind,name}`: notAfter
    /// of every certificate held (see [`Metrics::set_certificate_expiry`]).
    pub certificate_expiry: IntGaugeVec,
    /// `gateway_discovery_*`: DNS discovery of cluster endpoints.
    pub discovery: crate::discovery::metrics::DiscoveryMetrics,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "gateway_requests_total",
                "Requests answered, by listener, route, cluster and status class.",
            ),
            &["listener", "route", "cluster", "code_class"],
        )
        .expect("static metric definition");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("static metric definition");
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_upstream_duration_seconds",
                "Time from sending upstream to the response headers, per try.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["cluster"],
        )
        .expect("static metric definition");
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_errors_total",
                "Failed upstream tries, by kind (connect, timeout, reset, tls, status).",
            ),
            &["cluster", "kind"],
        )
        .expect("static metric definition");
        let retries = IntCounterVec::new(
            Opts::new("gateway_retries_total", "Retries, by route."),
            &["route"],
        )
        .expect("static metric definition");
        let active_requests = IntGauge::new("gateway_active_requests", "Requests in flight.")
            .expect("static metric definition");
        let access_log_dropped = IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access-log lines dropped because the writer could not keep up.",
        )
        .expect("static metric definition");
        let endpoint_healthy = IntGaugeVec::new(
            Opts::new(
                "gateway_endpoint_healthy",
                "Endpoints taking traffic (healthy and not ejected), by cluster and zone.",
            ),
            &["cluster", "zone"],
        )
        .expect("static metric definition");
        let upstream_requests = IntCounterVec::new(
            Opts::new(
                "gateway_upstream_requests_total",
                "Upstream tries, by cluster and the endpoint's locality (zone, region, remote).",
            ),
            &["cluster", "locality"],
        )
        .expect("static metric definition");
        let outlier_ejections = IntCounterVec::new(
            Opts::new(
                "gateway_outlier_ejections_total",
                "Endpoints ejected by outlier detection.",
            ),
            &["cluster"],
        )
        .expect("static metric definition");
        let circuit_open = IntCounterVec::new(
            Opts::new(
                "gateway_circuit_open_total",
                "Requests refused with 503 by a cluster's circuit breaker.",
            ),
            &["cluster"],
        )
        .expect("static metric definition");
        let proxy_protocol = IntCounterVec::new(
            Opts::new(
                "gateway_proxy_protocol_total",
                "PROXY protocol headers by listener and result: accepted, refused_source, malformed, timeout, closed (before sending a byte).",
            ),
            &["listener", "result"],
        )
        .expect("static metric definition");
        let upgrades = IntCounterVec::new(
            Opts::new(
                "gateway_upgrades_total",
                "Upgrade requests (WebSocket) by outcome: switched (101), declined (other answer), refused (by the route).",
            ),
            &["route", "protocol", "outcome"],
        )
        .expect("static metric definition");
        let upgraded_bytes = IntCounterVec::new(
            Opts::new(
                "gateway_upgraded_bytes_total",
                "Bytes carried by upgraded connections: up from the client, down to it.",
            ),
            &["route", "direction"],
        )
        .expect("static metric definition");
        let faults = IntCounterVec::new(
            Opts::new(
                "gateway_faults_total",
                "Injected faults by route and kind: delay, abort, delay_over_limit (not delayed: max_active_delays).",
            ),
            &["route", "kind"],
        )
        .expect("static metric definition");
        let cors = IntCounterVec::new(
            Opts::new(
                "gateway_cors_total",
                "CORS requests from allowed origins: preflight (answered by the gateway) or actual.",
            ),
            &["route", "result"],
        )
        .expect("static metric definition");
        let compressed_responses = IntCounterVec::new(
            Opts::new(
                "gateway_compressed_responses_total",
                "Responses compressed by the gateway, by route and algorithm (gzip, br, zstd).",
            ),
            &["route", "algorithm"],
        )
        .expect("static metric definition");
        let ext_authz = IntCounterVec::new(
            Opts::new(
                "gateway_ext_authz_total",
                "External authorization checks by route and result: allowed, denied, error (failed check), cache_hit.",
            ),
            &["route", "result"],
        )
        .expect("static metric definition");
        let cross_zone_bytes = IntCounterVec::new(
            Opts::new(
                "gateway_cross_zone_bytes_total",
                "Body bytes sent to and received from endpoints outside the gateway's zone.",
            ),
            &["cluster"],
        )
        .expect("static metric definition");
        let trace_spans_dropped = IntCounter::new(
            "gateway_trace_spans_dropped_total",
            "Trace spans dropped because the export queue was full.",
        )
        .expect("static metric definition");
        let trace_export_errors = IntCounter::new(
            "gateway_trace_export_errors_total",
            "Span export batches that failed (collector down or slow).",
        )
        .expect("static metric definition");
        let mirror_requests = IntCounterVec::new(
            Opts::new(
                "gateway_mirror_requests_total",
                "Mirror copies by result: sent (answered), dropped (no room), error, too_large.",
            ),
            &["route", "result"],
        )
        .expect("static metric definition");
        let mirror_mismatch = IntCounterVec::new(
            Opts::new(
                "gateway_mirror_mismatch_total",
                "Mirror answers that differ from the primary's, by kind (status class, body digest).",
            ),
            &["route", "kind"],
        )
        .expect("static metric definition");
        let ratelimit_decisions = IntCounterVec::new(
            Opts::new(
                "gateway_ratelimit_decisions_total",
                "Rate-limit rule decisions (allowed, limited, would_limit, no_key), by route and rule.",
            ),
            &["route", "rule", "decision"],
        )
        .expect("static metric definition");
        let ratelimit_store_errors = IntCounter::new(
            "gateway_ratelimit_store_errors_total",
            "Requests whose fleet rate-limit store (Redis) call failed or timed out.",
        )
        .expect("static metric definition");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "gateway_config_reloads_total",
                "Config reload attempts, by result (success, error, unchanged).",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let authn = IntCounterVec::new(
            Opts::new(
                "gateway_authn_total",
                "Credentials checked, by method (mtls, jwt), trust domain and result (success or why not).",
            ),
            &["method", "trust_domain", "result"],
        )
        .expect("static metric definition");
        let authz_denied = IntCounterVec::new(
            Opts::new(
                "gateway_authz_denied_total",
                "Requests refused by a route's authorization rules.",
            ),
            &["route"],
        )
        .expect("static metric definition");
        let egress_requests = IntCounterVec::new(
            Opts::new(
                "gateway_egress_requests_total",
                "Egress requests and tunnels, by decision (allow, deny, audit_deny) and rule.",
            ),
            &["decision", "rule"],
        )
        .expect("static metric definition");
        let egress_bytes = IntCounterVec::new(
            Opts::new(
                "gateway_egress_bytes_total",
                "Egress bytes, up (caller to destination) and down.",
            ),
            &["direction"],
        )
        .expect("static metric definition");
        let egress_tunnel_duration = prometheus::Histogram::with_opts(
            HistogramOpts::new(
                "gateway_egress_tunnel_duration_seconds",
                "How long CONNECT tunnels lasted.",
            )
            .buckets(vec![
                0.0005, 0.005, 0.05, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
            ]),
        )
        .expect("static metric definition");
        let listener_refusals = IntCounterVec::new(
            Opts::new(
                "gateway_listener_refusals_total",
                "Connections and requests refused by a listener's limits, by reason (header_timeout, connection_limit, header_too_large, body_too_large).",
            ),
            &["listener", "reason"],
        )
        .expect("static metric definition");
        let config_generation = IntGauge::new(
            "gateway_config_generation",
            "Generation of the serving config (1 = the one the process started with).",
        )
        .expect("static metric definition");
        let config_last_success = prometheus::Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time the serving config was applied.",
        )
        .expect("static metric definition");
        let certificate_expiry = IntGaugeVec::new(
            Opts::new(
                "gateway_certificate_expiry_timestamp_seconds",
                "notAfter (Unix time) of each certificate held, by kind (listener, client, ca) and name; the earliest of a CA bundle.",
            ),
            &["kind", "name"],
        )
        .expect("static metric definition");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "gateway_build_info",
                "Build information; the value is always 1.",
            ),
            &["version"],
        )
        .expect("static metric definition");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_duration.clone()),
            Box::new(upstream_errors.clone()),
            Box::new(retries.clone()),
            Box::new(active_requests.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(endpoint_healthy.clone()),
            Box::new(upstream_requests.clone()),
            Box::new(outlier_ejections.clone()),
            Box::new(circuit_open.clone()),
            Box::new(proxy_protocol.clone()),
            Box::new(upgrades.clone()),
            Box::new(upgraded_bytes.clone()),
            Box::new(faults.clone()),
            Box::new(cors.clone()),
            Box::new(compressed_responses.clone()),
            Box::new(ext_authz.clone()),
            Box::new(cross_zone_bytes.clone()),
            Box::new(ratelimit_decisions.clone()),
            Box::new(mirror_requests.clone()),
            Box::new(trace_spans_dropped.clone()),
            Box::new(trace_export_errors.clone()),
            Box::new(mirror_mismatch.clone()),
            Box::new(ratelimit_store_errors.clone()),
            Box::new(config_reloads.clone()),
            Box::new(authn.clone()),
            Box::new(authz_denied.clone()),
            Box::new(egress_requests.clone()),
            Box::new(egress_bytes.clone()),
            Box::new(egress_tunnel_duration.clone()),
            Box::new(listener_refusals.clone()),
            Box::new(config_generation.clone()),
            Box::new(config_last_success.clone()),
            Box::new(certificate_expiry.clone()),
            Box::new(build_info),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let discovery = crate::discovery::metrics::DiscoveryMetrics::new(&registry);
        Metrics {
            discovery,
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            retries,
            active_requests,
            access_log_dropped,
            endpoint_healthy,
            upstream_requests,
            outlier_ejections,
            circuit_open,
            proxy_protocol,
            upgrades,
            upgraded_bytes,
            faults,
            cors,
            compressed_responses,
            ext_authz,
            cross_zone_bytes,
            ratelimit_decisions,
            mirror_requests,
            mirror_mismatch,
            trace_spans_dropped,
            trace_export_errors,
            ratelimit_store_errors,
            config_reloads,
            authn,
            authz_denied,
            egress_requests,
            egress_bytes,
            egress_tunnel_duration,
            listener_refusals,
            config_generation,
            config_last_success,
            certificate_expiry,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Metrics {
    /// Recomputes `gateway_endpoint_healthy` from the serving runtime.
    pub fn refresh_endpoint_health(&self, runtime: &crate::runtime::Runtime) {
        self.endpoint_healthy.reset();
        let now = crate::runtime::health::now_ms();
        for c in runtime.clusters.values() {
            for e in &c.current().endpoints {
                let zone = e.locality.zone.as_deref().unwrap_or("unknown");
                let g = self.endpoint_healthy.with_label_values(&[&*c.name, zone]);
                if e.health.available(now) {
                    g.inc();
                }
            }
        }
    }
}

impl Metrics {
    /// Sets `gateway_certificate_expiry_timestamp_seconds` to the
    /// certificates of the serving config, `now`, and removes the series of
    /// those in `before` (the previous config) no longer held. Series that
    /// stay are overwritten in place, never removed first, so no scrape
    /// sees them missing. Two certificates under one label pair keep the
    /// earlier notAfter.
    pub fn set_certificate_expiry(&self, before: &[CertExpiry], now: &[CertExpiry]) {
        let mut want: HashMap<(&str, &str), i64> = HashMap::new();
        for c in now {
            let v = want.entry((c.kind.label(), &c.name)).or_insert(c.not_after);
            *v = (*v).min(c.not_after);
        }
        for c in before {
            if !want.contains_key(&(c.kind.label(), c.name.as_str())) {
                // Err: already gone (a duplicate in `before`).
                let _ = self
                    .certificate_expiry
                    .remove_label_values(&[c.kind.label(), &c.name]);
            }
        }
        for ((kind, name), not_after) in want {
            self.certificate_expiry
                .with_label_values(&[kind, name])
                .set(not_after);
        }
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// `2xx`-style class of a status code (`0` = no response was sent).
pub fn code_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
