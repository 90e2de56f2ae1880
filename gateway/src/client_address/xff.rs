//! Picking the client out of `X-Forwarded-For`.
//!
//! Semantics (documented in the README, `client_address`):
//! - the peer (TCP peer or PROXY source) must be in `trusted_proxies`, or
//!   the peer is the client;
//! - `xff_trusted_hops: N` (Envoy's `xff_num_trusted_hops`): the client is
//!   the N-th entry from the right;
//! - without it, entries are walked from the right, skipping trusted
//!   addresses; the first untrusted one is the client (NGINX
//!   `real_ip_recursive on`), the leftmost one if all are trusted;
//! - a list too short, or a malformed entry reached before the client is
//!   found, leaves the peer as the client.
//!
//! Empty list elements (`a,,b`) are skipped, as RFC 9110 §5.6.1 asks of
//! list recipients. Nothing here allocates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filters::egress::Cidr;

/// Whose `X-Forwarded-For` a listener believes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XffTrust {
    /// Trusted proxies: peers whose header is read, hops skipped in the walk.
    pub trusted: Vec<Cidr>,
    /// `xff_trusted_hops`, if set (at least 1).
    pub hops: Option<u32>,
}

impl XffTrust {
    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client, given the trusted `peer` and the raw `X-Forwarded-For`
    /// list elements from right to left.
    pub fn client<'a>(&self, peer: IpAddr, entries: impl Iterator<Item = &'a [u8]>) -> IpAddr {
        let mut entries = entries.filter(|e| !e.trim_ascii().is_empty());
        match self.hops {
            Some(n) => {
                let mut found = peer;
                for _ in 0..n {
                    match entries.next().and_then(parse_entry) {
                        Some(ip) => found = ip,
                        None => return peer,
                    }
                }
                found
            }
            None => {
                let mut last = peer;
                for e in entries {
                    let Some(ip) = parse_entry(e) else {
                        return peer;
                    };
                    if !self.trusts(ip) {
                        return ip;
                    }
                    last = ip;
                }
                last
            }
        }
    }
}

/// One `X-Forwarded-For` element: an IPv4 or IPv6 address, optionally
/// with a port (`1.2.3.4:80`, `[::1]:80`) or brackets (`[::1]`), with
/// surrounding whitespace. `None` for anything else (names, `unknown`,
/// obfuscated identifiers).
pub fn parse_entry(raw: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(raw.trim_ascii()).ok()?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return v6.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (v4, p) = s.split_once(':')?;
    if !port(p) {
        return None;
    }
    v4.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn port(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && s.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(cidrs: &[&str], hops: Option<u32>) -> XffTrust {
        XffTrust {
            trusted: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            hops,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client for `xff` (one header value) from a trusted peer 10.0.0.1.
    fn client(t: &XffTrust, xff: &str) -> IpAddr {
        t.client(ip("10.0.0.1"), xff.as_bytes().rsplit(|b| *b == b','))
    }

    #[test]
    fn hops_take_the_nth_entry_from_the_right() {
        let t = trust(&["10.0.0.0/8"], Some(1));
        assert_eq!(client(&t, "203.0.113.9"), ip("203.0.113.9"));
        assert_eq!(client(&t, "6.6.6.6, 203.0.113.9"), ip("203.0.113.9"));
        let t = trust(&["10.0.0.0/8"], Some(2));
        assert_eq!(
            client(&t, "6.6.6.6, 203.0.113.9, 192.0.2.1"),
            ip("203.0.113.9")
        );
        // Entries on the way are not checked against the trusted list.
        assert_eq!(client(&t, "203.0.113.9, 8.8.8.8"), ip("203.0.113.9"));
    }

    #[test]
    fn too_short_a_list_or_a_bad_entry_leaves_the_peer() {
        let t = trust(&["10.0.0.0/8"], Some(2));
        assert_eq!(client(&t, "203.0.113.9"), ip("10.0.0.1"));
        assert_eq!(client(&t, ""), ip("10.0.0.1"));
        assert_eq!(client(&t, "203.0.113.9, garbage"), ip("10.0.0.1"));
        assert_eq!(client(&t, "unknown, 192.0.2.1"), ip("10.0.0.1"));
        // A bad entry beyond the client is never looked at.
        assert_eq!(client(&t, "x, 203.0.113.9, 192.0.2.1"), ip("203.0.113.9"));
    }

    #[test]
    fn without_hops_trusted_entries_are_skipped_from_the_right() {
        let t = trust(&["10.0.0.0/8", "192.0.2.0/24"], None);
        assert_eq!(
            client(&t, "6.6.6.6, 203.0.113.9, 192.0.2.7, 10.1.1.1"),
            ip("203.0.113.9")
        );
        assert_eq!(client(&t, "203.0.113.9"), ip("203.0.113.9"));
        // All trusted: the leftmost is the client.
        assert_eq!(client(&t, "10.9.9.9, 192.0.2.7"), ip("10.9.9.9"));
        // No header: the peer.
        assert_eq!(client(&t, ""), ip("10.0.0.1"));
        // Malformed before the client is found: the peer.
        assert_eq!(client(&t, "203.0.113.9, bogus, 10.1.1.1"), ip("10.0.0.1"));
        assert_eq!(client(&t, "bogus, 203.0.113.9"), ip("203.0.113.9"));
    }

    #[test]
    fn several_header_lines_read_as_one_list() {
        let t = trust(&["10.0.0.0/8"], Some(2));
        let lines: [&[u8]; 2] = [b"6.6.6.6, 203.0.113.9", b"192.0.2.1"];
        let entries = lines.iter().rev().flat_map(|v| v.rsplit(|b| *b == b','));
        assert_eq!(t.client(ip("10.0.0.1"), entries), ip("203.0.113.9"));
        // Empty elements are skipped.
        assert_eq!(client(&t, "203.0.113.9,, 192.0.2.1 ,"), ip("203.0.113.9"));
    }

    #[test]
    fn entries_may_carry_ports_and_brackets_but_nothing_else() {
        assert_eq!(parse_entry(b" 1.2.3.4 "), Some(ip("1.2.3.4")));
        assert_eq!(parse_entry(b"1.2.3.4:8080"), Some(ip("1.2.3.4")));
        assert_eq!(parse_entry(b"2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"[2001:db8::1]"), Some(ip("2001:db8::1")));
        assert_eq!(parse_entry(b"[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        for bad in [
            &b"unknown"[..],
            b"1.2.3.4:",
            b"1.2.3.4:99999",
            b"1.2.3",
            b"[::1]x",
            b"[::1",
            b"[1.2.3.4]",
            b"\xff\xfe",
            b"example.com",
            b"",
        ] {
            assert_eq!(parse_entry(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn mapped_addresses_match_ipv4_cidrs() {
        let t = trust(&["10.0.0.0/8"], None);
        assert!(t.trusts(ip("::ffff:10.1.2.3")));
        assert!(!t.trusts(ip("11.0.0.1")));
    }
}
