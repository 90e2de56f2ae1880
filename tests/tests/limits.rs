//! Listener limits (`listeners[].limits`, route `max_request_body_bytes`)
//! against real clients: slow heads answered 408 while normal traffic
//! flows, the connection cap, 431 for big heads, 413 and cut streams for
//! big bodies (the upstream never gets more than the limit), the idle
//! timeout, HTTP/2 concurrent streams, and positioned config errors. Every
//! refusal shows in `gateway_listener_refusals_total{listener,reason}`.
//!
//! All of it passes on both engines (CI runs the suite again with
//! `GATEWAY_DEFAULT_ENGINE=proxy_http`); the tests use what both engines
//! bound the same way (first request of a connection for the head limits).

use std::time::{Duration, Instant};

use gateway_tests::{
    fire, http_client, pseudo_random_bytes, run_gateway, upload_body, Gateway, Upstream,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn connect(gw: &Gateway) -> TcpStream {
    TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect to the gateway")
}

/// Everything `conn` sends until it closes (or errors, or `limit` passes),
/// and when that happened.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout_at(
        tokio::time::Instant::from_std(start + limit),
        conn.read(&mut buf),
    )
    .await
    {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    (out, start.elapsed())
}

/// Sends `request` on `conn` and reads one Content-Length-framed answer;
/// its status, or `None` if the connection closed without one.
async fn exchange(conn: &mut TcpStream, request: &str) -> Option<u16> {
    conn.write_all(request.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = conn.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(status)
}

const GET: &str = "GET /x HTTP/1.1\r\nhost: t\r\n\r\n";

const REFUSALS: &str = "gateway_listener_refusals_total";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_heads_get_408_at_the_header_timeout_while_traffic_flows() {
    const SLOW: usize = 500;
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {request_header_timeout: 2s}")
        .catch_all(&up)
        .start();
    let start = Instant::now();
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut conn = connect(&gw).await;
        conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a head");
        slow.push(conn);
    }
    // A connection that never says anything is closed, unanswered and uncounted.
    let mut silent = connect(&gw).await;
    // Normal traffic meanwhile: every request answered.
    let port = gw.port();
    let traffic = tokio::spawn(async move { fire(port, "/ok/", 300, 8).await });
    let readers: Vec<_> = slow
        .into_iter()
        .map(|mut conn| {
            tokio::spawn(async move { read_to_close(&mut conn, Duration::from_secs(15)).await })
        })
        .collect();
    let served = traffic.await.expect("traffic task");
    assert_eq!(
        served.values().sum::<u64>(),
        300,
        "all normal requests served"
    );
    for r in readers {
        let (answer, _) = r.await.expect("reader");
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "a half-sent head is answered 408; got {text:?}"
        );
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "answered at the header timeout (2s), not before: {waited:?}"
    );
    let (said, when) = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert!(
        said.is_empty(),
        "a silent connection gets no answer: {said:?}"
    );
    assert!(
        when < Duration::from_secs(8),
        "closed at the header timeout"
    );
    gw.metric(
        REFUSALS,
        &[("listener", "public"), ("reason", "header_timeout")],
    )
    .eventually_eq(SLOW as f64)
    .await;
}

