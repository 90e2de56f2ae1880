//! Load-balancing policies, observed as request counts at real upstreams.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use gateway_tests::{fire, http_client, Gateway, Upstream};

/// Starts a gateway with one catch-all route to cluster `c` made of `ups`
/// with the given weights, policy and extra cluster YAML.
fn gateway(ups: &[(&Upstream, u32)], lb: &str, extra: &str) -> Gateway {
    Gateway::builder()
        .weighted_cluster("c", ups, &format!("lb: {lb}{extra}"))
        .route("{name: all, cluster: c}")
        .start()
}

/// Every upstream with weight 1, as `gateway` wants them.
fn equal(ups: &[Upstream]) -> Vec<(&Upstream, u32)> {
    ups.iter().map(|u| (u, 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even() {
    let ups = Upstream::named_n("u", 3);
    let gw = gateway(&equal(&ups), "round_robin", "");
    fire(gw.port(), "/lb/", 300, 6).await;
    let counts: Vec<u64> = ups.iter().map(Upstream::count).collect();
    assert_eq!(
        counts.iter().sum::<u64>(),
        300,
        "all requests reached an endpoint"
    );
    for (u, c) in ups.iter().zip(&counts) {
        assert!(
            c.abs_diff(100) <= 1,
            "round robin over 3 equal endpoints: expected 100 +/- 1 at {}, got {c} (all: {counts:?})",
            u.name()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_3_to_1() {
    let heavy = Upstream::named("heavy");
    let light = Upstream::named("light");
    let gw = gateway(&[(&heavy, 3), (&light, 1)], "round_robin", "");
    fire(gw.port(), "/lb/", 400, 4).await;
    assert!(
        heavy.count().abs_diff(300) <= 2 && light.count().abs_diff(100) <= 2,
        "weights 3:1 over 400 requests: expected 300/100 (+/-2), got {}/{}",
        heavy.count(),
        light.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_on_header_sticks() {
    let ups = Upstream::named_n("h", 3);
    let gw = gateway(
        &equal(&ups),
        "consistent_hash",
        ", hash_on: {header: x-user}",
    );
    let client = http_client();
    let mut by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..10 {
        for user in 0..50 {
            let name = format!("user-{user}");
            let resp = client
                .get(gw.url(&format!("/u/{round}")))
                .header("x-user", &name)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 200);
            let up = resp.headers()["x-upstream"]
                .to_str()
                .expect("x-upstream")
                .to_string();
            by_user.entry(name).or_default().insert(up);
        }
    }
    for (user, eps) in &by_user {
        assert_eq!(
            eps.len(),
            1,
            "all 10 requests of {user} should land on one endpoint, got {eps:?}"
        );
    }
    let used: BTreeSet<&String> = by_user.values().flatten().collect();
    assert!(
        used.len() > 1,
        "50 users should spread over more than one of 3 endpoints, all went to {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_fast_endpoint() {
    let slow = Upstream::slow(Duration::from_millis(300));
    let fast = Upstream::named("fast");
    let gw = gateway(&[(&slow, 1), (&fast, 1)], "least_request", "");
    let url = gw.url("/lr");
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            // Bounded: at most 2 s of requests, and at most 10k per client.
            while Instant::now() < deadline && n < 10_000 {
                let resp = client.get(&url).send().await.expect("request");
                assert_eq!(resp.status(), 200);
                n += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let (s, f) = (slow.count(), fast.count());
    assert!(
        f > 3 * s,
        "least_request with a 300 ms endpoint and a fast one: expected the fast one to get > 3x the requests, got fast={f} slow={s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_spreads_over_all_endpoints() {
    let ups = Upstream::named_n("r", 3);
    let gw = gateway(&equal(&ups), "random", "");
    const N: u64 = 300;
    fire(gw.port(), "/lb/", N as usize, 6).await;
    let counts: Vec<u64> = ups.iter().map(Upstream::count).collect();
    assert_eq!(counts.iter().sum::<u64>(), N);
    let p = 1.0 / 3.0;
    let mean = N as f64 * p;
    let sigma = (N as f64 * p * (1.0 - p)).sqrt();
    for c in &counts {
        assert!(
            *c > 0 && (*c as f64 - mean).abs() <= 5.0 * sigma,
            "random over 3 equal endpoints: expected each near {mean:.0} (+/- {:.0}, 5 sigma), got {counts:?}",
            5.0 * sigma
        );
    }
}
