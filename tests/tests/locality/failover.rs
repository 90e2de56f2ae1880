//! Locality failover: traffic stays home, spills per Envoy's formula, fails
//! over zone -> region -> remote and back, `local_only`, health metrics, and
//! the `GATEWAY_ZONE` override.

use super::*;

// ---------------------------------------------------------------------------
// 1. All healthy: everything stays in the local zone.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_healthy_traffic_stays_in_the_local_zone() {
    let topo = Topo::new();
    let (gw, port) = start_topo(&topo, "failover", 1);
    fire(port, "/r/", 1000, 8).await;
    let c = topo.counts();
    eprintln!("all healthy, 1000 requests: {c:?}");
    assert_eq!(
        zone_sum(&c, 'a'),
        1000,
        "expected all 1000 requests in zone a, got {c:?}"
    );
    assert_eq!(
        (zone_sum(&c, 'b'), zone_sum(&c, 'c')),
        (0, 0),
        "expected no request outside zone a, got {c:?}"
    );
    assert!(
        c["a1"].abs_diff(500) <= 1,
        "round robin within zone a: expected 500 +/- 1 at a1, got {c:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        by_locality(&m),
        (1000.0, 0.0, 0.0),
        "expected gateway_upstream_requests_total zone/region/remote = 1000/0/0"
    );
    assert_eq!(
        cross_zone_bytes(&m),
        0.0,
        "no cross-zone traffic, so no cross-zone bytes"
    );
}

// ---------------------------------------------------------------------------
// 2. Half the local zone down: Envoy's spill.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_local_zone_down_spills_per_envoys_formula() {
    let topo = Topo::new();
    let (gw, port) = start_topo(&topo, "failover", 1);
    let took = topo.fail_health(&gw, "a2", 1.0).await;
    eprintln!("a2 marked unhealthy {took:?} after its health endpoint failed");

    let m0 = gw.metrics().await;
    const N: u64 = 2000;
    let d = topo.fire(port, N as usize, 8).await;
    let (a, b, c) = zones(&d);
    // P0 health = min(1, 1.4 x 1/2) = 0.7: zone a takes 70 %, zone b the
    // remaining 30 % (its health 1.0 covers it), zone c nothing.
    let (mean, bound) = three_sigma(N, 0.3);
    eprintln!(
        "one of two zone-a endpoints down, {N} requests: {d:?}; zone b {b} ({:.1} %), \
         expected {mean:.0} +/- {bound:.1}",
        100.0 * b as f64 / N as f64
    );
    assert_eq!(a + b + c, N, "every request reached an endpoint: {d:?}");
    assert_eq!(d["a2"], 0, "the unhealthy a2 must get no traffic: {d:?}");
    assert!(
        (b as f64 - mean).abs() <= bound,
        "spill to zone b: expected {mean:.0} +/- {bound:.1} (3 sigma) of {N}, got {b} ({d:?})"
    );
    assert_eq!(c, 0, "zone c (remote) should get no traffic: {d:?}");
    assert!(
        d["b1"].abs_diff(d["b2"]) <= 2,
        "round robin within zone b: expected b1 ~= b2, got {d:?}"
    );
    let m1 = gw.metrics().await;
    let ((z1, r1, x1), (z0, r0, x0)) = (by_locality(&m1), by_locality(&m0));
    assert_eq!(
        (z1 - z0, r1 - r0, x1 - x0),
        (a as f64, b as f64, 0.0),
        "gateway_upstream_requests_total by locality should match the upstream counts"
    );
}

