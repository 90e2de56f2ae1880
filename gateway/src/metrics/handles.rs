//! Metric handles resolved once instead of per request.
//!
//! `IntCounterVec::with_label_values` hashes the label values and takes the
//! vector's read lock on every call. The request path instead goes through
//! handles that live in the compiled [`Route`](crate::runtime::route::Route)
//! and [`Cluster`](crate::runtime::cluster::Cluster): each child is looked
//! up on its first use (so series appear only once they have happened, as
//! before) and then used directly, one atomic add. The children are the
//! registry's own, so a reload that builds new handles keeps counting into
//! the same series.

use std::sync::{Arc, OnceLock};

use prometheus::{Histogram, IntCounter};

use filters::ratelimit::Verdict;

use super::{code_class, METRICS};
use crate::runtime::locality::Priority;

/// Status classes, in [`class_index`] order.
const CLASSES: usize = 6;

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// Kinds of failed upstream tries (`gateway_upstream_errors_total{kind}`),
/// as [`crate::proxy::respond::upstream_error_kind`] names them.
const ERROR_KINDS: [&str; 5] = ["timeout", "tls", "connect", "status", "reset"];

/// Handles of one cluster's series.
pub struct ClusterMetrics {
    name: Arc<str>,
    upstream_duration: OnceLock<Histogram>,
    upstream_requests: [OnceLock<IntCounter>; 3],
    upstream_errors: [OnceLock<IntCounter>; ERROR_KINDS.len()],
    circuit_open: OnceLock<IntCounter>,
    cross_zone_bytes: OnceLock<IntCounter>,
}

impl ClusterMetrics {
    /// Handles for the cluster `name`.
    pub fn new(name: Arc<str>) -> Self {
        ClusterMetrics {
            name,
            upstream_duration: OnceLock::new(),
            upstream_requests: Default::default(),
            upstream_errors: Default::default(),
            circuit_open: OnceLock::new(),
            cross_zone_bytes: OnceLock::new(),
        }
    }

    /// `gateway_upstream_duration_seconds{cluster}`
    pub fn upstream_duration(&self) -> &Histogram {
        self.upstream_duration
            .get_or_init(|| METRICS.upstream_duration.with_label_values(&[&*self.name]))
    }

    /// `gateway_upstream_requests_total{cluster,locality}`
    pub fn upstream_requests(&self, p: Priority) -> &IntCounter {
        self.upstream_requests[p as usize].get_or_init(|| {
            METRICS
                .upstream_requests
                .with_label_values(&[&*self.name, p.label()])
        })
    }

    /// `gateway_upstream_errors_total{cluster,kind}`
    pub fn upstream_error(&self, kind: &'static str) {
        match ERROR_KINDS.iter().position(|k| *k == kind) {
            Some(i) => self.upstream_errors[i]
                .get_or_init(|| {
                    METRICS
                        .upstream_errors
                        .with_label_values(&[&*self.name, kind])
                })
                .inc(),
            None => METRICS
                .upstream_errors
                .with_label_values(&[&*self.name, kind])
                .inc(),
        }
    }

    /// `gateway_circuit_open_total{cluster}`
    pub fn circuit_open(&self) -> &IntCounter {
        self.circuit_open
            .get_or_init(|| METRICS.circuit_open.with_label_values(&[&*self.name]))
    }

    /// `gateway_cross_zone_bytes_total{cluster}`
    pub fn cross_zone_bytes(&self) -> &IntCounter {
        self.cross_zone_bytes
            .get_or_init(|| METRICS.cross_zone_bytes.with_label_values(&[&*self.name]))
    }
}

/// Handles of one route's series (and, for `gateway_requests_total`, of
/// every listener x cluster the route can answer with).
pub struct RouteMetrics {
    name: Arc<str>,
    listeners: Arc<[Arc<str>]>,
    /// The route's clusters, in backend order; a request without a cluster
    /// (direct response, refusal) counts under `none`, the slot after them.
    clusters: Vec<Arc<str>>,
    requests: Box<[OnceLock<IntCounter>]>,
    duration: OnceLock<Histogram>,
    retries: OnceLock<IntCounter>,
    /// `gateway_ratelimit_decisions_total` per rule (slots claimed by rule
    /// name on first use) and verdict.
    ratelimit: Box<[RuleSlot]>,
}

/// The rate-limit decision counters of one rule.
#[derive(Default)]
struct RuleSlot {
    rule: OnceLock<Arc<str>>,
    verdicts: [OnceLock<IntCounter>; 4],
}

fn verdict_index(v: Verdict) -> usize {
    match v {
        Verdict::Allowed => 0,
        Verdict::Limited => 1,
        Verdict::WouldLimit => 2,
        Verdict::NoKey => 3,
    }
}

impl RouteMetrics {
    /// Handles for the route `name` served by `listeners` with `clusters`.
    /// `rules` is the number of rate-limit rules of the route.
    pub fn new(
        name: Arc<str>,
        listeners: Arc<[Arc<str>]>,
        clusters: Vec<Arc<str>>,
        rules: usize,
    ) -> Self {
        let slots = listeners.len() * (clusters.len() + 1) * CLASSES;
        RouteMetrics {
            name,
            listeners,
            clusters,
            requests: (0..slots).map(|_| OnceLock::new()).collect(),
            duration: OnceLock::new(),
            retries: OnceLock::new(),
            ratelimit: (0..rules).map(|_| RuleSlot::default()).collect(),
        }
    }

