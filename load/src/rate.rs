//! A constant-rate (open-loop) HTTP/1.1 load generator, in the manner of
//! wrk2: request `i` is due at `t0 + i / rate`, whatever happened before;
//! it goes out on the next idle keep-alive connection, and its latency is
//! counted from the time it was due, so a slow answer that holds a
//! connection busy shows up in the latency of the requests queued behind it
//! (no coordinated omission). Requests are spread evenly in time, not sent
//! in bursts of one per connection.
//!
//! Two figures of how much got through are kept apart:
//!
//! - `achieved_rps`: answers to requests *due* inside the measured window
//!   that also arrived inside it (below the offered rate: the target could
//!   not keep up with the schedule);
//! - `throughput_rps`: every successful answer that arrived inside the
//!   window, whenever its request was due. Under overload (`--overload`) a
//!   backlog from the warm-up would make `achieved_rps` look like a
//!   collapse; `throughput_rps` is what the target really served.
//!
//! With `--overload` the run ends at the end of the window (the backlog of
//! requests never sent is reported as `unsent`, not as failures), and the
//! latency percentiles count from when each request was *sent* (the
//! service time under saturation), not from when it was due.
//!
//! One thread, `epoll(7)` over non-blocking sockets. While every connection
//! is busy the loop sleeps until an answer arrives: newly due requests could
//! not go out anyway, and waking for them would burn the CPU the generator
//! shares with the upstream.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::Result;

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the request in flight on this connection was due, and sent.
    busy: Option<(Instant, Instant)>,
}

/// What `loadtool rate` is asked to do.
pub struct Opts {
    pub addr: String,
    pub rate: f64,
    pub conns: usize,
    pub secs: f64,
    pub warmup: f64,
    /// Extra request header lines, `Name: value`.
    pub headers: Vec<String>,
    pub overload: bool,
}

impl Opts {
    /// `ADDR RATE CONNS SECS WARMUP [-H 'Name: value']... [--overload]`
    pub fn parse(args: &[String]) -> Option<Opts> {
        if args.len() < 5 {
            return None;
        }
        let mut o = Opts {
            addr: args[0].clone(),
            rate: args[1].parse().ok()?,
            conns: args[2].parse().ok()?,
            secs: args[3].parse().ok()?,
            warmup: args[4].parse().ok()?,
            headers: Vec::new(),
            overload: false,
        };
        let mut it = args[5..].iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "-H" | "--header" => {
                    let h = it.next()?;
                    if !h.contains(':') || h.contains('\r') || h.contains('\n') {
                        return None;
                    }
                    o.headers.push(h.clone());
                }
                "--overload" => o.overload = true,
                _ => return None,
            }
        }
        Some(o)
    }
}

