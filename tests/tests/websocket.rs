//! WebSockets through the gateway: the handshake's `Upgrade` fields pass
//! both ways, a 101 turns the connection into a byte tunnel, and closing
//! either side closes the other. Other upgrades (h2c) are not passed on.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gateway_tests::{pseudo_random_bytes, rustls_connector, sha256_hex, Gateway, TestCa, Upstream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Text that makes the echo server close the WebSocket itself.
const CLOSE_ME: &str = "close-me";

/// A WebSocket echo server on loopback: every data frame back as it came;
/// [`CLOSE_ME`] is answered with a close frame instead.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
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
            });
        }
    });
    addr
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
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut answer),
    )
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
