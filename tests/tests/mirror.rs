//! Traffic mirroring (issue 8): sampled copies of a route's requests go to a
//! shadow cluster, carry the request faithfully (method, path, headers,
//! body), never hold up or change the primary, and are counted in
//! `gateway_mirror_requests_total{route,result}`; compare mode counts
//! `gateway_mirror_mismatch_total{route,kind}`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use gateway_tests::{
    fire, fire_with, free_port, http_client, http_client_with_host, metric, pseudo_random_bytes,
    sha256_hex, url, wait_metrics, Gateway, Reply, RequestInfo, Upstream,
};

const MIB: usize = 1024 * 1024;
const MIRROR_HEADER: &str = "x-gateway-mirror";

/// Starts a gateway with the given `(name, address)` clusters and `routes`
/// YAML (a block sequence, indented by two spaces); returns it and its
/// traffic port.
fn start(clusters: &[(&str, String)], routes: &str) -> (Gateway, u16) {
    let mut b = Gateway::builder();
    for (name, addr) in clusters {
        b = b.cluster_yaml(&format!(
            "{{name: {name}, endpoints: [{{address: \"{addr}\"}}]}}"
        ));
    }
    let gw = b.routes_yaml(routes).start();
    let port = gw.port();
    (gw, port)
}

/// [`start`] with named upstreams `primary` and `shadow` as clusters of
/// the same names; returns them, the gateway and its traffic port.
fn pair(routes: &str) -> (Upstream, Upstream, Gateway, u16) {
    let (primary, shadow) = (Upstream::named("primary"), Upstream::named("shadow"));
    let clusters = [("primary", primary.address()), ("shadow", shadow.address())];
    let (gw, port) = start(&clusters, routes);
    (primary, shadow, gw, port)
}

/// Sends `req` and asserts a 200 (reading the body); `what` names it.
async fn send_200(req: reqwest::RequestBuilder, what: &str) {
    let resp = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(resp.status(), 200, "{what}: expected 200");
    let _ = resp.bytes().await;
}

/// Every result a copy can be counted under.
const RESULTS: [&str; 4] = ["sent", "dropped", "error", "too_large"];

/// `gateway_mirror_requests_total{route,result}` (0 when absent).
fn mirrored(metrics: &str, route: &str, result: &str) -> u64 {
    let labels = [("route", route), ("result", result)];
    metric(metrics, "gateway_mirror_requests_total", &labels) as u64
}

/// `gateway_mirror_mismatch_total{route,kind}` (0 when absent).
fn mismatches(metrics: &str, route: &str, kind: &str) -> u64 {
    let labels = [("route", route), ("kind", kind)];
    metric(metrics, "gateway_mirror_mismatch_total", &labels) as u64
}

