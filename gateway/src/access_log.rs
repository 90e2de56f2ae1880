//! One JSON access-log line per request, written by a dedicated thread so the
//! request path never blocks on stdout. When the writer falls behind, lines
//! are dropped and counted (`gateway_access_log_dropped_total`) rather than
//! delaying traffic.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;

use crate::metrics::METRICS;

static SENDER: OnceLock<SyncSender<String>> = OnceLock::new();
/// Lines queued but not yet written.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Starts the writer thread (once per process). Lines go to stdout.
pub fn init() {
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<String>(16 * 1024);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    let mut written = 1;
                    // Flush when the queue is drained: batches under load,
                    // prompt lines when idle.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                        written += 1;
                    }
                    let _ = out.flush();
                    PENDING.fetch_sub(written, Ordering::AcqRel);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the access-log thread: {e}");
        }
        tx
    });
}

/// Queues one line (a JSON object; a newline is appended).
pub fn write(mut line: String) {
    let Some(tx) = SENDER.get() else { return };
    line.push('\n');
    PENDING.fetch_add(1, Ordering::AcqRel);
    match tx.try_send(line) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            PENDING.fetch_sub(1, Ordering::AcqRel);
            METRICS.access_log_dropped.inc()
        }
    }
}

/// Waits (at most `limit`) until every queued line is written; used before
/// the process exits.
pub fn flush(limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    while PENDING.load(Ordering::Acquire) > 0 && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
