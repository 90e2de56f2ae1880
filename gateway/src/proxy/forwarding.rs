//! Proxy hygiene (RFC 9110 §7.6): forwarding headers, request ids and
//! hop-by-hop fields. Pingora already strips hop-by-hop *request* fields
//! (its default `HttpUpstreamRequestPolicy`); responses are cleaned here.

use filters::headers::HeaderSink;
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

/// Header carrying the request id.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Response fields that only describe the upstream connection.
const HOP_BY_HOP_RESPONSE: [&str; 4] = ["keep-alive", "proxy-connection", "te", "trailer"];

/// Keeps a client's `x-request-id` when it is sane (visible ASCII, at most
/// 128 bytes), otherwise generates a UUID v4.
pub fn request_id(req: &RequestHeader) -> String {
    match req.headers.get(&REQUEST_ID) {
        Some(v)
            if !v.is_empty()
                && v.len() <= 128
                && v.as_bytes().iter().all(|b| b.is_ascii_graphic()) =>
        {
            // Visible ASCII is valid UTF-8.
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        }
        _ => uuid_v4(),
    }
}

fn uuid_v4() -> String {
    let mut b = fastrand::u128(..).to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// Sets `X-Forwarded-For` (appended), `-Proto` and `-Host` on the upstream request.
pub fn set_forwarded(
    req: &mut RequestHeader,
    client_ip: Option<std::net::IpAddr>,
    https: bool,
    original_host: Option<&HeaderValue>,
) {
    if let Some(ip) = client_ip {
        let value = match req
            .headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            let _ = req.insert_header(X_FORWARDED_FOR, v);
        }
    }
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    let _ = req.insert_header(X_FORWARDED_PROTO, proto);
    if let Some(h) = original_host {
        let _ = req.insert_header(X_FORWARDED_HOST, h.clone());
    }
}

/// Removes hop-by-hop fields from an upstream response, including those the
/// upstream nominated in its `Connection` header. `Connection` itself and
/// framing are left to Pingora, which rewrites them for the client.
pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader) {
    let nominated: Vec<HeaderName> = resp
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| n != http::header::TRANSFER_ENCODING && n != http::header::CONTENT_LENGTH)
        .collect();
    for n in nominated {
        resp.remove_header(&n);
    }
    for n in HOP_BY_HOP_RESPONSE {
        if resp.headers.contains_key(n) {
            resp.remove_header(n);
        }
    }
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
        assert_ne!(id, request_id(&req));
    }

    #[test]
    fn sane_client_request_ids_are_kept() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-request-id", "abc-123").unwrap();
        assert_eq!(request_id(&req), "abc-123");
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
    }
}
