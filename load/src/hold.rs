//! Opens N HTTP/1.1 keep-alive connections to a loopback address, completes
//! one `GET /` on each (so every proxy has set the connection up fully), then
//! keeps them all open until killed or `max_secs` pass. Writes
//! `ok=N failed=M` to the ready file once every connection is set up.
//! Optional extra request headers (`-H 'Name: value'`, e.g. a bearer token
//! for a gateway that requires one). Needs a descriptor limit above N: the
//! tool raises its soft limit to the hard one (`main.rs`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::Result;

pub fn run(
    addr: &str,
    conns: usize,
    max_secs: u64,
    ready_file: &str,
    headers: &[String],
) -> Result<()> {
    let addr: SocketAddr = addr.parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let mut open = Vec::with_capacity(conns);
    let mut failed = 0usize;
    // Requests go out in batches: all of a batch written, then all read, so
    // the proxies see concurrency without needing 1,000 upstream connections.
    for chunk in (0..conns).collect::<Vec<_>>().chunks(50) {
        let mut batch = Vec::new();
        for _ in chunk {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                Ok(mut s) => {
                    s.set_read_timeout(Some(Duration::from_secs(5)))?;
                    let mut req =
                        format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: loadtool-hold\r\n");
                    for h in headers {
                        req.push_str(h);
                        req.push_str("\r\n");
                    }
                    req.push_str("\r\n");
                    if s.write_all(req.as_bytes()).is_ok() {
                        batch.push(s);
                    } else {
                        failed += 1;
                    }
                }
                Err(_) => failed += 1,
            }
        }
        for mut s in batch {
            match read_response(&mut s) {
                Ok(200) => open.push(s),
                _ => failed += 1,
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    std::fs::write(ready_file, format!("ok={} failed={}\n", open.len(), failed))?;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(open);
    Ok(())
}

/// Reads one response (Content-Length or chunked body) and returns its status.
fn read_response(s: &mut TcpStream) -> Result<u16> {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err("connection closed before response headers".into());
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("bad status line")?;
    let content_length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    let mut body = buf[head_end..].to_vec();
    loop {
        let done = match (content_length, chunked) {
            (Some(n), _) => body.len() >= n,
            (None, true) => find(&body, b"0\r\n\r\n").is_some(),
            (None, false) => true,
        };
        if done {
            return Ok(status);
        }
        let n = s.read(&mut tmp)?;
        if n == 0 {
            return Err("connection closed mid-body".into());
        }
        body.extend_from_slice(&tmp[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
