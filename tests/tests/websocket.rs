//! WebSockets through the gateway: the handshake's `Upgrade` fields pass
//! both ways, a 101 turns the connection into a byte tunnel, and closing
//! either side closes the other. Other upgrades (h2c) are not passed on.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_tests::{pseudo_random_bytes, rustls_connector, sha256_hex, Gateway, TestCa, Upstream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Text that makes the echo server close the WebSocket itself.
const CLOSE_ME: &str = "close-me";

/// A WebSocket echo server on loopback: every data frame back as it came;
/// [`CLOSE_ME`] is answered with a close frame instead. With `tls`, it
/// speaks WebSocket over TLS (`wss`).
async fn echo_server_on(tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => echo_frames(tcp).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            echo_frames(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn echo_server() -> SocketAddr {
    echo_server_on(None).await
}

/// Serves one WebSocket connection: the echo loop.
async fn echo_frames<S: AsyncRead + AsyncWrite + Unpin>(stream: S) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(m)) = ws.next().await {
        let reply = match &m {
            Message::Text(t) if t.as_str() == CLOSE_ME => ws.close(None).await,
            Message::Text(_) | Message::Binary(_) => ws.send(m).await,
            _ => Ok(()),
        };
        if reply.is_err() {
            break;
        }
    }
}

/// A gateway with one catch-all route to the echo server at `ws`.
fn gateway_to(ws: SocketAddr, tls: Option<&TestCa>) -> Gateway {
    let mut b = Gateway::builder()
        .cluster_yaml(&format!("{{name: ws, endpoints: [{{address: \"{ws}\"}}]}}"))
        .route("{name: all, cluster: ws}");
    if let Some(ca) = tls {
        b = b.tls(&ca.issue(&["gw.test"]));
    }
    b.start()
}

/// The handshake through the gateway on `stream`.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(url: &str, stream: S) -> WebSocketStream<S> {
    let (ws, resp) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(resp.status(), 101);
    ws
}

