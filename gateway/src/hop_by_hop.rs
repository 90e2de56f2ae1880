//! Hop-by-hop header fields (RFC 9110 §7.6.1): they describe one
//! connection, so a proxy drops them instead of forwarding them. One list
//! for the three places that build a message for another hop: the primary's
//! response ([`crate::proxy::forwarding::strip_hop_by_hop_response`]), a
//! mirror copy's request (`crate::mirror::copy`) and egress forwarding
//! (`crate::egress::forward`). The primary's *request* is cleaned by
//! Pingora (its default `HttpUpstreamRequestPolicy`), with the same list.
//!
//! Each caller passes the fields it keeps on purpose, with the reason next
//! to it; everything else here is removed, and so is every field the
//! message's own `Connection` header names.

use http::header::{self, HeaderMap, HeaderName};
use pingora::http::{RequestHeader, ResponseHeader};

/// The hop-by-hop fields: those RFC 9110 §7.6.1 names (`Connection`,
/// `Proxy-Connection`, `Keep-Alive`, `TE`, `Transfer-Encoding`, `Upgrade`),
/// plus `Trailer` (a promise about this hop's chunked body) and the two
/// fields addressed to the next proxy only (§11.7).
pub const FIELDS: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of [`FIELDS`].
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    FIELDS.contains(name)
}

/// Fields a `Connection` header cannot make a proxy drop: the message is
/// framed (`Content-Length`, `Transfer-Encoding`) and addressed (`Host`,
/// which egress sets to the checked destination) by them.
const NEVER_NOMINATED: [HeaderName; 3] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
];

/// The tokens of the `Connection` header(s) of `headers`, without
/// [`NEVER_NOMINATED`].
fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !NEVER_NOMINATED
                .iter()
                .any(|n| t.eq_ignore_ascii_case(n.as_str()))
        })
}

/// The fields the `Connection` header(s) of `headers` name
/// ([`NEVER_NOMINATED`] excepted).
pub fn nominated(headers: &HeaderMap) -> impl Iterator<Item = HeaderName> + '_ {
    connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
}

/// Whether the `Connection` header(s) of `headers` name `field`
/// ([`NEVER_NOMINATED`] excepted). Allocates nothing.
pub fn is_nominated(headers: &HeaderMap, field: &HeaderName) -> bool {
    connection_tokens(headers).any(|t| t.eq_ignore_ascii_case(field.as_str()))
}

/// A message whose header fields can be removed (Pingora's request and
/// response headers keep a second map of the names' case, so removing must
/// go through them).
pub trait Fields {
    /// The header fields.
    fn fields(&self) -> &HeaderMap;
    /// Removes every value of `name`.
    fn remove(&mut self, name: &HeaderName);
}

impl Fields for RequestHeader {
    fn fields(&self) -> &HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
}

impl Fields for ResponseHeader {
    fn fields(&self) -> &HeaderMap {
        &self.headers
    }
    fn remove(&mut self, name: &HeaderName) {
        self.remove_header(name);
    }
}

/// Removes the fields `Connection` nominates, then the hop-by-hop
/// [`FIELDS`] except those in `keep`. Nothing is allocated unless the
/// message has a `Connection` header.
pub fn strip(msg: &mut impl Fields, keep: &[HeaderName]) {
    if msg.fields().contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = nominated(msg.fields()).collect();
        for n in &named {
            if !keep.contains(n) {
                msg.remove(n);
            }
        }
    }
    for n in &FIELDS {
        if !keep.contains(n) && msg.fields().contains_key(n) {
            msg.remove(n);
        }
    }
}

/// Reads an upstream's answer on a client session, passing over the
/// interim (1xx) answers of that hop, at most a few: the status of the last
/// one read, below 200 when no final answer came.
pub async fn final_response(
    session: &mut pingora::protocols::http::client::HttpSession,
) -> pingora::Result<u16> {
    let mut status = 0;
    for _ in 0..4 {
        session.read_response_header().await?;
        status = session.response_header().map_or(0, |r| r.status.as_u16());
        if status >= 200 {
            break;
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_the_rfc_9110_union() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop(&HeaderName::from_static(name)), "{name}");
        }
        assert_eq!(FIELDS.len(), 9);
        for end_to_end in ["host", "content-length", "expect", "authorization"] {
            assert!(!is_hop_by_hop(&HeaderName::from_static(end_to_end)));
        }
    }

    #[test]
    fn connection_names_more_fields_but_never_framing() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "X-A, keep-alive".parse().unwrap());
        h.append(
            header::CONNECTION,
            " x-b ,content-length, transfer-encoding".parse().unwrap(),
        );
        let names: Vec<HeaderName> = nominated(&h).collect();
        assert_eq!(names, ["x-a", "keep-alive", "x-b"]);
        assert!(is_nominated(&h, &HeaderName::from_static("x-b")));
        assert!(!is_nominated(&h, &header::CONTENT_LENGTH));
        assert!(!is_nominated(&h, &header::HOST));
        assert!(!is_nominated(
            &HeaderMap::new(),
            &HeaderName::from_static("x-a")
        ));
    }

    #[test]
    fn strip_removes_all_but_what_the_caller_keeps() {
        let mut req = RequestHeader::build("POST", b"/", None).unwrap();
        for (n, v) in [
            ("connection", "x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "1"),
        ] {
            req.append_header(n, v).unwrap();
        }
        strip(&mut req, &[header::TRANSFER_ENCODING]);
        let left: Vec<&str> = req.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["transfer-encoding", "x-kept"]);

        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("keep-alive", "timeout=5").unwrap();
        strip(&mut resp, &[]);
        assert!(resp.headers.is_empty());
    }
}
