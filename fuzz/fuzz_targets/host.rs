//! IP and host spellings and the SSRF decision (`filters::egress::ssrf`,
//! `filters::egress::host`).
//!
//! The input is one or two hosts separated by `\n`. Properties:
//! - an input that reads as an IPv4 address is exactly the address glibc's
//!   `inet_aton` gives for it (after the one trailing dot we strip, as URLs
//!   do); one documented extension: a part that is exactly `0x` is 0 (the
//!   WHATWG URL reading; glibc >= 2.33 refuses it);
//! - an IPv6 literal (bare or in brackets) is what the standard library and
//!   libc's `inet_pton(AF_INET6)` read;
//! - nothing `inet_aton` or the standard library reads as an address ever
//!   passes as a DNS name (the SSRF hole "`0x7f.1` is a name");
//! - a name is lower-case, without a trailing dot, and a valid DNS name;
//! - `classify` of every address equals an independent table built on the
//!   standard library's predicates (`is_private`, `is_loopback`,
//!   `is_unique_local`, ...), embedded IPv4 judged as its IPv4 address; the
//!   first bytes of the input are classified too, so every address is
//!   reachable, not only spellable ones;
//! - `same_host` is symmetric and reflexive on valid hosts; a host pattern
//!   matches the host it was written as.
#![no_main]

use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filters::egress::host::{same_host, Host, HostPattern};
use filters::egress::ssrf::{classify, parse_host_literal, BlockedRange};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    classify_raw(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (a, b) = text.split_once('\n').unwrap_or((text, text));
    for h in [a, b] {
        check_host(h);
    }
    assert_eq!(same_host(a, b), same_host(b, a), "same_host not symmetric");
    if let (Some(Host::Ip(x)), Some(Host::Ip(y))) = (Host::parse(a), Host::parse(b)) {
        assert_eq!(same_host(a, b), x.to_canonical() == y.to_canonical());
    }
    if let Ok(p) = HostPattern::parse(a) {
        if let Some(h) = Host::parse(a) {
            if !matches!(p, HostPattern::Suffix(_)) {
                assert!(p.matches(&h), "pattern {a:?} does not match its own host");
            }
        }
        if let (HostPattern::Suffix(s), Some(h @ Host::Name(_))) = (&p, Host::parse(b)) {
            if let Host::Name(n) = &h {
                let below = n.len() > s.len() && n.ends_with(s.as_str());
                assert_eq!(p.matches(&h), below, "suffix {s:?} vs {n:?}");
            }
        }
    }
});

/// Every address, spelled or not: the first 4 and 16 bytes as addresses.
fn classify_raw(data: &[u8]) {
    if let Some(b) = data.get(..4) {
        let ip = IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
        assert_eq!(classify(ip), reference_classify(ip), "{ip}");
    }
    if let Some(b) = data.get(..16) {
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        let ip = IpAddr::V6(Ipv6Addr::from(a));
        assert_eq!(classify(ip), reference_classify(ip), "{ip}");
    }
}

fn check_host(h: &str) {
    let ours = parse_host_literal(h);
    let aton = inet_aton(h.strip_suffix('.').unwrap_or(h));
    let std_ip = h.parse::<IpAddr>().ok();
    let inner = h.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
    let v6_text = inner.or(h.contains(':').then_some(h));
    match ours {
        Some(IpAddr::V4(v4)) => {
            let want =
                aton.or_else(|| inet_aton(&whatwg_empty_hex(h.strip_suffix('.').unwrap_or(h))));
            assert_eq!(
                Some(v4),
                want,
                "{h:?}: we read {v4}, inet_aton reads {aton:?}"
            );
        }
        Some(IpAddr::V6(v6)) => {
            let text = v6_text.expect("an IPv6 literal has a colon");
            assert_eq!(
                text.parse::<Ipv6Addr>().ok(),
                Some(v6),
                "{h:?}: std disagrees"
            );
            assert_eq!(inet_pton6(text), Some(v6), "{h:?}: inet_pton disagrees");
        }
        None => {
            // What the references read as an address must not be taken for
            // a name (it may be refused outright: glibc also takes
            // `1.2.3.4 junk`, which we refuse).
            if aton.is_some() || std_ip.is_some() {
                assert!(
                    !matches!(Host::parse(h), Some(Host::Name(_))),
                    "{h:?} reads as an address ({aton:?} / {std_ip:?}) but passes as a name"
                );
            }
            if let Some(ip) = std_ip {
                panic!("{h:?}: std reads {ip}, we read no address");
            }
            if let Some(text) = v6_text {
                if let Some(ip) = inet_pton6(text) {
                    panic!("{h:?}: inet_pton reads {ip}, we read no address");
                }
            }
            // glibc accepts trailing whitespace and anything after it.
            if let Some(ip) = aton {
                // C `isspace`: also vertical tab, which Rust's ASCII whitespace lacks.
                let trailing_space = h.bytes().any(|b| b" \t\n\x0b\x0c\r".contains(&b));
                assert!(
                    trailing_space,
                    "{h:?}: inet_aton reads {ip}, we read no address"
                );
            }
        }
    }
    match Host::parse(h) {
        Some(Host::Ip(ip)) => {
            assert_eq!(Some(ip), ours);
            assert_eq!(classify(ip), reference_classify(ip), "{h:?} = {ip}");
        }
        Some(Host::Name(n)) => {
            assert!(!n.is_empty() && n.len() <= 253, "{n:?}");
            assert!(
                !n.ends_with('.') && !n.bytes().any(|b| b.is_ascii_uppercase()),
                "{n:?}"
            );
            assert!(
                n.split('.').all(|l| !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')),
                "{n:?}"
            );
            assert!(
                inet_aton(&n).is_none() && n.parse::<IpAddr>().is_err(),
                "{n:?} is an address"
            );
            assert!(same_host(h, h), "{h:?} is not itself");
        }
        None => assert!(!same_host(h, h), "an invalid host matched itself"),
    }
}

/// `s` with each part that is exactly `0x`/`0X` spelled `0`.
fn whatwg_empty_hex(s: &str) -> String {
    s.split('.')
        .map(|p| if p.eq_ignore_ascii_case("0x") { "0" } else { p })
        .collect::<Vec<_>>()
        .join(".")
}

fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    let c = CString::new(s).ok()?;
    let mut out = libc::in_addr { s_addr: 0 };
    // SAFETY: `c` is a NUL-terminated string and `out` a valid in_addr.
    let ok = unsafe { inet_aton_c(c.as_ptr(), &mut out) };
    (ok != 0).then(|| Ipv4Addr::from(u32::from_be(out.s_addr)))
}

