//! Traffic mirroring: a sampled copy of a request goes to a shadow cluster
//! on a spawned task. The primary never waits for it and is never changed by
//! it: the copy gets its own header, its body is teed chunk by chunk through
//! a channel that holds at most `max_body_bytes` (never awaited: past the
//! cap the copy is abandoned, counted `too_large`), and the
//! shadow's answer is read and discarded — or, in compare mode, its status
//! class and body digest are compared with the primary's.
//!
//! - `target.rs`: a route's compiled mirror target ([`MirrorTarget`]).
//! - `handle.rs`: the request path's end of a copy: [`start`] samples and
//!   spawns it, [`MirrorHandle`] tees the body and hands over the
//!   [`PrimaryOutcome`].
//! - `copy.rs`: the copy's request header (hop-by-hop fields dropped, host
//!   `-shadow`, `x-gateway-mirror: true`).
//! - `task.rs`: the spawned task that sends the copy, reads the answer and
//!   compares it.
//! - `digest.rs`: the chunking-independent [`BodyDigest`] of compare mode.
//! - `connector.rs`: the shared Pingora client of every copy.
//! - `log_limit.rs`: mismatches counted, and logged at most a few lines a
//!   second.
//!
//! Sampling is plain policy data in [`filters::mirror`]; the proxy step
//! that starts the copies of a route is `crate::proxy::mirror`.

mod connector;
mod copy;
mod digest;
mod handle;
mod log_limit;
mod target;
mod task;

pub use connector::warm_up;
/// Also the client of external authorization checks (one pool).
pub(crate) use connector::CONNECTOR;
pub use digest::BodyDigest;
pub use handle::{start, MirrorHandle, PrimaryOutcome};
pub use target::MirrorTarget;

use crate::metrics::METRICS;

/// Counts a copy's result (`sent`, `dropped`, `too_large`, `error`).
fn count(route: &str, result: &str) {
    METRICS
        .mirror_requests
        .with_label_values(&[route, result])
        .inc();
}
