//! The real client address (issue 16): `client_address` (trusted proxies
//! and `X-Forwarded-For`) and `proxy_protocol` (v1 and v2, from a test
//! client and from HAProxy, on plaintext and TLS listeners). What the
//! gateway takes as the client is checked where it shows: a `client_ip`
//! rate limit (each client its own budget), the access-log `client` and the
//! `X-Forwarded-For` the upstream receives.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gateway_tests::{free_port, http_client, rustls_connector, url, Gateway, TestCa, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const PROXY_PROTOCOL: &str = "gateway_proxy_protocol_total";
const LOG_WAIT: Duration = Duration::from_secs(5);

/// The route `all` to cluster `c` with a `client_ip` limit of `burst`
/// requests an hour.
fn limited(burst: u32) -> String {
    format!(
        "{{name: all, cluster: c, rate_limit: [{{name: per-client, key: client_ip, rate: 1/h, burst: {burst}}}]}}"
    )
}

/// A gateway whose `public` listener has `listener` keys, with cluster `c`
/// on `up` and the [`limited`] route.
fn gateway(up: &Upstream, listener: &str, burst: u32) -> Gateway {
    Gateway::builder()
        .listener(listener)
        .cluster("c", &[up], "")
        .route(&limited(burst))
        .start()
}

/// `GET path` through reqwest with an optional `X-Forwarded-For`: status
/// and the echo document (JSON) or the body.
async fn get_xff(port: u16, path: &str, xff: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = http_client().get(url(port, path));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The `X-Forwarded-For` the upstream saw, from its echo document.
fn upstream_xff(echo: &serde_json::Value) -> Vec<String> {
    echo["headers"]["x-forwarded-for"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for an access line of `path` and returns its `client`.
fn logged_client(gw: &Gateway, path: &str) -> String {
    let lines = gw.wait_access_log(1, LOG_WAIT, |l| l["path"] == path);
    let line = lines
        .first()
        .unwrap_or_else(|| panic!("an access line for {path}"));
    line["client"].as_str().unwrap_or_default().to_string()
}

/// Writes `prefix` (a PROXY header, or anything) and `GET path` on `s`,
/// and reads one answer: `Some((status, body))`, or `None` when the
/// gateway closes the connection without answering.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    prefix: &[u8],
    path: &str,
) -> Option<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n");
    exchange_raw(s, &[prefix, req.as_bytes()].concat()).await
}

/// Writes `bytes` on `s` and reads one answer, as [`exchange`].
async fn exchange_raw<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
) -> Option<(u16, String)> {
    let io = async {
        s.write_all(bytes).await.ok()?;
        read_answer(s).await
    };
    tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("answer or close within 10 s")
}

/// Reads one Content-Length-framed answer; `None` on a close (or reset)
/// before a full head.
async fn read_answer<S: AsyncRead + Unpin>(s: &mut S) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some((status, String::from_utf8_lossy(&body).to_string()))
}

/// A TCP connection to `port` from local address `from`.
async fn connect_from(from: &str, port: u16) -> TcpStream {
    let local: SocketAddr = format!("{from}:0").parse().expect("local address");
    let sock = TcpSocket::new_v4().expect("socket");
    sock.bind(local).expect("bind a loopback source");
    sock.connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("connect")
}

/// A PROXY v1 line for a TCP source `src:port` to 127.0.0.1:80.
fn v1(src: &str, port: u16) -> Vec<u8> {
    let family = if src.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if src.contains(':') {
        "::1"
    } else {
        "127.0.0.1"
    };
    format!("PROXY {family} {src} {dst} {port} 80\r\n").into_bytes()
}

/// A PROXY v2 header (command PROXY, TCP) for source `src:port`; `LOCAL`
/// when `src` is `None`.
fn v2(src: Option<(IpAddr, u16)>) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    let Some((ip, port)) = src else {
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        return h;
    };
    let mut addrs = Vec::new();
    let family = match ip {
        IpAddr::V4(a) => {
            addrs.extend_from_slice(&a.octets());
            addrs.extend_from_slice(&[127, 0, 0, 1]);
            0x11
        }
        IpAddr::V6(a) => {
            addrs.extend_from_slice(&a.octets());
            addrs.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
            0x21
        }
    };
    addrs.extend_from_slice(&port.to_be_bytes());
    addrs.extend_from_slice(&80u16.to_be_bytes());
    h.extend_from_slice(&[0x21, family]);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(&addrs);
    h
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("IP address")
}

