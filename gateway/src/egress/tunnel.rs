//! A CONNECT tunnel to an allowed destination: the `200`, the SNI check
//! of the first TLS record, the dial, then splicing: bytes both ways,
//! half-closes passed on, an idle and a total timeout, and byte counts for
//! the audit line.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use filters::egress::{parse_client_hello_sni, ssrf, DenyReason, SniResult};
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::audit::{Audit, Done};
use super::caller::Caller;
use super::decide::{Allowed, Checked, Refusal};
use super::EgressRuntime;
use crate::metrics::METRICS;

/// Idle timeout of a tunnel.
const TUNNEL_IDLE: Duration = Duration::from_secs(60);
/// Longest life of a tunnel.
const TUNNEL_TOTAL: Duration = Duration::from_secs(3600);
/// Connect timeout to a destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the first TLS record of a tunnel (SNI check).
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest ClientHello read for the SNI check.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Runs the tunnel of an allowed CONNECT and audits how it ended.
pub async fn connect(
    mut session: HttpSession,
    egress: &EgressRuntime,
    audit: &Audit<'_>,
    caller: &Caller,
    allowed: Allowed,
) {
    let Allowed {
        target,
        mut decision,
        addr,
    } = allowed;
    let unreachable =
        |target, decision| Refusal::Unreachable(Box::new(Checked { target, decision }));
    let sni_check = egress.rules.sni_must_match_connect();
    // Without the SNI check, dial first so a dead destination is a 502.
    // With it, nothing reaches the destination (not even a TCP
    // connection) before the ClientHello named the CONNECT host; a
    // failed dial after the 200 closes the tunnel instead.
    let mut upstream = None;
    if !sni_check {
        upstream = dial(addr).await;
        if upstream.is_none() {
            let refusal = unreachable(target, decision);
            return audit.refuse(Some(&mut session), caller, &refusal).await;
        }
    }
    let done = |note| Done {
        status: 200,
        note,
        ..Done::default()
    };
    let mut client = session.into_inner();
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return audit.finished(caller, &target, &decision, done(Some("client_gone")));
    }
    let _ = client.flush().await;
    let mut first = Vec::new();
    if sni_check {
        let hello = read_client_hello(&mut client, &mut first).await;
        // Clients send no SNI for IP-literal hosts; a TLS hello is enough.
        let ip_target = ssrf::parse_host_literal(&target.host).is_some();
        let (matches, sni) = match hello {
            Hello::Sni(s) => (filters::egress::host::same_host(&s, &target.host), Some(s)),
            Hello::NoSni => (ip_target, None),
            Hello::NotTls => (false, None),
        };
        if !matches {
            let reason = DenyReason::SniMismatch {
                host: target.host.clone(),
                sni,
            };
            decision.refuse(reason, 403, egress.rules.audit_only());
        }
        if !decision.allowed {
            let _ = client.shutdown().await;
            let refusal = Refusal::Denied(Box::new(Checked { target, decision }));
            return audit.refuse(None, caller, &refusal).await;
        }
        upstream = dial(addr).await;
    }
    let Some(mut upstream) = upstream else {
        let _ = client.shutdown().await;
        return audit
            .refuse(None, caller, &unreachable(target, decision))
            .await;
    };
    if !first.is_empty() && upstream.write_all(&first).await.is_err() {
        return audit.finished(caller, &target, &decision, done(Some("upstream_gone")));
    }
    let mut done = splice(client, upstream, TUNNEL_IDLE, TUNNEL_TOTAL).await;
    METRICS
        .egress_tunnel_duration
        .observe(audit.started.elapsed().as_secs_f64());
    done.bytes_up += first.len() as u64;
    audit.finished(caller, &target, &decision, done);
}

/// Connects to the checked destination address.
async fn dial(addr: SocketAddr) -> Option<tokio::net::TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

/// What a tunnel started with.
enum Hello {
    /// A TLS ClientHello with this server name.
    Sni(String),
    /// A TLS ClientHello without a server name.
    NoSni,
    /// Not a ClientHello, malformed, too large, or too slow.
    NotTls,
}

/// Reads the first TLS record(s) of a tunnel into `buf` and reports the
/// ClientHello's server name.
async fn read_client_hello(client: &mut Stream, buf: &mut Vec<u8>) -> Hello {
    let deadline = tokio::time::Instant::now() + CLIENT_HELLO_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        match parse_client_hello_sni(buf) {
            SniResult::Sni(name) => return Hello::Sni(name),
            SniResult::NoSni => return Hello::NoSni,
            SniResult::NeedMore { .. } if buf.len() < MAX_CLIENT_HELLO => {}
            _ => return Hello::NotTls,
        }
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Hello::NotTls,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Copies `a`→`b` and `b`→`a` until both directions reached EOF (each EOF
/// is passed on as a write shutdown), nothing moved for `idle`, or `total`
/// passed. How it ended, as the audit line takes it: status 200, the bytes
/// each way (`a`→`b` is up), and why the gateway cut it (`None`: both sides
/// closed).
pub async fn splice<A, B>(a: A, b: B, idle: Duration, total: Duration) -> Done
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let up = Arc::new(AtomicU64::new(0));
    let down = Arc::new(AtomicU64::new(0));
    let pump_up = pump(&mut ar, &mut bw, &up, &last, start);
    let pump_down = pump(&mut br, &mut aw, &down, &last, start);
    let both = async { tokio::join!(pump_up, pump_down) };
    let watchdog = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250).min(idle)).await;
            let now = start.elapsed();
            if now >= total {
                return "total_timeout";
            }
            let quiet = now.saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return "idle_timeout";
            }
        }
    };
    let cut = tokio::select! {
        _ = both => None,
        why = watchdog => Some(why),
    };
    Done {
        status: 200,
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        note: cut,
    }
}

async fn pump<R, W>(
    r: &mut R,
    w: &mut W,
    count: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    let result = async {
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n]).await?;
            w.flush().await?;
            count.fetch_add(n as u64, Ordering::Relaxed);
            last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
    .await;
    // EOF or error: pass the half-close on.
    let _ = w.shutdown().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_closes() {
        let (client, gw_side) = tokio::io::duplex(1024);
        let (gw_up, server) = tokio::io::duplex(1024);
        let t = tokio::spawn(splice(
            gw_side,
            gw_up,
            Duration::from_secs(5),
            Duration::from_secs(10),
        ));
        let (mut cr, mut cw) = tokio::io::split(client);
        let (mut sr, mut sw) = tokio::io::split(server);
        cw.write_all(b"hello").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        sr.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello", "upstream sees the bytes, then EOF");
        // The other direction still works after the caller's half-close.
        sw.write_all(b"world!").await.unwrap();
        sw.shutdown().await.unwrap();
        let mut back = Vec::new();
        cr.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"world!");
        let stats = t.await.unwrap();
        assert_eq!((stats.bytes_up, stats.bytes_down, stats.note), (5, 6, None));
    }

    #[tokio::test]
    async fn idle_tunnels_are_cut() {
        let (_client, gw_side) = tokio::io::duplex(64);
        let (gw_up, _server) = tokio::io::duplex(64);
        let stats = splice(
            gw_side,
            gw_up,
            Duration::from_millis(100),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(stats.note, Some("idle_timeout"));
    }
}
