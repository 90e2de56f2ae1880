//! Rate limiting (issue 6): local accuracy and headers, key isolation,
//! shadow rules, buckets kept across reloads, one fleet quota shared by two
//! gateways through a real Redis, every `on_store_error` mode with Redis
//! frozen and then killed, and the memory bound under a flood of distinct
//! keys.
//!
//! The tests of this file run one at a time ([`SERIAL`]): their pass
//! criteria are timing (allowed counts over a window, per-request latency)
//! and resident memory, which a concurrent flood on a 2-core machine would
//! distort.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::{
    gateway_bin, http_client, url, Gateway, GatewayBuilder, RedisServer, Upstream,
};

/// One test at a time (see the module docs). A tokio mutex: it is held
/// across awaits and does not poison when a test fails.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DECISIONS: &str = "gateway_ratelimit_decisions_total";
const STORE_ERRORS: &str = "gateway_ratelimit_store_errors_total";

/// `b` with cluster `app` on `app`, the given `routes:` entries (YAML lines
/// indented by two spaces) and, when given, a `rate_limit_store` line.
fn config(b: GatewayBuilder, app: &Upstream, routes: &str, store: Option<&str>) -> GatewayBuilder {
    let b = b.cluster("app", &[app], "").routes_yaml(routes);
    match store {
        Some(store) => b.yaml(&format!("rate_limit_store: {store}")),
        None => b,
    }
}

/// Starts a gateway with [`config`] on fresh ports; returns it and its
/// traffic port.
fn start(app: &Upstream, routes: &str, store: Option<&str>) -> (Gateway, u16) {
    let gw = config(Gateway::builder(), app, routes, store).start();
    let port = gw.port();
    (gw, port)
}

async fn decisions(gw: &Gateway, route: &str, rule: &str, decision: &str) -> u64 {
    let labels = [("route", route), ("rule", rule), ("decision", decision)];
    gw.metric(DECISIONS, &labels).value().await as u64
}

async fn store_errors(gw: &Gateway) -> u64 {
    gw.metric(STORE_ERRORS, &[]).value().await as u64
}

/// The parts of a response the assertions look at.
#[derive(Clone, Debug)]
struct Seen {
    status: u16,
    body: String,
    retry_after: Option<String>,
    policy: Option<String>,
    ratelimit: Option<String>,
}

async fn seen(resp: reqwest::Response) -> Seen {
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (retry_after, policy, ratelimit) =
        (h("retry-after"), h("ratelimit-policy"), h("ratelimit"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    Seen {
        status,
        body,
        retry_after,
        policy,
        ratelimit,
    }
}

async fn get(client: &reqwest::Client, port: u16, path: &str, headers: &[(&str, &str)]) -> Seen {
    let mut req = client.get(url(port, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path} {headers:?}: expected a response, got error {e}"));
    seen(resp).await
}

/// `n` sequential [`get`]s.
async fn get_n(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> Vec<Seen> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(get(client, port, path, headers).await);
    }
    v
}

fn codes(seen: &[Seen]) -> Vec<u16> {
    seen.iter().map(|s| s.status).collect()
}

/// Parses a one-item Structured Field List whose item is the sf-string
/// `"<name>"` followed by integer parameters (`;q=50;w=1`), as
/// draft-ietf-httpapi-ratelimit-headers writes `RateLimit-Policy` and
/// `RateLimit`.
fn sf_item(value: &str, name: &str) -> Result<BTreeMap<String, u64>, String> {
    let quoted = format!("\"{name}\"");
    let rest = value
        .strip_prefix(&quoted)
        .ok_or_else(|| format!("expected the item to be the sf-string {quoted}, got `{value}`"))?;
    let mut params = BTreeMap::new();
    for p in rest.split(';').skip(1) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("parameter `{p}` of `{value}` has no `=`"))?;
        let key_ok = k.starts_with(|c: char| c.is_ascii_lowercase())
            && k.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.*".contains(c));
        if !key_ok {
            return Err(format!("parameter key `{k}` of `{value}` is not an sf-key"));
        }
        if v.is_empty() || v.len() > 15 || !v.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "parameter `{k}` of `{value}` is not a non-negative sf-integer"
            ));
        }
        if params.insert(k.to_string(), v.parse().unwrap()).is_some() {
            return Err(format!("parameter `{k}` repeated in `{value}`"));
        }
    }
    if !rest.is_empty() && !rest.starts_with(';') {
        return Err(format!("unexpected text after {quoted} in `{value}`"));
    }
    Ok(params)
}

/// Checks the rate-limit headers of one response against rule `name` with
/// quota `q` per `w` seconds; returns a description of every problem.
fn header_problems(s: &Seen, name: &str, q: u64, w: u64) -> Vec<String> {
    let mut out = Vec::new();
    let want_policy = format!("\"{name}\";q={q};w={w}");
    match &s.policy {
        Some(p) if *p == want_policy => {}
        other => out.push(format!(
            "{}: expected RateLimit-Policy `{want_policy}`, got {other:?}",
            s.status
        )),
    }
    let rl = match s.ratelimit.as_deref().map(|v| sf_item(v, name)) {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            out.push(format!("{}: RateLimit: {e}", s.status));
            return out;
        }
        None => {
            out.push(format!(
                "{}: expected a RateLimit header, got none",
                s.status
            ));
            return out;
        }
    };
    let (Some(&r), Some(&t)) = (rl.get("r"), rl.get("t")) else {
        out.push(format!(
            "{}: expected RateLimit with r and t parameters, got {:?}",
            s.status, s.ratelimit
        ));
        return out;
    };
    if r > q {
        out.push(format!(
            "{}: expected RateLimit r <= q={q}, got r={r}",
            s.status
        ));
    }
    if s.status == 429 {
        let retry: Option<u64> = s.retry_after.as_deref().and_then(|v| v.parse().ok());
        match retry {
            Some(ra) if ra >= 1 => {
                if t != ra {
                    out.push(format!(
                        "429: expected RateLimit t equal to Retry-After {ra}, got t={t}"
                    ));
                }
            }
            _ => out.push(format!(
                "429: expected an integer Retry-After >= 1, got {:?}",
                s.retry_after
            )),
        }
        if r != 0 {
            out.push(format!("429: expected RateLimit r=0, got r={r}"));
        }
        if s.body != "rate limited\n" {
            out.push(format!(
                "429: expected body \"rate limited\\n\", got {:?}",
                s.body
            ));
        }
    } else if s.retry_after.is_some() {
        out.push(format!(
            "{}: expected no Retry-After on an allowed response, got {:?}",
            s.status, s.retry_after
        ));
    }
    out
}