/// Behind a trusted hop (the test client at 127.0.0.1, trusted, sets
/// `X-Forwarded-For` as a load balancer would), the rate limit, the access
/// log and the upstream's `X-Forwarded-For` key on the client it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_names_the_client_in_x_forwarded_for() {
    let up = Upstream::echo();
    let gw = gateway(
        &up,
        "client_address: {trusted_proxies: [127.0.0.1/32], xff_trusted_hops: 1}",
        2,
    );
    let port = gw.port();
    // One hop trusted: the last entry is the client; what it claimed
    // before (`6.6.6.6`) is not.
    let (s, echo) = get_xff(port, "/a1", Some("203.0.113.1")).await;
    assert_eq!(s, 200);
    assert_eq!(upstream_xff(&echo), ["203.0.113.1, 127.0.0.1"]);
    let (s, _) = get_xff(port, "/a2", Some("6.6.6.6, 203.0.113.1")).await;
    assert_eq!(s, 200);
    let (s, _) = get_xff(port, "/a3", Some("203.0.113.1")).await;
    assert_eq!(s, 429, "203.0.113.1 has used its budget of 2");
    let (s, _) = get_xff(port, "/b1", Some("203.0.113.2")).await;
    assert_eq!(s, 200, "another client has its own budget");
    assert_eq!(logged_client(&gw, "/a2"), "203.0.113.1");
    assert_eq!(logged_client(&gw, "/b1"), "203.0.113.2");
    // A malformed entry falls back to the peer, which has its own budget.
    let (s, _) = get_xff(port, "/m", Some("not-an-address")).await;
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/m"), "127.0.0.1");
}

/// Without `xff_trusted_hops` the list is walked from the right past
/// trusted addresses (NGINX `real_ip_recursive`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_hops_trusted_entries_are_skipped() {
    let up = Upstream::echo();
    let gw = gateway(
        &up,
        "client_address: {trusted_proxies: [127.0.0.1/32, 10.0.0.0/8]}",
        5,
    );
    let (s, _) = get_xff(gw.port(), "/walk", Some("6.6.6.6, 203.0.113.9, 10.1.2.3")).await;
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/walk"), "203.0.113.9");
}

/// An untrusted peer's `X-Forwarded-For` is ignored (the trusted proxy is
/// 127.0.0.2; the client connects from 127.0.0.1): the limit keys on the
/// peer, and the upstream gets only the peer, not the spoofed header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peer_is_the_client() {
    let up = Upstream::echo();
    let gw = gateway(
        &up,
        "client_address: {trusted_proxies: [127.0.0.2/32], xff_trusted_hops: 1}",
        2,
    );
    let port = gw.port();
    let (s, echo) = get_xff(port, "/u1", Some("203.0.113.1")).await;
    assert_eq!(s, 200);
    assert_eq!(upstream_xff(&echo), ["127.0.0.1"], "spoofed XFF dropped");
    let (s, _) = get_xff(port, "/u2", Some("203.0.113.2")).await;
    assert_eq!(s, 200);
    let (s, _) = get_xff(port, "/u3", Some("203.0.113.3")).await;
    assert_eq!(s, 429, "all three are the peer 127.0.0.1");
    assert_eq!(logged_client(&gw, "/u2"), "127.0.0.1");
}

/// PROXY v1 and v2 headers written by the client: the limit and the log
/// key on the source they carry, keep-alive requests after the header too;
/// `LOCAL` keeps the TCP peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v1_and_v2_carry_the_client() {
    let up = Upstream::echo();
    let gw = gateway(&up, "proxy_protocol: {from: [127.0.0.1/32]}", 2);
    let port = gw.port();

    // v1, two requests on one connection: both are 198.51.100.1's.
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (s, body) = exchange(&mut c, &v1("198.51.100.1", 4000), "/v1a")
        .await
        .unwrap();
    assert_eq!(s, 200, "{body}");
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(upstream_xff(&echo), ["198.51.100.1"]);
    let (s, _) = exchange(&mut c, b"", "/v1b").await.unwrap();
    assert_eq!(s, 200);
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (s, _) = exchange(&mut c, &v1("198.51.100.1", 4001), "/v1c")
        .await
        .unwrap();
    assert_eq!(
        s, 429,
        "198.51.100.1 used its budget on the first connection"
    );
    assert_eq!(logged_client(&gw, "/v1b"), "198.51.100.1");

    // v2, IPv4 and IPv6 sources: their own budgets.
    for (src, path) in [("198.51.100.2", "/v2a"), ("2001:db8::7", "/v2b")] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (s, _) = exchange(&mut c, &v2(Some((ip(src), 5000))), path)
            .await
            .unwrap();
        assert_eq!(s, 200, "{src}");
        assert_eq!(logged_client(&gw, path), src);
    }
    // v1 IPv6 too.
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (s, _) = exchange(&mut c, &v1("2001:db8::8", 4002), "/v1d")
        .await
        .unwrap();
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/v1d"), "2001:db8::8");

    // LOCAL (health checks): the TCP peer.
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (s, _) = exchange(&mut c, &v2(None), "/local").await.unwrap();
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/local"), "127.0.0.1");

    gw.metric(
        PROXY_PROTOCOL,
        &[("listener", "public"), ("result", "accepted")],
    )
    .eventually_eq(6.0)
    .await;
}

