//! The copy's request header.

use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

use super::MirrorTarget;
use crate::hop_by_hop;

/// Header marking a mirrored request.
const MIRROR_HEADER: HeaderName = HeaderName::from_static("x-gateway-mirror");

/// Whether a field of the client's request stays off the copy: hop-by-hop
/// fields (as Pingora drops them from the primary's request), those the
/// target strips, `Host` (set below) and `Expect` (the copy's body is sent
/// at once, never after a 100 Continue).
/// `nominates`: the request has a `Connection` header.
fn dropped(strip: &[HeaderName], req: &RequestHeader, nominates: bool, name: &HeaderName) -> bool {
    // The one hop-by-hop field the copy keeps is its framing: the body is
    // teed as it arrives and Pingora's client writes it by this header
    // (chunked when the client's request was).
    (hop_by_hop::is_hop_by_hop(name) && name != http::header::TRANSFER_ENCODING)
        || (nominates && hop_by_hop::is_nominated(&req.headers, name))
        || strip.contains(name)
        || name == http::header::HOST
        || name == http::header::EXPECT
}

/// The copy's request header: same method, path, headers and framing; the
/// host gets `-shadow`; `x-gateway-mirror: true`.
pub(super) fn copy_header(
    target: &MirrorTarget,
    req: &RequestHeader,
    host: Option<&HeaderValue>,
    has_body: bool,
) -> Option<Box<RequestHeader>> {
    let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut h = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(req.headers.len() + 2),
    )
    .ok()?;
    let nominates = req.headers.contains_key(http::header::CONNECTION);
    for (name, value) in req.headers.iter() {
        if dropped(&target.strip, req, nominates, name) {
            continue;
        }
        h.append_header(name.clone(), value.clone()).ok()?;
    }
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        h.insert_header(http::header::HOST, filters::mirror::shadow_host(host))
            .ok()?;
    }
    h.insert_header(MIRROR_HEADER, "true").ok()?;
    let framed = h.headers.contains_key(http::header::CONTENT_LENGTH)
        || h.headers.contains_key(http::header::TRANSFER_ENCODING);
    if has_body && !framed {
        // An HTTP/2 request without content-length: send it chunked.
        h.insert_header(http::header::TRANSFER_ENCODING, "chunked")
            .ok()?;
    }
    Some(Box::new(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_keeps_end_to_end_fields_and_framing_only() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        for (n, v) in [
            ("host", "a.example"),
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("proxy-authorization", "Basic eA=="),
            ("upgrade", "h2c"),
            ("expect", "100-continue"),
            ("transfer-encoding", "chunked"),
            ("x-secret", "s"),
            ("x-kept", "k"),
        ] {
            req.append_header(n, v).unwrap();
        }
        let strip = [HeaderName::from_static("x-secret")];
        let kept: Vec<&str> = req
            .headers
            .keys()
            .filter(|n| !dropped(&strip, &req, true, n))
            .map(|n| n.as_str())
            .collect();
        assert_eq!(kept, ["transfer-encoding", "x-kept"]);
    }
}
