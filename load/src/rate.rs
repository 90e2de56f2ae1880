//! A constant-rate (open-loop) HTTP/1.1 load generator, in the manner of
//! wrk2: request `i` is due at `t0 + i / rate`, whatever happened before;
//! it goes out on the next idle keep-alive connection, and its latency is
//! counted from the time it was due, so a slow answer that holds a
//! connection busy shows up in the latency of the requests queued behind it
//! (no coordinated omission). Requests are spread evenly in time, not sent
//! in bursts of one per connection.
//!
//! One thread, `ppoll(2)` over non-blocking sockets.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::Result;

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the request in flight on this connection was due.
    busy: Option<Instant>,
}

impl Conn {
    fn open(addr: &SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(8192),
            busy: None,
        })
    }
}

/// `rate ADDR RATE CONNS SECS WARMUP_SECS`: prints
/// `requests=N errors=E p50_ms=.. p99_ms=.. p999_ms=.. max_ms=.. achieved_rps=..`,
/// where `achieved_rps` counts the answers that arrived within the measured
/// window: below the offered rate, the target could not keep up.
pub fn run(addr: &str, rate: f64, conns: usize, secs: f64, warmup: f64) -> Result<()> {
    let addr: SocketAddr = addr.parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    if rate <= 0.0 || conns == 0 || secs <= 0.0 {
        return Err("rate, connections and duration must be positive".into());
    }
    let request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: loadtool-rate\r\n\r\n");
    let mut pool: Vec<Conn> = (0..conns)
        .map(|_| Conn::open(&addr))
        .collect::<std::io::Result<_>>()?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = ((warmup + secs) * rate).round() as u64;
    let t0 = Instant::now() + Duration::from_millis(10);
    let measure_from = t0 + Duration::from_secs_f64(warmup);
    let measure_to = measure_from + Duration::from_secs_f64(secs);
    // Hard stop: the last request was due at t0 + warmup + secs; give the
    // answers 2 s more, then count what is missing as errors.
    let hard_stop = t0 + Duration::from_secs_f64(warmup + secs + 2.0);

    let mut next: u64 = 0; // index of the next request to become due
    let mut queue: VecDeque<Instant> = VecDeque::new(); // due, not yet sent
    let mut idle: Vec<usize> = (0..conns).collect();
    let mut lat_us: Vec<u64> = Vec::with_capacity((secs * rate) as usize + 16);
    let mut errors: u64 = 0;
    let mut done_measured: u64 = 0;
    let mut ok_in_window: u64 = 0; // answers that arrived within the measured window
    let mut tmp = vec![0u8; 65536];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(conns);
    let mut fd_conn: Vec<usize> = Vec::with_capacity(conns);

    loop {
        let now = Instant::now();
        while next < total && t0 + interval * next as u32 <= now {
            queue.push_back(t0 + interval * next as u32);
            next += 1;
        }
        // Send every due request that has an idle connection.
        while let (Some(&due), Some(&ci)) = (queue.front(), idle.last()) {
            let c = &mut pool[ci];
            match c.stream.write(request.as_bytes()) {
                Ok(n) if n == request.len() => {
                    queue.pop_front();
                    idle.pop();
                    c.busy = Some(due);
                }
                _ => {
                    // A broken connection: replace it, the request stays queued.
                    idle.pop();
                    errors += 1;
                    pool[ci] = Conn::open(&addr)?;
                    idle.push(ci);
                }
            }
        }
        let in_flight = conns - idle.len();
        if next >= total && queue.is_empty() && in_flight == 0 {
            break;
        }
        if now >= hard_stop {
            errors += queue.len() as u64 + in_flight as u64;
            break;
        }
        // Wait for answers, or until the next request is due.
        let wake = if next < total {
            (t0 + interval * next as u32).min(hard_stop)
        } else {
            hard_stop
        };
        let timeout = wake.saturating_duration_since(Instant::now());
        fds.clear();
        fd_conn.clear();
        for (i, c) in pool.iter().enumerate() {
            if c.busy.is_some() {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                fd_conn.push(i);
            }
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n <= 0 {
            continue;
        }
        for (k, pfd) in fds.iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            let ci = fd_conn[k];
            let c = &mut pool[ci];
            let mut closed = false;
            loop {
                match c.stream.read(&mut tmp) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => c.buf.extend_from_slice(&tmp[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            match complete(&c.buf) {
                Some((len, status)) => {
                    let due = c.busy.take().expect("busy");
                    let end = Instant::now();
                    c.buf.drain(..len);
                    if due >= measure_from {
                        if (200..400).contains(&status) {
                            lat_us.push(end.duration_since(due).as_micros() as u64);
                            if end <= measure_to {
                                ok_in_window += 1;
                            }
                        } else {
                            errors += 1;
                        }
                        done_measured += 1;
                    }
                    if closed {
                        pool[ci] = Conn::open(&addr)?;
                    }
                    idle.push(ci);
                }
                None if closed => {
                    errors += 1;
                    pool[ci] = Conn::open(&addr)?;
                    idle.push(ci);
                }
                None => {}
            }
        }
    }
    lat_us.sort_unstable();
    let q = |p: f64| percentile(&lat_us, p) as f64 / 1000.0;
    println!(
        "requests={} errors={} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} achieved_rps={:.0}",
        done_measured,
        errors,
        q(50.0),
        q(99.0),
        q(99.9),
        q(100.0),
        ok_in_window as f64 / secs
    );
    Ok(())
}

/// Nearest-rank percentile of sorted values; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// When `buf` starts with a complete response: its length and status.
fn complete(buf: &[u8]) -> Option<(usize, u16)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let status: u16 = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    let mut content_length = None;
    let mut chunked = false;
    for line in head.split(|&b| b == b'\n') {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    match (content_length, chunked) {
        (Some(n), _) => (buf.len() >= head_end + n).then_some((head_end + n, status)),
        (None, true) => {
            let body = &buf[head_end..];
            let end = body.windows(5).position(|w| w == b"0\r\n\r\n")?;
            Some((head_end + end + 5, status))
        }
        (None, false) => Some((head_end, status)),
    }
}

#[cfg(test)]
mod tests {
    use super::{complete, percentile};

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&v, 50.0), 500);
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&v, 99.9), 999);
        assert_eq!(percentile(&v, 100.0), 1000);
        assert_eq!(percentile(&[], 99.0), 0);
    }

    #[test]
    fn responses_are_framed() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1";
        assert_eq!(complete(r), Some((41, 200)));
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"),
            None
        );
        let c = b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(complete(c), Some((c.len(), 503)));
    }
}
