//! The request path's end of a copy: sampling and spawning it, teeing the
//! body, handing over the primary's outcome. Nothing here waits.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;
use pingora::http::RequestHeader;
use tokio::sync::{mpsc, oneshot};

use super::copy::copy_header;
use super::task::Job;
use super::{count, MirrorTarget};

/// Why a copy ended early, set by the request path before it closes the
/// channel so the task can count the right result.
const HINT_NONE: u8 = 0;
pub(super) const HINT_TOO_LARGE: u8 = 1;
pub(super) const HINT_DROPPED: u8 = 2;

pub(super) enum Chunk {
    Data(Bytes),
    End,
}

/// What the primary answered, for compare mode.
pub struct PrimaryOutcome {
    /// Status sent to the client (0 = none).
    pub status: u16,
    /// Digest of the response body, when bodies are compared.
    pub body_digest: Option<u64>,
}

/// The request path's end of one copy.
pub struct MirrorHandle {
    tx: Option<mpsc::UnboundedSender<Chunk>>,
    sent: u64,
    max: u64,
    hint: Arc<AtomicU8>,
    primary: Option<oneshot::Sender<PrimaryOutcome>>,
    /// Whether this copy compares bodies (the primary's must be hashed).
    pub compare_body: bool,
}

impl MirrorHandle {
    /// Feeds a chunk of the request body that starts at byte `offset` of
    /// the body. A retry replays the body from its start: bytes the copy
    /// already has are skipped. Never waits; what is buffered is bounded by
    /// `max_body_bytes` (the copy is abandoned beyond it).
    pub fn feed(&mut self, offset: u64, chunk: Option<&Bytes>, end_of_stream: bool) {
        let Some(tx) = &self.tx else { return };
        if let Some(data) = chunk.filter(|d| !d.is_empty()) {
            let end = offset + data.len() as u64;
            if end > self.sent {
                let new = data.slice(self.sent.saturating_sub(offset) as usize..);
                self.sent = end;
                if self.sent > self.max {
                    self.abandon(HINT_TOO_LARGE);
                    return;
                }
                if tx.send(Chunk::Data(new)).is_err() {
                    self.abandon(HINT_DROPPED);
                    return;
                }
            }
        }
        if end_of_stream {
            if let Some(tx) = self.tx.take() {
                if tx.send(Chunk::End).is_err() {
                    self.hint.store(HINT_DROPPED, Ordering::Relaxed);
                }
            }
        }
    }

    fn abandon(&mut self, hint: u8) {
        self.hint.store(hint, Ordering::Relaxed);
        self.tx = None;
    }

    /// Ends the copy's view of the primary: hands over its outcome for
    /// compare mode. A body not fed to the end abandons the copy.
    pub fn finish(mut self, outcome: PrimaryOutcome) {
        self.tx = None;
        if let Some(p) = self.primary.take() {
            let _ = p.send(outcome);
        }
    }
}

/// Starts a copy of `req` if this target samples it and has room. The copy
/// waits for its body on a channel when the request has one.
pub fn start(
    target: &MirrorTarget,
    route: &Arc<str>,
    req: &RequestHeader,
    host: Option<&HeaderValue>,
    has_body: bool,
    request_id: &str,
    traceparent: Option<&str>,
) -> Option<MirrorHandle> {
    let key = target
        .sample_key
        .as_ref()
        .and_then(|k| req.headers.get(k))
        .map(|v| v.as_bytes());
    if !filters::mirror::sampled(target.percentage, key) {
        return None;
    }
    let Ok(permit) = target.permits.clone().try_acquire_owned() else {
        count(route, "dropped");
        return None;
    };
    let mut header = copy_header(target, req, host, has_body)?;
    if let Some(tp) = traceparent {
        header.insert_header("traceparent", tp).ok()?;
    }
    let (tx, rx) = has_body.then(mpsc::unbounded_channel).unzip();
    let compare = target.compare_status || target.compare_body;
    let (ptx, prx) = compare.then(oneshot::channel).unzip();
    let hint = Arc::new(AtomicU8::new(HINT_NONE));
    let job = Job {
        cluster: target.cluster.clone(),
        route: route.clone(),
        header: Some(header),
        body: rx,
        hint: hint.clone(),
        primary: prx,
        timeout: target.timeout,
        compare_status: target.compare_status,
        compare_body: target.compare_body,
        request_id: request_id.to_string(),
        _permit: permit,
    };
    tokio::spawn(job.run());
    Some(MirrorHandle {
        tx,
        sent: 0,
        max: target.max_body_bytes,
        hint,
        primary: ptx,
        compare_body: target.compare_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(max: u64) -> (MirrorHandle, mpsc::UnboundedReceiver<Chunk>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let h = MirrorHandle {
            tx: Some(tx),
            sent: 0,
            max,
            hint: Arc::new(AtomicU8::new(HINT_NONE)),
            primary: None,
            compare_body: false,
        };
        (h, rx)
    }

    fn data(rx: &mut mpsc::UnboundedReceiver<Chunk>) -> Vec<u8> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            match c {
                Chunk::Data(d) => out.extend_from_slice(&d),
                Chunk::End => out.extend_from_slice(b"|end"),
            }
        }
        out
    }

    #[test]
    fn a_retried_body_is_fed_once() {
        let (mut h, mut rx) = handle(100);
        h.feed(0, Some(&Bytes::from_static(b"abc")), false);
        // The retry replays from the start, then goes further.
        h.feed(0, Some(&Bytes::from_static(b"ab")), false);
        h.feed(2, Some(&Bytes::from_static(b"cde")), true);
        assert_eq!(data(&mut rx), b"abcde|end");
        assert_eq!(h.hint.load(Ordering::Relaxed), HINT_NONE);
    }

    #[test]
    fn past_the_cap_the_copy_is_abandoned() {
        let (mut h, mut rx) = handle(4);
        h.feed(0, Some(&Bytes::from_static(b"abc")), false);
        h.feed(3, Some(&Bytes::from_static(b"de")), true);
        assert_eq!(data(&mut rx), b"abc");
        assert!(h.tx.is_none());
        assert_eq!(h.hint.load(Ordering::Relaxed), HINT_TOO_LARGE);
    }
}
