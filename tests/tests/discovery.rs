//! DNS discovery of cluster endpoints (issue 17): `strict_dns` and
//! `logical_dns` clusters follow the records of a real DNS server
//! (dnsmasq on a loopback port, answering from a hosts file the test
//! edits), keep their last endpoints while DNS is down, keep the state of
//! endpoints that stay, and admin `/clusters` shows it all.
//!
//! The records of `api.test` are loopback addresses (127.0.0.2, .3, .4);
//! the upstreams behind them listen on those addresses and one shared
//! port, the port of the `api.test:PORT` endpoint.
//!
//! Without dnsmasq the tests print why and pass, except under CI (`CI`
//! set), where they fail.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gateway_tests::{
    fire, free_port, http_client, run_gateway, url, DnsServer, Gateway, GatewayBuilder, Upstream,
};

const NAME: &str = "api.test";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip literal")
}

/// A port free on each of `ips` (upstreams of one name share it).
fn shared_port(ips: &[IpAddr]) -> u16 {
    loop {
        let port = free_port();
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
}

/// Echo upstreams named `a`, `b`, `c`, ... on 127.0.0.2, .3, .4, ... and
/// one port.
fn upstreams(n: usize) -> (Vec<Upstream>, u16) {
    let ips: Vec<IpAddr> = (0..n).map(|i| ip(&format!("127.0.0.{}", i + 2))).collect();
    let port = shared_port(&ips);
    let ups = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let name = ((b'a' + i as u8) as char).to_string();
            Upstream::named_on(SocketAddr::new(*ip, port), &name)
        })
        .collect();
    (ups, port)
}

/// `api.test` records for `ups`.
fn records(ups: &[&Upstream]) -> Vec<(&'static str, IpAddr)> {
    ups.iter().map(|u| (NAME, u.addr().ip())).collect()
}

/// A gateway resolving with `dns`, a cluster `api` of `api.test:PORT`
/// (zone z1, weight 2) discovered as `kind` every 300 ms, `extra` keys
/// after it, and a catch-all route to it.
fn dns_gateway(dns: &DnsServer, kind: &str, port: u16, extra: &str) -> GatewayBuilder {
    dns_config(Gateway::builder(), dns, kind, port, extra)
}

/// [`dns_gateway`]'s config on `base` (e.g. [`Gateway::same_ports`]).
fn dns_config(
    base: GatewayBuilder,
    dns: &DnsServer,
    kind: &str,
    port: u16,
    extra: &str,
) -> GatewayBuilder {
    base.yaml(&format!(
        "dns: {{nameservers: [\"{}\"], timeout: 500ms, attempts: 1}}",
        dns.nameserver()
    ))
    .yaml("telemetry: {access_log: {enabled: false}}")
    .cluster_yaml(&format!(
        "{{name: api, discovery: {{type: {kind}, refresh: 300ms, jitter_percent: 0}}, \
             endpoints: [{{address: \"{NAME}:{port}\", zone: z1, weight: 2}}]{extra}}}"
    ))
    .route("{name: all, cluster: api}")
}

/// Waits until `gateway_discovery_endpoints{cluster="api"}` is `n`.
async fn wait_endpoints(gw: &Gateway, n: f64) {
    gw.metric("gateway_discovery_endpoints", &[("cluster", "api")])
        .within(Duration::from_secs(10))
        .eventually_eq(n)
        .await;
}

async fn clusters(gw: &Gateway) -> serde_json::Value {
    let (status, body) = gw.admin_get("/clusters").await;
    assert_eq!(status, 200, "admin /clusters: {body}");
    serde_json::from_str(&body).expect("admin /clusters is JSON")
}

/// The `/clusters` entry of cluster `name`.
fn cluster<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name} in /clusters: {doc:#}"))
}

