//! Request body limits: the listener's `limits.max_request_body_bytes`,
//! overridden by the route's `max_request_body_bytes`. Both engines and
//! HTTP/2 go through these hooks, so the limit holds for all of them.
//!
//! A declared `Content-Length` over the limit is answered 413 in
//! `request_filter`, before a try starts; a small body is then read and
//! dropped so the connection stays usable, a large one closes it. A body without a declared
//! length (chunked, HTTP/2 without `content-length`) is checked as it is
//! read, in `request_body_filter`, which runs before a piece is sent
//! upstream: the piece that crosses the limit fails the request instead,
//! so the upstream never gets more than the limit.
//!
//! Per-request cost: nothing without a limit; with one, a `Content-Length`
//! lookup per request and a comparison per body piece.

use http::header::CONTENT_LENGTH;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use crate::runtime::route::Route;

/// The 413's body.
pub const TOO_LARGE_BODY: &str = "request body too large\n";

/// The body limit of a request on `route` (if one matched): the route's,
/// else the listener's.
pub fn body_limit(route: Option<&Route>, listener: Option<u64>) -> Option<u64> {
    route.and_then(|r| r.max_request_body_bytes).or(listener)
}

/// Bodies up to this size are read and dropped after their 413 (by
/// Pingora, when it finishes the request), so the connection stays usable;
/// larger ones close it.
pub const DRAIN_AFTER_413: u64 = 64 * 1024;

/// The declared body length of the request, when it is over `limit`.
pub fn declared_too_large(req: &RequestHeader, limit: u64) -> Option<u64> {
    req.headers
        .get(CONTENT_LENGTH)
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|n| *n > limit)
}

/// Fails the request once more than `limit` body bytes were read from the
/// client (the piece just read included). Upgraded streams (WebSocket) are
/// tunnels, not bodies: not limited.
pub fn check_read(session: &Session, limit: Option<u64>) -> pingora::Result<()> {
    match limit {
        Some(limit) if !session.was_upgraded() && session.body_bytes_read() as u64 > limit => {
            let mut e = Error::explain(ErrorType::HTTPStatus(413), "request body over the limit");
            e.as_down();
            Err(e)
        }
        _ => Ok(()),
    }
}

/// Whether `e` is the refusal [`check_read`] made: never retried, and not
/// an upstream failure.
pub fn is_refusal(e: &Error) -> bool {
    matches!(e.etype(), ErrorType::HTTPStatus(413)) && *e.esource() == ErrorSource::Downstream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_over_the_limit_is_too_large() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        assert_eq!(declared_too_large(&req, 0), None, "no body declared");
        req.insert_header("content-length", "1001").unwrap();
        assert_eq!(declared_too_large(&req, 1000), Some(1001));
        assert_eq!(declared_too_large(&req, 1001), None);
        req.insert_header("content-length", "not a number").unwrap();
        assert_eq!(
            declared_too_large(&req, 0),
            None,
            "left to Pingora's framing checks"
        );
    }

    #[test]
    fn the_route_overrides_the_listener() {
        assert_eq!(body_limit(None, Some(5)), Some(5));
        assert_eq!(body_limit(None, None), None);
    }

    #[test]
    fn only_the_downstream_413_is_a_refusal() {
        let mut down = Error::new(ErrorType::HTTPStatus(413));
        down.as_down();
        assert!(is_refusal(&down));
        let mut up = Error::new(ErrorType::HTTPStatus(413));
        up.as_up();
        assert!(!is_refusal(&up));
    }
}
