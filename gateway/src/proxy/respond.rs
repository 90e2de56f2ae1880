//! Responses the gateway writes itself: direct responses, 404, and the error
//! pages clients see when proxying fails (502 / 503 / 504, one-line bodies
//! naming the cause).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::ctx::RequestCtx;
use super::forwarding::{Headers, REQUEST_ID};
use crate::runtime::route::DirectResponse;

/// Body of a 503 from a circuit breaker.
pub const OVERLOADED_BODY: &[u8] = b"upstream overloaded\n";

/// `x-gateway-overloaded: true`, marking a circuit-breaker 503.
pub fn overloaded_header() -> (http::HeaderName, http::HeaderValue) {
    (
        http::HeaderName::from_static("x-gateway-overloaded"),
        http::HeaderValue::from_static("true"),
    )
}

/// Writes a complete response with `body`, the request id, and the route's
/// response header edits when a route matched.
pub async fn write(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: Bytes,
    extra: &[(http::HeaderName, http::HeaderValue)],
) -> pingora::Result<()> {
    let request_id = &ctx.request_id;
    let mut resp = ResponseHeader::build(status, Some(4 + extra.len()))?;
    if !extra.iter().any(|(n, _)| n == CONTENT_TYPE) {
        resp.insert_header(CONTENT_TYPE, "text/plain; charset=utf-8")?;
    }
    for (n, v) in extra {
        resp.append_header(n.clone(), v.clone())?;
    }
    resp.insert_header(CONTENT_LENGTH, body.len().to_string())?;
    if !request_id.is_empty() {
        resp.insert_header(REQUEST_ID, request_id.header())?;
    }
    if let Some(r) = ctx.route() {
        r.response_headers.apply(&mut Headers(&mut resp));
    }
    add_cors(session.req_header(), ctx, &mut resp);
    let empty = body.is_empty();
    session.write_response_header(Box::new(resp), empty).await?;
    if !empty {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// The CORS fields of an actual cross-origin request from an allowed
/// origin, on its response (proxied or the gateway's own).
pub fn add_cors(req: &RequestHeader, ctx: &RequestCtx, resp: &mut ResponseHeader) {
    if !ctx.cors {
        return;
    }
    let origin = req.headers.get(http::header::ORIGIN);
    if let (Some(origin), Some(cors)) = (origin, ctx.route().and_then(|r| r.cors.as_ref())) {
        cors.policy.add_response_fields(origin, &mut Headers(resp));
    }
}

/// A redirect's answer: its status and `Location`, no body; `Ok(true)` as
/// `request_filter` returns it.
pub async fn redirect(
    session: &mut Session,
    ctx: &RequestCtx,
    r: &filters::redirect::Redirect,
    https: bool,
) -> pingora::Result<bool> {
    let req = session.req_header();
    let host = ctx
        .original_host
        .as_ref()
        .or_else(|| req.headers.get(http::header::HOST))
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let location = r.location(filters::redirect::Origin {
        https,
        host,
        path: req.uri.path(),
        query: req.uri.query(),
    });
    let Ok(location) = http::HeaderValue::from_str(&location) else {
        return early(
            session,
            ctx,
            400,
            Bytes::from_static(b"bad request: host\n"),
        )
        .await;
    };
    let status = r.status;
    write(
        session,
        ctx,
        status,
        Bytes::new(),
        &[(http::header::LOCATION, location)],
    )
    .await?;
    Ok(true)
}

/// Answers before a route matched (400 for a bad path, 404); `Ok(true)`
/// as `request_filter` returns it.
pub async fn early(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: Bytes,
) -> pingora::Result<bool> {
    write(session, ctx, status, body, &[]).await?;
    Ok(true)
}

/// A route's direct response, with the rate-limit headers of the allowed
/// request; `Ok(true)` as `request_filter` returns it.
pub async fn direct(
    session: &mut Session,
    ctx: &RequestCtx,
    d: &DirectResponse,
) -> pingora::Result<bool> {
    let limit_headers = ctx.ratelimit_headers.as_ref().map(|h| h.pairs());
    let headers: std::borrow::Cow<'_, [_]> = match limit_headers {
        Some(extra) => d
            .headers
            .iter()
            .cloned()
            .chain(extra)
            .collect::<Vec<_>>()
            .into(),
        None => (&d.headers[..]).into(),
    };
    write(session, ctx, d.status, d.body.clone(), &headers).await?;
    Ok(true)
}

/// The error page of a request whose proxying failed (`fail_to_proxy`).
pub async fn failed(session: &mut Session, e: &Error, ctx: &RequestCtx) -> FailToProxy {
    let (code, body) = if ctx.overloaded {
        (503, "upstream overloaded\n")
    } else {
        classify(e)
    };
    // After a failed proxy attempt Pingora closes the downstream
    // connection (whatever `can_reuse_downstream` says), so announce it:
    // `Connection: close` keeps clients from sending on a closing socket.
    session.set_keepalive(None);
    if code > 0 && session.response_written().is_none() {
        let overloaded = [overloaded_header()];
        let extra: &[_] = if ctx.overloaded { &overloaded } else { &[] };
        let body = Bytes::from_static(body.as_bytes());
        if let Err(err) = write(session, ctx, code, body, extra).await {
            tracing::debug!("cannot send the error response: {err}");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// Status and body for a failed request, and the `kind` label of
/// `gateway_upstream_errors_total` for upstream failures.
pub fn classify(e: &Error) -> (u16, &'static str) {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(503)) => (503, "no healthy upstream\n"),
        (ErrorSource::Downstream, HTTPStatus(413)) => (413, super::limits::TOO_LARGE_BODY),
        (_, HTTPStatus(504)) => (504, "upstream request timeout\n"),
        (_, HTTPStatus(c)) => (*c, "request failed\n"),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            (504, "upstream request timeout\n")
        }
        (ErrorSource::Upstream, ConnectTimedout) => {
            (504, "upstream request timeout: connect timed out\n")
        }
        (ErrorSource::Upstream, ConnectRefused) => {
            (502, "upstream connect error: connection refused\n")
        }
        (
            ErrorSource::Upstream,
            TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
            | TLSWantX509Lookup,
        ) => (502, "upstream connect error: TLS handshake failed\n"),
        (
            ErrorSource::Upstream,
            ConnectNoRoute | ConnectError | SocketError | BindError | ConnectProxyFailure,
        ) => (502, "upstream connect error\n"),
        (ErrorSource::Upstream, _) => (502, "upstream reset before response\n"),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => (0, ""),
        (ErrorSource::Downstream, ReadTimedout) => (408, "request timeout\n"),
        (ErrorSource::Downstream, _) => (400, "bad request\n"),
        _ => (500, "internal error\n"),
    }
}

/// The `kind` label for an upstream failure.
pub fn upstream_error_kind(e: &Error) -> &'static str {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout => "timeout",
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError
        | TLSWantX509Lookup => "tls",
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
        | ConnectProxyFailure => "connect",
        HTTPStatus(_) => "status",
        _ => "reset",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_gateway_statuses() {
        let up = |t| {
            let mut e = Error::new(t);
            e.as_up();
            e
        };
        assert_eq!(classify(&up(ErrorType::ConnectRefused)).0, 502);
        assert_eq!(classify(&up(ErrorType::ReadTimedout)).0, 504);
        assert_eq!(classify(&up(ErrorType::InvalidCert)).0, 502);
        assert_eq!(
            classify(&Error::new(ErrorType::HTTPStatus(503))).1,
            "no healthy upstream\n"
        );
        let mut down = Error::new(ErrorType::ConnectionClosed);
        down.as_down();
        assert_eq!(classify(&down).0, 0, "nobody to answer");
    }
}
