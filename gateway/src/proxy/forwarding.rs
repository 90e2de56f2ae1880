//! Proxy hygiene (RFC 9110 §7.6): forwarding headers, request ids and
//! hop-by-hop fields; the route's rewrites of the upstream request and the
//! timeouts of one upstream try. Pingora already strips hop-by-hop *request* fields
//! (its default `HttpUpstreamRequestPolicy`); responses are cleaned here
//! with the shared list of [`crate::hop_by_hop`].

use std::time::{Duration, Instant};

use filters::headers::HeaderSink;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::upstreams::peer::PeerOptions;
use pingora::{Error, ErrorType};

use super::ctx::RequestCtx;
use crate::runtime::route::Route;

/// Header carrying the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop fields a response to the client keeps: Pingora rewrites
/// `Connection` and the framing (`Transfer-Encoding`) for the client itself.
/// Only a `101 Switching Protocols` keeps the last, `Upgrade`: the client
/// needs it to complete the handshake (RFC 9110 §7.8), and Pingora passes
/// 1xx headers through untouched.
const KEPT_IN_RESPONSE: [HeaderName; 3] = [
    http::header::CONNECTION,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// A request id: kept as the header value it is sent as, so the request,
/// the response and the log share one buffer.
#[derive(Clone, Debug)]
pub struct RequestId(HeaderValue);

impl Default for RequestId {
    fn default() -> Self {
        RequestId(HeaderValue::from_static(""))
    }
}

impl RequestId {
    /// The header value.
    pub fn header(&self) -> HeaderValue {
        self.0.clone()
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        // Only visible ASCII gets in (see `request_id`).
        self.0.to_str().unwrap_or("")
    }
}

/// What the gateway notes of a request as it arrives: the client address,
/// the request id (also put on the request, for the upstream), the trace
/// context and the client's `Host` (for `X-Forwarded-Host`). The client
/// address is the peer's, or one its `X-Forwarded-For` names where the
/// listener (its position and name) trusts it ([`crate::client_address`]).
pub fn take_in(
    session: &mut Session,
    ctx: &mut RequestCtx,
    listener: (usize, &str),
) -> pingora::Result<()> {
    ctx.peer_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let trust = crate::client_address::listener_trust(&ctx.runtime.listeners, listener);
    ctx.client_ip = match (ctx.peer_ip, trust) {
        (Some(peer), Some(trust)) => Some(crate::client_address::resolve(
            session.req_header_mut(),
            peer,
            trust,
        )),
        (peer, _) => peer,
    };
    ctx.request_id = request_id(session.req_header());
    ctx.trace = Some(crate::telemetry::RequestTrace::start(session.req_header()));
    let req = session.req_header_mut();
    req.insert_header(REQUEST_ID, ctx.request_id.header())?;
    Ok(())
}

/// Settles the request's authority (RFC 9112 §3.2) and notes it as the
/// original host: an HTTP/1.1 request carries exactly one `Host`; an
/// absolute-form target's authority (`GET http://a.test/x`, §3.2.2) wins
/// over `Host`, which is rewritten to match, and the target becomes
/// origin-form, so routing and the upstream see one authority. HTTP/2
/// requests keep `:authority` and any `Host` as they are. The error is the
/// 400's reason.
pub fn settle_host(req: &mut RequestHeader, ctx: &mut RequestCtx) -> Result<(), &'static str> {
    let hosts = req.headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 {
        return Err("more than one Host header");
    }
    if req.version != http::Version::HTTP_2 {
        // Pingora keeps an absolute-form target in the raw path (and has
        // already refused one whose authority differs from `Host`).
        let raw = req.raw_path();
        let absolute = (!raw.starts_with(b"/"))
            .then(|| http::Uri::try_from(raw).ok())
            .flatten()
            .filter(|u| u.authority().is_some());
        if let Some(target) = absolute {
            let authority = target.authority().map_or("", |a| a.as_str());
            let host = HeaderValue::from_str(authority).map_err(|_| "bad authority")?;
            let origin_form = target.path_and_query().map_or("/", |pq| pq.as_str());
            let uri = http::Uri::try_from(origin_form).map_err(|_| "bad request target")?;
            req.set_uri(uri);
            req.insert_header(http::header::HOST, host)
                .map_err(|_| "bad authority")?;
        } else if hosts == 0 && req.version == http::Version::HTTP_11 {
            return Err("missing Host header");
        }
    }
    ctx.original_host = req.headers.get(http::header::HOST).cloned().or_else(|| {
        req.uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    Ok(())
}

/// Keeps a client's `x-request-id` when it is sane (visible ASCII, at most
/// 128 bytes), otherwise generates a UUID v4.
pub fn request_id(req: &RequestHeader) -> RequestId {
    match req.headers.get(&REQUEST_ID) {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            RequestId(v.clone())
        }
        _ => RequestId(uuid_v4()),
    }
}

/// Lower-case hex digits of `bytes` into `out` (twice as long).
pub fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 0x0f) as usize];
    }
}

