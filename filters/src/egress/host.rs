//! Destination hosts as egress compares them: case-insensitive, without a
//! trailing dot, and either a DNS name or an IP address.
//!
//! A host that reads as an IP literal in any `inet_aton` spelling (see
//! [`parse_host_literal`]) is an address, never a name, so `*.1` cannot
//! match `127.0.0.1` and `0x7f.1` is the address `127.0.0.1`. A name is
//! labels of ASCII letters, digits, `-` and `_`, each 1–63 bytes, at most
//! 253 bytes in all, whose last label is not numeric (`1.2.3.256` is neither
//! an address nor a name, as in the WHATWG URL standard).

use std::borrow::Cow;
use std::net::IpAddr;

use super::ssrf::parse_host_literal;

/// Longest accepted name, without the trailing dot (RFC 1035).
pub const MAX_NAME_LEN: usize = 253;

/// `host` lower-cased and without one trailing dot; borrowed when it already
/// is.
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(h.to_ascii_lowercase())
    } else {
        Cow::Borrowed(h)
    }
}

/// Whether `name` (already normalized) is a valid DNS name in the sense of
/// the module docs.
pub fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !name.split('.').all(label_ok) {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    !is_numeric_label(last)
}

/// A label `inet_aton` would read as a number: all digits, or `0x` and hex.
fn is_numeric_label(l: &str) -> bool {
    let b = l.as_bytes();
    match b {
        [b'0', b'x' | b'X', rest @ ..] => rest.iter().all(u8::is_ascii_hexdigit),
        _ => b.iter().all(u8::is_ascii_digit),
    }
}

/// Whether two hosts name the same destination: the same address, or the
/// same name ignoring case and one trailing dot. Invalid hosts match
/// nothing.
pub fn same_host(a: &str, b: &str) -> bool {
    match (Host::parse(a), Host::parse(b)) {
        (Some(Host::Ip(x)), Some(Host::Ip(y))) => x.to_canonical() == y.to_canonical(),
        (Some(Host::Name(x)), Some(Host::Name(y))) => x == y,
        _ => false,
    }
}

/// A destination host: an address or a normalized name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// Written as an IP literal.
    Ip(IpAddr),
    /// A DNS name, lower-case, without a trailing dot.
    Name(Cow<'a, str>),
}

impl<'a> Host<'a> {
    /// Reads `host` (a CONNECT authority's or URL's host, without the port);
    /// `None` when it is neither an IP literal nor a valid name.
    pub fn parse(host: &'a str) -> Option<Host<'a>> {
        if let Some(ip) = parse_host_literal(host) {
            return Some(Host::Ip(ip));
        }
        let name = normalize_host(host);
        is_dns_name(&name).then_some(Host::Name(name))
    }
}

/// A host pattern of a rule or of `dns.static`: `*` (any host), an exact
/// name, `*.suffix` (any name strictly below `suffix`, at any depth: it
/// matches `a.suffix` and `a.b.suffix` but not `suffix`), or an IP literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every host, names and addresses.
    Any,
    /// One name.
    Exact(String),
    /// Names ending in this, which starts with `.`.
    Suffix(String),
    /// One address (IPv4-mapped IPv6 folded to IPv4).
    Ip(IpAddr),
}

