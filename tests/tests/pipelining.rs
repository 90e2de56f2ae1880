//! Pipelined HTTP/1.1 requests (RFC 9112 §9.3.2): a client may send the
//! next requests before the answers arrive; every one is answered, in order,
//! on the same connection. NGINX and Envoy do this; Pingora does it once
//! asked to, and both gateway paths ask.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use gateway_tests::{sha256_hex, Gateway, Upstream};

/// One answer read off the wire: status and body (framed by Content-Length).
struct Answer {
    status: u16,
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
            loop {
                line.clear();
                r.read_line(&mut line).expect("header line");
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().expect("content-length");
                    }
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).expect("body");
            Answer { status, body }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pipelined_requests_with_a_post_are_answered_in_order() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("c", &[&up], "")
        .route("{name: all, cluster: c}")
        .start();
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
