//! The real client address behind load balancers and proxies.
//!
//! - `xff.rs`: which `X-Forwarded-For` entry is the client, given the
//!   listener's trusted proxies (pure logic, per request).
//! - `proxy_protocol.rs`: the PROXY protocol header (v1 and v2) read at the
//!   start of a connection, before TLS or HTTP; its source becomes the
//!   connection's peer address (Pingora's socket digest), so every later
//!   step, egress included, sees it as the TCP peer.
//!
//! The address found feeds `RequestCtx::client_ip` in
//! `proxy::forwarding::take_in`: rate-limit keys, authorization rules,
//! consistent hashing and the access log all read it there.

mod proxy_protocol;
mod xff;

use std::net::IpAddr;

use http::HeaderName;
use pingora::http::RequestHeader;

use crate::runtime::ListenerSpec;

pub use proxy_protocol::{
    decode as decode_proxy_header, listener_service, Decoded, ProxyProtocolApp,
    ProxyProtocolReader, ProxyProtocolSpec, Refused, MAX_HEADER_BYTES as MAX_PROXY_HEADER_BYTES,
};
pub use xff::{parse_entry, XffTrust};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `X-Forwarded-For` trust of the listener at `(index, name)` in a
/// (possibly reloaded) listener list. Found by name when a reload moved
/// it, so another listener's trust is never applied; `None` when the
/// listener trusts nobody or is gone from the config.
pub fn listener_trust<'a>(
    listeners: &'a [ListenerSpec],
    (index, name): (usize, &str),
) -> Option<&'a XffTrust> {
    crate::runtime::find_listener(listeners, (index, name))?
        .client_address
        .as_deref()
}

/// The client address of a request that came from `peer` on a listener
/// with `trust`. When the peer is not trusted, its `X-Forwarded-For` is
/// removed from the request: the gateway appends the peer to what it
/// passes upstream, and a header it did not believe must not read as a
/// chain it vouched for.
pub fn resolve(req: &mut RequestHeader, peer: IpAddr, trust: &XffTrust) -> IpAddr {
    if !trust.trusts(peer) {
        req.remove_header(&X_FORWARDED_FOR);
        return peer;
    }
    let entries = req
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.as_bytes().rsplit(|b| *b == b','));
    trust.client(peer, entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn listener(name: &str, trusted: &str) -> ListenerSpec {
        ListenerSpec {
            name: name.into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            tls: None,
            h2c: false,
            mode: crate::config::ListenerMode::Proxy,
            read_buffer_bytes: 0,
            lean: true,
            client_address: Some(Arc::new(XffTrust {
                trusted: vec![trusted.parse().unwrap()],
                hops: None,
            })),
            proxy_protocol: None,
            redirect: None,
            limits: Default::default(),
        }
    }

    #[test]
    fn a_moved_listener_keeps_its_own_trust() {
        let list = [listener("b", "10.0.0.0/8"), listener("a", "192.0.2.0/24")];
        let a = listener_trust(&list, (1, "a")).unwrap();
        assert!(a.trusts("192.0.2.1".parse().unwrap()));
        // A reload put `b` where `a` was: found by name.
        let a = listener_trust(&list, (0, "a")).unwrap();
        assert!(a.trusts("192.0.2.1".parse().unwrap()));
        assert!(listener_trust(&list, (0, "gone")).is_none());
    }

    #[test]
    fn an_untrusted_peer_loses_its_header() {
        let trust = XffTrust {
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            hops: Some(1),
        };
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("x-forwarded-for", "203.0.113.1").unwrap();
        let from_lb = resolve(&mut req, "10.0.0.5".parse().unwrap(), &trust);
        assert_eq!(from_lb, "203.0.113.1".parse::<IpAddr>().unwrap());
        assert!(req.headers.get("x-forwarded-for").is_some(), "kept");
        let direct = resolve(&mut req, "198.51.100.1".parse().unwrap(), &trust);
        assert_eq!(direct, "198.51.100.1".parse::<IpAddr>().unwrap());
        assert!(req.headers.get("x-forwarded-for").is_none(), "removed");
    }
}