fn uuid_v4() -> HeaderValue {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = [b'-'; 36];
    hex_into(&b[0..4], &mut out[0..8]);
    hex_into(&b[4..6], &mut out[9..13]);
    hex_into(&b[6..8], &mut out[14..18]);
    hex_into(&b[8..10], &mut out[19..23]);
    hex_into(&b[10..16], &mut out[24..36]);
    // Hex digits and dashes are a valid header value.
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// Sets `X-Forwarded-For` (the peer appended), `-Proto` and `-Host` on the upstream request.
pub fn set_forwarded(
    req: &mut RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    https: bool,
    original_host: Option<&HeaderValue>,
) {
    if let Some(ip) = client_ip {
        use std::io::Write;
        // An address is at most 45 bytes: format it on the stack.
        let mut addr = [0u8; 48];
        let mut cursor = std::io::Cursor::new(&mut addr[..]);
        let _ = write!(cursor, "{ip}");
        let len = cursor.position() as usize;
        let addr = &addr[..len];
        // Several lines are one list (RFC 9110 §5.3): all of them are kept,
        // in order, as the client address may be in any. A list with a line
        // that is not visible ASCII is replaced, not extended.
        let lines = req.headers.get_all(&X_FORWARDED_FOR);
        // Sized once: the lines, their separators and the address.
        let size = lines.iter().map(|v| v.len() + 2).sum::<usize>();
        let mut prev: Vec<u8> = Vec::with_capacity(if size == 0 { 0 } else { size + len });
        for v in lines {
            if v.to_str().is_err() {
                prev.clear();
                break;
            }
            let v = v.as_bytes().trim_ascii();
            if !v.is_empty() {
                if !prev.is_empty() {
                    prev.extend_from_slice(b", ");
                }
                prev.extend_from_slice(v);
            }
        }
        let value = if prev.is_empty() {
            HeaderValue::from_bytes(addr)
        } else {
            prev.extend_from_slice(b", ");
            prev.extend_from_slice(addr);
            HeaderValue::from_bytes(&prev)
        };
        if let Ok(v) = value {
            let _ = req.insert_header(X_FORWARDED_FOR, v);
        }
    }
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    let _ = req.insert_header(X_FORWARDED_PROTO, proto);
    if let Some(h) = original_host {
        let _ = req.insert_header(X_FORWARDED_HOST, h.clone());
    }
}

/// Removes hop-by-hop fields ([`crate::hop_by_hop`]) from an upstream
/// response, including those the upstream nominated in its `Connection`
/// header. `Connection` itself and framing are left to Pingora, which
/// rewrites them for the client.
pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    let upgrade = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
    crate::hop_by_hop::strip(resp, &KEPT_IN_RESPONSE[..2 + upgrade as usize]);
}

/// Adapter that lets the filters' header edits work on Pingora's header
/// types (the orphan rule forbids implementing the trait on them directly).
pub struct Headers<'a, T>(pub &'a mut T);

macro_rules! header_sink {
    ($t:ty) => {
        impl HeaderSink for Headers<'_, $t> {
            fn set_header(&mut self, name: &HeaderName, value: &HeaderValue) {
                // Valid names and values cannot fail to insert.
                let _ = self.0.insert_header(name.clone(), value.clone());
            }
            fn add_header(&mut self, name: &HeaderName, value: &HeaderValue) {
                let _ = self.0.append_header(name.clone(), value.clone());
            }
            fn remove_header(&mut self, name: &HeaderName) {
                self.0.remove_header(name);
            }
        }
    };
}

