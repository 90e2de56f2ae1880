//! Splicing a CONNECT tunnel: bytes both ways, half-closes passed on, an
//! idle and a total timeout, and byte counts for the audit line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How a tunnel ended.
#[derive(Debug, Default)]
pub struct TunnelStats {
    /// Caller to destination.
    pub bytes_up: u64,
    /// Destination to caller.
    pub bytes_down: u64,
    /// `None`: both sides closed; else why the gateway cut it.
    pub cut: Option<&'static str>,
}

/// Copies `a`→`b` and `b`→`a` until both directions reached EOF (each EOF
/// is passed on as a write shutdown), nothing moved for `idle`, or `total`
/// passed.
pub async fn splice<A, B>(a: A, b: B, idle: Duration, total: Duration) -> TunnelStats
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
    TunnelStats {
        bytes_up: up.load(Ordering::Relaxed),
        bytes_down: down.load(Ordering::Relaxed),
        cut,
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
        assert_eq!((stats.bytes_up, stats.bytes_down, stats.cut), (5, 6, None));
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
        assert_eq!(stats.cut, Some("idle_timeout"));
    }
}