/// The `/clusters` endpoint of `addr` in cluster `name`.
fn endpoint<'a>(doc: &'a serde_json::Value, name: &str, addr: SocketAddr) -> &'a serde_json::Value {
    let c = cluster(doc, name);
    c["endpoints"]
        .as_array()
        .and_then(|es| es.iter().find(|e| e["address"] == addr.to_string()))
        .unwrap_or_else(|| panic!("no endpoint {addr} in cluster {name}: {c:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_follows_added_and_removed_records() {
    let (ups, port) = upstreams(2);
    let (a, b) = (&ups[0], &ups[1]);
    let Some(dns) = DnsServer::start(&records(&[a])) else {
        return;
    };
    let gw = dns_gateway(&dns, "strict_dns", port, "").start();
    wait_endpoints(&gw, 1.0).await;
    let only_a = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(
        only_a.get("a"),
        Some(&20),
        "one record, one endpoint: {only_a:?}"
    );

    // A record added: traffic reaches it within a refresh or so.
    dns.set_records(&records(&[a, b]));
    wait_endpoints(&gw, 2.0).await;
    let added = [("cluster", "api"), ("change", "added")];
    gw.metric("gateway_discovery_changes_total", &added)
        .eventually_eq(1.0)
        .await;
    let both = fire(gw.port(), "/r/", 40, 2).await;
    assert_eq!(both.get("a"), Some(&20), "round robin over both: {both:?}");
    assert_eq!(both.get("b"), Some(&20), "round robin over both: {both:?}");

    // A record removed: no more traffic to it.
    dns.set_records(&records(&[b]));
    wait_endpoints(&gw, 1.0).await;
    let removed = [("cluster", "api"), ("change", "removed")];
    gw.metric("gateway_discovery_changes_total", &removed)
        .eventually_eq(1.0)
        .await;
    let only_b = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(only_b.get("b"), Some(&20), "a was removed: {only_b:?}");
    let errors = gw
        .metric("gateway_discovery_errors_total", &[("cluster", "api")])
        .value()
        .await;
    assert_eq!(errors, 0.0, "no lookup failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_keeps_the_last_endpoints_serving() {
    let (ups, port) = upstreams(2);
    let Some(mut dns) = DnsServer::start(&records(&[&ups[0], &ups[1]])) else {
        return;
    };
    let gw = dns_gateway(&dns, "strict_dns", port, "").start();
    wait_endpoints(&gw, 2.0).await;
    dns.kill();
    gw.metric("gateway_discovery_errors_total", &[("cluster", "api")])
        .within(Duration::from_secs(10))
        .eventually(|v| v >= 2.0)
        .await;
    // Every request still answered, by both endpoints.
    let counts = fire(gw.port(), "/r/", 100, 4).await;
    assert_eq!(counts.values().sum::<u64>(), 100);
    assert_eq!(counts.get("a"), Some(&50), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&50), "{counts:?}");
    let doc = clusters(&gw).await;
    let d = &cluster(&doc, "api")["discovery"];
    let err = d["last_error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with(&format!("{NAME}:{port}: ")),
        "last_error names the entry: {d:#}"
    );
    assert!(d["consecutive_failures"].as_u64() >= Some(1), "{d:#}");
    assert!(d["last_error_at"].is_string(), "{d:#}");
    assert!(d["last_success"].is_string(), "{d:#}");
    assert_eq!(
        cluster(&doc, "api")["endpoints"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(
        gw.stderr()
            .contains("DNS lookup failed, keeping the last endpoints"),
        "the failure is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_stays_keeps_its_outlier_ejection() {
    let (ups, port) = upstreams(3);
    let (a, b, c) = (&ups[0], &ups[1], &ups[2]);
    let Some(dns) = DnsServer::start(&records(&[a, b])) else {
        return;
    };
    let od = ", outlier_detection: {consecutive_5xx: 3, base_ejection_time: 30s, max_ejection_percent: 50}";
    let gw = dns_gateway(&dns, "strict_dns", port, od).start();
    wait_endpoints(&gw, 2.0).await;

    // Eject a: three 500s in a row (round robin alternates a and b).
    a.set_failing(true);
    let client = http_client();
    let mut statuses = Vec::new();
    while gw
        .metric("gateway_outlier_ejections_total", &[("cluster", "api")])
        .value()
        .await
        < 1.0
    {
        assert!(statuses.len() < 40, "a was never ejected: {statuses:?}");
        let resp = client
            .get(url(gw.port(), "/eject"))
            .send()
            .await
            .expect("request");
        statuses.push(resp.status().as_u16());
    }
    a.set_failing(false);
    let doc = clusters(&gw).await;
    assert_eq!(
        endpoint(&doc, "api", a.addr())["outlier"]["ejected"],
        true,
        "{doc:#}"
    );

    // A refresh that changes the set: a stays, and stays ejected.
    dns.set_records(&records(&[a, b, c]));
    wait_endpoints(&gw, 3.0).await;
    let doc = clusters(&gw).await;
    let ea = endpoint(&doc, "api", a.addr());
    assert_eq!(
        ea["outlier"]["ejected"], true,
        "ejection kept across the refresh: {ea:#}"
    );
    assert!(ea["outlier"]["ejected_until"].is_string(), "{ea:#}");
    assert_eq!(ea["outlier"]["ejections"], 1, "{ea:#}");
    assert_eq!(endpoint(&doc, "api", c.addr())["outlier"]["ejected"], false);
    let before = a.count();
    let counts = fire(gw.port(), "/r/", 60, 2).await;
    assert_eq!(
        a.count(),
        before,
        "the ejected endpoint got traffic: {counts:?}"
    );
    assert_eq!(counts.get("b"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("c"), Some(&30), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_dns_keeps_one_address_while_it_is_answered() {
    let (ups, port) = upstreams(2);
    let Some(dns) = DnsServer::start(&records(&[&ups[0], &ups[1]])) else {
        return;
    };
    let gw = dns_gateway(&dns, "logical_dns", port, "").start();
    wait_endpoints(&gw, 1.0).await;
    let first = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(first.len(), 1, "one address at a time: {first:?}");
    let (used, _) = first.iter().next().expect("an upstream answered");
    let (current, other) = if used == "a" {
        (&ups[0], &ups[1])
    } else {
        (&ups[1], &ups[0])
    };
    // Refreshes that still answer the current address change nothing.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let again = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(again.get(current.name()), Some(&20), "{again:?}");

    // The current address is gone: the other one takes over.
    dns.set_records(&records(&[other]));
    let removed = [("cluster", "api"), ("change", "removed")];
    gw.metric("gateway_discovery_changes_total", &removed)
        .within(Duration::from_secs(10))
        .eventually_eq(1.0)
        .await;
    let after = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(after.get(other.name()), Some(&20), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_page_shows_static_and_dns_clusters() {
    let (ups, port) = upstreams(1);
    let Some(dns) = DnsServer::start(&records(&[&ups[0]])) else {
        return;
    };
    let s = Upstream::named("s");
    let gw = dns_gateway(&dns, "strict_dns", port, "")
        .cluster_yaml(&format!(
            "{{name: static, endpoints: [{{address: \"{}\", region: r9, zone: z9, weight: 5}}], \
             health_check: {{type: tcp, interval: 200ms}}}}",
            s.address()
        ))
        .route("{name: s, match: {path_prefix: /static}, cluster: static}")
        .start();
    wait_endpoints(&gw, 1.0).await;
    let doc = clusters(&gw).await;
    let names: Vec<&str> = doc["clusters"]
        .as_array()
        .expect("clusters list")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["api", "static"], "{doc:#}");

    let api = cluster(&doc, "api");
    assert_eq!(api["lb"], "round_robin");
    let d = &api["discovery"];
    assert_eq!(d["type"], "strict_dns", "{d:#}");
    assert_eq!(d["names"], serde_json::json!([format!("{NAME}:{port}")]));
    assert_eq!(d["refresh_ms"], 300);
    assert!(d["last_refresh"].is_string(), "{d:#}");
    assert!(d["last_error"].is_null(), "{d:#}");
    let e = endpoint(&doc, "api", ups[0].addr());
    assert_eq!(e["locality"]["zone"], "z1", "{e:#}");
    assert!(e["locality"]["region"].is_null(), "{e:#}");
    assert_eq!(e["weight"], 2);
    assert_eq!(e["health_check"], "unchecked");
    assert_eq!(e["outlier"]["ejected"], false);
    assert!(e["outlier"]["ejected_until"].is_null());
    assert_eq!(e["active_requests"], 0);
    assert_eq!(e["discovered"]["type"], "dns");
    assert_eq!(e["discovered"]["hostname"], format!("{NAME}:{port}"));

    let st = cluster(&doc, "static");
    assert_eq!(st["discovery"]["type"], "static", "{st:#}");
    assert!(st["discovery"]["resolved_at"].is_string(), "{st:#}");
    let e = endpoint(&doc, "static", s.addr());
    assert_eq!(e["locality"]["zone"], "z9", "{e:#}");
    assert_eq!(e["locality"]["region"], "r9", "{e:#}");
    assert_eq!(e["weight"], 5);
    assert_eq!(e["health_check"], "healthy", "{e:#}");
    assert_eq!(e["discovered"]["type"], "static");
    assert_eq!(e["priority"], "zone");
}

/// `gateway validate` of a config with one cluster block (`cluster`, its
/// lines start at line 3) and `top` before it.
fn validate(cluster: &str) -> gateway_tests::GatewayOutput {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "admin: {{listen: \"127.0.0.1:{}\"}}\nclusters:\n{cluster}\n",
        free_port()
    );
    std::fs::write(dir.path().join("gateway.yaml"), yaml).expect("write config");
    run_gateway(
        &["validate", "-c", "gateway.yaml"],
        dir.path(),
        Duration::from_secs(30),
    )
}

#[test]
fn discovery_config_errors_have_positions() {
    let cases = [
        (
            "  - name: ips\n    discovery: {type: strict_dns}\n    endpoints: [{address: \"127.0.0.1:80\"}]",
            "gateway.yaml:4:16: discovery needs at least one `hostname:port` endpoint",
        ),
        (
            "  - name: zero\n    discovery: {type: logical_dns, refresh: 0s}\n    endpoints: [{address: \"x.test:80\"}]",
            "gateway.yaml:4:",
        ),
        (
            "  - name: ns\n    discovery:\n      type: strict_dns\n      dns: {nameservers: [\"dns.example\"]}\n    endpoints: [{address: \"x.test:80\"}]",
            "gateway.yaml:6:",
        ),
    ];
    for (cluster, want) in cases {
        let out = validate(cluster);
        assert_eq!(
            out.code(),
            Some(1),
            "validate must fail for\n{cluster}\nstderr:\n{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(want),
            "expected `{want}` for\n{cluster}\nstderr:\n{}",
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_unchanged_dns_cluster_and_its_refreshes() {
    let (ups, port) = upstreams(2);
    let Some(dns) = DnsServer::start(&records(&[&ups[0]])) else {
        return;
    };
    let gw = dns_gateway(&dns, "strict_dns", port, "").start();
    dns.set_records(&records(&[&ups[0], &ups[1]]));
    wait_endpoints(&gw, 2.0).await;
    let before = clusters(&gw).await;
    let since = cluster(&before, "api")["discovery"]["endpoints_since"].clone();

    // Another route: the cluster is unchanged and kept as it is.
    gw.rewrite(
        dns_config(gw.same_ports(), &dns, "strict_dns", port, "")
            .route("{name: other, match: {path_prefix: /other}, cluster: api}"),
    );
    gw.wait_generation(2).await;
    let after = clusters(&gw).await;
    let d = &cluster(&after, "api")["discovery"];
    assert_eq!(d["endpoints_since"], since, "same endpoint set: {d:#}");
    assert!(
        d["refreshes"].as_u64() >= cluster(&before, "api")["discovery"]["refreshes"].as_u64(),
        "refreshes go on counting: {d:#}"
    );
    let counts = fire(gw.port(), "/other/", 20, 2).await;
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respect_ttl_refreshes_at_the_record_ttl_with_the_clusters_own_resolver() {
    let (ups, port) = upstreams(2);
    let Some(dns) = DnsServer::start(&records(&[&ups[0]])) else {
        return;
    };
    // The top-level resolver is dead; the cluster's own `discovery.dns`
    // replaces it. `refresh` is a minute: only the 1 s TTL of dnsmasq's
    // answers can bring the new record in time.
    let gw = Gateway::builder()
        .yaml("dns: {nameservers: [\"127.0.0.1:9\"], timeout: 200ms, attempts: 1}")
        .cluster_yaml(&format!(
            "{{name: api, discovery: {{type: strict_dns, refresh: 1m, respect_ttl: true, jitter_percent: 0, \
             dns: {{nameservers: [\"{}\"], timeout: 500ms}}}}, endpoints: [{{address: \"{NAME}:{port}\"}}]}}",
            dns.nameserver()
        ))
        .route("{name: all, cluster: api}")
        .start();
    wait_endpoints(&gw, 1.0).await;
    dns.set_records(&records(&[&ups[0], &ups[1]]));
    gw.metric("gateway_discovery_endpoints", &[("cluster", "api")])
        .within(Duration::from_secs(5))
        .eventually_eq(2.0)
        .await;
    let counts = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_while_dns_is_down_keeps_the_last_addresses() {
    let (ups, port) = upstreams(2);
    let Some(mut dns) = DnsServer::start(&records(&[&ups[0], &ups[1]])) else {
        return;
    };
    let gw = dns_gateway(&dns, "strict_dns", port, "").start();
    wait_endpoints(&gw, 2.0).await;
    let since = cluster(&clusters(&gw).await, "api")["discovery"]["endpoints_since"].clone();
    dns.kill();
    // Only the top-level resolver changes: the cluster's own config does
    // not, yet it is rebuilt (its resolver did change), and its first
    // lookup fails.
    let changed = gw
        .same_ports()
        .yaml(&format!(
            "dns: {{nameservers: [\"{}\"], timeout: 300ms, attempts: 1}}",
            dns.nameserver()
        ))
        .cluster_yaml(&format!(
            "{{name: api, discovery: {{type: strict_dns, refresh: 300ms, jitter_percent: 0}}, \
             endpoints: [{{address: \"{NAME}:{port}\", zone: z1, weight: 2}}]}}"
        ))
        .route("{name: all, cluster: api}");
    gw.rewrite(changed);
    gw.wait_generation(2).await;
    let doc = clusters(&gw).await;
    let api = cluster(&doc, "api");
    assert_ne!(
        api["discovery"]["endpoints_since"], since,
        "rebuilt: {api:#}"
    );
    assert_eq!(
        api["endpoints"].as_array().map(Vec::len),
        Some(2),
        "{api:#}"
    );
    let counts = fire(gw.port(), "/r/", 20, 2).await;
    assert_eq!(counts.get("a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&10), "{counts:?}");
    assert!(
        gw.stderr().contains("DNS lookup failed ("),
        "the failed first lookup is a warning"
    );
}
