//! Fault injection per route (Istio's `fault`): a delay before proxying
//! and an abort answered at the gateway, each for a share of the route's
//! requests, optionally only those whose headers match. Mirror copies are
//! started before this step, so they are never delayed or aborted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::proxy::Session;
use prometheus::IntCounter;

use super::ctx::RequestCtx;
use super::respond;
use crate::metrics::METRICS;
use crate::runtime::route::{headers_match, ValueMatcher};

/// What an abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abort {
    /// This HTTP status.
    Http(u16),
    /// HTTP 200 with this `grpc-status` (a trailers-only gRPC answer).
    Grpc(u32),
}

/// A route's compiled faults.
#[derive(Debug)]
pub struct FaultPolicy {
    /// The delay and the share (0 to 1) of requests it hits.
    pub delay: Option<(Duration, f64)>,
    /// The abort and the share of requests it hits.
    pub abort: Option<(Abort, f64)>,
    /// Conditions a request's headers must meet to be hit.
    pub headers: Vec<(HeaderName, ValueMatcher)>,
    /// Most requests delayed at once.
    pub max_active_delays: u32,
    active_delays: AtomicU32,
    delayed: IntCounter,
    aborted: IntCounter,
    over_limit: IntCounter,
}

impl FaultPolicy {
    /// The faults of `route`, with their counters resolved now.
    pub fn new(
        route: &str,
        delay: Option<(Duration, f64)>,
        abort: Option<(Abort, f64)>,
        headers: Vec<(HeaderName, ValueMatcher)>,
        max_active_delays: u32,
    ) -> Self {
        let counter = |kind| METRICS.faults.with_label_values(&[route, kind]);
        FaultPolicy {
            delay,
            abort,
            headers,
            max_active_delays,
            active_delays: AtomicU32::new(0),
            delayed: counter("delay"),
            aborted: counter("abort"),
            over_limit: counter("delay_over_limit"),
        }
    }

    /// Claims a delay slot, or `None` at `max_active_delays`.
    fn claim_delay(&self) -> Option<DelaySlot<'_>> {
        let before = self.active_delays.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_active_delays {
            self.active_delays.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(DelaySlot(&self.active_delays))
    }
}

/// A delay in progress; released when dropped.
struct DelaySlot<'a>(&'a AtomicU32);

impl Drop for DelaySlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn hit(share: f64) -> bool {
    share >= 1.0 || fastrand::f64() < share
}

/// Applies `f` to the request: sleeps for a delay it draws, and answers
/// an abort it draws; `Ok(true)` when it answered. The route's deadline
/// starts again after a delay, as the router only sees the request then
/// (Envoy's fault filter runs before its router).
pub async fn inject(
    session: &mut Session,
    ctx: &mut RequestCtx,
    f: &FaultPolicy,
    route_timeout: Option<Duration>,
) -> pingora::Result<bool> {
    if !headers_match(&f.headers, &session.req_header().headers) {
        return Ok(false);
    }
    if let Some((delay, share)) = f.delay {
        if hit(share) {
            match f.claim_delay() {
                Some(_slot) => {
                    f.delayed.inc();
                    tokio::time::sleep(delay).await;
                    ctx.deadline = route_timeout.map(|t| Instant::now() + t);
                }
                None => f.over_limit.inc(),
            }
        }
    }
    let Some((abort, share)) = f.abort else {
        return Ok(false);
    };
    if !hit(share) {
        return Ok(false);
    }
    f.aborted.inc();
    match abort {
        Abort::Http(status) => {
            let body = Bytes::from_static(b"fault filter abort\n");
            respond::write(session, ctx, status, body, &[]).await?;
        }
        Abort::Grpc(code) => {
            let fields = [
                (
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                ),
                (
                    HeaderName::from_static("grpc-status"),
                    HeaderValue::from(code),
                ),
                (
                    HeaderName::from_static("grpc-message"),
                    HeaderValue::from_static("fault filter abort"),
                ),
            ];
            respond::write(session, ctx, 200, Bytes::new(), &fields).await?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> FaultPolicy {
        FaultPolicy::new("t", None, None, Vec::new(), max)
    }

    #[test]
    fn delay_slots_stop_at_the_limit_and_come_back() {
        let f = policy(2);
        let a = f.claim_delay().expect("first");
        let _b = f.claim_delay().expect("second");
        assert!(f.claim_delay().is_none(), "a third is over the limit");
        drop(a);
        assert!(f.claim_delay().is_some(), "a released slot is free again");
    }

    #[test]
    fn shares_of_zero_and_one_are_exact() {
        assert!((0..1000).all(|_| hit(1.0)));
        assert!((0..1000).all(|_| !hit(0.0)));
    }
}