// ---------------------------------------------------------------------------
// 3. Zone down -> region; region down -> remote; recovery -> back home.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zone_failover_to_region_then_remote_and_back() {
    let topo = Topo::new();
    // Unhealthy after 1 failed check, healthy again after 2 good ones.
    let (gw, port) = start_topo(&topo, "failover", 2);
    let client = http_client();
    let limit = Duration::from_secs(5);

    let t = Instant::now();
    let (_, outside) = time_until_all_in(&client, port, 'a', t, limit).await;
    assert_eq!(
        outside, 0,
        "all healthy: expected zone a from the first request"
    );

    // A zone fails its health checks: how long until every request lands
    // in `to`, then where 300 requests go.
    let fail = |down: char, to: char| {
        let (client, topo) = (&client, &topo);
        async move {
            let t = Instant::now();
            topo.set_zone_healthy(down, false);
            let (took, _) = time_until_all_in(client, port, to, t, limit).await;
            (took, topo.fire(port, 300, 4).await)
        }
    };
    // Zone a fails.
    let (to_b, d) = fail('a', 'b').await;
    assert_eq!(
        zones(&d),
        (0, 300, 0),
        "zone a down: expected all 300 requests in zone b, got {d:?}"
    );
    // Zone b fails too: the remote zone c (other region, other cluster).
    let (to_c, d) = fail('b', 'c').await;
    assert_eq!(
        zones(&d),
        (0, 0, 300),
        "zones a and b down: expected all 300 requests in remote zone c, got {d:?}"
    );
    let m = gw.metrics().await;
    assert!(
        by_locality(&m).2 >= 300.0,
        "remote tries should be counted with locality=\"remote\""
    );

    // Recovery: health endpoints answer 200 again.
    let t = Instant::now();
    topo.set_zone_healthy('a', true);
    topo.set_zone_healthy('b', true);
    let (back, _) = time_until_all_in(&client, port, 'a', t, limit).await;
    let d = topo.fire(port, 300, 4).await;
    assert_eq!(
        zone_sum(&d, 'a'),
        300,
        "recovered: expected all 300 requests back in zone a, got {d:?}"
    );

    eprintln!(
        "failover times: zone a down -> zone b after {to_b:?}, zone b down -> zone c after {to_c:?}, \
         recovery -> zone a after {back:?} (interval {HC_INTERVAL:?})"
    );
    let two = 2 * HC_INTERVAL;
    assert!(
        to_b <= two,
        "zone a down: expected traffic in zone b within two health-check intervals ({two:?}), took {to_b:?}"
    );
    assert!(
        to_c <= two,
        "zone b down too: expected traffic in zone c within two health-check intervals ({two:?}), took {to_c:?}"
    );
    // Two good checks are needed (healthy_threshold 2): at most one interval
    // until the first, one more for the second, and one of slack.
    let three = 3 * HC_INTERVAL;
    assert!(
        back <= three,
        "recovery: expected traffic back in zone a within {three:?} (healthy_threshold 2), took {back:?}"
    );
}

// ---------------------------------------------------------------------------
// 6. local_only never leaves the zone.
// ---------------------------------------------------------------------------

/// `local_only` zeroes the health of every other priority. With one of two
/// zone-a endpoints unhealthy the zone's health is 0.7 (normalized to a
/// 100 % share): all traffic goes to the healthy zone-a endpoint. With both
/// unhealthy the total health is 0, under the panic threshold: the gateway
/// ignores health *within the zone* (panic routing) and keeps serving from
/// a1 and a2 — it never answers 503 and never spills to zones b or c. This
/// test asserts that documented behaviour (the zone-a endpoints still answer
/// their main path while their health endpoint fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_only_never_leaves_the_zone() {
    let topo = Topo::new();
    let (gw, port) = start_topo(&topo, "local_only", 1);
    topo.fail_health(&gw, "a2", 1.0).await;
    let half = topo.fire(port, 300, 4).await;
    assert_eq!(
        (
            half["a1"],
            half["a2"],
            zone_sum(&half, 'b'),
            zone_sum(&half, 'c')
        ),
        (300, 0, 0, 0),
        "local_only, a2 unhealthy: expected all 300 on a1 and none elsewhere, got {half:?}"
    );

    topo.fail_health(&gw, "a1", 0.0).await;
    let none = topo.fire(port, 300, 4).await;
    eprintln!("local_only: a2 down {half:?}; zone a all down (panic within the zone) {none:?}");
    assert_eq!(
        zones(&none),
        (300, 0, 0),
        "local_only, zone a unhealthy: expected all 300 in zone a (panic routing), none outside, got {none:?}"
    );
    assert!(
        none["a1"] > 0 && none["a2"] > 0,
        "panic routing ignores health: both zone-a endpoints should serve, got {none:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        by_locality(&m),
        (600.0, 0.0, 0.0),
        "local_only: every try counted with locality=\"zone\""
    );
}

