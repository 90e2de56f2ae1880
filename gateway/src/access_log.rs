//! The access-log writer: one JSON line per request, on stdout, without
//! waking another thread per request.
//!
//! Each worker thread appends its lines to a buffer of its own (a
//! [`ThreadLocal`] slot behind an uncontended mutex: the writer is the only
//! other party, and only when it takes the buffer). A writer thread takes
//! every buffer whole on a short tick ([`FLUSH_INTERVAL`]) and writes it to
//! stdout; a worker whose buffer passes [`HIGH_WATER`] unparks the writer
//! once, so under load a wake carries hundreds of lines, not one. Lines stay
//! complete and in order per worker. A buffer that reaches [`MAX_BUFFER`]
//! (the writer fell far behind, e.g. stdout is a blocked pipe) drops new
//! lines and counts them in `gateway_access_log_dropped_total`; nothing is
//! dropped silently, and nothing buffered is lost while the process lives:
//! [`flush`] writes it out before exit.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

use crate::metrics::METRICS;

/// How long a line may wait in a worker's buffer when traffic is light.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// A worker buffer this large wakes the writer early.
pub const HIGH_WATER: usize = 64 * 1024;
/// A worker buffer this large takes no more lines until it is written.
pub const MAX_BUFFER: usize = 8 * 1024 * 1024;

/// Per-worker line buffers and the writer that drains them.
pub struct AccessLog {
    buffers: ThreadLocal<Mutex<Vec<u8>>>,
    /// The writer was woken and has not run its pass yet.
    kicked: AtomicBool,
    /// Completed writer passes (for [`AccessLog::flush`]).
    passes: AtomicU64,
    writer: OnceLock<std::thread::Thread>,
    /// Lines dropped because a buffer was full.
    dropped: AtomicU64,
}

impl AccessLog {
    fn new() -> Self {
        AccessLog {
            buffers: ThreadLocal::new(),
            kicked: AtomicBool::new(false),
            passes: AtomicU64::new(0),
            writer: OnceLock::new(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Starts the writer thread, writing to `out`.
    fn start(self: &Arc<Self>, out: Box<dyn Write + Send>) -> std::io::Result<()> {
        let log = self.clone();
        let handle = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || log.run_writer(out))?;
        let _ = self.writer.set(handle.thread().clone());
        Ok(())
    }

    fn run_writer(&self, mut out: Box<dyn Write + Send>) {
        let mut spare: Vec<u8> = Vec::with_capacity(HIGH_WATER);
        loop {
            std::thread::park_timeout(FLUSH_INTERVAL);
            self.kicked.store(false, Ordering::Release);
            let mut wrote = false;
            for slot in self.buffers.iter() {
                {
                    let mut buf = match slot.lock() {
                        Ok(b) => b,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    if buf.is_empty() {
                        continue;
                    }
                    std::mem::swap(&mut *buf, &mut spare);
                }
                // Written outside the lock: a slow stdout never blocks a worker.
                let _ = out.write_all(&spare);
                spare.clear();
                wrote = true;
            }
            if wrote {
                let _ = out.flush();
            }
            self.passes.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Appends one line: `fill` writes a JSON object into the buffer, the
    /// newline is added here.
    pub fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) {
        let slot = self
            .buffers
            .get_or(|| Mutex::new(Vec::with_capacity(HIGH_WATER)));
        let mut buf = match slot.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buf.len() >= MAX_BUFFER {
            drop(buf);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            METRICS.access_log_dropped.inc();
            return;
        }
        fill(&mut buf);
        buf.push(b'\n');
        let wake = buf.len() >= HIGH_WATER;
        drop(buf);
        if wake && !self.kicked.swap(true, Ordering::AcqRel) {
            if let Some(w) = self.writer.get() {
                w.unpark();
            }
        }
    }

    /// Waits (at most `limit`) until everything appended before the call is written.
    pub fn flush(&self, limit: Duration) {
        let Some(w) = self.writer.get() else { return };
        let until = Instant::now() + limit;
        // The pass running now may have passed a buffer already: wait for
        // one full pass that started after this call.
        let target = self.passes.load(Ordering::Acquire) + 2;
        while self.passes.load(Ordering::Acquire) < target && Instant::now() < until {
            w.unpark();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

static LOG: OnceLock<Arc<AccessLog>> = OnceLock::new();

/// Starts the process's access log on stdout (once per process).
pub fn init() {
    let mut started = false;
    let log = LOG.get_or_init(|| {
        started = true;
        Arc::new(AccessLog::new())
    });
    if started {
        if let Err(e) = log.start(Box::new(std::io::stdout())) {
            tracing::error!("cannot start the access-log thread: {e}");
        }
    }
}

/// Appends one line to the process's access log (nothing before [`init`]).
pub fn append(fill: impl FnOnce(&mut Vec<u8>)) {
    if let Some(log) = LOG.get() {
        log.append(fill);
    }
}

/// Waits (at most `limit`) until every line appended so far is written;
/// used before the process exits.
pub fn flush(limit: Duration) {
    if let Some(log) = LOG.get() {
        log.flush(limit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` that keeps what it is given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_of_every_worker_arrive_complete_and_in_order() {
        let log = Arc::new(AccessLog::new());
        let sink = Sink::default();
        log.start(Box::new(sink.clone())).unwrap();
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let log = log.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        log.append(|b| write!(b, "{{\"w\":{w},\"i\":{i}}}").unwrap());
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        log.flush(Duration::from_secs(5));
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0u64; 4];
        for line in out.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let w = v["w"].as_u64().unwrap() as usize;
            assert_eq!(v["i"].as_u64().unwrap(), next[w], "worker {w} out of order");
            next[w] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        assert_eq!(log.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_light_load_is_written_within_the_tick() {
        let log = Arc::new(AccessLog::new());
        let sink = Sink::default();
        log.start(Box::new(sink.clone())).unwrap();
        log.append(|b| b.extend_from_slice(b"{}"));
        let until = Instant::now() + Duration::from_secs(2);
        while sink.0.lock().unwrap().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"{}\n");
    }

    #[test]
    fn a_full_buffer_drops_and_counts() {
        // No writer: nothing drains the buffer.
        let log = AccessLog::new();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..10 {
            log.append(|b| b.extend_from_slice(&line));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 2);
    }
}
