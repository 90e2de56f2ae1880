//! Mismatches: each one counted, logged at most [`MISMATCH_LOGS_PER_SEC`]
//! lines a second.

use std::sync::atomic::{AtomicU64, Ordering};

/// At most this many mismatch log lines per second.
const MISMATCH_LOGS_PER_SEC: u64 = 10;

/// Counts a mismatch between the primary's answer and the shadow's
/// (`gateway_mirror_mismatch_total{route,kind}`) and logs it, unless this
/// second's lines are used up.
pub(super) fn mismatch(route: &str, request_id: &str, primary: u16, shadow: u16, kind: &str) {
    crate::metrics::METRICS
        .mirror_mismatch
        .with_label_values(&[route, kind])
        .inc();
    static WINDOW: AtomicU64 = AtomicU64::new(0);
    static IN_WINDOW: AtomicU64 = AtomicU64::new(0);
    let sec = crate::runtime::health::now_ms() / 1000;
    if WINDOW.swap(sec, Ordering::Relaxed) != sec {
        IN_WINDOW.store(0, Ordering::Relaxed);
    }
    if IN_WINDOW.fetch_add(1, Ordering::Relaxed) < MISMATCH_LOGS_PER_SEC {
        tracing::warn!(route, request_id, primary, shadow, kind, "mirror mismatch");
    }
}
