//! HTTP/1.1 messages on the wire (RFC 9112): pipelined requests (§9.3.2)
//! are answered in order on the same connection, as NGINX and Envoy do
//! (Pingora does once asked to, and both gateway paths ask); a request
//! carries exactly one `Host` (§3.2); an absolute-form target is routed by
//! its authority (§3.2.2); and the upstream side keeps its connections.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gateway_tests::{sha256_hex, Gateway, Upstream};

/// One answer read off the wire: status, `x-upstream`, and body (framed
/// by Content-Length).
struct Answer {
    status: u16,
    upstream: Option<String>,
    body: Vec<u8>,
}

/// Reads `n` Content-Length-framed answers from `conn`, in wire order.
fn read_answers(conn: TcpStream, n: usize) -> Vec<Answer> {
    let mut r = BufReader::new(conn);
    (0..n)
        .map(|i| {
            let mut line = String::new();
            r.read_line(&mut line).expect("status line");
            let status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("answer {i}: status line {line:?}"));
            let mut length = 0;
            let mut upstream = None;
            loop {
                line.clear();
                r.read_line(&mut line).expect("header line");
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().expect("content-length");
                    } else if name.eq_ignore_ascii_case("x-upstream") {
                        upstream = Some(value.trim().to_string());
                    }
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).expect("body");
            Answer {
                status,
                upstream,
                body,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pipelined_requests_with_a_post_are_answered_in_order() {
    let up = Upstream::named("a");
    let gw = Gateway::builder().catch_all(&up).start();
    let post_body = "x".repeat(3000);
    let mut batch = String::new();
    for i in 0..10 {
        if i == 4 {
            batch.push_str(&format!(
                "POST /req/{i} HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n{post_body}",
                post_body.len()
            ));
        } else {
            batch.push_str(&format!("GET /req/{i} HTTP/1.1\r\nhost: t\r\n\r\n"));
        }
    }
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // One write: the requests arrive together, as a pipelining client sends them.
    conn.write_all(batch.as_bytes()).expect("write");
    let answers = tokio::task::spawn_blocking(move || read_answers(conn, 10))
        .await
        .expect("reader");
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(a.status, 200, "answer {i}");
        let doc: serde_json::Value = serde_json::from_slice(&a.body).expect("echo document");
        assert_eq!(doc["path"], format!("/req/{i}"), "answer {i} out of order");
        if i == 4 {
            assert_eq!(doc["method"], "POST");
            assert_eq!(doc["body_len"], post_body.len());
            assert_eq!(doc["body_sha256"], sha256_hex(post_body.as_bytes()));
        }
    }
    assert_eq!(up.count(), 10, "every request reached the upstream once");
}

/// Sends `request` on a fresh connection and reads its one answer.
async fn exchange(gw: &Gateway, request: &str) -> Answer {
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(request.as_bytes()).expect("write");
    tokio::task::spawn_blocking(move || read_answers(conn, 1).remove(0))
        .await
        .expect("reader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_needs_exactly_one_host() {
    let up = Upstream::named("a");
    let gw = Gateway::builder().catch_all(&up).start();
    let missing = exchange(&gw, "GET /x HTTP/1.1\r\nuser-agent: framing-test\r\n\r\n").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body, b"bad request: missing Host header\n");
    let twice = exchange(
        &gw,
        "GET /x HTTP/1.1\r\nhost: a.test\r\nhost: b.test\r\n\r\n",
    )
    .await;
    assert_eq!(twice.status, 400);
    assert_eq!(up.count(), 0, "neither reached the upstream");
    let one = exchange(&gw, "GET /x HTTP/1.1\r\nhost: a.test\r\n\r\n").await;
    assert_eq!(one.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_is_routed_by_its_authority() {
    let (routed, other) = (Upstream::named("routed"), Upstream::named("other"));
    let gw = Gateway::builder()
        .cluster("routed", &[&routed], "")
        .cluster("other", &[&other], "")
        .route("{name: by-host, match: {host: routed.test}, cluster: routed}")
        .route("{name: rest, cluster: other}")
        .start();
    for request in [
        "GET http://routed.test/x?q=1 HTTP/1.1\r\nuser-agent: framing-test\r\n\r\n",
        "GET http://routed.test/x?q=1 HTTP/1.1\r\nhost: routed.test\r\n\r\n",
    ] {
        let a = exchange(&gw, request).await;
        assert_eq!(a.status, 200, "{request:?}");
        assert_eq!(a.upstream.as_deref(), Some("routed"), "{request:?}");
    }
    for seen in routed.requests() {
        assert_eq!(seen.path, "/x?q=1", "origin-form upstream");
        assert_eq!(seen.header("host"), Some("routed.test"));
    }
    // A Host that contradicts the target is refused (Pingora's check,
    // stricter than RFC 9112 §3.2.2's "ignore Host": a smuggling defence).
    let conflict = exchange(
        &gw,
        "GET http://routed.test/x HTTP/1.1\r\nhost: other.test\r\n\r\n",
    )
    .await;
    assert_eq!(conflict.status, 400);
    assert_eq!(other.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_pooled_upstream_connection() {
    let up = Upstream::named("a");
    // One worker: one pool, no hand-over of pooled connections between
    // worker threads (which Pingora may lose under load).
    let gw = Gateway::builder()
        .yaml("gateway: {threads: 1}\n")
        .catch_all(&up)
        .start();
    for i in 0..20 {
        let resp = gw.get(&format!("/seq/{i}")).await;
        assert_eq!(resp.status(), 200);
        // The answer can reach the client before the gateway has put the
        // upstream connection back in its pool; a request sent in that
        // instant opens another. A pause keeps the count about pooling.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.count(), 20);
    // Without pooling every request opens one (20); with it, one, with room
    // for the race above on a loaded machine (CI saw 4 and 7 with two
    // workers).
    let opened = up.connections();
    assert!(
        opened <= 10,
        "20 requests opened {opened} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shorter_than_the_h2c_preface_is_answered_on_the_lean_path() {
    // Pingora's `ProxyHttp` peeks for all 24 preface bytes first, so there
    // an 18-byte request waits for more; the lean path reads only while the
    // bytes could still be the preface.
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .listener("engine: lean")
        .catch_all(&up)
        .start();
    let short = "GET / HTTP/1.0\r\n\r\n";
    assert!(short.len() < 24);
    let a = exchange(&gw, short).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.upstream.as_deref(), Some("a"));
}

/// An upstream that answers an `Upgrade` request with 200 gets no tunnel:
/// the bytes after that request are the next request, parsed and routed
/// by the gateway, not handed raw to the upstream that declined (a
/// request-smuggling path past the gateway's routing otherwise).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_upgrade_opens_no_tunnel_for_a_smuggled_request() {
    let (public, hidden) = (Upstream::named("public"), Upstream::named("hidden"));
    let gw = Gateway::builder()
        .cluster("public", &[&public], "")
        .cluster("hidden", &[&hidden], "")
        .route("{name: hidden, match: {path_prefix: /hidden}, cluster: hidden}")
        .route("{name: rest, cluster: public}")
        .start();
    let batch = "GET /chat HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
                 sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n\
                 GET /hidden/smuggled HTTP/1.1\r\nhost: t\r\n\r\n";
    let mut conn = TcpStream::connect(("127.0.0.1", gw.port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    conn.write_all(batch.as_bytes()).expect("write");
    let answers = tokio::task::spawn_blocking(move || read_answers(conn, 2))
        .await
        .expect("reader");
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].upstream.as_deref(), Some("public"));
    assert_eq!(answers[1].status, 200);
    assert_eq!(
        answers[1].upstream.as_deref(),
        Some("hidden"),
        "the second request was routed by the gateway"
    );
    let paths: Vec<String> = public.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/chat"],
        "nothing else reached the upstream that declined"
    );
    assert_eq!(hidden.count(), 1);
}