impl HostPattern {
    /// Reads a pattern; the error says what is wrong.
    pub fn parse(pattern: &str) -> Result<HostPattern, String> {
        if pattern == "*" {
            return Ok(HostPattern::Any);
        }
        if pattern.contains('/') {
            return Err(format!("`{pattern}`: a host, not a URL or CIDR"));
        }
        if let Some(suffix) = pattern.strip_prefix("*.") {
            let suffix = normalize_host(suffix);
            if parse_host_literal(&suffix).is_some() || !is_dns_name(&suffix) {
                return Err(format!("`{pattern}`: `*.` must be followed by a DNS name"));
            }
            return Ok(HostPattern::Suffix(format!(".{suffix}")));
        }
        if pattern.contains('*') {
            return Err(format!(
                "`{pattern}`: a wildcard is only allowed as a leading `*.`"
            ));
        }
        match Host::parse(pattern) {
            Some(Host::Ip(ip)) => Ok(HostPattern::Ip(ip.to_canonical())),
            Some(Host::Name(n)) => Ok(HostPattern::Exact(n.into_owned())),
            None if pattern.rsplit_once(':').is_some_and(|(h, p)| {
                !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit())
            }) =>
            {
                Err(format!("`{pattern}`: give the port in `ports`"))
            }
            None => Err(format!("`{pattern}` is not a valid host name or address")),
        }
    }

    /// Whether `host` matches.
    pub fn matches(&self, host: &Host<'_>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(e), Host::Name(n)) => e == n.as_ref(),
            (HostPattern::Suffix(s), Host::Name(n)) => n.len() > s.len() && n.ends_with(s.as_str()),
            (HostPattern::Ip(p), Host::Ip(ip)) => *p == ip.to_canonical(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize_host("Api.Partner.TEST."), "api.partner.test");
        assert!(matches!(normalize_host("a.test"), Cow::Borrowed("a.test")));
        assert!(matches!(normalize_host("a.test."), Cow::Borrowed("a.test")));
    }

    #[test]
    fn names() {
        for good in [
            "a",
            "localhost",
            "api.partner.test",
            "x_y.example",
            "a-b.c-d.e",
            "1.2.3.example",
            "123abc",
            "0xg",
            &format!("{}.com", "a".repeat(63)),
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let long = ["a"; 127].join(".");
        assert_eq!(long.len(), 253);
        assert!(is_dns_name(&long));
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "a.",
            "a b",
            "a/b",
            "a@b",
            "a:b",
            "é.test",
            "1.2.3.256",
            "example.123",
            "example.0x1f",
            &format!("{}.com", "a".repeat(64)),
            &format!("{long}.a"),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("0x7f.1"),
            Some(Host::Ip("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(Host::parse("[::1]"), Some(Host::Ip("::1".parse().unwrap())));
        assert_eq!(
            Host::parse("API.test."),
            Some(Host::Name(Cow::Borrowed("api.test")))
        );
        for bad in ["", "999.1.1.1", "a b", "host:443", "[::1]:443", "x/y"] {
            assert_eq!(Host::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn same_hosts() {
        assert!(same_host("API.partner.test.", "api.partner.test"));
        assert!(same_host("127.1", "127.0.0.1"));
        assert!(same_host("[::ffff:127.0.0.1]", "127.0.0.1"));
        assert!(!same_host("a.test", "b.test"));
        assert!(!same_host("", ""));
        assert!(!same_host("1.1.1.1", "one.one"));
    }

    #[test]
    fn patterns() {
        let m = |p: &str, h: &str| {
            HostPattern::parse(p)
                .unwrap()
                .matches(&Host::parse(h).unwrap())
        };
        assert!(m("api.partner.test", "API.Partner.Test."));
        assert!(!m("api.partner.test", "partner.test"));
        assert!(m("*.partner.test", "api.partner.test"));
        assert!(m("*.partner.test", "a.b.partner.test"));
        assert!(m("*.Partner.Test.", "api.partner.test"));
        assert!(!m("*.partner.test", "partner.test"));
        assert!(!m("*.partner.test", "evilpartner.test"));
        assert!(!m("*.partner.test", "partner.test.evil"));
        assert!(m("*", "anything.test"));
        assert!(m("*", "10.0.0.1"));
        assert!(m("127.0.0.1", "0x7f.1"));
        assert!(m("127.0.0.1", "[::ffff:127.0.0.1]"));
        assert!(m("::ffff:127.0.0.1", "127.0.0.1"));
        assert!(m("[::1]", "::1"));
        assert!(!m("*.test", "[::1]"));
        assert!(!m("localhost", "127.0.0.1"));
    }

    #[test]
    fn bad_patterns() {
        for (bad, msg) in [
            ("", "not a valid host"),
            ("*.", "`*.` must be followed"),
            ("*.1.2", "`*.` must be followed"),
            ("*.0.0.1", "`*.` must be followed"),
            ("a.*.test", "leading `*.`"),
            ("*partner.test", "leading `*.`"),
            ("**.test", "leading `*.`"),
            ("api.test:443", "in `ports`"),
            ("https://api.test", "not a URL"),
            ("10.0.0.0/8", "not a URL or CIDR"),
            ("256.1.1.1", "not a valid host"),
            ("fe80::1%eth0", "not a valid host"),
        ] {
            let e = HostPattern::parse(bad).unwrap_err();
            assert!(e.contains(msg), "{bad}: {e}");
        }
    }
}
