//! Locality-aware routing with failover, active health checks, outlier
//! detection and circuit breaking (issue 7), observed at real upstreams.
//!
//! The topology of the locality tests: three zones of two endpoints each on
//! loopback ports, every endpoint an [`Upstream::switchable`] whose health
//! endpoint (`/healthz`) and main answer the test flips at run time. The
//! gateway sits in zone `a` of region `r1`, cluster `c1`:
//!
//! | endpoints | zone | region | cluster | priority seen from the gateway |
//! |-----------|------|--------|---------|--------------------------------|
//! | a1, a2    | a    | r1     | c1      | zone (local)                   |
//! | b1, b2    | b    | r1     | c1      | region                         |
//! | c1, c2    | c    | r2     | c2      | remote                         |
//!
//! Statistical checks state their expectation as mean +/- 3 sigma of the
//! binomial distribution, computed in the test.
//!
//! Files: `failover.rs` (locality and health checks), `outlier.rs` (outlier
//! detection), `checks.rs` (circuit breaker, TCP checks); the topology and
//! shared helpers are here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_tests::{
    fire, free_port, http_client, metric, three_sigma, tpl, url, Gateway, GatewayBuilder, Upstream,
    SWITCHABLE_BODY_LEN,
};

mod checks;
mod failover;
mod outlier;

/// Health-check interval of the locality tests (no jitter).
const HC_INTERVAL: Duration = Duration::from_millis(200);

/// The name of the cluster of the locality topology.
const CLUSTER: &str = "zonal";

/// Three zones of two switchable endpoints: a1 a2 b1 b2 c1 c2.
struct Topo {
    ups: Vec<Upstream>,
}

type Counts = BTreeMap<String, u64>;

impl Topo {
    fn new() -> Topo {
        Topo {
            ups: ["a1", "a2", "b1", "b2", "c1", "c2"]
                .iter()
                .map(|n| Upstream::switchable(n))
                .collect(),
        }
    }

    fn up(&self, name: &str) -> &Upstream {
        self.ups
            .iter()
            .find(|u| u.name() == name)
            .unwrap_or_else(|| panic!("no upstream {name}"))
    }

    fn zone(&self, zone: char) -> impl Iterator<Item = &Upstream> {
        self.ups.iter().filter(move |u| u.name().starts_with(zone))
    }

    fn set_zone_healthy(&self, zone: char, healthy: bool) {
        self.zone(zone).for_each(|u| u.set_healthy(healthy));
    }

    /// Makes `name`'s health endpoint fail and waits (up to 5 s) until
    /// zone a of `gw`'s [`CLUSTER`] counts `healthy_left` healthy endpoints;
    /// returns how long that took.
    async fn fail_health(&self, gw: &Gateway, name: &str, healthy_left: f64) -> Duration {
        self.up(name).set_healthy(false);
        let zone_a = [("cluster", CLUSTER), ("zone", "a")];
        gw.metric("gateway_endpoint_healthy", &zone_a)
            .within(Duration::from_secs(5))
            .eventually_eq(healthy_left)
            .await
    }

    /// Requests served so far, per upstream.
    fn counts(&self) -> Counts {
        self.ups
            .iter()
            .map(|u| (u.name().to_string(), u.count()))
            .collect()
    }

    /// Requests served since `before`, per upstream.
    fn since(&self, before: &Counts) -> Counts {
        self.counts()
            .into_iter()
            .map(|(k, v)| {
                let b = before.get(&k).copied().unwrap_or(0);
                (k, v - b)
            })
            .collect()
    }

    /// [`fire`]s `n` requests at `port` from `workers` tasks; returns
    /// what each upstream served of them.
    async fn fire(&self, port: u16, n: usize, workers: usize) -> Counts {
        let before = self.counts();
        fire(port, "/r/", n, workers).await;
        self.since(&before)
    }

    /// The endpoint list (YAML block sequence, indented for a cluster).
    fn endpoints_yaml(&self) -> String {
        self.ups
            .iter()
            .map(|u| {
                let zone = &u.name()[..1];
                let (region, cluster) = if zone == "c" {
                    ("r2", "c2")
                } else {
                    ("r1", "c1")
                };
                format!(
                    "  - {{address: \"{}\", zone: {zone}, region: {region}, cluster: {cluster}}}\n",
                    u.address()
                )
            })
            .collect()
    }
}

