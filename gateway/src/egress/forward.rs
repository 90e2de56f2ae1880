//! Forwarding a plain HTTP egress request (absolute form or `Host`), to
//! the checked address, over TLS when the rule originates it.

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use pingora::connectors::http::Connector;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::ALPN;
use pingora::upstreams::peer::HttpPeer;

use super::audit::Done;
use super::decide::Allowed;
use super::EgressRuntime;

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

/// Why a forwarded exchange stopped: the audit line's `note`, and the
/// body of the 502 the caller gets when nothing was answered yet.
type Failure = (&'static str, Option<Cow<'static, str>>);

const UPSTREAM_CLOSED: Failure = ("upstream_write", Some(Cow::Borrowed(CLOSED)));
const CLOSED: &str = "egress error: upstream closed\n";

/// Sends the session's request to the address checked (over TLS with the
/// destination's name as SNI, and the rule's CA, when the rule originates
/// TLS) and streams the answer back. How it went, and whether the caller's
/// connection can take another request.
pub async fn forward(
    session: &mut HttpSession,
    egress: &EgressRuntime,
    allowed: &Allowed,
) -> (Done, bool) {
    let mut done = Done::default();
    let Err((note, body)) = exchange(session, egress, allowed, &mut done).await else {
        return (done, true);
    };
    done.note = Some(note);
    if let Some(body) = body {
        done.status = 502;
        let _ = super::respond(session, 502, &body, None).await;
    }
    (done, false)
}

async fn exchange(
    session: &mut HttpSession,
    egress: &EgressRuntime,
    Allowed {
        target,
        decision,
        addr,
    }: &Allowed,
    out: &mut Done,
) -> Result<(), Failure> {
    let (host, addr, tls) = (target.host.as_str(), *addr, decision.originate_tls);
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
    if let Some(ca) = decision.ca.as_ref().and_then(|c| egress.cas.get(c)) {
        let ca = Arc::clone(ca);
        // Pools are keyed without the CA; keep CA-pinned connections apart.
        peer.group_key = Arc::as_ptr(&ca) as *const u8 as u64;
        peer.options.ca = Some(ca);
    }

    let mut upstream = match CONNECTOR.get_http_session(&peer).await {
        Ok((s, _)) => s,
        Err(e) => {
            tracing::info!(host, %addr, "egress connect failed: {e}");
            let body = format!(
                "egress error: cannot connect to {host}: {}\n",
                e.etype().as_str()
            );
            return Err(("connect_failed", Some(body.into())));
        }
    };
    let up_closed = |_| UPSTREAM_CLOSED;
    upstream
        .write_request_header(Box::new(up))
        .await
        .map_err(up_closed)?;
    while let Some(chunk) = session
        .read_body_bytes()
        .await
        .map_err(|_| ("client_read", None))?
    {
        out.bytes_up += chunk.len() as u64;
        upstream
            .write_request_body(chunk, false)
            .await
            .map_err(up_closed)?;
    }
    upstream.finish_request_body().await.map_err(up_closed)?;
    let no_answer = Some(Cow::Borrowed("egress error: no answer from upstream\n"));
    let status = crate::hop_by_hop::final_response(&mut upstream)
        .await
        .map_err(|_| ("upstream_read", no_answer))?;
    let Some(resp) = upstream.response_header().filter(|_| status >= 200) else {
        let no_final = Some(Cow::Borrowed("egress error: no final answer\n"));
        return Err(("upstream_read", no_final));
    };
    let mut resp = resp.clone();
    strip_hop_headers(&mut resp);
    out.status = status;
    let client_write = |_| ("client_write", None);
    session
        .write_response_header(Box::new(resp))
        .await
        .map_err(client_write)?;
    // A cut answer: the caller must see a broken response.
    while let Some(chunk) = upstream
        .read_response_body()
        .await
        .map_err(|_| ("upstream_read", None))?
    {
        out.bytes_down += chunk.len() as u64;
        session.write_body(&chunk).await.map_err(client_write)?;
    }
    session.finish_body().await.map_err(client_write)?;
    CONNECTOR
        .release_http_session(upstream, &peer, peer.options.idle_timeout)
        .await;
    Ok(())
}