/// Every result of a route's copies, for messages.
fn results(metrics: &str, route: &str) -> String {
    RESULTS
        .iter()
        .map(|r| format!("{r}={}", mirrored(metrics, route, r)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The route's copies counted under any result.
fn counted(metrics: &str, route: &str) -> u64 {
    RESULTS.iter().map(|r| mirrored(metrics, route, r)).sum()
}

/// Waits (bounded by `limit`) until the route's `sent` count equals the
/// number of requests `shadow` has received and that number has held still
/// for two polls 200 ms apart: every copy that was started has landed.
async fn settle_sent(gw: &Gateway, route: &str, shadow: &Upstream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut last = u64::MAX;
    loop {
        let m = gw.metrics().await;
        let seen = shadow.count();
        let done = mirrored(&m, route, "sent") == seen && seen == last;
        if done || Instant::now() >= deadline {
            return m;
        }
        last = seen;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `(lo, hi)` integer range within 3 sigma of Binomial(n, p)'s mean
/// ([`gateway_tests::three_sigma`]), and sigma.
fn sigma_range(n: usize, p: f64) -> (u64, u64, f64) {
    let (mean, bound) = gateway_tests::three_sigma(n as u64, p);
    (
        (mean - bound).max(0.0).ceil() as u64,
        (mean + bound).floor() as u64,
        bound / 3.0,
    )
}

/// The one record of request `id` (by `x-request-id`) in `reqs` of `who`.
fn by_id<'a>(reqs: &'a [RequestInfo], id: &str, who: &str) -> &'a RequestInfo {
    let hits: Vec<_> = reqs
        .iter()
        .filter(|r| r.header("x-request-id") == Some(id))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected {who} to get {id} once, got {hits:?}"
    );
    hits[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_of_2000_requests_are_mirrored() {
    const N: usize = 2000;
    const P: f64 = 0.10;
    let (primary, shadow, gw, port) = pair(
        "  - {name: sampled, cluster: primary, mirror: [{cluster: shadow, percentage: 10}]}\n",
    );

    fire(port, "/s/", N, 16).await;

    let m = settle_sent(&gw, "sampled", &shadow, Duration::from_secs(10)).await;
    assert_eq!(
        primary.count(),
        N as u64,
        "the primary should receive every one of the {N} requests, got {}",
        primary.count()
    );
    assert!(
        primary
            .requests()
            .iter()
            .all(|r| r.header(MIRROR_HEADER).is_none()),
        "no primary request should carry {MIRROR_HEADER}"
    );
    let got = shadow.count();
    let (lo, hi, sigma) = sigma_range(N, P);
    assert!(
        (lo..=hi).contains(&got),
        "mirror should see {lo}..={hi} of {N} requests at 10% (mean {}, sigma {sigma:.2}, 3 sigma), got {got}",
        N as f64 * P
    );
    assert_eq!(
        mirrored(&m, "sampled", "sent"),
        got,
        "gateway_mirror_requests_total{{result=\"sent\"}} should equal the mirror's count {got}; results: {}",
        results(&m, "sampled")
    );
    for r in ["dropped", "error", "too_large"] {
        assert_eq!(
            mirrored(&m, "sampled", r),
            0,
            "no copy should be counted {r} here; results: {}",
            results(&m, "sampled")
        );
    }
    // Each copy is of a distinct request the client sent, marked as a copy.
    let copies = shadow.requests();
    let paths: BTreeSet<&str> = copies.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths.len(),
        copies.len(),
        "each request should be mirrored at most once (distinct paths {} vs copies {})",
        paths.len(),
        copies.len()
    );
    for r in &copies {
        assert!(
            r.path.starts_with("/s/") && r.path[3..].parse::<usize>().is_ok_and(|i| i < N),
            "mirror saw a path the client never sent: {}",
            r.path
        );
        assert_eq!(
            r.header(MIRROR_HEADER),
            Some("true"),
            "every copy should carry {MIRROR_HEADER}: true ({})",
            r.path
        );
    }
    eprintln!(
        "ten_percent: mirrored {got} of {N} (3-sigma band {lo}..={hi}, sigma {sigma:.2}); {}",
        results(&m, "sampled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_sampling_mirrors_the_same_ids_every_pass() {
    const N: usize = 300;
    const P: f64 = 0.30;
    let (primary, shadow, gw, port) = pair(
        "  - {name: keyed, cluster: primary, mirror: [{cluster: shadow, percentage: 30, sample_key: x-request-id}]}\n",
    );

    for pass in 1..=2 {
        fire_with(N, 8, move |c, i| {
            c.get(url(port, &format!("/pass{pass}/{i}")))
                .header("x-request-id", format!("id-{i}"))
        })
        .await;
    }
    let m = settle_sent(&gw, "keyed", &shadow, Duration::from_secs(10)).await;
    assert_eq!(
        primary.count(),
        2 * N as u64,
        "the primary should get all {} requests of both passes",
        2 * N
    );

    let copies = shadow.requests();
    assert_eq!(
        mirrored(&m, "keyed", "sent"),
        copies.len() as u64,
        "sent should equal the copies the mirror received; results: {}",
        results(&m, "keyed")
    );
    let seen = |pass: usize| -> BTreeSet<String> {
        let prefix = format!("/pass{pass}/");
        copies
            .iter()
            .filter_map(|r| {
                let i = r.path.strip_prefix(&prefix)?;
                let id = r.header("x-request-id").unwrap_or_default().to_string();
                assert_eq!(
                    id,
                    format!("id-{i}"),
                    "the copy of {} should keep the client's x-request-id",
                    r.path
                );
                Some(id)
            })
            .collect()
    };
    let (first, second) = (seen(1), seen(2));
    let (lo, hi, sigma) = sigma_range(N, P);
    assert!(
        (lo..=hi).contains(&(first.len() as u64)),
        "pass 1 should mirror {lo}..={hi} of {N} ids at 30% (sigma {sigma:.2}), got {}",
        first.len()
    );
    let only_first: Vec<_> = first.difference(&second).collect();
    let only_second: Vec<_> = second.difference(&first).collect();
    assert!(
        only_first.is_empty() && only_second.is_empty(),
        "the second pass should mirror exactly the ids of the first ({} vs {}); \
         only in pass 1: {only_first:?}; only in pass 2: {only_second:?}",
        first.len(),
        second.len()
    );
    eprintln!(
        "key_sampling: {} of {N} ids mirrored on both passes (3-sigma band {lo}..={hi})",
        first.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_is_faithful_with_shadow_host_and_stripped_headers() {
    let (primary, shadow, _gw, port) = pair(
        "  - {name: copy, cluster: primary, mirror: [{cluster: shadow, strip_headers: [authorization]}]}\n",
    );
    let addr = format!("127.0.0.1:{port}").parse().expect("socket address");

    // A POST whose Host carries a port.
    let body = b"mirror me, byte for byte\n".to_vec();
    let resp = http_client_with_host("api.example.com", addr)
        .post(format!(
            "http://api.example.com:{port}/api/v1/items?x=1&y=two%20words"
        ))
        .header("x-request-id", "copy-1")
        .header("x-custom", "hello-mirror")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("authorization", "Bearer s3cret")
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .expect("POST through the gateway");
    assert_eq!(resp.status(), 200, "the POST should get the primary's 200");
    assert_eq!(
        resp.headers()
            .get("x-upstream")
            .and_then(|v| v.to_str().ok()),
        Some("primary"),
        "the client should get the primary's answer"
    );
    let _ = resp.bytes().await;

    // A DELETE without a body, Host without a port.
    let req = http_client()
        .delete(url(port, "/api/v1/items/7?force=true"))
        .header("host", "plain.example")
        .header("x-request-id", "copy-2")
        .header("authorization", "Basic dXNlcjpwdw==");
    send_200(req, "the DELETE should get the primary's 200").await;

    let deadline = Instant::now() + Duration::from_secs(5);
    while shadow.requests().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let copies = shadow.requests();
    let prim = primary.requests();

    // The POST.
    let c = by_id(&copies, "copy-1", "the shadow");
    assert_eq!(
        c.method, "POST",
        "copy method: expected POST, got {}",
        c.method
    );
    assert_eq!(
        c.path, "/api/v1/items?x=1&y=two%20words",
        "copy path+query: expected /api/v1/items?x=1&y=two%20words, got {}",
        c.path
    );
    assert_eq!(
        c.header("host"),
        Some(format!("api.example.com-shadow:{port}").as_str()),
        "copy Host: expected api.example.com-shadow:{port} (port kept), got {:?}",
        c.header("host")
    );
    assert_eq!(
        c.header_all("host").len(),
        1,
        "the copy should carry exactly one Host, got {:?}",
        c.header_all("host")
    );
    assert_eq!(
        c.header(MIRROR_HEADER),
        Some("true"),
        "copy should carry {MIRROR_HEADER}: true, got {:?}",
        c.header(MIRROR_HEADER)
    );
    assert_eq!(
        c.header("x-custom"),
        Some("hello-mirror"),
        "custom header on the copy: expected hello-mirror, got {:?}",
        c.header("x-custom")
    );
    assert_eq!(
        c.header_all("x-multi"),
        vec!["a", "b"],
        "repeated header on the copy: expected [a, b] in order"
    );
    assert_eq!(
        c.header("content-type"),
        Some("text/plain"),
        "content-type on the copy"
    );
    assert_eq!(
        c.header("authorization"),
        None,
        "strip_headers: [authorization] should remove it from the copy, got {:?}",
        c.header("authorization")
    );
    assert_eq!(
        (c.body_len, c.body_sha256.as_str()),
        (body.len() as u64, sha256_hex(&body).as_str()),
        "copy body: expected {} bytes with the sent SHA-256",
        body.len()
    );
    assert_eq!(
        c.header("content-length"),
        Some(body.len().to_string().as_str()),
        "copy content-length"
    );

    let p = by_id(&prim, "copy-1", "the primary");
    assert_eq!(
        p.header("authorization"),
        Some("Bearer s3cret"),
        "the primary should still get authorization, got {:?}",
        p.header("authorization")
    );
    assert_eq!(
        p.header(MIRROR_HEADER),
        None,
        "the primary must not be marked as a mirror copy"
    );
    assert!(
        !p.header("host").unwrap_or_default().contains("-shadow"),
        "the primary's Host must not get -shadow, got {:?}",
        p.header("host")
    );
    assert_eq!(p.header("x-custom"), Some("hello-mirror"));
    assert_eq!(p.body_sha256, sha256_hex(&body), "primary body SHA-256");

    // The DELETE.
    let c = by_id(&copies, "copy-2", "the shadow");
    assert_eq!(
        c.method, "DELETE",
        "copy method: expected DELETE, got {}",
        c.method
    );
    assert_eq!(c.path, "/api/v1/items/7?force=true", "copy path+query");
    assert_eq!(
        c.header("host"),
        Some("plain.example-shadow"),
        "copy Host without a port: expected plain.example-shadow, got {:?}",
        c.header("host")
    );
    assert_eq!(c.header(MIRROR_HEADER), Some("true"));
    assert_eq!(
        c.header("authorization"),
        None,
        "authorization should be stripped from the copy"
    );
    assert_eq!(c.body_len, 0, "a bodiless request's copy has no body");
    assert_eq!(
        by_id(&prim, "copy-2", "the primary").header("authorization"),
        Some("Basic dXNlcjpwdw=="),
        "the primary should still get authorization on the DELETE"
    );
}

/// POSTs `data` to `path` (chunked or with Content-Length) and asserts that
/// the primary echoed all of it with the right SHA-256.
async fn upload(port: u16, path: &str, data: Vec<u8>, chunked: bool) {
    let (len, want) = (data.len(), sha256_hex(&data));
    let body = gateway_tests::upload_body(data, chunked);
    let resp = http_client()
        .post(url(port, path))
        .body(body)
        .send()
        .await
        .expect("upload through the gateway");
    assert_eq!(resp.status(), 200, "upload {path}: expected 200");
    let doc: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(doc["upstream"], "primary", "upload {path}: answered by");
    assert_eq!(
        (doc["body_len"].as_u64(), doc["body_sha256"].as_str()),
        (Some(len as u64), Some(want.as_str())),
        "upload {path}: the primary should receive all {len} bytes with the sent SHA-256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_teed_intact_and_oversized_ones_abandoned() {
    let (_primary, shadow, gw, port) = pair(
        "  - {name: bodies, cluster: primary, mirror: [{cluster: shadow, max_body_bytes: 1048576}]}\n",
    );

    // 1 MiB, exactly the cap: two with Content-Length, one chunked.
    let cases = [
        ("/mib/a", 40u64, false),
        ("/mib/b", 42, false),
        ("/mib/c", 44, true),
    ];
    for (path, seed, chunked) in cases {
        upload(port, path, pseudo_random_bytes(MIB, seed), chunked).await;
    }
    let m = wait_metrics(&gw, Duration::from_secs(5), |m| counted(m, "bodies") >= 3).await;
    let copies = shadow.requests();
    for (path, seed, chunked) in cases {
        let want = sha256_hex(&pseudo_random_bytes(MIB, seed));
        let got: Vec<_> = copies
            .iter()
            .filter(|r| r.path == path)
            .map(|r| (r.body_len, r.body_sha256.clone()))
            .collect();
        assert_eq!(
            got,
            vec![(MIB as u64, want)],
            "mirror copy of {path} ({}): expected one request of {MIB} bytes with the sent SHA-256; \
             results: {}",
            if chunked { "chunked" } else { "Content-Length" },
            results(&m, "bodies")
        );
    }
    assert_eq!(
        mirrored(&m, "bodies", "sent"),
        3,
        "three 1 MiB copies should be counted sent; results: {}",
        results(&m, "bodies")
    );

    // 10 MiB, over the cap: the copy is abandoned, the primary gets it all.
    let big = pseudo_random_bytes(10 * MIB, 46);
    let big_sha = sha256_hex(&big);
    upload(port, "/big", big, false).await;
    let m = wait_metrics(&gw, Duration::from_secs(5), |m| {
        mirrored(m, "bodies", "too_large") >= 1
    })
    .await;
    assert_eq!(
        mirrored(&m, "bodies", "too_large"),
        1,
        "the 10 MiB copy should be counted too_large once; results: {}",
        results(&m, "bodies")
    );
    // Give a (wrongly) completed copy a moment to land before looking.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = gw.metrics().await;
    let full: Vec<_> = shadow
        .requests()
        .into_iter()
        .filter(|r| r.body_sha256 == big_sha || r.body_len >= 10 * MIB as u64)
        .map(|r| (r.path, r.body_len))
        .collect();
    assert!(
        full.is_empty(),
        "the mirror must never receive the whole 10 MiB body, got {full:?}"
    );
    assert_eq!(
        (
            mirrored(&m, "bodies", "sent"),
            mirrored(&m, "bodies", "dropped"),
            mirrored(&m, "bodies", "error")
        ),
        (3, 0, 0),
        "(sent, dropped, error) after the 10 MiB upload; results: {}",
        results(&m, "bodies")
    );
    let partial: Vec<u64> = shadow
        .requests()
        .iter()
        .filter(|r| r.path == "/big")
        .map(|r| r.body_len)
        .collect();
    eprintln!(
        "bodies: 3 x 1 MiB copies intact; 10 MiB copy abandoned (partial bodies seen at the mirror: {partial:?}); {}",
        results(&m, "bodies")
    );
}

/// Sends `n` requests to `path_prefix/i` (GETs, or POSTs with 1 KiB when
/// `i` is odd) all at once when `concurrent`, else one after another; asserts
/// each gets the primary's own 200 well under `bound`; returns the slowest.
async fn send_timed(
    port: u16,
    path_prefix: &str,
    n: usize,
    concurrent: bool,
    bound: Duration,
) -> Duration {
    let client = http_client();
    let one = |i: usize| {
        let client = client.clone();
        let path = format!("{path_prefix}/{i}");
        async move {
            let t = Instant::now();
            let req = if i % 2 == 1 {
                client.post(url(port, &path)).body(vec![b'm'; 1024])
            } else {
                client.get(url(port, &path))
            };
            let resp = req.send().await.expect("request through the gateway");
            let status = resp.status().as_u16();
            let from = resp
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let _ = resp.bytes().await;
            (path, status, from, t.elapsed())
        }
    };
    let outcomes: Vec<_> = if concurrent {
        futures_util::future::join_all((0..n).map(one)).await
    } else {
        let mut v = Vec::new();
        for i in 0..n {
            v.push(one(i).await);
        }
        v
    };
    let mut slowest = Duration::ZERO;
    for (path, status, from, took) in outcomes {
        assert_eq!(
            (status, from.as_str()),
            (200, "primary"),
            "{path}: expected the primary's own 200, got {status} from {from:?}"
        );
        assert!(
            took < bound,
            "{path}: the primary should not wait for its mirror: expected < {bound:?}, took {took:?}"
        );
        slowest = slowest.max(took);
    }
    slowest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_never_waits_for_a_dead_slow_or_full_mirror() {
    const DELAY: Duration = Duration::from_secs(2);
    const BOUND: Duration = Duration::from_millis(500);
    const N: usize = 10;
    let primary = Upstream::named("primary");
    // The shadow answers 503 after 2 s: a client seeing 503 or waiting 2 s
    // would have got the mirror's answer.
    let slow = Upstream::start("slow", |_| Reply::text(503, "shadow\n").delay(DELAY));
    let dead = free_port();
    let (gw, port) = start(
        &[
            ("primary", primary.address()),
            ("slow", slow.address()),
            ("dead", format!("127.0.0.1:{dead}")),
        ],
        "  - {name: down, match: {path_prefix: /down}, cluster: primary, mirror: [{cluster: dead}]}\n\
         \x20 - {name: slow, match: {path_prefix: /slow}, cluster: primary, mirror: [{cluster: slow}]}\n\
         \x20 - {name: full, match: {path_prefix: /full}, cluster: primary, mirror: [{cluster: slow, max_concurrent: 2}]}\n\
         \x20 - {name: warm, match: {path_prefix: /warm}, cluster: primary}\n",
    );

    // Warm the gateway up (first connections) on a route without a mirror,
    // so the timings below measure only what mirroring could add.
    send_200(http_client().get(url(port, "/warm")), "warm-up request").await;

    let down = send_timed(port, "/down", N, false, BOUND).await;
    let slowest = send_timed(port, "/slow", N, false, BOUND).await;
    let t0 = Instant::now();
    let full = send_timed(port, "/full", N, true, BOUND).await;
    let burst = t0.elapsed();

    let m = wait_metrics(&gw, Duration::from_secs(8), |m| {
        mirrored(m, "down", "error") >= N as u64
            && mirrored(m, "slow", "sent") >= N as u64
            && mirrored(m, "full", "sent") + mirrored(m, "full", "dropped") >= N as u64
    })
    .await;
    assert_eq!(
        primary.count(),
        3 * N as u64 + 1,
        "the primary should get all {} requests (and the warm-up)",
        3 * N
    );
    assert_eq!(
        (mirrored(&m, "down", "error"), mirrored(&m, "down", "sent")),
        (N as u64, 0),
        "dead mirror: expected (error, sent) = ({N}, 0); results: {}",
        results(&m, "down")
    );
    assert_eq!(
        (
            mirrored(&m, "slow", "sent"),
            mirrored(&m, "slow", "dropped")
        ),
        (N as u64, 0),
        "slow mirror: expected (sent, dropped) = ({N}, 0) once it answers; results: {}",
        results(&m, "slow")
    );
    let slow_seen = slow
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/slow/"))
        .count();
    assert_eq!(
        slow_seen, N,
        "the slow mirror should see all {N} /slow copies"
    );
    assert_eq!(
        (mirrored(&m, "full", "sent"), mirrored(&m, "full", "dropped")),
        (2, N as u64 - 2),
        "max_concurrent 2 with a 2 s mirror and {N} simultaneous requests: expected (sent, dropped) = (2, {}); results: {}",
        N - 2,
        results(&m, "full")
    );
    let full_seen = slow
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/full/"))
        .count();
    assert_eq!(
        full_seen, 2,
        "the mirror should see only the 2 admitted /full copies"
    );
    eprintln!(
        "never_waits: slowest primary down={down:?} slow={slowest:?} full={full:?}; /full burst {burst:?}; \
         down: {}; slow: {}; full: {}",
        results(&m, "down"),
        results(&m, "slow"),
        results(&m, "full")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_mode_counts_status_and_body_mismatches() {
    const N: usize = 8;
    const SAME: &str = "the same answer\n";
    let primary = Upstream::start("primary", |_| Reply::text(200, SAME));
    let twin = Upstream::start("twin", |_| Reply::text(200, SAME));
    let failing = Upstream::start("failing", |_| Reply::text(500, SAME));
    let differ = Upstream::start("differ", |_| Reply::text(200, "another answer\n"));
    let (gw, port) = start(
        &[
            ("primary", primary.address()),
            ("twin", twin.address()),
            ("failing", failing.address()),
            ("differ", differ.address()),
        ],
        "  - {name: same, match: {path_prefix: /same}, cluster: primary, mirror: [{cluster: twin, compare: {status: true, body: true}}]}\n\
         \x20 - {name: status, match: {path_prefix: /status}, cluster: primary, mirror: [{cluster: failing, compare: {status: true}}]}\n\
         \x20 - {name: body, match: {path_prefix: /body}, cluster: primary, mirror: [{cluster: differ, compare: {status: true, body: true}}]}\n",
    );

    let client = http_client();
    for route in ["same", "status", "body"] {
        for i in 0..N {
            let resp = client
                .get(url(port, &format!("/{route}/{i}")))
                .header("x-request-id", format!("cmp-{route}-{i}"))
                .send()
                .await
                .expect("request through the gateway");
            assert_eq!(
                resp.status(),
                200,
                "/{route}/{i}: expected the primary's 200 whatever the mirror says"
            );
            assert_eq!(
                resp.text().await.expect("body"),
                SAME,
                "/{route}/{i}: the client should get the primary's body"
            );
        }
        let m = wait_metrics(&gw, Duration::from_secs(5), |m| {
            mirrored(m, route, "sent") >= N as u64
                && match route {
                    "status" => mismatches(m, route, "status") >= N as u64,
                    "body" => mismatches(m, route, "body") >= N as u64,
                    _ => true,
                }
        })
        .await;
        assert_eq!(
            mirrored(&m, route, "sent"),
            N as u64,
            "route {route}: expected {N} copies sent; results: {}",
            results(&m, route)
        );
    }
    // Let the last comparisons land, then read everything at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = gw.metrics().await;
    let got = |route: &str| {
        (
            mismatches(&m, route, "status"),
            mismatches(&m, route, "body"),
        )
    };
    assert_eq!(
        got("status"),
        (N as u64, 0),
        "shadow 500 vs primary 200: expected (status, body) mismatches = ({N}, 0)"
    );
    assert_eq!(
        got("body"),
        (0, N as u64),
        "same status, different bodies, body compared: expected (status, body) mismatches = (0, {N})"
    );
    assert_eq!(
        got("same"),
        (0, 0),
        "identical answers: expected no mismatch (status, body)"
    );

    // The log line names the request and both statuses.
    let stderr = gw.stderr();
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("mirror mismatch"))
        .collect();
    let status_line = lines
        .iter()
        .find(|l| l.contains("cmp-status-") && l.contains("200") && l.contains("500"));
    assert!(
        status_line.is_some(),
        "stderr should hold a `mirror mismatch` line with a cmp-status-N request id and both statuses (200, 500); got mismatch lines:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("cmp-body-")),
        "stderr should hold a `mirror mismatch` line for a cmp-body-N request id; got:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains("cmp-same-")),
        "identical answers should log no mismatch; got:\n{}",
        lines.join("\n")
    );
    eprintln!(
        "compare: status={:?} body={:?} same={:?} (status, body); {} mismatch log lines; e.g. {}",
        got("status"),
        got("body"),
        got("same"),
        lines.len(),
        status_line.copied().unwrap_or_default()
    );
}

// Gateway bugs found while writing these tests: deterministic
// reproductions, ignored until they are fixed (`cargo test -p gateway-tests
// --test mirror -- --ignored`). The last one is also why
// `bodies_are_teed_intact_and_oversized_ones_abandoned` fails whenever the
// copy task falls 16 body chunks behind (often, on a loaded machine).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_still_mirrors_its_whole_body() {
    const N: usize = 4;
    let primary = Upstream::named("primary");
    let shadow = Upstream::named("shadow");
    let dead = free_port();
    let gw = Gateway::builder()
        .config(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
clusters:
  - {name: flaky, lb: round_robin, connect_timeout: 1s, endpoints: [{address: "127.0.0.1:${dead}"}, {address: "${primary}"}]}
  - {name: shadow, endpoints: [{address: "${shadow}"}]}
routes:
  - {name: retried, cluster: flaky, retries: {attempts: 3, on: [connect-failure]}, mirror: [{cluster: shadow}]}
"#,
            &[
                ("dead", &dead),
                ("primary", &primary.address()),
                ("shadow", &shadow.address()),
            ],
        )
        .start();
    let port = gw.port();
    let mut want = Vec::new();
    for i in 0..N {
        let data = pseudo_random_bytes(64 * 1024, 100 + 2 * i as u64);
        want.push((format!("/retried/{i}"), sha256_hex(&data)));
        upload(port, &format!("/retried/{i}"), data, false).await;
    }
    let m = wait_metrics(&gw, Duration::from_secs(5), |m| {
        counted(m, "retried") >= N as u64
    })
    .await;
    let retries = metric(&m, "gateway_retries_total", &[("route", "retried")]);
    let copies = shadow.requests();
    let got: Vec<_> = want
        .iter()
        .map(|(path, _)| {
            copies
                .iter()
                .find(|r| &r.path == path)
                .map(|r| (path.clone(), r.body_sha256.clone()))
        })
        .collect();
    let want: Vec<_> = want.into_iter().map(Some).collect();
    assert_eq!(
        got,
        want,
        "each copy should carry the whole 64 KiB body even when the primary was retried \
         ({retries} retries); results: {}",
        results(&m, "retried")
    );
    assert_eq!(
        mirrored(&m, "retried", "sent"),
        N as u64,
        "expected {N} copies sent; results: {}",
        results(&m, "retried")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expect_100_continue_request_is_mirrored_and_counted() {
    let (_primary, shadow, gw, port) =
        pair("  - {name: expect, cluster: primary, mirror: [{cluster: shadow, timeout: 1s}]}\n");
    let req = http_client().post(url(port, "/expect"));
    let req = req.header("expect", "100-continue").body(vec![b'e'; 4000]);
    send_200(req, "POST with Expect: 100-continue (the primary answers)").await;
    // The copy's timeout is 1 s: by 3 s it must be counted one way or another.
    let m = wait_metrics(&gw, Duration::from_secs(3), |m| {
        mirrored(m, "expect", "sent") + mirrored(m, "expect", "error") >= 1
    })
    .await;
    let panics: Vec<String> = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("panicked"))
        .map(str::to_string)
        .collect();
    assert!(
        panics.is_empty(),
        "the gateway should not panic on a mirrored Expect: 100-continue request; got:\n{}",
        panics.join("\n")
    );
    assert_eq!(
        mirrored(&m, "expect", "sent"),
        1,
        "the copy (the shadow saw {} request(s)) should be counted sent; results: {}",
        shadow.count(),
        results(&m, "expect")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_copies_of_piecemeal_uploads_arrive_intact() {
    const N: usize = 4;
    let (_primary, shadow, gw, port) =
        pair("  - {name: pieces, cluster: primary, mirror: [{cluster: shadow}]}\n");
    // Chunked uploads written in 4 KiB pieces (as many clients stream), one
    // at a time, well within the default max_body_bytes (1 MiB).
    let mut want = Vec::new();
    for i in 0..N {
        let data = pseudo_random_bytes(MIB, 200 + 2 * i as u64);
        want.push((format!("/pieces/{i}"), MIB as u64, sha256_hex(&data)));
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            data.chunks(4096).map(|p| Ok(p.to_vec())).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        let req = http_client().post(url(port, &format!("/pieces/{i}")));
        send_200(req.body(body), &format!("the primary answers upload {i}")).await;
    }
    let m = wait_metrics(&gw, Duration::from_secs(5), |m| {
        counted(m, "pieces") >= N as u64
    })
    .await;
    let got: Vec<_> = want
        .iter()
        .map(|(path, _, _)| {
            shadow
                .requests()
                .into_iter()
                .find(|r| &r.path == path)
                .map_or((path.clone(), 0, String::new()), |r| {
                    (r.path, r.body_len, r.body_sha256)
                })
        })
        .collect();
    assert_eq!(
        got,
        want,
        "every 1 MiB copy should reach the (fast, loopback) shadow whole; results: {}",
        results(&m, "pieces")
    );
}