header_sink!(RequestHeader);
header_sink!(ResponseHeader);

/// Puts the request path in normal form ([`filters::path::normalize`]) so
/// that routing, authorization and the upstream all see the same path.
/// A path needing no change is left as it is, without allocating.
pub fn normalize_path(req: &mut RequestHeader) -> Result<(), filters::path::PathError> {
    let normal = match filters::path::normalize(req.uri.path())? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(p) => p,
    };
    let pq = match req.uri.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        req.set_uri(uri);
    }
    Ok(())
}

/// The route's rewrites of the upstream request: path prefix and `Host`.
pub fn rewrite(req: &mut RequestHeader, route: &Route) -> pingora::Result<()> {
    if let Some((from, to)) = &route.prefix_rewrite {
        rewrite_prefix(req, from, to)?;
    }
    if let Some(h) = &route.host_rewrite {
        req.insert_header(http::header::HOST, h.clone())?;
    }
    Ok(())
}

/// Replaces the matched prefix of the path, keeping the query.
fn rewrite_prefix(req: &mut RequestHeader, from: &str, to: &str) -> pingora::Result<()> {
    let Some(rest) = req.uri.path().strip_prefix(from) else {
        return Ok(());
    };
    let mut path = String::with_capacity(to.len() + rest.len() + 1);
    path.push_str(to);
    if to.ends_with('/') && rest.starts_with('/') {
        path.push_str(&rest[1..]);
    } else {
        path.push_str(rest);
    }
    if path.is_empty() {
        path.push('/');
    }
    if let Some(q) = req.uri.query() {
        path.push('?');
        path.push_str(q);
    }
    let uri = http::Uri::try_from(path).map_err(|e| {
        Error::because(
            ErrorType::InternalError,
            "path rewrite produced an invalid URI",
            e,
        )
    })?;
    req.set_uri(uri);
    Ok(())
}

