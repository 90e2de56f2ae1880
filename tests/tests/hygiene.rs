//! Request hygiene: X-Forwarded-*, request ids, hop-by-hop headers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gateway_tests::{http_client, url, Gateway, Upstream};
use serde_json::Value;

fn start(echo: &Upstream) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .cluster("echo", &[echo], "")
        .route("{name: echo, match: {path_prefix: /echo}, cluster: echo}")
        .start();
    let port = gw.port();
    (gw, port)
}

/// All values of header `name` in an echo document, joined with `, `.
fn joined(doc: &Value, name: &str) -> Option<String> {
    doc["headers"][name].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// `GET path` with `headers`: the response's `x-request-id` and the echo
/// document.
async fn echo_get(
    client: &reqwest::Client,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> (Option<String>, Value) {
    let mut req = client.get(url(port, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let id = id.map(str::to_string);
    (id, resp.json().await.expect("echo JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers() {
    let echo = Upstream::echo();
    let (_gw, port) = start(&echo);
    let client = http_client();

    let headers = [("host", "hygiene.example"), ("x-forwarded-for", "1.2.3.4")];
    let (_, doc) = echo_get(&client, port, "/echo/xff", &headers).await;
    assert_eq!(
        joined(&doc, "x-forwarded-for").as_deref(),
        Some("1.2.3.4, 127.0.0.1"),
        "the client address should be appended to x-forwarded-for"
    );
    assert_eq!(
        joined(&doc, "x-forwarded-proto").as_deref(),
        Some("http"),
        "x-forwarded-proto on a plaintext listener"
    );
    assert_eq!(
        joined(&doc, "x-forwarded-host").as_deref(),
        Some("hygiene.example"),
        "x-forwarded-host should carry the Host the client sent"
    );

    let (_, doc) = echo_get(&client, port, "/echo/no-xff", &[]).await;
    assert_eq!(
        joined(&doc, "x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "without an incoming x-forwarded-for the gateway sets the client address"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids() {
    let echo = Upstream::echo();
    let (_gw, port) = start(&echo);
    let client = http_client();

    let mut seen = Vec::new();
    for _ in 0..2 {
        let (returned, doc) = echo_get(&client, port, "/echo/id", &[]).await;
        let upstream_id = joined(&doc, "x-request-id");
        let id = upstream_id
            .clone()
            .filter(|s| !s.is_empty())
            .expect("the gateway should generate an x-request-id when the client sent none");
        assert_eq!(
            returned.as_deref(),
            Some(id.as_str()),
            "the response should carry the same x-request-id the upstream saw"
        );
        seen.push(id);
    }
    assert_ne!(
        seen[0], seen[1],
        "each request should get its own generated id"
    );

    let chosen = [("x-request-id", "client-chosen-42")];
    let (returned, doc) = echo_get(&client, port, "/echo/id", &chosen).await;
    assert_eq!(
        returned.as_deref(),
        Some("client-chosen-42"),
        "a client-sent x-request-id should come back unchanged"
    );
    assert_eq!(
        joined(&doc, "x-request-id").as_deref(),
        Some("client-chosen-42"),
        "a client-sent x-request-id should be kept for the upstream"
    );

    // Responses the gateway makes itself carry one too.
    let resp = client
        .get(url(port, "/no-such-route"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()
            .get("x-request-id")
            .is_some_and(|v| !v.is_empty()),
        "a 404 from the gateway should carry x-request-id"
    );
}

/// Sends a raw HTTP/1.1 request (so no client library touches the
/// connection-level headers) and returns the response body.
fn raw_request(port: u16, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to gateway");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(head.as_bytes()).expect("write request");
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    // Read until the headers are complete and Content-Length bytes arrived
    // (bounded by the read timeout and a size cap).
    loop {
        let n = s.read(&mut tmp).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&tmp[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((h, body)) = text.split_once("\r\n\r\n") {
            let len = h
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(usize::MAX);
            if body.len() >= len {
                break;
            }
        }
        assert!(buf.len() < 1 << 20, "response too large");
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_not_forwarded() {
    let echo = Upstream::echo();
    let (_gw, port) = start(&echo);
    let head = "GET /echo/hop HTTP/1.1\r\n\
                Host: hop.example\r\n\
                Connection: keep-alive, x-hop\r\n\
                X-Hop: 1\r\n\
                Keep-Alive: timeout=5\r\n\
                Proxy-Connection: keep-alive\r\n\
                X-Normal: yes\r\n\
                \r\n";
    let (status, body) = tokio::task::spawn_blocking(move || raw_request(port, head))
        .await
        .expect("raw request");
    assert_eq!(status, 200, "raw request should be proxied; body: {body}");
    let doc: Value = serde_json::from_str(&body).expect("echo JSON");
    for name in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            doc["headers"].get(name).is_none(),
            "hop-by-hop header `{name}` must not reach the upstream; upstream saw {}",
            doc["headers"]
        );
    }
    assert_eq!(
        joined(&doc, "x-normal").as_deref(),
        Some("yes"),
        "an end-to-end header passes through"
    );
}
