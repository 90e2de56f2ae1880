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

pub use proxy_protocol::{
    listener_service, ProxyProtocolApp, ProxyProtocolReader, ProxyProtocolSpec, Refused,
};
pub use xff::{parse_entry, XffTrust};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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