/// 1,000 text and binary messages and one 1 MiB frame echoed intact, then
/// a close from the client answered through the tunnel.
async fn echo_all<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocketStream<S>) {
    for i in 0..1000usize {
        let m = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(vec![i as u8; i % 300 + 1])
        };
        ws.send(m.clone()).await.expect("send");
        let echoed = ws.next().await.expect("an echo").expect("a frame");
        assert_eq!(echoed, m, "message {i}");
    }
    let big = pseudo_random_bytes(1 << 20, 7);
    ws.send(Message::binary(big.clone()))
        .await
        .expect("send 1 MiB");
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => {
            assert_eq!(b.len(), big.len());
            assert_eq!(sha256_hex(&b), sha256_hex(&big), "1 MiB frame changed");
        }
        other => panic!("1 MiB frame: {other:?}"),
    }
    ws.close(None).await.expect("close");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the server's close reply came back through the tunnel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_a_plaintext_listener() {
    let gw = gateway_to(echo_server().await, None);
    let tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    echo_all(handshake("ws://gw.test/chat", tcp).await).await;
    // The tunnel's bytes (1 MiB each way, plus the small frames) are
    // counted in the metrics and in the access line of the 101.
    for direction in ["up", "down"] {
        gw.metric(
            "gateway_upgraded_bytes_total",
            &[("route", "all"), ("direction", direction)],
        )
        .eventually(|v| v > (1 << 20) as f64)
        .await;
    }
    let switched = [
        ("route", "all"),
        ("protocol", "websocket"),
        ("outcome", "switched"),
    ];
    gw.metric("gateway_upgrades_total", &switched)
        .eventually_eq(1.0)
        .await;
    let lines = gw.wait_access_log(1, Duration::from_secs(5), |l| l["status"] == 101);
    let line = lines.first().expect("an access line for the 101");
    for field in ["bytes_in", "bytes_out"] {
        let n = line[field].as_u64().unwrap_or(0);
        assert!(n > 1 << 20, "{field} = {n} in {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_a_tls_listener() {
    let ca = TestCa::new("ws-ca");
    let gw = gateway_to(echo_server().await, Some(&ca));
    let tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("gw.test").expect("name");
    let tls = rustls_connector(&ca, None, &[], true)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    echo_all(handshake("wss://gw.test/chat", tls).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_from_the_server_reaches_the_client() {
    let gw = gateway_to(echo_server().await, None);
    let tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    let mut ws = handshake("ws://gw.test/chat", tcp).await;
    ws.send(Message::text(CLOSE_ME)).await.expect("send");
    let next = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the server's close frame arrives");
    assert!(matches!(next, Some(Ok(Message::Close(_)))), "{next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_fields_never_reach_the_upstream() {
    let up = Upstream::named("a");
    let gw = Gateway::builder().catch_all(&up).start();
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    let req = "GET /up HTTP/1.1\r\nhost: t\r\nconnection: Upgrade, HTTP2-Settings\r\n\
               upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n";
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen = &up.requests()[0];
    for name in ["upgrade", "http2-settings", "connection"] {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
}

/// The raw answer head (up to the blank line) to `request` on `tcp`.
async fn head_of(tcp: &mut TcpStream, request: &str) -> String {
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n == 1, "closed after {:?}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

const WS_HANDSHAKE: &str = "GET /chat HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\n\
                            upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                            sec-websocket-version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_websocket_refuses_the_handshake_with_403() {
    let up = Upstream::named("a");
    let gw = Gateway::builder()
        .cluster("a", &[&up], "")
        .route("{name: no-ws, cluster: a, upgrades: {protocols: []}}")
        .start();
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    let head = head_of(&mut tcp, WS_HANDSHAKE).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(up.count(), 0, "the handshake never reached the upstream");
    let refused = [
        ("route", "no-ws"),
        ("protocol", "websocket"),
        ("outcome", "refused"),
    ];
    gw.metric("gateway_upgrades_total", &refused)
        .eventually_eq(1.0)
        .await;
    // Plain requests on the route are served.
    assert_eq!(gw.get("/plain").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_closes_at_the_upgrade_idle_timeout_not_the_route_timeout() {
    let ws = echo_server().await;
    let gw = Gateway::builder()
        .cluster_yaml(&format!("{{name: ws, endpoints: [{{address: \"{ws}\"}}]}}"))
        .route("{name: short, match: {path_prefix: /short}, cluster: ws, upgrades: {idle_timeout: 1s}}")
        .route("{name: long, cluster: ws, timeout: 500ms}")
        .start();
    let port = gw.port();
    let open = |path: &'static str| async move {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        handshake(&format!("ws://gw.test{path}"), tcp).await
    };
    let (mut short, mut long) = (open("/short").await, open("/long").await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The route with a 500 ms timeout keeps its tunnel: that deadline is
    // for HTTP answers, not for a WebSocket.
    long.send(Message::text("still here")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), long.next())
        .await
        .expect("an echo");
    assert!(
        matches!(echoed, Some(Ok(Message::Text(ref t))) if t.as_str() == "still here"),
        "{echoed:?}"
    );
    // The 1 s idle tunnel was closed by the gateway.
    let _ = short.send(Message::text("too late")).await;
    let after = tokio::time::timeout(Duration::from_secs(5), short.next())
        .await
        .expect("the closed tunnel ends the stream");
    assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
}

/// An upstream speaking a made-up protocol after its 101: it echoes bytes.
async fn custom_protocol_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if tcp.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let asked = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !asked.contains("upgrade: my-proto") {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: my-proto\r\n\r\n")
                    .await;
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_the_route_lists_is_passed_on_and_tunnelled() {
    let up = custom_protocol_server().await;
    let gw = Gateway::builder()
        .cluster_yaml(&format!("{{name: p, endpoints: [{{address: \"{up}\"}}]}}"))
        .route("{name: custom, cluster: p, upgrades: {protocols: [websocket, my-proto]}}")
        .start();
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    let head = head_of(
        &mut tcp,
        "GET /x HTTP/1.1\r\nhost: t\r\nconnection: Upgrade\r\nupgrade: My-Proto\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: my-proto"),
        "{head}"
    );
    tcp.write_all(b"raw bytes, no HTTP").await.expect("write");
    let mut echoed = [0u8; 18];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echoed, b"raw bytes, no HTTP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_to_a_tls_upstream() {
    let ca = TestCa::new("ws-upstream-ca");
    let leaf = ca.issue(&["ws-up.test"]);
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der()], leaf.key_der())
        .expect("TLS server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let ws = echo_server_on(Some(acceptor)).await;
    let gw = Gateway::builder()
        .file("up-ca.pem", &ca.cert_pem())
        .cluster_yaml(&format!(
            "{{name: wss, endpoints: [{{address: \"{ws}\"}}], tls: {{sni: ws-up.test, ca: up-ca.pem}}}}"
        ))
        .route("{name: all, cluster: wss}")
        .start();
    let tcp = TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .expect("connect");
    echo_all(handshake("ws://gw.test/chat", tcp).await).await;
}