/// A connection without a valid header, from a source not in `from`, or
/// whose header does not arrive in time is closed before any request
/// reaches the upstream, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proxy_headers_and_sources_are_refused() {
    let up = Upstream::echo();
    let gw = gateway(
        &up,
        "proxy_protocol: {from: [127.0.0.1/32], timeout: 500ms}",
        100,
    );
    let port = gw.port();
    let garbage: [&[u8]; 3] = [
        b"",                                                 // plain HTTP, no header
        b"PROXY TCP4 nonsense\r\n",                          // broken v1
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c0123456789ab", // v2, bad version
    ];
    for (i, g) in garbage.iter().enumerate() {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let answer = exchange(&mut c, g, "/garbage").await;
        assert_eq!(answer, None, "garbage {i} must be refused");
    }
    let labels = |result| [("listener", "public"), ("result", result)];
    gw.metric(PROXY_PROTOCOL, &labels("malformed"))
        .eventually_eq(3.0)
        .await;

    // From 127.0.0.2, a valid header is still refused.
    let mut c = connect_from("127.0.0.2", port).await;
    let answer = exchange(&mut c, &v1("198.51.100.1", 4000), "/untrusted").await;
    assert_eq!(answer, None, "a header from an untrusted source is refused");
    gw.metric(PROXY_PROTOCOL, &labels("refused_source"))
        .eventually_eq(1.0)
        .await;

    // Half a header, then silence: closed after the timeout.
    let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    c.write_all(b"PROXY TCP4 198.51.").await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut c))
        .await
        .expect("closed within the 500ms timeout (5 s allowed)");
    assert_eq!(answer, None);
    gw.metric(PROXY_PROTOCOL, &labels("timeout"))
        .eventually_eq(1.0)
        .await;

    assert_eq!(up.count(), 0, "no refused connection reached the upstream");
    assert_eq!(
        gw.metric(PROXY_PROTOCOL, &labels("accepted")).value().await,
        0.0
    );
}

/// A TLS listener reads the PROXY v2 header before the ClientHello.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_v2_before_the_tls_handshake() {
    let up = Upstream::echo();
    let ca = TestCa::new("client address CA");
    let b = Gateway::builder();
    ca.issue(&["gw.test"])
        .write(b.dir_path(), "gw.pem", "gw.key");
    let gw = b
        .listener("tls: {cert: gw.pem, key: gw.key}, proxy_protocol: {from: [127.0.0.1/32]}")
        .cluster("c", &[&up], "")
        .route(&limited(1))
        .start();
    let port = gw.port();
    let connector = rustls_connector(&ca, None, &[], true);
    let name = rustls::pki_types::ServerName::try_from("gw.test").unwrap();
    for (path, want) in [("/tls1", 200), ("/tls2", 429)] {
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tcp.write_all(&v2(Some((ip("192.0.2.44"), 6000))))
            .await
            .unwrap();
        let mut tls = connector
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake after the PROXY header");
        let (s, _) = exchange(&mut tls, b"", path).await.expect("an answer");
        assert_eq!(s, want, "{path}");
    }
    assert_eq!(logged_client(&gw, "/tls1"), "192.0.2.44");

    // Without the header the handshake never happens.
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("refused within 10 s");
    assert!(refused.is_err(), "a ClientHello is not a PROXY header");
    gw.metric(
        PROXY_PROTOCOL,
        &[("listener", "public"), ("result", "malformed")],
    )
    .eventually_eq(1.0)
    .await;
}

/// HAProxy on the test's generated config, killed on drop.
struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HAPROXY: &str = "/usr/sbin/haproxy";