struct Epoll(i32);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: plain syscall, no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }
    fn add(&self, fd: i32, token: usize) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel copies it.
        if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    /// Waits at most `timeout` (to the nanosecond: `ppoll` on the epoll
    /// descriptor, so a request due in 50 µs is not sent a millisecond
    /// late), then collects the ready connections.
    fn wait(&self, events: &mut [libc::epoll_event], timeout: Duration) -> usize {
        let mut pfd = libc::pollfd {
            fd: self.0,
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(3600) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one valid pollfd; `ts` outlives the call.
        let r = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
        if r <= 0 {
            return 0;
        }
        // SAFETY: `events` is a valid, writable array of its length.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, 0) };
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn open(addr: &SocketAddr, ep: &Epoll, token: usize) -> std::io::Result<Conn> {
    let stream = TcpStream::connect_timeout(addr, Duration::from_secs(5))?;
    stream.set_nodelay(true)?;
    stream.set_nonblocking(true)?;
    ep.add(stream.as_raw_fd(), token)?;
    Ok(Conn {
        stream,
        buf: Vec::with_capacity(8192),
        busy: None,
    })
}

/// Prints one line of `key=value` pairs:
/// `requests` (answers to requests due in the window), `answered` (every
/// successful answer of the run, warm-up included: what CPU per request is
/// divided by), `errors` (non-2xx/3xx answers, broken or refused
/// connections), `late` (without `--overload`: requests still unanswered
/// 2 s after the last one was due: the target could not keep up, they did
/// not fail), `p50_ms`, `p99_ms`, `p999_ms`, `max_ms`, `achieved_rps`,
/// `throughput_rps`, `unsent`.
pub fn run(o: &Opts) -> Result<()> {
    let addr: SocketAddr = o.addr.parse()?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr} is not a loopback address").into());
    }
    if o.rate <= 0.0 || o.conns == 0 || o.secs <= 0.0 || o.warmup < 0.0 {
        return Err("rate, connections and duration must be positive".into());
    }
    let mut request = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: loadtool-rate\r\n");
    for h in &o.headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let ep = Epoll::new()?;
    let mut pool: Vec<Option<Conn>> = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        pool.push(Some(open(&addr, &ep, i)?));
    }
    let (rate, secs, warmup) = (o.rate, o.secs, o.warmup);
    let total = ((warmup + secs) * rate).round() as u64;
    let t0 = Instant::now() + Duration::from_millis(10);
    let due_at = |i: u64| t0 + Duration::from_secs_f64(i as f64 / rate);
    let measure_from = t0 + Duration::from_secs_f64(warmup);
    let measure_to = measure_from + Duration::from_secs_f64(secs);
    // Hard stop: the last request was due at t0 + warmup + secs; give the
    // answers 2 s more, then count what is missing as errors. Under
    // overload the run simply ends with the window.
    let hard_stop = if o.overload {
        measure_to
    } else {
        t0 + Duration::from_secs_f64(warmup + secs + 2.0)
    };

    let mut sent: u64 = 0; // requests sent so far: request `sent` is the next
    let mut idle: Vec<usize> = (0..o.conns).rev().collect();
    let mut dead: Vec<(usize, Instant)> = Vec::new(); // slots to reconnect
    let mut lat_us: Vec<u64> = Vec::with_capacity((secs * rate).min(5e7) as usize + 16);
    let mut errors: u64 = 0;
    let mut late: u64 = 0; // due but unanswered 2 s after the last was due
    let mut done_measured: u64 = 0;
    let mut answered: u64 = 0;
    let mut ok_in_window: u64 = 0; // answers to requests due in the window, arrived in it
    let mut thr_in_window: u64 = 0; // every successful answer arrived in the window
    let mut tmp = vec![0u8; 65536];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; o.conns.max(1)];

    loop {
        let now = Instant::now();
        // Reconnect the slots whose connection broke (at most every 10 ms each).
        let mut k = 0;
        while k < dead.len() {
            if dead[k].1 <= now {
                let (ci, _) = dead.swap_remove(k);
                match open(&addr, &ep, ci) {
                    Ok(c) => {
                        pool[ci] = Some(c);
                        idle.push(ci);
                    }
                    Err(_) => {
                        errors += 1;
                        dead.push((ci, now + Duration::from_millis(10)));
                    }
                }
            } else {
                k += 1;
            }
        }
        // Send every due request that has an idle connection.
        while sent < total && !idle.is_empty() && due_at(sent) <= now {
            let ci = idle.pop().expect("idle");
            let c = pool[ci].as_mut().expect("idle slot is open");
            match c.stream.write(request.as_bytes()) {
                Ok(n) if n == request.len() => {
                    c.busy = Some((due_at(sent), Instant::now()));
                    sent += 1;
                }
                _ => {
                    // A broken connection: replace it, the request stays due.
                    errors += 1;
                    pool[ci] = None;
                    dead.push((ci, now));
                }
            }
        }
        let in_flight = pool
            .iter()
            .filter(|c| c.as_ref().is_some_and(|c| c.busy.is_some()))
            .count();
        if sent >= total && in_flight == 0 {
            break;
        }
        if now >= hard_stop {
            if !o.overload {
                late = (total - sent) + in_flight as u64;
            }
            break;
        }
        // Wait for answers; also for the next due request, but only when a
        // connection is idle to take it, and for the next reconnection.
        let mut wake = hard_stop;
        if sent < total && !idle.is_empty() {
            wake = wake.min(due_at(sent));
        }
        if let Some(d) = dead.iter().map(|d| d.1).min() {
            wake = wake.min(d);
        }
        let n = ep.wait(&mut events, wake.saturating_duration_since(Instant::now()));
        for ev in &events[..n] {
            let ci = ev.u64 as usize;
            let Some(c) = pool[ci].as_mut() else {
                continue;
            };
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
            let Some((due, at)) = c.busy else {
                // An idle connection the server closed (or wrote to): replace it.
                if closed {
                    pool[ci] = None;
                    idle.retain(|&i| i != ci);
                    dead.push((ci, Instant::now()));
                } else {
                    c.buf.clear();
                }
                continue;
            };
            match complete(&c.buf) {
                Some((len, status, conn_close)) => {
                    c.busy = None;
                    let end = Instant::now();
                    c.buf.drain(..len);
                    let ok = (200..400).contains(&status);
                    let in_window = end >= measure_from && end <= measure_to;
                    if ok {
                        answered += 1;
                        if in_window {
                            thr_in_window += 1;
                        }
                    }
                    if o.overload {
                        if in_window {
                            if ok {
                                lat_us.push(end.duration_since(at).as_micros() as u64);
                            } else {
                                errors += 1;
                            }
                            done_measured += 1;
                        }
                    } else if due >= measure_from {
                        if ok {
                            lat_us.push(end.duration_since(due).as_micros() as u64);
                            if end <= measure_to {
                                ok_in_window += 1;
                            }
                        } else {
                            errors += 1;
                        }
                        done_measured += 1;
                    } else if !ok {
                        errors += 1;
                    }
                    if closed || conn_close {
                        pool[ci] = None;
                        dead.push((ci, end));
                    } else {
                        idle.push(ci);
                    }
                }
                None if closed => {
                    errors += 1;
                    pool[ci] = None;
                    dead.push((ci, Instant::now()));
                }
                None => {}
            }
        }
    }
    lat_us.sort_unstable();
    // No answer measured (a target far behind its schedule): no percentile.
    let q = |p: f64| match lat_us.is_empty() {
        true => "nan".to_string(),
        false => format!("{:.3}", percentile(&lat_us, p) as f64 / 1000.0),
    };
    let achieved = if o.overload {
        thr_in_window
    } else {
        ok_in_window
    };
    println!(
        "requests={} answered={} errors={} late={} p50_ms={} p99_ms={} p999_ms={} max_ms={} achieved_rps={:.0} throughput_rps={:.0} unsent={}",
        done_measured,
        answered,
        errors,
        late,
        q(50.0),
        q(99.0),
        q(99.9),
        q(100.0),
        achieved as f64 / secs,
        thr_in_window as f64 / secs,
        total.saturating_sub(sent),
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

/// When `buf` starts with a complete response: its length, its status, and
/// whether the server announced it closes the connection.
fn complete(buf: &[u8]) -> Option<(usize, u16, bool)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..head_end];
    let status: u16 = std::str::from_utf8(head.get(9..12)?).ok()?.parse().ok()?;
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for line in head.split(|&b| b == b'\n') {
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.trim().eq_ignore_ascii_case("close");
        }
    }
    match (content_length, chunked) {
        (Some(n), _) => (buf.len() >= head_end + n).then_some((head_end + n, status, close)),
        (None, true) => {
            let body = &buf[head_end..];
            let end = body.windows(5).position(|w| w == b"0\r\n\r\n")?;
            Some((head_end + end + 5, status, close))
        }
        (None, false) => Some((head_end, status, close)),
    }
}

#[cfg(test)]
mod tests {
    use super::{complete, percentile, Opts};

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
        assert_eq!(complete(r), Some((41, 200, false)));
        assert_eq!(
            complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"),
            None
        );
        let c = b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(complete(c), Some((c.len(), 503, true)));
    }

    #[test]
    fn options() {
        let a: Vec<String> = [
            "127.0.0.1:1",
            "100",
            "4",
            "2",
            "0.5",
            "-H",
            "Authorization: Bearer x",
            "--overload",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = Opts::parse(&a).expect("parses");
        assert!(o.overload);
        assert_eq!(o.headers, vec!["Authorization: Bearer x".to_string()]);
        assert!(Opts::parse(&a[..4]).is_none());
        let mut bad = a.clone();
        bad[6] = "no colon".into();
        assert!(Opts::parse(&bad).is_none());
    }
}
