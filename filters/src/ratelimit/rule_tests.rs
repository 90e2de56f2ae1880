//! Rule evaluation without Redis: keys, shadow, combination, headers, reloads.

use std::collections::HashMap;
use std::net::IpAddr;

use http::HeaderMap;

use super::*;

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

async fn allowed_count<K: RequestKeys + Sync>(l: &RouteRateLimits, req: &K, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if l.evaluate(req, None).await.allowed {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test]
async fn client_ip_keys_are_isolated() {
    let l = limits("- {name: per-ip, key: client_ip, rate: 1/h, burst: 3}");
    assert_eq!(allowed_count(&l, &from_ip("10.0.0.1"), 10).await, 3);
    assert_eq!(allowed_count(&l, &from_ip("10.0.0.2"), 10).await, 3);
    assert_eq!(allowed_count(&l, &from_ip("::ffff:10.0.0.1"), 1).await, 0);
}

#[tokio::test]
async fn combined_keys_count_each_combination() {
    let l = limits(r#"- {name: t, key: ["header:x-tenant", route], rate: 1/h, burst: 2}"#);
    let mut a = HeaderMap::new();
    a.insert("x-tenant", "acme".parse().unwrap());
    let mut b = HeaderMap::new();
    b.insert("x-tenant", "globex".parse().unwrap());
    let req = |h, route| SimpleRequestKeys {
        headers: Some(h),
        route,
        ..Default::default()
    };
    assert_eq!(allowed_count(&l, &req(&a, "orders"), 5).await, 2);
    assert_eq!(
        allowed_count(&l, &req(&a, "billing"), 5).await,
        2,
        "other route"
    );
    assert_eq!(
        allowed_count(&l, &req(&b, "orders"), 5).await,
        2,
        "other tenant"
    );
}

#[tokio::test]
async fn missing_key_parts_do_not_limit() {
    let l = limits(
        r#"
- {name: by-tenant, key: ["header:x-tenant", client_ip], rate: 1/h, burst: 1}
- {name: by-user, key: "jwt:sub", rate: 1/h, burst: 1}
- {name: by-principal, key: principal, rate: 1/h, burst: 1}
"#,
    );
    let req = from_ip("10.0.0.9"); // no header, no JWT, no principal
    for _ in 0..5 {
        let d = l.evaluate(&req, None).await;
        assert!(d.allowed);
        assert!(d.outcomes.iter().all(|o| o.verdict == Verdict::NoKey));
        assert_eq!(d.headers(), None, "no rule applied, so no headers");
    }
    let claims = HashMap::from([("sub".to_string(), "alice".to_string())]);
    let with_jwt = SimpleRequestKeys {
        claims: Some(&claims),
        ..req
    };
    assert_eq!(allowed_count(&l, &with_jwt, 3).await, 1);
}

#[tokio::test]
async fn shadow_rules_count_but_let_through() {
    let l = limits(
        r#"
- {name: enforced, key: client_ip, rate: 100/s}
- {name: dry-run, key: client_ip, rate: 1/h, burst: 1, shadow: true}
"#,
    );
    let req = from_ip("10.1.1.1");
    let first = l.evaluate(&req, None).await;
    assert_eq!(first.outcomes[1].verdict, Verdict::Allowed);
    let second = l.evaluate(&req, None).await;
    assert!(second.allowed);
    assert_eq!(second.outcomes[1].verdict, Verdict::WouldLimit);
    assert_eq!(second.outcomes[1].verdict.as_str(), "would_limit");
    let h = second.headers().unwrap();
    assert_eq!(
        h.policy, r#""enforced";q=100;w=1"#,
        "shadow rules are never reported"
    );
    assert_eq!(h.retry_after, None);
}

#[tokio::test]
async fn headers_report_the_most_restrictive_rule() {
    let l = limits(
        r#"
- {name: per-ip, key: client_ip, rate: 100/s, burst: 200}
- {name: per-route, key: route, rate: 5/m}
"#,
    );
    let req = from_ip("10.2.2.2");
    let d = l.evaluate(&req, None).await;
    assert!(d.allowed);
    let h = d.headers().unwrap();
    assert_eq!(h.policy, r#""per-route";q=5;w=60"#);
    assert_eq!(h.ratelimit, r#""per-route";r=4;t=12"#);
    for _ in 0..4 {
        assert!(l.evaluate(&req, None).await.allowed);
    }
    let limited = l.evaluate(&req, None).await;
    assert!(!limited.allowed);
    assert_eq!(limited.reported_rule().unwrap().rule.as_ref(), "per-route");
    let wait = limited.retry_after.unwrap();
    assert!(
        wait > std::time::Duration::from_secs(11) && wait <= std::time::Duration::from_secs(12)
    );
    let mut resp = HeaderMap::new();
    limited.apply_headers(&mut resp);
    assert_eq!(resp["retry-after"], "12");
    assert_eq!(resp["ratelimit-policy"], r#""per-route";q=5;w=60"#);
    assert_eq!(resp["ratelimit"], r#""per-route";r=0;t=12"#);

    // r is capped at q when the burst is larger than the rate.
    let big = limits("- {name: per-ip, key: client_ip, rate: 100/s, burst: 200}");
    let d = big.evaluate(&from_ip("10.3.3.3"), None).await;
    assert_eq!(d.headers().unwrap().ratelimit, r#""per-ip";r=100;t=1"#);
}

#[tokio::test]
async fn buckets_survive_a_reload_when_the_rule_is_unchanged() {
    let v1: Vec<RuleConfig> =
        serde_yaml::from_str("- {name: a, key: client_ip, rate: 1/h, burst: 2}").unwrap();
    let old = RouteRateLimits::compile(&v1, None).unwrap();
    let req = from_ip("10.4.4.4");
    assert_eq!(allowed_count(&old, &req, 2).await, 2);

    let same = RouteRateLimits::compile(&v1, Some(&old)).unwrap();
    assert!(same.rules()[0].shares_state_with(&old.rules()[0]));
    assert_eq!(allowed_count(&same, &req, 1).await, 0, "still exhausted");

    let shadowed: Vec<RuleConfig> =
        serde_yaml::from_str("- {name: a, key: client_ip, rate: 1/h, burst: 2, shadow: true}")
            .unwrap();
    assert!(
        old.rules()[0].same_definition(&shadowed[0]),
        "shadow does not reset"
    );

    let faster: Vec<RuleConfig> =
        serde_yaml::from_str("- {name: a, key: client_ip, rate: 2/h, burst: 2}").unwrap();
    assert!(!old.rules()[0].same_definition(&faster[0]));
    let changed = RouteRateLimits::compile(&faster, Some(&old)).unwrap();
    assert!(!changed.rules()[0].shares_state_with(&old.rules()[0]));
    assert_eq!(allowed_count(&changed, &req, 3).await, 2, "fresh buckets");
}

#[tokio::test]
async fn fleet_rules_without_a_store_follow_on_store_error() {
    let l = limits(
        r#"
- {name: open, key: client_ip, rate: 1/h, burst: 1, scope: fleet, on_store_error: allow}
- {name: local, key: client_ip, rate: 1/h, burst: 2, scope: fleet}
"#,
    );
    let req = from_ip("10.5.5.5");
    let d = l.evaluate(&req, None).await;
    assert!(d.allowed && d.store_error);
    assert_eq!(
        d.outcomes[0].source,
        Source::StoreError(OnStoreError::Allow)
    );
    assert_eq!(
        d.outcomes[1].source,
        Source::StoreError(OnStoreError::Local)
    );
    assert_eq!(
        allowed_count(&l, &req, 3).await,
        1,
        "local fallback: burst 2 in all"
    );

    let closed =
        limits("- {name: c, key: client_ip, rate: 1/h, scope: fleet, on_store_error: deny}");
    let d = closed.evaluate(&req, None).await;
    assert!(!d.allowed);
    assert_eq!(d.headers().unwrap().retry_after, Some(1));
}

#[test]
fn evaluation_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let l = limits("- {key: client_ip, rate: 1/s}");
    let req = from_ip("10.0.0.1");
    let fut = l.evaluate(&req, None);
    assert_send(&fut);
}
