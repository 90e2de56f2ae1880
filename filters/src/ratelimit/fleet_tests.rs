//! Fleet rules against a real `redis-server` (see `test_redis`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::test_redis::RedisServer;
use super::*;

/// Fleet tests measure time: run them one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn limits(yaml: &str) -> RouteRateLimits {
    let cfg: Vec<RuleConfig> = serde_yaml::from_str(yaml).unwrap();
    RouteRateLimits::compile(&cfg, None).unwrap()
}

fn from_ip(ip: &str) -> SimpleRequestKeys<'static> {
    SimpleRequestKeys {
        client_ip: Some(ip.parse::<IpAddr>().unwrap()),
        route: "orders",
        ..Default::default()
    }
}

async fn connected_store(cfg: &StoreConfig) -> RedisStore {
    let store = RedisStore::new(cfg).unwrap();
    assert!(
        store.wait_connected(Duration::from_secs(5)).await,
        "no Redis connection"
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_fleet_quota() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    // A generous timeout: this test is about counting, not about latency.
    let cfg = StoreConfig {
        timeout: Some(crate::units::Duration(Duration::from_millis(500))),
        ..StoreConfig::new(redis.url())
    };
    let rule = "- {name: shared, key: client_ip, rate: 50/s, burst: 10, scope: fleet, on_store_error: deny}";
    // Two "gateways": each its own compiled rules and its own connection.
    let gateways = [
        (limits(rule), connected_store(&cfg).await),
        (limits(rule), connected_store(&cfg).await),
    ];

    let first = gateways[0]
        .0
        .evaluate(&from_ip("192.0.2.1"), Some(&gateways[0].1))
        .await;
    assert_eq!(first.outcomes[0].source, Source::Store);
    let h = first.headers().unwrap();
    assert_eq!(h.policy, r#""shared";q=50;w=1"#);
    assert_eq!(h.ratelimit, r#""shared";r=9;t=1"#);

    let run_for = Duration::from_secs(2);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (l, store) in gateways.clone() {
        tasks.push(tokio::spawn(async move {
            let req = from_ip("192.0.2.7");
            let (mut allowed, mut errors) = (0u64, 0u64);
            while start.elapsed() < run_for {
                let d = l.evaluate(&req, Some(&store)).await;
                allowed += u64::from(d.allowed);
                errors += u64::from(d.store_error);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (allowed, errors)
        }));
    }
    let mut per_gateway = Vec::new();
    for t in tasks {
        per_gateway.push(t.await.unwrap());
    }
    let total: u64 = per_gateway.iter().map(|(a, _)| a).sum();
    let errors: u64 = per_gateway.iter().map(|(_, e)| e).sum();
    let expected = 50.0 * run_for.as_secs_f64() + 10.0;
    let err = (total as f64 - expected).abs() / expected;
    println!(
        "fleet 50/s burst 10 over {run_for:?}, two gateways: allowed {per_gateway:?} = {total}, expected {expected}, error {:.1}%",
        err * 100.0
    );
    assert_eq!(errors, 0, "store errors during the run");
    assert!(
        per_gateway.iter().all(|(a, _)| *a > 0),
        "both gateways got a share"
    );
    assert!(err <= 0.10, "allowed {total}, expected {expected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_rules_share_one_call_with_prefixed_expiring_keys() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let cfg = StoreConfig {
        key_prefix: Some("test:rl:".into()),
        ..StoreConfig::new(redis.url())
    };
    let store = connected_store(&cfg).await;
    let l = limits(
        r#"
- {name: per-ip, key: client_ip, rate: 10/m, burst: 2, scope: fleet}
- {name: per-route, key: route, rate: 100/s, scope: fleet}
"#,
    );
    let req = from_ip("198.51.100.4");
    for expect_allowed in [true, true, false] {
        let d = l.evaluate(&req, Some(&store)).await;
        assert_eq!(d.allowed, expect_allowed);
        assert!(d.outcomes.iter().all(|o| o.source == Source::Store));
    }
    let limited = l.evaluate(&req, Some(&store)).await;
    assert_eq!(limited.reported_rule().unwrap().rule.as_ref(), "per-ip");
    let wait = limited.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
        "{wait:?}"
    );

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("test:rl:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("test:rl:per-ip:") && keys[1].starts_with("test:rl:per-route:"));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 12_000, "per-ip TTL {ttl} ms");
    assert_eq!(store.store_errors(), 0);

    // Dropping the last handle closes the store's connection and thread.
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .unwrap();
        if clients.lines().count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store connection still open:\n{clients}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Evaluates `n` times, returning (allowed count, slowest call, decisions).
async fn hammer(
    l: &RouteRateLimits,
    store: &RedisStore,
    n: usize,
) -> (usize, Duration, Vec<Decision>) {
    let req = from_ip("203.0.113.9");
    let (mut allowed, mut slowest, mut all) = (0, Duration::ZERO, Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let d = l.evaluate(&req, Some(store)).await;
        slowest = slowest.max(t.elapsed());
        allowed += usize::from(d.allowed);
        all.push(d);
    }
    (allowed, slowest, all)
}

fn mode_rules() -> [(OnStoreError, RouteRateLimits); 3] {
    let rule = |mode: &str| {
        limits(&format!(
            "- {{name: q-{mode}, key: client_ip, rate: 5/s, burst: 5, scope: fleet, on_store_error: {mode}}}"
        ))
    };
    [
        (OnStoreError::Allow, rule("allow")),
        (OnStoreError::Deny, rule("deny")),
        (OnStoreError::Local, rule("local")),
    ]
}

fn check_mode(mode: OnStoreError, allowed: usize, decisions: &[Decision]) {
    for d in decisions {
        assert!(d.store_error);
        assert_eq!(d.outcomes[0].source, Source::StoreError(mode));
    }
    match mode {
        OnStoreError::Allow => assert_eq!(allowed, decisions.len(), "allow lets all through"),
        OnStoreError::Deny => {
            assert_eq!(allowed, 0, "deny rejects all");
            assert_eq!(decisions[0].headers().unwrap().retry_after, Some(1));
        }
        OnStoreError::Local => assert!(
            (5..=6).contains(&allowed),
            "local fallback allowed {allowed}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_test_each_mode_behaves_and_nothing_waits() {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let store = connected_store(&StoreConfig::new(redis.url())).await;
    let ceiling = DEFAULT_STORE_TIMEOUT + Duration::from_millis(50);
    let modes = mode_rules();
    for (_, l) in &modes {
        let (allowed, _, ds) = hammer(l, &store, 1).await;
        assert_eq!((allowed, ds[0].outcomes[0].source), (1, Source::Store));
    }

    redis.kill();
    for (mode, l) in &modes {
        let (allowed, slowest, ds) = hammer(l, &store, 20).await;
        println!(
            "redis killed, on_store_error {}: {allowed}/20 allowed, slowest call {slowest:?}",
            mode.as_str()
        );
        assert!(slowest <= ceiling, "{mode:?}: a call took {slowest:?}");
        check_mode(*mode, allowed, &ds);
    }
    assert!(
        store.store_errors() >= 60,
        "errors counted: {}",
        store.store_errors()
    );

    // Redis comes back on the same address: the store reconnects by itself.
    let _redis = RedisServer::start_on(redis.port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, slowest, ds) = hammer(&modes[0].1, &store, 1).await;
        assert!(slowest <= ceiling);
        if ds[0].outcomes[0].source == Source::Store {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not reconnect after Redis restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_at_most_the_store_timeout() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let store = connected_store(&StoreConfig::new(redis.url())).await;
    let ceiling = DEFAULT_STORE_TIMEOUT + Duration::from_millis(50);
    let modes = mode_rules();

    redis.pause();
    for (mode, l) in &modes {
        let (allowed, slowest, ds) = hammer(l, &store, 20).await;
        println!(
            "redis paused, on_store_error {}: {allowed}/20 allowed, slowest call {slowest:?}",
            mode.as_str()
        );
        assert!(slowest <= ceiling, "{mode:?}: a call took {slowest:?}");
        check_mode(*mode, allowed, &ds);
    }
    redis.resume();

    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (_, _, ds) = hammer(&modes[0].1, &store, 1).await;
        if ds[0].outcomes[0].source == Source::Store {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not recover after Redis resumed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
