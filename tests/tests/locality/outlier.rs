//! Outlier detection: ejections and their length, the ejection cap,
//! connect failures, ejections kept across a reload, and the bugs found.

use super::*;

// 4. Outlier detection.
// ---------------------------------------------------------------------------

/// A gateway with one catch-all route to cluster `od` of the endpoints at
/// `addresses` (no localities, round robin) with outlier detection `od`.
fn outlier_gateway(addresses: &[String], od: &str) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .yaml(NO_ACCESS_LOG)
        .cluster_yaml(&format!(
            "{{name: od, connect_timeout: 500ms, endpoints: [{}], outlier_detection: {od}}}",
            gateway_tests::endpoints(addresses)
        ))
        .route("{name: all, cluster: od}")
        .start();
    let port = gw.port();
    (gw, port)
}

/// A client that opens a new connection for every request. The gateway
/// closes the client connection after an error response of its own (502
/// on a connect failure) while announcing keep-alive, so a pooled client
/// would see its next request reset (see
/// `bug_error_response_announces_keep_alive_then_closes`).
fn fresh_connection_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("build reqwest client")
}

async fn status_of(client: &reqwest::Client, port: u16) -> u16 {
    client
        .get(url(port, "/od"))
        .send()
        .await
        .expect("request through the gateway")
        .status()
        .as_u16()
}

/// `gateway_outlier_ejections_total{cluster}` now.
async fn ejections(gw: &Gateway, cluster: &str) -> f64 {
    let name = "gateway_outlier_ejections_total";
    gw.metric(name, &[("cluster", cluster)]).value().await
}

/// Sends `n` requests, asserting each is a 200; returns how many of them
/// each of `ups` got.
async fn window(client: &reqwest::Client, port: u16, ups: &[&Upstream], n: usize) -> Vec<u64> {
    let before: Vec<u64> = ups.iter().map(|u| u.count()).collect();
    for _ in 0..n {
        assert_eq!(status_of(client, port).await, 200);
    }
    ups.iter().zip(before).map(|(u, b)| u.count() - b).collect()
}

/// What [`eject_and_time_return`] saw.
struct Ejection {
    /// Statuses of the requests until the ejecting 500.
    statuses: Vec<u16>,
    /// Requests served (all 200, none by the ejected endpoint) meanwhile.
    during: u64,
    /// The ejection lasted at least this long...
    at_least: Duration,
    /// ...and at most this long.
    at_most: Duration,
}