/// `gateway_upstream_requests_total` of [`CLUSTER`] by locality: (zone,
/// region, remote).
fn by_locality(m: &str) -> (f64, f64, f64) {
    let by = |l| {
        let labels = [("cluster", CLUSTER), ("locality", l)];
        metric(m, "gateway_upstream_requests_total", &labels)
    };
    (by("zone"), by("region"), by("remote"))
}

/// `gateway_cross_zone_bytes_total` of [`CLUSTER`].
fn cross_zone_bytes(m: &str) -> f64 {
    metric(m, "gateway_cross_zone_bytes_total", &[("cluster", CLUSTER)])
}

/// Requests per zone: (a, b, c).
fn zones(counts: &Counts) -> (u64, u64, u64) {
    let zone = |z| zone_sum(counts, z);
    (zone('a'), zone('b'), zone('c'))
}

/// Sum of `counts` over the endpoints of `zone`.
fn zone_sum(counts: &Counts, zone: char) -> u64 {
    counts
        .iter()
        .filter(|(k, _)| k.starts_with(zone))
        .map(|(_, v)| v)
        .sum()
}

/// Access logging off: these tests send thousands of requests.
const NO_ACCESS_LOG: &str = "telemetry: {access_log: {enabled: false}}";

/// The gateway of the locality topology: locality `mode`, HTTP health
/// checks every [`HC_INTERVAL`] (unhealthy after 1 failure, healthy after
/// `healthy_threshold` successes), one catch-all route. A failing health
/// endpoint answers 503 at once; the generous check timeout only keeps a
/// busy machine (a stalled probe) from flapping healthy endpoints.
fn topo_gateway(topo: &Topo, mode: &str, healthy_threshold: u32) -> GatewayBuilder {
    Gateway::builder()
        .yaml("gateway: {locality: {region: r1, zone: a, cluster: c1}}")
        .yaml(NO_ACCESS_LOG)
        .cluster_yaml(&tpl(
            r#"
name: ${cluster}
locality: {mode: ${mode}}
health_check: {type: http, path: /healthz, interval: ${interval}ms, jitter_percent: 0, timeout: 2s, healthy_threshold: ${ht}, unhealthy_threshold: 1}
endpoints:
${endpoints}"#,
            &[
                ("cluster", &CLUSTER),
                ("mode", &mode),
                ("interval", &HC_INTERVAL.as_millis()),
                ("ht", &healthy_threshold),
                ("endpoints", &topo.endpoints_yaml()),
            ],
        ))
        .route(&format!("{{name: all, cluster: {CLUSTER}}}"))
}

fn start_topo(topo: &Topo, mode: &str, healthy_threshold: u32) -> (Gateway, u16) {
    let gw = topo_gateway(topo, mode, healthy_threshold).start();
    let port = gw.port();
    (gw, port)
}

/// Sends sequential requests from `since` until `RUN` consecutive ones are
/// served by zone `zone`; returns when the first of them was sent, relative
/// to `since`, and how many requests went elsewhere before. Panics if that
/// does not happen within `limit`.
async fn time_until_all_in(
    client: &reqwest::Client,
    port: u16,
    zone: char,
    since: Instant,
    limit: Duration,
) -> (Duration, u64) {
    const RUN: usize = 40;
    let mut run = 0;
    let mut outside = 0;
    let mut run_start = Duration::ZERO;
    let mut last_other = String::from("(none)");
    while since.elapsed() < limit {
        let sent = since.elapsed();
        let resp = client
            .get(url(port, "/probe"))
            .send()
            .await
            .expect("request through the gateway");
        assert_eq!(resp.status(), 200, "expected 200 while failing over");
        let up = resp
            .headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        if up.starts_with(zone) {
            if run == 0 {
                run_start = sent;
            }
            run += 1;
            if run >= RUN {
                return (run_start, outside);
            }
        } else {
            run = 0;
            outside += 1;
            last_other = up;
        }
    }
    panic!(
        "expected traffic to move to zone {zone} ({RUN} requests in a row) within {limit:?}; \
         last request outside it went to {last_other}"
    );
}