fn inet_pton6(s: &str) -> Option<Ipv6Addr> {
    let c = CString::new(s).ok()?;
    let mut out = [0u8; 16];
    // SAFETY: `c` is NUL-terminated and `out` has room for an in6_addr.
    let ok = unsafe { inet_pton_c(libc::AF_INET6, c.as_ptr(), out.as_mut_ptr().cast()) };
    (ok == 1).then(|| Ipv6Addr::from(out))
}

extern "C" {
    #[link_name = "inet_aton"]
    fn inet_aton_c(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
    #[link_name = "inet_pton"]
    fn inet_pton_c(
        af: libc::c_int,
        src: *const libc::c_char,
        dst: *mut libc::c_void,
    ) -> libc::c_int;
}

/// The module table of `ssrf.rs`, written again from the standard library's
/// predicates where one exists, so a slip in either shows.
fn reference_classify(ip: IpAddr) -> Option<BlockedRange> {
    use BlockedRange::*;
    match ip {
        IpAddr::V4(v4) => reference_v4(v4),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let u = u128::from(v6);
            if v6.is_unspecified() {
                return Some(Unspecified);
            }
            if v6.is_loopback() {
                return Some(Loopback);
            }
            let metadata = ["fd00:ec2::254", "fd00:ec2::23", "fd20:ce::254"];
            if metadata
                .iter()
                .any(|m| m.parse::<Ipv6Addr>().ok() == Some(v6))
            {
                return Some(Metadata);
            }
            // Mapped and compatible (std), SIIT, NAT64, 6to4.
            let embedded = v6
                .to_ipv4()
                .or((s[..6] == [0, 0, 0, 0, 0xffff, 0]).then(|| Ipv4Addr::from(u as u32)))
                .or((s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]).then(|| Ipv4Addr::from(u as u32)))
                .or((s[0] == 0x2002).then(|| Ipv4Addr::from((u >> 80) as u32)));
            if let Some(v4) = embedded {
                return reference_v4(v4);
            }
            let in_net = |net: &str, len: u32| {
                let n = u128::from(net.parse::<Ipv6Addr>().expect("static net"));
                u >> (128 - len) == n >> (128 - len)
            };
            if v6.is_unicast_link_local() {
                Some(LinkLocal)
            } else if in_net("fec0::", 10) {
                Some(Private)
            } else if v6.is_unique_local() {
                Some(UniqueLocal)
            } else if v6.is_multicast() {
                Some(Multicast)
            } else if in_net("2001:db8::", 32)
                || in_net("3fff::", 20)
                || in_net("2001:2::", 48)
                || in_net("2001:10::", 28)
                || !in_net("2000::", 3)
            {
                Some(Reserved)
            } else {
                None
            }
        }
    }
}

fn reference_v4(v4: Ipv4Addr) -> Option<BlockedRange> {
    use BlockedRange::*;
    let o = v4.octets();
    let metadata = [
        [169, 254, 169, 254],
        [169, 254, 170, 2],
        [169, 254, 170, 23],
        [100, 100, 100, 200],
        [168, 63, 129, 16],
    ];
    if metadata.contains(&o) {
        Some(Metadata)
    } else if o[0] == 0 {
        Some(Unspecified)
    } else if v4.is_loopback() {
        Some(Loopback)
    } else if v4.is_private() {
        Some(Private)
    } else if v4.is_link_local() {
        Some(LinkLocal)
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some(SharedAddressSpace)
    } else if v4.is_multicast() {
        Some(Multicast)
    } else if v4.is_broadcast() {
        Some(Broadcast)
    } else if v4.is_documentation()
        || o[..3] == [192, 0, 0]
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || o[..3] == [192, 88, 99]
        || o[0] >= 240
    {
        Some(Reserved)
    } else {
        None
    }
}