// ---------------------------------------------------------------------------
// 8. Health and cross-zone metrics.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_health_and_cross_zone_bytes_metrics() {
    let topo = Topo::new();
    let (gw, port) = start_topo(&topo, "failover", 1);
    let healthy = |m: &str, z| {
        metric(
            m,
            "gateway_endpoint_healthy",
            &[("cluster", CLUSTER), ("zone", z)],
        )
    };
    let m = gw.metrics().await;
    assert_eq!(
        (healthy(&m, "a"), healthy(&m, "b"), healthy(&m, "c")),
        (2.0, 2.0, 2.0),
        "all healthy: expected gateway_endpoint_healthy a/b/c = 2/2/2"
    );
    fire(port, "/r/", 100, 4).await;
    let m = gw.metrics().await;
    assert_eq!(
        cross_zone_bytes(&m),
        0.0,
        "only zone-a traffic: no cross-zone bytes"
    );

    let took = topo.fail_health(&gw, "a1", 1.0).await;
    let m = gw.metrics().await;
    assert_eq!(
        (healthy(&m, "a"), healthy(&m, "b"), healthy(&m, "c")),
        (1.0, 2.0, 2.0),
        "a1 down: expected gateway_endpoint_healthy a/b/c = 1/2/2"
    );
    let d = topo.fire(port, 400, 4).await;
    let off_zone = zone_sum(&d, 'b') + zone_sum(&d, 'c');
    assert!(
        off_zone > 0,
        "some traffic should spill out of zone a: {d:?}"
    );
    // Response bodies to the client (GETs carry no request body).
    let want = (off_zone as usize * SWITCHABLE_BODY_LEN) as f64;
    let (got, _) = gw
        .metric("gateway_cross_zone_bytes_total", &[("cluster", CLUSTER)])
        .within(Duration::from_secs(3))
        .eventually(|v| v >= want)
        .await;
    eprintln!(
        "metrics: a1 marked unhealthy after {took:?}; {off_zone} of 400 requests left zone a ({d:?}); \
         gateway_cross_zone_bytes_total {got} (= {off_zone} x {SWITCHABLE_BODY_LEN}-byte bodies: {want})"
    );
    assert_eq!(
        got, want,
        "cross-zone bytes: expected {off_zone} responses x {SWITCHABLE_BODY_LEN} body bytes = {want}, got {got}"
    );
}

// ---------------------------------------------------------------------------
// 9. Environment override of the gateway's locality.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_zone_env_override_changes_the_local_zone() {
    let topo = Topo::new();
    // The file says zone a; the environment says zone b.
    let gw = topo_gateway(&topo, "failover", 1)
        .env("GATEWAY_ZONE", "b")
        .start();
    let port = gw.port();
    fire(port, "/r/", 300, 4).await;
    let c = topo.counts();
    eprintln!("GATEWAY_ZONE=b, 300 requests: {c:?}");
    assert_eq!(
        zones(&c),
        (0, 300, 0),
        "GATEWAY_ZONE=b overrides the configured zone a: expected all 300 in zone b, got {c:?}"
    );
    let m = gw.metrics().await;
    assert_eq!(
        by_locality(&m).0,
        300.0,
        "zone-b endpoints are now the local zone (locality=\"zone\")"
    );
    assert_eq!(
        cross_zone_bytes(&m),
        0.0,
        "zone-b traffic is local: no cross-zone bytes"
    );
}

// ---------------------------------------------------------------------------