/// The timeouts of one upstream try started at `now`: the cluster's read
/// timeout, shortened to the route's per-try timeout and to what is left
/// of the route's deadline, which bounds connecting too. A deadline that
/// has passed fails the try with 504 before it starts.
pub fn set_try_timeouts(
    o: &mut PeerOptions,
    cluster_read: Duration,
    per_try: Option<Duration>,
    deadline: Option<Instant>,
    now: Instant,
) -> pingora::Result<()> {
    let mut read_timeout = cluster_read;
    if let Some(t) = per_try {
        read_timeout = read_timeout.min(t);
    }
    if let Some(deadline) = deadline {
        let left = deadline.saturating_duration_since(now);
        if left.is_zero() {
            return Error::e_explain(
                ErrorType::HTTPStatus(504),
                "route timeout passed before a try",
            );
        }
        read_timeout = read_timeout.min(left);
        o.connection_timeout = o.connection_timeout.map(|c| c.min(left));
        o.total_connection_timeout = o.total_connection_timeout.map(|c| c.min(left));
    }
    o.read_timeout = Some(read_timeout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_uuid_v4() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let id = request_id(&req);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_ne!(&*id, &*request_id(&req));
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(id.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()));
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'));
    }

    #[test]
    fn sane_client_request_ids_are_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(&*request_id(&req), "abc-123");
        req.insert_header("x-request-id", "a".repeat(300)).unwrap();
        assert_eq!(request_id(&req).len(), 36);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-forwarded-for", "1.2.3.4").unwrap();
        let host = HeaderValue::from_static("example.com");
        set_forwarded(&mut req, Some([127, 0, 0, 1].into()), true, Some(&host));
        assert_eq!(req.headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
        assert_eq!(req.headers["x-forwarded-proto"], "https");
        assert_eq!(req.headers["x-forwarded-host"], "example.com");
    }

    #[test]
    fn forwarded_for_lines_are_joined_before_appending() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("x-forwarded-for", "6.6.6.6").unwrap();
        req.append_header("x-forwarded-for", " ").unwrap();
        req.append_header("x-forwarded-for", "203.0.113.1").unwrap();
        set_forwarded(&mut req, Some([10, 0, 0, 1].into()), false, None);
        let all: Vec<_> = req.headers.get_all("x-forwarded-for").iter().collect();
        assert_eq!(all, ["6.6.6.6, 203.0.113.1, 10.0.0.1"]);
        req.append_header("x-forwarded-for", &b"\xff"[..]).unwrap();
        set_forwarded(&mut req, Some([10, 0, 0, 2].into()), false, None);
        assert_eq!(req.headers["x-forwarded-for"], "10.0.0.2", "replaced");
    }

    #[test]
    fn hop_by_hop_response_fields_are_removed() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("connection", "x-secret, keep-alive")
            .unwrap();
        resp.insert_header("x-secret", "1").unwrap();
        resp.insert_header("keep-alive", "timeout=5").unwrap();
        resp.insert_header("x-kept", "1").unwrap();
        strip_hop_by_hop_response(&mut resp);
        assert!(resp.headers.get("x-secret").is_none());
        assert!(resp.headers.get("keep-alive").is_none());
        assert_eq!(resp.headers["x-kept"], "1");
        assert!(resp.headers.get("connection").is_some(), "left to Pingora");
    }

    #[test]
    fn a_switching_protocols_answer_keeps_its_upgrade() {
        let mut resp = ResponseHeader::build(101, None).unwrap();
        resp.insert_header("connection", "upgrade").unwrap();
        resp.insert_header("upgrade", "websocket").unwrap();
        strip_hop_by_hop_response(&mut resp);
        assert_eq!(resp.headers["upgrade"], "websocket");
        assert_eq!(resp.headers["connection"], "upgrade");
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("upgrade", "h2c").unwrap();
        strip_hop_by_hop_response(&mut resp);
        assert!(resp.headers.get("upgrade").is_none());
    }

    #[test]
    fn prefix_rewrite_keeps_the_rest_and_the_query() {
        let mut req = RequestHeader::build("GET", b"/api/users?x=1", None).unwrap();
        rewrite_prefix(&mut req, "/api", "/v2").unwrap();
        assert_eq!(req.uri.to_string(), "/v2/users?x=1");
        let mut req = RequestHeader::build("GET", b"/api/users", None).unwrap();
        rewrite_prefix(&mut req, "/api/", "/").unwrap();
        assert_eq!(req.uri.path(), "/users");
        let mut req = RequestHeader::build("GET", b"/api", None).unwrap();
        rewrite_prefix(&mut req, "/api", "").unwrap();
        assert_eq!(req.uri.path(), "/");
    }

    fn options(connect: Option<Duration>) -> PeerOptions {
        let mut o = PeerOptions::new();
        o.connection_timeout = connect;
        o.total_connection_timeout = connect;
        o
    }

    #[test]
    fn a_try_reads_for_the_shortest_of_cluster_per_try_and_what_is_left() {
        let s = Duration::from_secs;
        let now = Instant::now();
        let mut o = options(Some(s(5)));
        set_try_timeouts(&mut o, s(30), None, None, now).unwrap();
        assert_eq!(o.read_timeout, Some(s(30)));
        assert_eq!(
            o.connection_timeout,
            Some(s(5)),
            "no deadline: connect untouched"
        );

        let mut o = options(Some(s(5)));
        set_try_timeouts(&mut o, s(30), Some(s(2)), Some(now + s(10)), now).unwrap();
        assert_eq!(o.read_timeout, Some(s(2)));
        assert_eq!(o.connection_timeout, Some(s(5)));

        let mut o = options(Some(s(5)));
        set_try_timeouts(&mut o, s(30), Some(s(2)), Some(now + s(1)), now).unwrap();
        assert_eq!(o.read_timeout, Some(s(1)));
        assert_eq!(o.connection_timeout, Some(s(1)));
        assert_eq!(o.total_connection_timeout, Some(s(1)));

        let mut o = options(None);
        set_try_timeouts(&mut o, s(30), None, Some(now + s(1)), now).unwrap();
        assert_eq!(o.connection_timeout, None, "unset stays unset");
    }

    #[test]
    fn a_passed_deadline_fails_the_try_with_504() {
        let now = Instant::now();
        let mut o = options(None);
        let e =
            set_try_timeouts(&mut o, Duration::from_secs(30), None, Some(now), now).unwrap_err();
        assert_eq!(*e.etype(), ErrorType::HTTPStatus(504));
        assert_eq!(o.read_timeout, None);
    }
}