/// Empty lines before a request line are skipped (RFC 9112 §2.2), as
/// Pingora's parser skips them; they must not pass for a complete head, or
/// the rest of the head would be read outside the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lines_before_a_head_do_not_escape_the_header_timeout() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {request_header_timeout: 1s}")
        .catch_all(&up)
        .start();
    let mut whole = connect(&gw).await;
    assert_eq!(
        exchange(&mut whole, "\r\n\r\nGET /x HTTP/1.1\r\nhost: t\r\n\r\n").await,
        Some(200),
        "a head after empty lines is served"
    );
    let mut half = connect(&gw).await;
    half.write_all(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("half a head after empty lines");
    let (answer, when) = read_to_close(&mut half, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "answered 408 at the header timeout; got {text:?} after {when:?}"
    );
    assert!(when < Duration::from_secs(5), "closed after {when:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_refuses_the_one_over_it() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {max_connections: 5}")
        .catch_all(&up)
        .start();
    let mut held = Vec::new();
    for i in 0..5 {
        let mut conn = connect(&gw).await;
        assert_eq!(exchange(&mut conn, GET).await, Some(200), "connection {i}");
        held.push(conn);
    }
    let mut sixth = connect(&gw).await;
    assert_eq!(
        exchange(&mut sixth, GET).await,
        None,
        "the 6th is closed unanswered"
    );
    gw.metric(
        REFUSALS,
        &[("listener", "public"), ("reason", "connection_limit")],
    )
    .eventually_eq(1.0)
    .await;
    // The held ones still work.
    assert_eq!(exchange(&mut held[0], GET).await, Some(200));
    drop(held.pop());
    // Once the gateway has seen that one close, a new one is served.
    let start = Instant::now();
    loop {
        let mut conn = connect(&gw).await;
        if exchange(&mut conn, GET).await == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a place freed by a close is given to a new connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_the_limit_is_431() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {max_request_header_bytes: 2048}")
        .catch_all(&up)
        .start();
    let mut conn = connect(&gw).await;
    let big = format!(
        "GET /big HTTP/1.1\r\nhost: t\r\nx-big: {}\r\n\r\n",
        "a".repeat(3000)
    );
    conn.write_all(big.as_bytes()).await.expect("write");
    let (answer, _) = read_to_close(&mut conn, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 431"), "got {text:?}");
    gw.metric(
        REFUSALS,
        &[("listener", "public"), ("reason", "header_too_large")],
    )
    .eventually_eq(1.0)
    .await;
    // A head under the limit passes.
    let resp = http_client()
        .get(gw.url("/fits"))
        .header("x-some", "a".repeat(1000))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        up.count(),
        1,
        "only the fitting request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_413_before_the_upstream_and_routes_override() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {max_request_body_bytes: 1000}")
        .cluster("c", &[&up], "")
        .route(
            "{name: big, cluster: c, match: {path_prefix: /big}, max_request_body_bytes: 100000}",
        )
        .route(
            "{name: small, cluster: c, match: {path_prefix: /small}, max_request_body_bytes: 10}",
        )
        .route("{name: all, cluster: c}")
        .start();
    let client = http_client();
    let post = |path: &str, n: usize| {
        client
            .post(gw.url(path))
            .body(pseudo_random_bytes(n, 1))
            .send()
    };
    let resp = post("/x", 1500).await.expect("over the listener's limit");
    assert_eq!(resp.status(), 413);
    assert_eq!(
        resp.text().await.unwrap_or_default(),
        "request body too large\n"
    );
    assert_eq!(up.count(), 0, "nothing reached the upstream");
    assert_eq!(post("/x", 1000).await.expect("at the limit").status(), 200);
    assert_eq!(
        post("/big", 1500)
            .await
            .expect("route allows more")
            .status(),
        200
    );
    assert_eq!(
        post("/small", 50)
            .await
            .expect("route allows less")
            .status(),
        413
    );
    assert_eq!(
        up.count(),
        2,
        "only the allowed bodies reached the upstream"
    );
    gw.metric(
        REFUSALS,
        &[("listener", "public"), ("reason", "body_too_large")],
    )
    .eventually_eq(2.0)
    .await;
    let logged = gw.wait_access_log(2, Duration::from_secs(5), |v| v["status"] == 413);
    assert_eq!(logged.len(), 2, "413s are in the access log: {logged:?}");
    // Workers write their own lines: the two may come in either order.
    assert!(
        logged.iter().any(|l| l["route"] == "small"),
        "the route's 413 is logged under its name: {logged:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_upload_past_the_limit_is_cut_and_the_upstream_gets_no_more() {
    const LIMIT: u64 = 1024 * 1024;
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener(&format!("limits: {{max_request_body_bytes: {LIMIT}}}"))
        .catch_all(&up)
        .start();
    let body = upload_body(pseudo_random_bytes(10 * 1024 * 1024, 2), true);
    let sent = http_client()
        .post(gw.url("/upload"))
        .body(body)
        .send()
        .await;
    // Cut with an answer (413), or without one: the connection closed
    // under the upload, which the client sees as an error.
    if let Ok(resp) = sent {
        assert_eq!(resp.status(), 413, "cut with an answer");
    }
    gw.metric(
        REFUSALS,
        &[("listener", "public"), ("reason", "body_too_large")],
    )
    .eventually_eq(1.0)
    .await;
    let start = Instant::now();
    while up.requests().is_empty() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "the upload was streamed upstream until cut");
    assert!(
        seen[0].body_len <= LIMIT,
        "the upstream got {} bytes, more than the limit {LIMIT}",
        seen[0].body_len
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("limits: {idle_timeout: 1s}")
        .catch_all(&up)
        .start();
    let mut conn = connect(&gw).await;
    assert_eq!(exchange(&mut conn, GET).await, Some(200));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        exchange(&mut conn, GET).await,
        Some(200),
        "kept alive meanwhile"
    );
    let (said, idle) = read_to_close(&mut conn, Duration::from_secs(10)).await;
    assert!(said.is_empty(), "closed without a word: {said:?}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(4),
        "closed after the 1s idle timeout, took {idle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_beyond_the_limit_wait_for_a_free_one() {
    let up = Upstream::slow(Duration::from_millis(400));
    let gw = Gateway::builder()
        .listener("limits: {http2_max_concurrent_streams: 2}")
        .catch_all(&up)
        .start();
    let client = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client");
    // One request first, so that the rest share its connection.
    let first = client
        .get(gw.url("/warm"))
        .send()
        .await
        .expect("h2c request");
    assert_eq!(first.version(), reqwest::Version::HTTP_2);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (client, url) = (client.clone(), gw.url(&format!("/s/{i}")));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task").expect("stream answered"), 200);
    }
    assert_eq!(
        up.max_concurrent(),
        2,
        "the client kept to the server's SETTINGS_MAX_CONCURRENT_STREAMS"
    );
}

#[test]
fn bad_limits_are_positioned_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = "admin: {listen: \"127.0.0.1:19901\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:19902\"\n    limits:\n      request_header_timeout: 0s\n      max_connections: 0\n      max_request_header_bytes: 100\n      http2_max_concurrent_streams: 0\n  - name: out\n    listen: \"127.0.0.1:19903\"\n    mode: egress\n    limits: {idle_timeout: 5s}\negress:\n  rules:\n    - {name: ok, hosts: [a.test]}\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n";
    std::fs::write(dir.path().join("limits.yaml"), yaml).expect("write config");
    let out = run_gateway(
        &["validate", "-c", "limits.yaml"],
        dir.path(),
        Duration::from_secs(30),
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_ne!(out.status.and_then(|s| s.code()), Some(0), "refused: {all}");
    for (line, says) in [
        (6, "request_header_timeout must be longer than 0s"),
        (7, "max_connections must be at least 1"),
        (
            8,
            "max_request_header_bytes must be between 1024 and 1048575",
        ),
        (9, "http2_max_concurrent_streams must be at least 1"),
        (13, "egress listeners take only `max_connections`"),
    ] {
        assert!(
            all.lines()
                .any(|l| l.contains(&format!("limits.yaml:{line}:")) && l.contains(says)),
            "expected `limits.yaml:{line}:..: {says}` in:\n{all}"
        );
    }
}