/// Tallies of a load run.
#[derive(Default)]
struct Tally {
    ok: u64,
    limited: u64,
    other: BTreeMap<String, u64>,
    problems: Vec<String>,
    problem_count: u64,
}

impl Tally {
    /// Asserts only 200 and 429 answers, all with correct rate-limit
    /// headers and 429 bodies; `who` names the clients.
    fn assert_clean(&self, who: &str) {
        assert!(
            self.other.is_empty() && self.problem_count == 0,
            "{who}: expected only 200/429 with correct headers and 429 bodies, got other {:?}, {} problems, first: {:#?}",
            self.other,
            self.problem_count,
            self.problems
        );
    }

    fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < 10 {
            self.problems.push(p);
        }
    }
}

/// `clients` keep-alive HTTP/1.1 clients, each sending `GET /` with
/// `headers` back to back to `ports[i % ports.len()]` until `duration` has
/// passed; every response is checked with [`header_problems`] for rule
/// `name` (`q`/`w`). Returns the tally and the measured duration.
async fn hammer(
    ports: &[u16],
    clients: usize,
    duration: Duration,
    headers: &[(&str, &str)],
    (name, q, w): (&str, u64, u64),
) -> (Vec<Tally>, Duration) {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let slot = i % ports.len();
        let port = ports[slot];
        let headers = headers.clone();
        let name = name.to_string();
        tasks.push(tokio::spawn(async move {
            let client = http_client();
            let mut t = Tally::default();
            while Instant::now() < deadline {
                let mut req = client.get(url(port, "/"));
                for (k, v) in &headers {
                    req = req.header(k, v);
                }
                let s = match req.send().await {
                    Ok(r) => seen(r).await,
                    Err(e) => {
                        t.problem(format!("request error: {e}"));
                        *t.other.entry("error".into()).or_default() += 1;
                        continue;
                    }
                };
                match s.status {
                    200 => t.ok += 1,
                    429 => t.limited += 1,
                    other => *t.other.entry(other.to_string()).or_default() += 1,
                }
                if s.status == 200 || s.status == 429 {
                    for p in header_problems(&s, &name, q, w) {
                        t.problem(p);
                    }
                } else {
                    t.problem(format!("unexpected status {}: {:?}", s.status, s.body));
                }
            }
            (slot, t)
        }));
    }
    let mut per_port: Vec<Tally> = (0..ports.len()).map(|_| Tally::default()).collect();
    for task in tasks {
        let (p, t) = task.await.expect("load task");
        let agg = &mut per_port[p];
        agg.ok += t.ok;
        agg.limited += t.limited;
        for (k, v) in t.other {
            *agg.other.entry(k).or_default() += v;
        }
        agg.problem_count += t.problem_count;
        for p in t.problems {
            if agg.problems.len() < 10 {
                agg.problems.push(p);
            }
        }
    }
    (per_port, start.elapsed())
}