/// Starts HAProxy in TCP mode with one frontend per `(port, server
/// option)` pair, each to the gateway at `gw_port`; waits for the ports.
fn haproxy(dir: &std::path::Path, gw_port: u16, fronts: &[(u16, &str)]) -> HaProxy {
    let mut cfg = String::from(
        "global\n  maxconn 256\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n",
    );
    for (i, (port, option)) in fronts.iter().enumerate() {
        cfg.push_str(&format!(
            "frontend fe{i}\n  bind 127.0.0.1:{port}\n  default_backend be{i}\nbackend be{i}\n  server gw 127.0.0.1:{gw_port} {option}\n"
        ));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).expect("write haproxy.cfg");
    let child = Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start haproxy");
    let hp = HaProxy(child);
    for (port, _) in fronts {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "haproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    hp
}

/// HAProxy (`send-proxy-v2` and `send-proxy`) in front: clients connect to
/// HAProxy from 127.0.0.3 and 127.0.0.4; the gateway's TCP peer is HAProxy,
/// yet the limit and the log key on the clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_in_front_passes_the_client_address() {
    if !std::path::Path::new(HAPROXY).exists() {
        eprintln!("SKIPPED: {HAPROXY} is not installed (apt-get install haproxy)");
        return;
    }
    let up = Upstream::echo();
    let gw = gateway(&up, "proxy_protocol: {from: [127.0.0.1/32]}", 1);
    let (v2_port, v1_port) = (free_port(), free_port());
    let _hp = haproxy(
        gw.dir(),
        gw.port(),
        &[(v2_port, "send-proxy-v2"), (v1_port, "send-proxy")],
    );
    for (from, via, path, want) in [
        ("127.0.0.3", v2_port, "/hp-v2-a", 200),
        ("127.0.0.3", v2_port, "/hp-v2-b", 429),
        ("127.0.0.4", v1_port, "/hp-v1-a", 200),
        ("127.0.0.4", v2_port, "/hp-v2-c", 429),
    ] {
        let mut c = connect_from(from, via).await;
        let (s, _) = exchange(&mut c, b"", path)
            .await
            .expect("an answer via haproxy");
        assert_eq!(s, want, "{path} from {from}");
    }
    assert_eq!(logged_client(&gw, "/hp-v2-a"), "127.0.0.3");
    assert_eq!(logged_client(&gw, "/hp-v1-a"), "127.0.0.4");
}

/// An egress listener with `proxy_protocol`: the caller groups (source
/// CIDRs) see the address the header carries, not the proxy in front.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_caller_groups_see_the_proxy_protocol_source() {
    let up = Upstream::echo();
    let gw = Gateway::builder()
        .listener_name("out")
        .listener("mode: egress, proxy_protocol: {from: [127.0.0.1/32]}")
        .yaml(&format!(
            r#"
egress:
  caller_groups: [{{name: functions, cidrs: [198.51.100.0/24]}}]
  dns: {{static: {{api.partner.test: 127.0.0.1}}}}
  rules:
    - {{name: functions-only, hosts: [api.partner.test], ports: [{port}], principals: ["cidr:functions"], allow_cidrs: [127.0.0.0/8]}}
"#,
            port = up.port()
        ))
        .start();
    let port = gw.port();
    let authority = format!("api.partner.test:{}", up.port());
    let req = format!("GET http://{authority}/egress HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let mut results = Vec::new();
    for src in ["198.51.100.9", "203.0.113.9"] {
        let mut c = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (s, _) = exchange_raw(&mut c, &[v1(src, 4000), req.clone().into_bytes()].concat())
            .await
            .expect("an answer from the egress listener");
        results.push((src, s));
    }
    assert_eq!(
        results,
        [("198.51.100.9", 200), ("203.0.113.9", 407)],
        "only the caller group's source may reach the partner; others are asked for credentials"
    );
    assert_eq!(up.count(), 1);
}

/// HTTP/2 with prior knowledge (h2c) after a PROXY header: the HTTP/2
/// server (Pingora's, on both engines) sees the header's source too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_after_a_proxy_header_carries_the_client() {
    use http_body_util::BodyExt;
    let up = Upstream::echo();
    let gw = gateway(&up, "proxy_protocol: {from: [127.0.0.1/32]}", 5);
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port())).await.unwrap();
    tcp.write_all(&v2(Some((ip("192.0.2.77"), 7000))))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2c handshake after the PROXY header");
    tokio::spawn(conn);
    let req = http::Request::get("http://gw.test/h2c")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.expect("h2c request");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(upstream_xff(&echo), ["192.0.2.77"]);
    assert_eq!(logged_client(&gw, "/h2c"), "192.0.2.77");
}

/// `client_address` is read per request from the serving config: a reload
/// that starts trusting the peer applies to the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxies_change_on_reload() {
    let up = Upstream::echo();
    let trust = |cidr: &str| format!("client_address: {{trusted_proxies: [{cidr}]}}");
    let gw = gateway(&up, &trust("127.0.0.2/32"), 10);
    let (s, _) = get_xff(gw.port(), "/before", Some("203.0.113.50")).await;
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/before"), "127.0.0.1");
    gw.rewrite(
        gw.same_ports()
            .listener(&trust("127.0.0.1/32"))
            .cluster("c", &[&up], "")
            .route(&limited(10)),
    );
    gw.wait_generation(2).await;
    let (s, _) = get_xff(gw.port(), "/after", Some("203.0.113.50")).await;
    assert_eq!(s, 200);
    assert_eq!(logged_client(&gw, "/after"), "203.0.113.50");
}