/// Makes `bad` fail and sends sequential requests until it has answered
/// `threshold` more 500s (round robin alternates with one healthy
/// endpoint), then heals it and keeps sending (every 10 ms) until it gets a
/// request again.
///
/// The ejection's length is bracketed from the client's clock, so that a
/// slow machine widens the bracket instead of failing the test: it started
/// while the ejecting request was in flight, and ended before the request
/// that reached `bad` again was answered; since round robin over two
/// endpoints sends one of any two picks to an available `bad`, it ended
/// after the request two before that one was sent.
async fn eject_and_time_return(
    client: &reqwest::Client,
    port: u16,
    bad: &Upstream,
    threshold: u64,
) -> Ejection {
    bad.set_failing(true);
    let start = bad.count();
    let mut statuses = Vec::new();
    let mut ejecting = (Instant::now(), Instant::now());
    while bad.count() - start < threshold {
        assert!(
            statuses.len() < 50,
            "bad never got {threshold} requests: {statuses:?}"
        );
        let sent = Instant::now();
        statuses.push(status_of(client, port).await);
        ejecting = (sent, Instant::now());
    }
    assert_eq!(
        statuses.iter().filter(|&&s| s == 500).count() as u64,
        threshold,
        "expected exactly consecutive_5xx = {threshold} answers of 500 before the ejection, got {statuses:?}"
    );
    bad.set_failing(false);
    let seen = bad.count();
    let mut sent_times = Vec::new();
    while ejecting.1.elapsed() < Duration::from_secs(5) {
        let sent = Instant::now();
        let s = status_of(client, port).await;
        if bad.count() > seen {
            let during = sent_times.len() as u64;
            let two_before = sent_times
                .len()
                .checked_sub(2)
                .map_or(ejecting.1, |i| sent_times[i]);
            return Ejection {
                statuses,
                during,
                at_least: two_before.saturating_duration_since(ejecting.1),
                at_most: Instant::now().duration_since(ejecting.0),
            };
        }
        assert_eq!(s, 200, "while bad is ejected only good answers");
        sent_times.push(sent);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected the ejected endpoint to get traffic again within 5 s");
}

/// Asserts that `e` brackets an ejection of `want` (+/- 20 ms of timer
/// slack) and that requests were served meanwhile.
fn assert_ejection_lasted(e: &Ejection, want: Duration, what: &str) {
    let slack = Duration::from_millis(20);
    assert!(
        e.during >= 3,
        "{what}: expected requests served while ejected, got only {}",
        e.during
    );
    assert!(
        e.at_least <= want + slack && want <= e.at_most + slack,
        "{what}: expected an ejection of {want:?}; it lasted between {:?} and {:?}",
        e.at_least,
        e.at_most
    );
}

/// Ejection for `base_ejection_time` (1 s) after `consecutive_5xx` (3) 500s
/// in a row, no traffic meanwhile, back in rotation afterwards; a second
/// ejection lasts base x 2 = 2 s capped by `max_ejection_time` (1.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_5xx_ejects_and_returns_after_base_time() {
    let good = Upstream::switchable("good");
    let bad = Upstream::switchable("bad");
    let (gw, port) = outlier_gateway(
        &[good.address(), bad.address()],
        "{consecutive_5xx: 3, base_ejection_time: 1s, max_ejection_time: 1500ms, max_ejection_percent: 50}");
    let client = http_client();

    let first = eject_and_time_return(&client, port, &bad, 3).await;
    eprintln!(
        "5xx ejection 1: statuses before {:?}; {} requests while ejected all went to good; \
         ejection lasted {:?}..{:?} (base 1 s)",
        first.statuses, first.during, first.at_least, first.at_most
    );
    assert_ejection_lasted(&first, Duration::from_secs(1), "first ejection");
    // Back in rotation: round robin again.
    let got = window(&client, port, &[&good, &bad], 20).await;
    assert!(
        got[0].abs_diff(got[1]) <= 1,
        "after return: expected 10/10 (+/-1) between good and bad, got {got:?}"
    );

    let second = eject_and_time_return(&client, port, &bad, 3).await;
    eprintln!(
        "5xx ejection 2: statuses before {:?}; {} requests while ejected; ejection lasted \
         {:?}..{:?} (base x 2 = 2 s, capped at 1.5 s)",
        second.statuses, second.during, second.at_least, second.at_most
    );
    assert_ejection_lasted(
        &second,
        Duration::from_millis(1500),
        "second ejection (min(2 x base, max_ejection_time))",
    );
    assert_eq!(
        ejections(&gw, "od").await,
        2.0,
        "expected two ejections counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_max_ejection_percent_caps_ejections() {
    let ups = Upstream::switchable_n("e", 4);
    for u in &ups[1..] {
        u.set_failing(true);
    }
    let addrs: Vec<String> = ups.iter().map(Upstream::address).collect();
    let (gw, port) = outlier_gateway(
        &addrs,
        "{consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50}",
    );
    // Enough requests for every failing endpoint to cross the threshold.
    let client = http_client();
    for _ in 0..40 {
        status_of(&client, port).await;
    }
    let before: Vec<u64> = ups.iter().map(Upstream::count).collect();
    let mut statuses = BTreeMap::<u16, u64>::new();
    for _ in 0..200 {
        *statuses.entry(status_of(&client, port).await).or_default() += 1;
    }
    let window: Vec<u64> = ups
        .iter()
        .zip(&before)
        .map(|(u, b)| u.count() - b)
        .collect();
    let ejections = ejections(&gw, "od").await;
    eprintln!(
        "3 of 4 failing, max_ejection_percent 50: window of 200 requests per endpoint \
         [e0 e1 e2 e3] = {window:?}, statuses {statuses:?}, ejections {ejections}"
    );
    let silent: Vec<usize> = (0..4).filter(|&i| window[i] == 0).collect();
    assert_eq!(
        silent.len(),
        2,
        "max 50 % of 4 endpoints: expected exactly 2 endpoints without traffic (ejected), got {window:?}"
    );
    assert!(
        window[0] > 0,
        "the healthy endpoint e0 is never ejected, got {window:?}"
    );
    assert!(
        silent.iter().all(|&i| i > 0),
        "only failing endpoints may be ejected, got {window:?}"
    );
    assert_eq!(
        ejections, 2.0,
        "expected gateway_outlier_ejections_total == 2 (the cap), got {ejections}"
    );
    assert_eq!(window.iter().sum::<u64>(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_connect_failures_eject_a_dead_endpoint() {
    let good = Upstream::switchable("good");
    // A port nothing listens on (free_port never hands it out again).
    let dead = format!("127.0.0.1:{}", free_port());
    let (gw, port) = outlier_gateway(
        &[good.address(), dead],
        "{consecutive_connect_failures: 2, consecutive_5xx: 0, base_ejection_time: 30s, max_ejection_percent: 50}");
    let client = fresh_connection_client();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        statuses.push(status_of(&client, port).await);
    }
    let failures: Vec<u16> = statuses.iter().copied().filter(|&s| s != 200).collect();
    eprintln!("dead endpoint, 30 requests: statuses {statuses:?}");
    assert_eq!(
        failures.len(),
        2,
        "expected exactly consecutive_connect_failures = 2 failed requests before the dead endpoint \
         is ejected, got {statuses:?}"
    );
    assert!(
        failures.iter().all(|&s| s == 502 || s == 503),
        "connect failures should answer 502/503, got {failures:?}"
    );
    assert!(
        statuses[statuses.len() - 20..].iter().all(|&s| s == 200),
        "after the ejection every request goes to the live endpoint: {statuses:?}"
    );
    assert_eq!(good.count(), 28, "the live endpoint served the other 28");
    assert_eq!(
        ejections(&gw, "od").await,
        1.0,
        "expected one ejection counted"
    );
}

// ---------------------------------------------------------------------------
// 7. Health state across reloads.
// ---------------------------------------------------------------------------

/// Cluster `kept` (outlier detection) over `e1` and `e2`, and a
/// direct-response route whose status marks the generation.
fn reload_config(
    b: GatewayBuilder,
    e1: &str,
    e2: &str,
    route_status: u16,
    connect: &str,
) -> GatewayBuilder {
    b.yaml(NO_ACCESS_LOG)
        .cluster_yaml(&tpl(
            r#"
name: kept
connect_timeout: ${connect}
endpoints: [{address: "${e1}"}, {address: "${e2}"}]
outlier_detection: {consecutive_5xx: 2, base_ejection_time: 30s, max_ejection_percent: 50}"#,
            &[("e1", &e1), ("e2", &e2), ("connect", &connect)],
        ))
        .route(&format!(
            "{{name: unrelated, match: {{path: /unrelated}}, direct_response: {{status: {route_status}}}}}"
        ))
        .route("{name: main, cluster: kept}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_state_survives_reload_of_an_unchanged_cluster() {
    let e1 = Upstream::switchable("e1");
    let e2 = Upstream::switchable("e2");
    e2.set_failing(true);
    let config =
        |b, status, connect| reload_config(b, &e1.address(), &e2.address(), status, connect);
    let gw = config(Gateway::builder(), 204, "2s").start();
    let port = gw.port();
    let client = http_client();
    for _ in 0..10 {
        status_of(&client, port).await;
    }
    assert_eq!(e2.count(), 2, "e2 ejected after consecutive_5xx = 2");
    e2.set_failing(false); // healthy now, but ejected for 30 s

    // An unrelated route changes: cluster `kept` is carried over.
    gw.rewrite(config(gw.same_ports(), 205, "2s"));
    gw.wait_generation(2).await;
    let r = client
        .get(url(port, "/unrelated"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 205, "generation 2 serves the changed route");
    let kept = window(&client, port, &[&e1, &e2], 60).await;
    assert_eq!(
        kept,
        [60, 0],
        "unchanged cluster across a reload: the ejected e2 must stay ejected (expected e1/e2 = 60/0), got {kept:?}"
    );

    // The cluster itself changes: a new cluster, fresh health state.
    gw.rewrite(config(gw.same_ports(), 205, "1s"));
    gw.wait_generation(3).await;
    let fresh = window(&client, port, &[&e1, &e2], 60).await;
    eprintln!("reload: unrelated change e1/e2 = {kept:?}; cluster change e1/e2 = {fresh:?}");
    assert!(
        fresh[0].abs_diff(30) <= 1 && fresh[1].abs_diff(30) <= 1,
        "changed cluster: state resets, e2 takes traffic again (expected 30/30 +/- 1), got {fresh:?}"
    );
    assert_eq!(ejections(&gw, "kept").await, 1.0, "one ejection in total");
}

// ---------------------------------------------------------------------------
// Gateway bugs found while writing these tests (ignored: they fail today).
// Run with `cargo test -p gateway-tests --test locality -- --ignored`.
// ---------------------------------------------------------------------------

/// Round robin skips an unavailable endpoint by taking the next available
/// one in the schedule, so that endpoint inherits the skipped slots: with
/// e1 and e2 of four equal-weight endpoints ejected, e3 gets 3/4 of the
/// traffic and e0 1/4 instead of 1/2 each ("weights respected within a
/// priority"). The same happens to a1/a2 in `local_only` panic routing
/// (5/6 vs 1/6), where the all-endpoints schedule is filtered to zone a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_even_among_the_endpoints_left() {
    let ups = Upstream::switchable_n("e", 4);
    ups[1].set_failing(true);
    ups[2].set_failing(true);
    let addrs: Vec<String> = ups.iter().map(Upstream::address).collect();
    let (gw, port) = outlier_gateway(
        &addrs,
        "{consecutive_5xx: 1, base_ejection_time: 30s, max_ejection_percent: 50}",
    );
    let client = http_client();
    for _ in 0..8 {
        status_of(&client, port).await;
    }
    assert_eq!(ejections(&gw, "od").await, 2.0, "setup: e1 and e2 ejected");
    let window = window(&client, port, &ups.iter().collect::<Vec<_>>(), 200).await;
    assert!(
        window[0].abs_diff(100) <= 2 && window[3].abs_diff(100) <= 2,
        "two equal-weight endpoints left: expected e0/e3 = 100/100 (+/-2) of 200, got [e0 e1 e2 e3] = {window:?}"
    );
}

/// After an error response it writes itself (here 502 for a refused
/// upstream connect) the gateway closes the client connection
/// (`can_reuse_downstream: false`) although the response says
/// `Connection: keep-alive`, so a client that reuses the connection, as
/// HTTP/1.1 allows, has its next request reset or unanswered. Seen in
/// `outlier_connect_failures_eject_a_dead_endpoint` as a pooled reqwest
/// client's "Connection reset by peer" on the request after a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_responses_announce_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one response with a Content-Length body; `None` on EOF/error.
    async fn read_response(s: &mut tokio::net::TcpStream) -> Option<String> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return Some(text);
                }
            }
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    let dead = format!("127.0.0.1:{}", free_port());
    let (_gw, port) = outlier_gateway(&[dead], "{consecutive_connect_failures: 0}");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the gateway");
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    s.write_all(req("/one").as_bytes())
        .await
        .expect("send request 1");
    let first = read_response(&mut s).await.expect("response to request 1");
    assert!(
        first.starts_with("HTTP/1.1 502"),
        "a refused connect answers 502: {first}"
    );
    let announces_close = first.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("connection:")
            && l.to_ascii_lowercase().contains("close")
    });
    let second = match s.write_all(req("/two").as_bytes()).await {
        Ok(()) => read_response(&mut s).await,
        Err(_) => None,
    };
    assert!(
        announces_close
            || second
                .as_deref()
                .is_some_and(|r| r.starts_with("HTTP/1.1 502")),
        "the first response did not announce `Connection: close`, so the connection must serve a \
         second request; it did not answer it.\n--- first response ---\n{first}"
    );
}
