//! Proxy hygiene (RFC 9110 §7.6): forwarding headers, request ids and
//! hop-by-hop fields. Pingora already strips hop-by-hop *request* fields
//! (its default `HttpUpstreamRequestPolicy`); responses are cleaned here
//! with the shared list of [`crate::hop_by_hop`].

use filters::headers::HeaderSink;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// Header carrying the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop fields a response to the client keeps: Pingora rewrites
/// `Connection` and the framing (`Transfer-Encoding`) for the client itself.
const KEPT_IN_RESPONSE: [HeaderName; 2] =
    [http::header::CONNECTION, http::header::TRANSFER_ENCODING];
/// A `101 Switching Protocols` also keeps `Upgrade`: the client needs it to
/// complete the handshake (RFC 9110 §7.8), and Pingora passes 1xx headers
/// through untouched.
const KEPT_IN_UPGRADE: [HeaderName; 3] = [
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

/// Sets `X-Forwarded-For` (appended), `-Proto` and `-Host` on the upstream request.
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
        let prev = req.headers.get(&X_FORWARDED_FOR);
        // A previous value that is not visible ASCII is replaced, not extended.
        let value = match prev.filter(|v| v.to_str().is_ok()).map(|v| v.as_bytes()) {
            Some(prev) if !prev.trim_ascii().is_empty() => {
                HeaderValue::from_bytes(&[prev, b", ", addr].concat())
            }
            _ => HeaderValue::from_bytes(addr),
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
    let keep: &[HeaderName] = if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        &KEPT_IN_UPGRADE
    } else {
        &KEPT_IN_RESPONSE
    };
    crate::hop_by_hop::strip(resp, keep);
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
}