    /// `gateway_ratelimit_decisions_total{route,rule,decision}`
    pub fn ratelimit_decision(&self, rule: &Arc<str>, verdict: Verdict) {
        let resolve = || {
            METRICS
                .ratelimit_decisions
                .with_label_values(&[&*self.name, rule, verdict.as_str()])
        };
        // The rule's slot: the one named after it, or the first free one.
        let slot = self
            .ratelimit
            .iter()
            .find(|s| **s.rule.get_or_init(|| rule.clone()) == **rule);
        match slot {
            Some(s) => s.verdicts[verdict_index(verdict)]
                .get_or_init(resolve)
                .inc(),
            None => resolve().inc(),
        }
    }

    /// `gateway_requests_total{listener,route,cluster,code_class}` for one
    /// answered request. `listener` is the index in the runtime's listener
    /// list with its name (checked, so a mismatch can only cost a lookup).
    pub fn request(&self, listener: (usize, &str), cluster: Option<&str>, status: u16) {
        let slot = match cluster {
            None => Some(self.clusters.len()),
            Some(c) => self.clusters.iter().position(|n| **n == *c),
        };
        let known = self
            .listeners
            .get(listener.0)
            .is_some_and(|l| **l == *listener.1);
        match slot {
            Some(slot) if known => {
                let i =
                    (listener.0 * (self.clusters.len() + 1) + slot) * CLASSES + class_index(status);
                self.requests[i]
                    .get_or_init(|| {
                        METRICS.requests.with_label_values(&[
                            listener.1,
                            &*self.name,
                            cluster.unwrap_or("none"),
                            code_class(status),
                        ])
                    })
                    .inc();
            }
            _ => METRICS
                .requests
                .with_label_values(&[
                    listener.1,
                    &*self.name,
                    cluster.unwrap_or("none"),
                    code_class(status),
                ])
                .inc(),
        }
    }

    /// `gateway_request_duration_seconds{route}`
    pub fn duration(&self) -> &Histogram {
        self.duration
            .get_or_init(|| METRICS.request_duration.with_label_values(&[&*self.name]))
    }

    /// `gateway_retries_total{route}`
    pub fn retries(&self) -> &IntCounter {
        self.retries
            .get_or_init(|| METRICS.retries.with_label_values(&[&*self.name]))
    }
}

/// `gateway_listener_refusals_total{listener,reason}` of one listener, one
/// handle per reason, resolved when the listener is set up: refusals are
/// counted with one atomic add, and every series shows from the start (at
/// 0), so dashboards and alerts need no `absent()`.
pub struct ListenerRefusals {
    /// A head not complete within `request_header_timeout` (408).
    pub header_timeout: IntCounter,
    /// A connection over `max_connections` (closed unanswered).
    pub connection_limit: IntCounter,
    /// A head over `max_request_header_bytes` (431).
    pub header_too_large: IntCounter,
    /// A body over `max_request_body_bytes` (413 or a cut stream).
    pub body_too_large: IntCounter,
}

impl ListenerRefusals {
    /// The handles of the listener `name`.
    pub fn new(name: &str) -> Self {
        let reason = |r: &str| METRICS.listener_refusals.with_label_values(&[name, r]);
        ListenerRefusals {
            header_timeout: reason("header_timeout"),
            connection_limit: reason("connection_limit"),
            header_too_large: reason("header_too_large"),
            body_too_large: reason("body_too_large"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(listener: &str, route: &str, cluster: &str, class: &str) -> u64 {
        METRICS
            .requests
            .with_label_values(&[listener, route, cluster, class])
            .get()
    }

    #[test]
    fn handles_count_into_the_registry_series() {
        let listeners: Arc<[Arc<str>]> = vec![Arc::from("l-a"), Arc::from("l-b")].into();
        let m = RouteMetrics::new(
            "handles-test".into(),
            listeners,
            vec!["c1".into(), "c2".into()],
            0,
        );
        m.request((1, "l-b"), Some("c2"), 503);
        m.request((1, "l-b"), Some("c2"), 502);
        m.request((0, "l-a"), None, 404);
        // A listener the handles do not know (renamed by a reload) still counts.
        m.request((0, "l-new"), Some("c1"), 200);
        assert_eq!(value("l-b", "handles-test", "c2", "5xx"), 2);
        assert_eq!(value("l-a", "handles-test", "none", "4xx"), 1);
        assert_eq!(value("l-new", "handles-test", "c1", "2xx"), 1);
        assert_eq!(value("l-a", "handles-test", "c1", "2xx"), 0);
    }

    #[test]
    fn rate_limit_rules_claim_their_slots() {
        let m = RouteMetrics::new("handles-rl".into(), vec![].into(), vec![], 2);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        m.ratelimit_decision(&a, Verdict::Allowed);
        m.ratelimit_decision(&b, Verdict::Limited);
        m.ratelimit_decision(&a, Verdict::Allowed);
        // More rules than slots (cannot happen with compiled routes) still count.
        m.ratelimit_decision(&c, Verdict::NoKey);
        let v = |rule, d| {
            METRICS
                .ratelimit_decisions
                .with_label_values(&["handles-rl", rule, d])
                .get()
        };
        assert_eq!(v("a", "allowed"), 2);
        assert_eq!(v("b", "limited"), 1);
        assert_eq!(v("c", "no_key"), 1);
        assert_eq!(v("a", "limited"), 0);
    }

    #[test]
    fn every_error_kind_has_a_slot() {
        let c = ClusterMetrics::new("handles-test-cluster".into());
        for k in ERROR_KINDS {
            c.upstream_error(k);
        }
        c.upstream_error("other");
        for k in ERROR_KINDS.iter().chain(["other"].iter()) {
            let v = METRICS
                .upstream_errors
                .with_label_values(&["handles-test-cluster", k])
                .get();
            assert_eq!(v, 1, "{k}");
        }
    }
}
