//! Forwarding a plain HTTP egress request (absolute form or `Host`), to
//! the checked address, over TLS when the rule originates it.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::WrappedX509;

/// Shared upstream connection pool of the egress listeners.
static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// Hop-by-hop fields ([`crate::hop_by_hop`]) egress forwards anyway: the
/// framing, by which Pingora's sessions read and write the body.
const KEPT: [http::HeaderName; 1] = [http::header::TRANSFER_ENCODING];

/// Drops what describes the hop to the proxy, and `Expect`: the body is
/// read before the answer; a 100-continue wait only stalls.
fn strip_hop_headers(msg: &mut impl crate::hop_by_hop::Fields) {
    crate::hop_by_hop::strip(msg, &KEPT);
    msg.remove(&http::header::EXPECT);
}

/// How a forwarded request went.
#[derive(Debug, Default)]
pub struct ForwardResult {
    /// Status sent to the caller.
    pub status: u16,
    /// Request body bytes sent upstream.
    pub bytes_up: u64,
    /// Response body bytes sent to the caller.
    pub bytes_down: u64,
    /// The caller's connection can take another request.
    pub reusable: bool,
    /// What failed, if anything.
    pub error: Option<&'static str>,
}

/// Sends the session's request to `addr` (TLS with SNI `host` when `tls`)
/// and streams the answer back.
pub async fn forward(
    session: &mut HttpSession,
    host: &str,
    addr: SocketAddr,
    tls: bool,
    ca: Option<Arc<[WrappedX509]>>,
) -> ForwardResult {
    let mut out = ForwardResult::default();
    let mut up = session.req_header().clone();
    let origin_form = up
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    if let Ok(uri) = origin_form.parse() {
        up.set_uri(uri);
    }
    // The destination that was checked is the one named (RFC 9112 §3.2.2):
    // a caller's own Host would reach another virtual host on that address.
    let default_port = if tls { 443 } else { 80 };
    let host_value = if addr.port() == default_port {
        host.to_string()
    } else {
        format!("{host}:{}", addr.port())
    };
    let _ = up.insert_header(http::header::HOST, host_value);
    strip_hop_headers(&mut up);

    let mut peer = HttpPeer::new(addr, tls, host.to_string());
    let o = &mut peer.options;
    o.connection_timeout = Some(Duration::from_secs(5));
    o.total_connection_timeout = Some(Duration::from_secs(10));
    o.read_timeout = Some(Duration::from_secs(60));
    o.write_timeout = Some(Duration::from_secs(60));
    o.idle_timeout = Some(Duration::from_secs(60));
    o.alpn = ALPN::H1;
    if let Some(ca) = ca {
        // Pools are keyed without the CA; keep CA-pinned connections apart.
        peer.group_key = Arc::as_ptr(&ca) as *const u8 as u64;
        peer.options.ca = Some(ca);
    }

    let mut upstream = match CONNECTOR.get_http_session(&peer).await {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::info!(host, %addr, "egress connect failed: {e}");
            out.error = Some("connect_failed");
            out.status = 502;
            let body = format!(
                "egress error: cannot connect to {host}: {}\n",
                e.etype().as_str()
            );
            let _ = super::respond(session, 502, &body, &[]).await;
            return out;
        }
    };
    let failed = |out: &mut ForwardResult, what: &'static str| {
        out.error = Some(what);
        out.reusable = false;
    };
    if upstream.write_request_header(Box::new(up)).await.is_err() {
        failed(&mut out, "upstream_write");
        out.status = 502;
        let _ = super::respond(session, 502, "egress error: upstream closed\n", &[]).await;
        return out;
    }
    loop {
        match session.read_body_bytes().await {
            Ok(Some(chunk)) => {
                out.bytes_up += chunk.len() as u64;
                if upstream.write_request_body(chunk, false).await.is_err() {
                    failed(&mut out, "upstream_write");
                    out.status = 502;
                    let _ =
                        super::respond(session, 502, "egress error: upstream closed\n", &[]).await;
                    return out;
                }
            }
            Ok(None) => break,
            Err(_) => {
                failed(&mut out, "client_read");
                return out;
            }
        }
    }
    if upstream.finish_request_body().await.is_err() {
        failed(&mut out, "upstream_write");
        out.status = 502;
        let _ = super::respond(session, 502, "egress error: upstream closed\n", &[]).await;
        return out;
    }
    let mut status = 0;
    for _ in 0..4 {
        if upstream.read_response_header().await.is_err() {
            failed(&mut out, "upstream_read");
            out.status = 502;
            let _ =
                super::respond(session, 502, "egress error: no answer from upstream\n", &[]).await;
            return out;
        }
        status = upstream.response_header().map_or(0, |r| r.status.as_u16());
        if status >= 200 {
            break;
        }
    }
    let Some(resp) = upstream.response_header().filter(|_| status >= 200) else {
        failed(&mut out, "upstream_read");
        out.status = 502;
        let _ = super::respond(session, 502, "egress error: no final answer\n", &[]).await;
        return out;
    };
    let mut resp = resp.clone();
    strip_hop_headers(&mut resp);
    out.status = status;
    if session.write_response_header(Box::new(resp)).await.is_err() {
        failed(&mut out, "client_write");
        return out;
    }
    loop {
        match upstream.read_response_body().await {
            Ok(Some(chunk)) => {
                out.bytes_down += chunk.len() as u64;
                if session.write_body(&chunk).await.is_err() {
                    failed(&mut out, "client_write");
                    return out;
                }
            }
            Ok(None) => break,
            Err(_) => {
                // The answer is cut: the caller must see a broken response.
                failed(&mut out, "upstream_read");
                return out;
            }
        }
    }
    if session.finish_body().await.is_err() {
        failed(&mut out, "client_write");
        return out;
    }
    CONNECTOR
        .release_http_session(upstream, &peer, peer.options.idle_timeout)
        .await;
    out.reusable = true;
    out
}