/// Whether `got` is within `pct` percent of `want`.
fn within(got: u64, want: f64, pct: f64) -> bool {
    (got as f64 - want).abs() <= want * pct / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_rule_allows_rate_times_time_plus_burst_with_correct_headers() {
    let _serial = SERIAL.lock().await;
    let app = Upstream::named("app");
    let (gw, port) = start(
        &app,
        "  - name: limited\n    cluster: app\n    rate_limit:\n      - {name: per-ip, key: client_ip, rate: 50/s, burst: 10}",
        None,
    );
    let (tallies, elapsed) =
        hammer(&[port], 4, Duration::from_secs(4), &[], ("per-ip", 50, 1)).await;
    let t = &tallies[0];
    let want = 50.0 * 4.0 + 10.0;
    eprintln!(
        "local accuracy: {} allowed, {} limited, other {:?} in {elapsed:?} (want {want} +-10%); {:.0} req/s",
        t.ok,
        t.limited,
        t.other,
        (t.ok + t.limited) as f64 / elapsed.as_secs_f64()
    );
    t.assert_clean("local rule");
    assert!(
        within(t.ok, want, 10.0),
        "expected 50/s x 4 s + burst 10 = {want} allowed (+-10%), got {} allowed ({} limited, measured window {elapsed:?})",
        t.ok,
        t.limited
    );
    assert!(
        t.limited > t.ok,
        "expected the load to exceed the limit (more 429 than 200), got {} limited vs {} allowed",
        t.limited,
        t.ok
    );
    assert_eq!(
        app.count(),
        t.ok,
        "expected the upstream to see exactly the allowed requests"
    );
    let allowed = decisions(&gw, "limited", "per-ip", "allowed").await;
    let limited = decisions(&gw, "limited", "per-ip", "limited").await;
    assert_eq!(
        (allowed, limited),
        (t.ok, t.limited),
        "expected decisions{{route=limited,rule=per-ip}} (allowed, limited) to equal what the clients saw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_isolated_and_requests_without_the_key_are_not_limited() {
    let _serial = SERIAL.lock().await;
    let app = Upstream::named("app");
    let (gw, port) = start(
        &app,
        "  - name: users\n    cluster: app\n    rate_limit:\n      - {name: per-user, key: \"header:x-user\", rate: 1/m, burst: 3}",
        None,
    );
    let client = http_client();
    let a = get_n(&client, port, "/", &[("x-user", "alice")], 5).await;
    assert_eq!(
        codes(&a),
        [200, 200, 200, 429, 429],
        "expected user alice to get her burst of 3 then 429"
    );
    for s in &a {
        let p = header_problems(s, "per-user", 1, 60);
        assert!(
            p.is_empty(),
            "expected correct headers for alice, got {p:?}"
        );
    }
    let b = get_n(&client, port, "/", &[("x-user", "bob")], 4).await;
    assert_eq!(
        codes(&b),
        [200, 200, 200, 429],
        "expected alice's exhausted bucket not to limit bob: bob gets his own burst of 3"
    );
    let anon = get_n(&client, port, "/", &[], 10).await;
    for (i, s) in anon.iter().enumerate() {
        assert_eq!(
            (s.status, &s.ratelimit, &s.policy),
            (200, &None, &None),
            "request {i} without x-user: expected 200 with no rate-limit headers (rule does not apply)"
        );
    }
    assert_eq!(
        (
            decisions(&gw, "users", "per-user", "allowed").await,
            decisions(&gw, "users", "per-user", "limited").await,
            decisions(&gw, "users", "per-user", "no_key").await,
        ),
        (6, 3, 10),
        "expected decisions (allowed, limited, no_key)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_rule_counts_but_lets_everything_through() {
    let _serial = SERIAL.lock().await;
    let app = Upstream::named("app");
    let (gw, port) = start(
        &app,
        "  - name: dry\n    cluster: app\n    rate_limit:\n      - {name: shadowed, key: client_ip, rate: 1/m, burst: 2, shadow: true}",
        None,
    );
    let client = http_client();
    for i in 0..10 {
        let s = get(&client, port, "/", &[]).await;
        assert_eq!(
            (s.status, &s.ratelimit, &s.retry_after),
            (200, &None, &None),
            "request {i}: expected a shadow rule to let it through with no rate-limit headers"
        );
    }
    assert_eq!(
        app.count(),
        10,
        "expected all 10 requests to reach the upstream"
    );
    assert_eq!(
        (
            decisions(&gw, "dry", "shadowed", "allowed").await,
            decisions(&gw, "dry", "shadowed", "would_limit").await,
            decisions(&gw, "dry", "shadowed", "limited").await,
        ),
        (2, 8, 0),
        "expected decisions (allowed, would_limit, limited) for burst 2 and 10 requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_buckets_of_unchanged_rules_and_resets_changed_ones() {
    let _serial = SERIAL.lock().await;
    let app = Upstream::named("app");
    let yaml = |b: GatewayBuilder, other_body: &str, rate: &str| {
        config(
            b,
            &app,
            &format!(
                "  - {{name: other, match: {{path: /other}}, direct_response: {{status: 200, body: \"{other_body}\"}}}}\n  - name: limited\n    cluster: app\n    rate_limit:\n      - {{name: per-ip, key: client_ip, rate: {rate}, burst: 3}}"
            ),
            None,
        )
    };
    let gw = yaml(Gateway::builder(), "v1", "1/m").start();
    let port = gw.port();
    let client = http_client();
    assert_eq!(
        codes(&get_n(&client, port, "/", &[], 4).await),
        [200, 200, 200, 429],
        "expected burst 3 then 429"
    );

    // An unrelated route changes: the rule's bucket must be kept.
    gw.rewrite(yaml(gw.same_ports(), "v2", "1/m"));
    gw.wait_generation(2).await;
    let other = get(&client, port, "/other", &[]).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (200, "v2"),
        "expected generation 2 to serve the changed route"
    );
    let s = get(&client, port, "/", &[]).await;
    assert_eq!(
        s.status, 429,
        "expected the exhausted bucket to survive a reload that did not touch the rule, got {s:?}"
    );
    let p = header_problems(&s, "per-ip", 1, 60);
    assert!(
        p.is_empty(),
        "expected correct headers after the reload, got {p:?}"
    );

    // The rule's rate changes: a fresh bucket.
    gw.rewrite(yaml(gw.same_ports(), "v2", "2/m"));
    gw.wait_generation(3).await;
    let s = get(&client, port, "/", &[]).await;
    assert_eq!(
        s.status, 200,
        "expected a changed rule (rate 1/m -> 2/m) to start with a fresh bucket, got {s:?}"
    );
    let p = header_problems(&s, "per-ip", 2, 60);
    assert!(p.is_empty(), "expected headers of the new rate, got {p:?}");
}

/// Sends probe requests (each with its own `x-tenant`) until one causes no
/// store error, i.e. the gateway's Redis connection is up; panics after 10 s.
async fn wait_store_connected(gw: &Gateway, port: u16) {
    let client = http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0u64.. {
        let before = store_errors(gw).await;
        let tenant = format!("probe-{}-{i}", gw.pid());
        let s = get(&client, port, "/", &[("x-tenant", &tenant)]).await;
        if store_errors(gw).await == before && s.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected the gateway to reach Redis within 10 s; last probe: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn fleet_route(rate: &str, burst: u32, on_store_error: &str) -> String {
    format!(
        "  - name: tenants\n    cluster: app\n    rate_limit:\n      - {{name: per-tenant, key: \"header:x-tenant\", rate: {rate}, burst: {burst}, scope: fleet, on_store_error: {on_store_error}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_rule_is_one_quota_across_two_gateways() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let app = Upstream::named("app");
    let store = format!("{{redis: \"{}\", timeout: 50ms}}", redis.url());
    // `deny` on store errors: a Redis hiccup can only lower the count.
    let route = fleet_route("20/s", 20, "deny");
    let (gw1, port1) = start(&app, &route, Some(&store));
    let (gw2, port2) = start(&app, &route, Some(&store));
    wait_store_connected(&gw1, port1).await;
    wait_store_connected(&gw2, port2).await;
    let (errors1, errors2) = (store_errors(&gw1).await, store_errors(&gw2).await);
    let limited_before = [
        decisions(&gw1, "tenants", "per-tenant", "limited").await,
        decisions(&gw2, "tenants", "per-tenant", "limited").await,
    ];

    let (tallies, elapsed) = hammer(
        &[port1, port2],
        4,
        Duration::from_secs(3),
        &[("x-tenant", "acme")],
        ("per-tenant", 20, 1),
    )
    .await;
    let total_ok = tallies[0].ok + tallies[1].ok;
    let want = 20.0 * 3.0 + 20.0;
    eprintln!(
        "fleet: gateway 1 {} allowed / {} limited, gateway 2 {} allowed / {} limited, total allowed {total_ok} in {elapsed:?} (want {want} +-10%)",
        tallies[0].ok, tallies[0].limited, tallies[1].ok, tallies[1].limited
    );
    for (i, t) in tallies.iter().enumerate() {
        t.assert_clean(&format!("gateway {}", i + 1));
        assert!(
            t.ok > 0 && t.limited > 0,
            "gateway {}: expected both allowed and limited requests, got {} allowed, {} limited",
            i + 1,
            t.ok,
            t.limited
        );
    }
    assert!(
        within(total_ok, want, 10.0),
        "expected the two gateways together to allow 20/s x 3 s + burst 20 = {want} (+-10%, one shared quota), got {total_ok} ({} + {}) in {elapsed:?}",
        tallies[0].ok,
        tallies[1].ok
    );
    // Under CPU load a store call may exceed its 50 ms now and then; with
    // `deny` each such request is a 429, so it can only lower the count
    // checked above. More than 2% would mean the store is not really in use.
    let errors = [
        store_errors(&gw1).await - errors1,
        store_errors(&gw2).await - errors2,
    ];
    eprintln!("fleet: store errors during the run: {errors:?}");
    for (i, t) in tallies.iter().enumerate() {
        let requests = t.ok + t.limited;
        assert!(
            errors[i] * 50 <= requests,
            "gateway {}: expected store errors in at most 2% of {requests} requests, got {}",
            i + 1,
            errors[i]
        );
    }
    for (i, gw) in [&gw1, &gw2].into_iter().enumerate() {
        // Deltas: a probe of wait_store_connected may have been denied.
        let limited = decisions(gw, "tenants", "per-tenant", "limited").await - limited_before[i];
        assert_eq!(
            limited, tallies[i].limited,
            "expected decisions{{decision=limited}} of gateway pid {} to equal the 429s its clients saw",
            gw.pid()
        );
    }
}

/// `rate_limit_store.timeout` of the outage tests.
const STORE_TIMEOUT: Duration = Duration::from_millis(50);
/// What the issue allows on top of the store timeout, per request.
const ALLOWANCE: Duration = Duration::from_millis(50);
/// Extra latency allowed when the gateway under test is a debug build.
const DEBUG_BUILD_SLACK: Duration = Duration::from_millis(50);

/// The latency slack on top of [`STORE_TIMEOUT`] + [`ALLOWANCE`], and why.
///
/// A debug build of the gateway (the default `target/debug/gateway`) runs
/// the request path several times slower, and on a 2-core machine shared
/// with builds its timer wake-ups come late: it gets [`DEBUG_BUILD_SLACK`]
/// more. A release binary (`GATEWAY_BIN=target/release/gateway`) gets none,
/// so the strict bound of the issue is checked there.
fn latency_slack() -> (Duration, &'static str) {
    let bin = gateway_bin();
    if bin.components().any(|c| c.as_os_str() == "debug") {
        (DEBUG_BUILD_SLACK, "debug build of the gateway")
    } else {
        (Duration::ZERO, "release build: no slack")
    }
}

/// What one store-outage phase saw.
struct Phase {
    codes: Vec<u16>,
    latencies: Vec<Duration>,
    errors: u64,
    elapsed: Duration,
}

/// Sends `n` sequential requests for `tenant`, timing each.
async fn outage_phase(gw: &Gateway, port: u16, tenant: &str, n: usize) -> Phase {
    let client = http_client();
    // Open the keep-alive connection first so latencies are of requests only.
    let _ = get(&client, port, "/warm", &[]).await;
    let before = store_errors(gw).await;
    let start = Instant::now();
    let mut codes = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let s = get(&client, port, "/", &[("x-tenant", tenant)]).await;
        latencies.push(t.elapsed());
        if s.status == 429 {
            assert_eq!(
                s.body, "rate limited\n",
                "expected the 429 body during the outage"
            );
        }
        codes.push(s.status);
    }
    let elapsed = start.elapsed();
    Phase {
        codes,
        latencies,
        errors: store_errors(gw).await - before,
        elapsed,
    }
}

/// Checks a phase of Redis being unusable against `mode`.
fn check_outage(mode: &str, what: &str, p: &Phase, (rate_per_s, burst): (f64, usize)) {
    let n = p.codes.len();
    let ok = p.codes.iter().filter(|c| **c == 200).count();
    let limited = p.codes.iter().filter(|c| **c == 429).count();
    let max = p.latencies.iter().max().copied().unwrap_or_default();
    let mut sorted = p.latencies.clone();
    sorted.sort();
    eprintln!(
        "on_store_error={mode}, Redis {what}: {ok} x 200, {limited} x 429 of {n} in {:?}; latency max {max:?}, median {:?}; store errors +{}",
        p.elapsed,
        sorted[n / 2],
        p.errors
    );
    assert_eq!(
        ok + limited,
        n,
        "{mode}/{what}: expected only 200 and 429, got {:?}",
        p.codes
    );
    match mode {
        "allow" => assert_eq!(
            ok, n,
            "{mode}/{what}: expected all {n} allowed, got {:?}",
            p.codes
        ),
        "deny" => assert_eq!(
            limited, n,
            "{mode}/{what}: expected all {n} denied (429), got {:?}",
            p.codes
        ),
        _ => {
            // A local bucket of the same rate and burst: the burst, plus
            // what refills while the phase runs.
            let most = burst + (p.elapsed.as_secs_f64() * rate_per_s).ceil() as usize;
            assert!(
                (burst..=most).contains(&ok) && p.codes[..burst].iter().all(|c| *c == 200),
                "{mode}/{what}: expected a local bucket: the first {burst} allowed and {burst}..={most} allowed in all, got {ok} allowed: {:?}",
                p.codes
            );
        }
    }
    // The gateway never waits on Redis longer than the store timeout: the
    // issue allows the timeout plus 50 ms per request, plus the stated
    // slack for a debug build on a shared 2-core machine.
    let (slack, why) = latency_slack();
    let limit = STORE_TIMEOUT + ALLOWANCE + slack;
    assert!(
        max < limit,
        "{mode}/{what}: expected every request to finish within store timeout {STORE_TIMEOUT:?} + {ALLOWANCE:?} + slack {slack:?} ({why}) = {limit:?}, got max {max:?} (all: {:?})",
        p.latencies
    );
    assert_eq!(
        p.errors, n as u64,
        "{mode}/{what}: expected {STORE_ERRORS} to grow by one per request"
    );
}

/// For one `on_store_error` mode: Redis up (the fleet quota applies, no
/// store error), frozen with SIGSTOP (calls time out), thawed (recovers),
/// then killed with SIGKILL (connection refused).
async fn store_outage(mode: &str) {
    let _serial = SERIAL.lock().await;
    let mut redis = RedisServer::start();
    let app = Upstream::named("app");
    let store = format!(
        "{{redis: \"{}\", timeout: {}ms}}",
        redis.url(),
        STORE_TIMEOUT.as_millis()
    );
    let (rate, burst) = (1.0, 5);
    let (gw, port) = start(&app, &fleet_route("1/s", 5, mode), Some(&store));
    wait_store_connected(&gw, port).await;

    // Redis up: the fleet rule enforces its quota, no store error.
    let up = outage_phase(&gw, port, "up", 7).await;
    assert_eq!(
        (up.codes.as_slice(), up.errors),
        ([200, 200, 200, 200, 200, 429, 429].as_slice(), 0),
        "{mode}: expected with Redis up burst 5 then 429 and no store error"
    );
    eprintln!(
        "on_store_error={mode}, Redis up: {:?}; latencies {:?}",
        up.codes, up.latencies
    );
    let keys: u64 = redis
        .command("DBSIZE")
        .and_then(|r| r.strip_prefix(':')?.parse().ok())
        .unwrap_or(0);
    assert!(
        keys >= 1,
        "{mode}: expected the fleet buckets in Redis, DBSIZE says {keys}"
    );

    // Frozen: every call times out (or fails at once while reconnecting).
    redis.pause();
    let frozen = outage_phase(&gw, port, "frozen", 20).await;
    redis.resume();
    check_outage(mode, "frozen (SIGSTOP)", &frozen, (rate, burst));

    // Thawed: back to normal within a few seconds.
    wait_store_connected(&gw, port).await;

    // Killed.
    redis.kill();
    let killed = outage_phase(&gw, port, "killed", 20).await;
    check_outage(mode, "killed (SIGKILL)", &killed, (rate, burst));
    assert!(
        store_errors(&gw).await > 0,
        "{mode}: expected {STORE_ERRORS} > 0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_on_store_error_allow() {
    store_outage("allow").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_on_store_error_deny() {
    store_outage("deny").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_on_store_error_local() {
    store_outage("local").await;
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/PID/status`).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Outcome of [`flood`] (and of each of its tasks).
#[derive(Default)]
struct Flood {
    sent: u64,
    ok: u64,
    other: BTreeMap<u16, u64>,
    errors: u64,
    elapsed: Duration,
}

/// How [`flood`] sends its requests.
#[derive(Clone, Copy, Debug)]
enum Proto {
    /// `conns` keep-alive HTTP/1.1 connections, one request at a time on
    /// each, written and parsed by hand (a lean client: the gateway, not
    /// the test, should be the bottleneck).
    H1 { conns: usize },
    /// `conns` HTTP/2 connections (h2c prior knowledge, reqwest) with
    /// `streams` requests in flight on each.
    H2c { conns: usize, streams: usize },
}

/// One raw HTTP/1.1 keep-alive exchange: `GET /flood` with `x-client`;
/// returns the status.
async fn h1_exchange(
    conn: &mut tokio::io::BufReader<tokio::net::TcpStream>,
    key: &str,
) -> std::io::Result<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /flood HTTP/1.1\r\nHost: 127.0.0.1\r\nx-client: {key}\r\n\r\n");
    conn.get_mut().write_all(req.as_bytes()).await?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut line = String::new();
    conn.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut len = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(bad("connection closed in the headers"));
        }
        if line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().map_err(|_| bad("bad content-length"))?;
            }
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await?;
    Ok(status)
}

/// Sends `GET /flood` with `x-client: {prefix}{i}` for every `i` in `0..n`
/// (each exactly once) as `proto` says, stopping early after `limit`.
async fn flood(port: u16, prefix: &str, n: u64, proto: Proto, limit: Duration) -> Flood {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let take = move |next: &AtomicU64| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        (i < n && Instant::now() < deadline).then_some(i)
    };
    let mut tasks = Vec::new();
    match proto {
        Proto::H1 { conns } => {
            for _ in 0..conns {
                let (next, prefix) = (next.clone(), prefix.to_string());
                tasks.push(tokio::spawn(async move {
                    let mut part = Flood::default();
                    let mut conn = None;
                    while let Some(i) = take(&next) {
                        part.sent += 1;
                        if conn.is_none() {
                            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                                Ok(s) => conn = Some(tokio::io::BufReader::new(s)),
                                Err(_) => {
                                    part.errors += 1;
                                    continue;
                                }
                            }
                        }
                        let c = conn.as_mut().expect("connected");
                        let key = format!("{prefix}{i}");
                        match tokio::time::timeout(Duration::from_secs(20), h1_exchange(c, &key))
                            .await
                        {
                            Ok(Ok(200)) => part.ok += 1,
                            Ok(Ok(status)) => *part.other.entry(status).or_default() += 1,
                            _ => {
                                part.errors += 1;
                                conn = None;
                            }
                        }
                    }
                    part
                }));
            }
        }
        Proto::H2c { conns, streams } => {
            for _ in 0..conns {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .http2_prior_knowledge()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("build h2c client");
                for _ in 0..streams {
                    let (client, next, prefix) = (client.clone(), next.clone(), prefix.to_string());
                    tasks.push(tokio::spawn(async move {
                        let mut part = Flood::default();
                        let target = url(port, "/flood");
                        while let Some(i) = take(&next) {
                            part.sent += 1;
                            let resp = client
                                .get(&target)
                                .header("x-client", format!("{prefix}{i}"))
                                .send()
                                .await;
                            match resp {
                                Ok(r) => {
                                    let status = r.status().as_u16();
                                    let _ = r.bytes().await;
                                    if status == 200 {
                                        part.ok += 1;
                                    } else {
                                        *part.other.entry(status).or_default() += 1;
                                    }
                                }
                                Err(_) => part.errors += 1,
                            }
                        }
                        part
                    }));
                }
            }
        }
    }
    let mut f = Flood::default();
    for t in tasks {
        let part = t.await.expect("flood task");
        f.sent += part.sent;
        f.ok += part.ok;
        f.errors += part.errors;
        for (k, v) in part.other {
            *f.other.entry(k).or_default() += v;
        }
    }
    f.elapsed = start.elapsed();
    f
}

/// The memory-bound scenario: a gateway with one local rule keyed on
/// `x-client` (`max_keys` as given, or the default), warmed up with a few
/// keys, then flooded with `keys` distinct keys. Asserts that every flood
/// request was allowed (each key is new), that the rule still limits after
/// the flood, and that VmRSS grew by less than `bound`.
async fn memory_bound(
    keys: u64,
    max_keys: Option<u32>,
    bound: u64,
    bound_why: &str,
    limit: Duration,
) {
    let app = Upstream::named("app");
    let max = max_keys.map_or(String::new(), |m| format!(", max_keys: {m}"));
    // 1/h: a flooded key stays busy (its bucket does not refill during the
    // test), so the cap is enforced by eviction, the worst case.
    // No access log: a million JSON lines would cost time and disk, and
    // the direct response keeps the upstream out of the measurement.
    let gw = config(
        Gateway::builder(),
        &app,
        &format!(
            "  - name: flood\n    direct_response: {{status: 200, body: \"ok\\n\"}}\n    rate_limit:\n      - {{name: per-client, key: \"header:x-client\", rate: 1/h, burst: 10{max}}}"
        ),
        None,
    )
    .yaml("telemetry: {access_log: {enabled: false}}")
    .start();
    let port = gw.port();
    let proto = match std::env::var("RATELIMIT_FLOOD_PROTO").as_deref() {
        Ok("h2c") => Proto::H2c {
            conns: 4,
            streams: 16,
        },
        _ => Proto::H1 { conns: 16 },
    };
    let warm = flood(port, "warm-", 2_000, proto, Duration::from_secs(30)).await;
    assert_eq!(
        (warm.ok, warm.errors),
        (2_000, 0),
        "expected the 2000 warm-up requests to be allowed"
    );
    let rss_warm = rss_bytes(gw.pid());
    let samples = Arc::new(Mutex::new(vec![rss_warm]));
    let sampler = {
        let (samples, pid) = (samples.clone(), gw.pid());
        let stop = Instant::now() + limit + Duration::from_secs(30);
        tokio::spawn(async move {
            while Instant::now() < stop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if s.contains("VmRSS") {
                        samples.lock().unwrap().push(rss_bytes(pid));
                    }
                }
            }
        })
    };
    // Two halves with distinct prefixes: RSS between them shows whether
    // memory still follows the key count once the cap is reached.
    let deadline = Instant::now() + limit;
    let first = flood(port, "a-", keys / 2, proto, limit).await;
    let rss_half = rss_bytes(gw.pid());
    let left = deadline.saturating_duration_since(Instant::now());
    let second = flood(port, "b-", keys - keys / 2, proto, left).await;
    sampler.abort();
    let rss_after = rss_bytes(gw.pid());
    let peak = samples
        .lock()
        .unwrap()
        .iter()
        .copied()
        .max()
        .unwrap_or(0)
        .max(rss_after)
        .max(rss_half);
    let sent = first.sent + second.sent;
    let elapsed = first.elapsed + second.elapsed;
    let rate = sent as f64 / elapsed.as_secs_f64();
    let mib = |b: u64| b as f64 / 1048576.0;
    eprintln!(
        "flood: {sent} distinct keys sent in {elapsed:?} ({rate:.0} req/s, {proto:?}), {} x 200, other {:?} {:?}, {} errors; VmRSS after warm-up {:.2} MiB, after {} keys {:.2} MiB, after {sent} keys {:.2} MiB, peak {:.2} MiB, growth {:.2} MiB (bound {:.2} MiB: {bound_why})",
        first.ok + second.ok,
        first.other,
        second.other,
        first.errors + second.errors,
        mib(rss_warm),
        first.sent,
        mib(rss_half),
        mib(rss_after),
        mib(peak),
        mib(peak.saturating_sub(rss_warm)),
        mib(bound),
    );
    assert_eq!(
        sent, keys,
        "expected all {keys} keys sent within {limit:?} (throughput {rate:.0} req/s)"
    );
    assert_eq!(
        (first.ok + second.ok, first.errors + second.errors),
        (keys, 0),
        "expected every request of the flood allowed (each key is new), got other statuses {:?} {:?}",
        first.other,
        second.other
    );
    assert_eq!(
        decisions(&gw, "flood", "per-client", "allowed").await,
        keys + 2_000,
        "expected one allowed decision per request"
    );
    // The rule still works after the flood: one key, burst 10, then 429.
    let after = get_n(&http_client(), port, "/flood", &[("x-client", "after")], 11).await;
    assert_eq!(
        codes(&after),
        [vec![200; 10], vec![429]].concat(),
        "expected the rule to still enforce burst 10 after the flood"
    );
    let growth = peak.saturating_sub(rss_warm);
    assert!(
        growth < bound,
        "expected VmRSS to grow by less than {bound} bytes ({bound_why}) under {keys} distinct keys, got {growth} bytes (warm-up {rss_warm}, peak {peak}, after {rss_after})"
    );
}

/// 100,000 distinct keys at a rule with `max_keys: 10000`: resident memory
/// grows by less than the documented table bound plus allocator slack.
///
/// Bound: `local.rs` documents under 80 bytes per key of `max_keys`, so
/// 800 kB for 10,000 keys (the exact table bound,
/// `LocalLimiter::memory_bound_bytes`, is 557 kB: 8 shards x 4096 buckets x
/// 17 bytes), plus 1.5 MiB of slack for what the process allocates for the
/// flood itself (per-connection and per-request buffers, allocator arenas)
/// that the warm-up did not reach: 2.37 MB in all. Debug builds measured
/// 1.2 to 1.5 MiB of growth. Tables without the cap would hold the 100,000
/// keys in about 2.2 MB on top of the same overhead, about 3 MB, over the
/// bound, but not by much: the 1M variant below is the sharp check (about
/// 35 MB of table without a cap against a 7.3 MB bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flood_of_100k_distinct_keys_stays_under_the_memory_bound() {
    let _serial = SERIAL.lock().await;
    memory_bound(
        100_000,
        Some(10_000),
        800_000 + 3 * 512 * 1024,
        "80 B x max_keys 10000 + 1.5 MiB slack",
        Duration::from_secs(120),
    )
    .await;
}

/// One million (or `$RATELIMIT_FLOOD_KEYS`) distinct client keys at a local
/// rule with the default `max_keys` (100,000): resident memory grows by less
/// than the documented 4.5 MB per rule plus 3 MiB of slack for the
/// process's own allocations during a million requests (a release build
/// measured 5.5 MiB of growth in all, the tables being about 4.25 MiB).
///
/// Too slow for the default suite on a debug build; run it explicitly
/// against the release binary (`.ci/run` is meant to do so):
/// `GATEWAY_BIN=target/release/gateway cargo test -p gateway-tests --test ratelimit -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: run with GATEWAY_BIN=target/release/gateway ... -- --ignored"]
async fn flood_of_a_million_distinct_keys_stays_under_the_memory_bound() {
    let _serial = SERIAL.lock().await;
    let keys = std::env::var("RATELIMIT_FLOOD_KEYS")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("RATELIMIT_FLOOD_KEYS=`{v}`: {e}"))
        })
        .unwrap_or(1_000_000);
    memory_bound(
        keys,
        None,
        4_500_000 + 3 * 1024 * 1024,
        "4.5 MB per rule at the default max_keys + 3 MiB slack",
        Duration::from_secs(60 + keys / 1000),
    )
    .await;
}

/// A `direct_response` route answers allowed requests with the rate-limit
/// headers too, not only its 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_routes_carry_ratelimit_headers() {
    let gw = Gateway::builder()
        .routes_yaml(
            r#"
  - name: hello
    direct_response: {status: 200, body: "hi\n"}
    rate_limit: [{name: per-client, key: client_ip, rate: 1/h, burst: 2}]
"#,
        )
        .start();
    let port = gw.port();
    let client = http_client();
    for expected_remaining in [1, 0] {
        let s = get(&client, port, "/", &[]).await;
        assert_eq!(s.status, 200);
        assert_eq!(
            s.policy.as_deref(),
            Some("\"per-client\";q=1;w=3600"),
            "policy header on an allowed direct response"
        );
        let limit = s.ratelimit.unwrap_or_default();
        assert!(
            limit.contains(&format!(";r={expected_remaining};")),
            "remaining {expected_remaining} in `{limit}`"
        );
    }
    let s = get(&client, port, "/", &[]).await;
    assert_eq!(s.status, 429);
    assert!(s.retry_after.is_some());
}

/// Waits until every gateway reaches the store (see [`wait_store_connected`]).
async fn wait_all_connected(gws: &[(Gateway, u16)]) {
    for (gw, port) in gws {
        wait_store_connected(gw, *port).await;
    }
}

/// Total allowed over `ports` in a 3 s hammer of tenant `tenant`, checked
/// against 20/s x 3 s + burst 20 within 10 %.
async fn shared_quota(ports: &[u16], tenant: &str, what: &str) {
    let (tallies, elapsed) = hammer(
        ports,
        6,
        Duration::from_secs(3),
        &[("x-tenant", tenant)],
        ("per-tenant", 20, 1),
    )
    .await;
    let total_ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let want = 20.0 * 3.0 + 20.0;
    let per: Vec<u64> = tallies.iter().map(|t| t.ok).collect();
    eprintln!("{what}: allowed {per:?} = {total_ok} in {elapsed:?} (want {want} +-10%)");
    for (i, t) in tallies.iter().enumerate() {
        t.assert_clean(&format!("{what}: gateway {}", i + 1));
    }
    assert!(
        within(total_ok, want, 10.0),
        "{what}: expected the gateways together to allow {want} (+-10%, one quota), got {total_ok} {per:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_cluster_holds_one_fleet_quota_for_three_gateways_across_a_failover() {
    let _serial = SERIAL.lock().await;
    let cluster = gateway_tests::RedisCluster::start(3);
    let urls = cluster.urls();
    let seeds = urls[1..]
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let store = format!(
        "{{redis: \"{}\", cluster: true, cluster_seeds: [{seeds}], timeout: {}ms}}",
        urls[0],
        STORE_TIMEOUT.as_millis()
    );
    let app = Upstream::named("app");
    let route = fleet_route("20/s", 20, "deny");
    let gws: Vec<(Gateway, u16)> = (0..3).map(|_| start(&app, &route, Some(&store))).collect();
    wait_all_connected(&gws).await;
    let ports: Vec<u16> = gws.iter().map(|(_, p)| *p).collect();
    shared_quota(&ports, "acme", "cluster").await;

    // Kill the master holding the bucket; its replica takes over.
    let pattern = "gateway:rl:per-tenant:*";
    let holder = cluster
        .masters()
        .into_iter()
        .find(|&i| cluster.keys_on(i, pattern) > 0)
        .expect("a master holds the tenant's bucket");
    let errors_before: u64 = {
        let mut n = 0;
        for (gw, _) in &gws {
            n += store_errors(gw).await;
        }
        n
    };
    let mut cluster = cluster;
    cluster.nodes[holder].kill();
    // During the failover: every request answered within the store
    // timeout plus the allowance (on_store_error: deny decides).
    let (slack, why) = latency_slack();
    let bound = STORE_TIMEOUT + ALLOWANCE + slack;
    let client = http_client();
    let mut slowest = Duration::ZERO;
    let failover_start = Instant::now();
    while failover_start.elapsed() < Duration::from_secs(4) {
        let t = Instant::now();
        let s = get(&client, ports[0], "/", &[("x-tenant", "during")]).await;
        assert!(
            s.status == 200 || s.status == 429,
            "during the failover: {s:?}"
        );
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("failover: slowest request {slowest:?} (bound {bound:?}, {why})");
    assert!(
        slowest <= bound,
        "a request waited {slowest:?} during the failover; bound {bound:?} ({why})"
    );
    let mut errors_after = 0;
    for (gw, _) in &gws {
        errors_after += store_errors(gw).await;
    }
    assert!(
        errors_after > errors_before,
        "store errors counted during the failover"
    );
    cluster.wait_ok(Duration::from_secs(20));
    wait_all_connected(&gws).await;
    shared_quota(&ports, "after-failover", "cluster after failover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rule_works_over_rediss_with_a_ca() {
    let _serial = SERIAL.lock().await;
    let ca = gateway_tests::TestCa::new("redis-ca");
    let dir = tempfile::tempdir().expect("dir");
    let redis = RedisServer::start_tls(&ca, dir.path());
    let app = Upstream::named("app");
    let store = format!(
        "{{redis: \"rediss://127.0.0.1:{}\", ca: redis-ca.pem, timeout: 200ms}}",
        redis.port()
    );
    let b = config(
        Gateway::builder().file("redis-ca.pem", &ca.cert_pem()),
        &app,
        &fleet_route("1/m", 5, "deny"),
        Some(&store),
    );
    let gw = b.start();
    let port = gw.port();
    wait_store_connected(&gw, port).await;
    let errors = store_errors(&gw).await;
    let client = http_client();
    let mut codes = Vec::new();
    for _ in 0..7 {
        codes.push(get(&client, port, "/", &[("x-tenant", "tls")]).await.status);
    }
    assert_eq!(
        codes,
        [200, 200, 200, 200, 200, 429, 429],
        "the quota is kept in the TLS Redis"
    );
    assert_eq!(store_errors(&gw).await, errors, "no store error over TLS");
    let keys: u64 = redis.cli(&["DBSIZE"]).parse().unwrap_or(0);
    assert!(keys >= 1, "buckets in the TLS Redis: DBSIZE {keys}");
}
