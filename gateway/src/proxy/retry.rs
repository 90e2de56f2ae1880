//! Retry decisions: pure functions of the route's policy, the tries so far
//! and what failed. Retries are opt-in per route (`retries:`), except the
//! one Pingora makes on a stale pooled connection. A "yes" here is only
//! half of it: the hook then takes a slot of the cluster's retry budget
//! ([`super::ctx::RequestCtx::take_retry_slot`]), and only for a "yes".

use http::Method;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType, RetryType};

use crate::runtime::route::RetryRt;

/// Methods that can be replayed once the request has reached the upstream
/// (RFC 9110 §9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// What of the downstream side decides whether a request may be sent again.
#[derive(Clone, Copy)]
pub struct Replay<'a> {
    /// The request method.
    pub method: &'a Method,
    /// A response header already went to the client.
    pub answered: bool,
    /// The body outgrew Pingora's retry buffer (64 KiB): it cannot be replayed.
    pub body_truncated: bool,
}

impl Replay<'_> {
    /// The request of `session` as it stands.
    pub fn of(session: &Session) -> Replay<'_> {
        Replay {
            method: &session.req_header().method,
            answered: session.response_written().is_some(),
            body_truncated: session.retry_buffer_truncated(),
        }
    }
}

/// An upstream answered `status` (`upstream_response_filter`): turn it
/// into another try? Only statuses the policy names, within its attempts,
/// for idempotent methods, before the client saw anything.
pub fn on_status(
    policy: Option<&RetryRt>,
    tries: u32,
    status: u16,
    method: &Method,
    answered: bool,
) -> bool {
    let wanted = policy
        .is_some_and(|p| p.on_status.contains(&status) && tries < p.attempts && idempotent(method));
    wanted && !answered
}

/// The connection could not be made (`fail_to_connect`). Nothing reached
/// the upstream: safe to retry any method.
pub fn on_connect_failure(policy: Option<&RetryRt>, tries: u32) -> bool {
    policy.is_some_and(|p| p.on_connect_failure && tries < p.attempts)
}

/// Proxying failed after the connection was made (`error_while_proxy`).
/// The request may have reached the upstream: replay only idempotent
/// requests whose body is still held, and never once the client has seen
/// a response. Then the policy decides (`on_reset`, or a timed-out try
/// when it retries 504), or the request went out on a pooled connection
/// the upstream had already closed: Pingora's default is to retry that
/// once on a fresh one; kept.
pub fn on_proxy_error(
    policy: Option<&RetryRt>,
    tries: u32,
    e: &Error,
    client_reused: bool,
    req: Replay<'_>,
) -> bool {
    let replayable = *e.esource() == ErrorSource::Upstream
        && !req.answered
        && idempotent(req.method)
        && !req.body_truncated;
    let timed_out = matches!(
        e.etype(),
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
    );
    let policy_allows = policy.is_some_and(|p| {
        tries < p.attempts && (p.on_reset || (timed_out && p.on_status.contains(&504)))
    });
    let stale_pooled = matches!(e.retry, RetryType::ReusedOnly) && client_reused && tries < 2;
    replayable && (policy_allows || stale_pooled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryCondition::{ConnectFailure, Reset};
    use crate::config::RetryOn::{self, Named, Status};

    fn policy(attempts: u32, on: &[RetryOn]) -> RetryRt {
        RetryRt::new(attempts, None, on)
    }

    const GET: Replay<'static> = Replay {
        method: &Method::GET,
        answered: false,
        body_truncated: false,
    };

    fn upstream(etype: ErrorType) -> Box<Error> {
        Error::new_up(etype)
    }

    #[test]
    fn only_safe_methods_are_replayed() {
        assert!(idempotent(&Method::GET));
        assert!(idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST));
        assert!(!idempotent(&Method::PATCH));
    }

    #[test]
    fn a_listed_status_is_retried_within_the_attempts() {
        let p = policy(3, &[Status(503)]);
        assert!(on_status(Some(&p), 1, 503, &Method::GET, false));
        assert!(on_status(Some(&p), 2, 503, &Method::GET, false));
        assert!(
            !on_status(Some(&p), 3, 503, &Method::GET, false),
            "attempts used up"
        );
        assert!(
            !on_status(Some(&p), 1, 502, &Method::GET, false),
            "status not listed"
        );
        assert!(
            !on_status(Some(&p), 1, 503, &Method::POST, false),
            "not idempotent"
        );
        assert!(
            !on_status(Some(&p), 1, 503, &Method::GET, true),
            "client answered"
        );
        assert!(!on_status(None, 1, 503, &Method::GET, false), "no policy");
    }

    #[test]
    fn connect_failures_are_retried_for_any_method_when_asked() {
        let p = policy(2, &[Named(ConnectFailure)]);
        assert!(on_connect_failure(Some(&p), 1));
        assert!(!on_connect_failure(Some(&p), 2));
        assert!(!on_connect_failure(Some(&policy(2, &[Named(Reset)])), 1));
        assert!(!on_connect_failure(None, 1));
    }

    #[test]
    fn resets_and_timeouts_follow_the_policy() {
        let reset = policy(3, &[Named(Reset)]);
        let e = upstream(ErrorType::ConnectionClosed);
        assert!(on_proxy_error(Some(&reset), 1, &e, false, GET));
        assert!(!on_proxy_error(Some(&reset), 3, &e, false, GET));
        assert!(!on_proxy_error(None, 1, &e, false, GET));
        // A timed-out try counts as a 504 when the policy retries 504.
        let t = upstream(ErrorType::ReadTimedout);
        assert!(on_proxy_error(
            Some(&policy(2, &[Status(504)])),
            1,
            &t,
            false,
            GET
        ));
        assert!(!on_proxy_error(
            Some(&policy(2, &[Status(503)])),
            1,
            &t,
            false,
            GET
        ));
    }

    #[test]
    fn a_request_that_cannot_be_replayed_is_never_retried() {
        let reset = policy(3, &[Named(Reset)]);
        let e = upstream(ErrorType::ConnectionClosed);
        let post = Replay {
            method: &Method::POST,
            ..GET
        };
        let answered = Replay {
            answered: true,
            ..GET
        };
        let truncated = Replay {
            body_truncated: true,
            ..GET
        };
        for req in [post, answered, truncated] {
            assert!(!on_proxy_error(Some(&reset), 1, &e, false, req));
        }
        let downstream = Error::new_down(ErrorType::ConnectionClosed);
        assert!(!on_proxy_error(Some(&reset), 1, &downstream, false, GET));
    }

    #[test]
    fn a_stale_pooled_connection_is_retried_once_without_a_policy() {
        let mut e = upstream(ErrorType::ConnectionClosed);
        e.retry = RetryType::ReusedOnly;
        assert!(on_proxy_error(None, 1, &e, true, GET));
        assert!(!on_proxy_error(None, 2, &e, true, GET), "only once");
        assert!(!on_proxy_error(None, 1, &e, false, GET), "fresh connection");
    }
}
