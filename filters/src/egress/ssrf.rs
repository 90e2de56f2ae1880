//! Address safety: which destination addresses the gateway refuses to
//! connect to (server-side request forgery protection).
//!
//! The gateway checks the address it is about to connect to — after DNS, the
//! one it will really dial — with [`check`]. A host written as an IP literal
//! is read with [`parse_host_literal`], which knows every spelling libc's
//! `inet_aton` accepts (`http://2130706433/`, `0x7f.1`, `0177.0.0.1`), so no
//! spelling of a loopback address slips past as a "name".
//!
//! Refused ([`classify`]), by [`BlockedRange`]:
//!
//! | range | addresses |
//! |---|---|
//! | unspecified | `0.0.0.0/8`, `::` |
//! | loopback | `127.0.0.0/8`, `::1` |
//! | private | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fec0::/10` (deprecated site-local) |
//! | link-local | `169.254.0.0/16`, `fe80::/10` |
//! | metadata | cloud instance metadata and agents: `169.254.169.254` (AWS, GCP, Azure, OCI, …), `169.254.170.2` (ECS), `169.254.170.23` and `fd00:ec2::23` (EKS Pod Identity), `fd00:ec2::254` (AWS IPv6), `fd20:ce::254` (GCP IPv6), `100.100.100.200` (Alibaba), `168.63.129.16` (Azure WireServer) |
//! | shared address space | `100.64.0.0/10` (carrier-grade NAT) |
//! | unique-local | `fc00::/7` |
//! | multicast | `224.0.0.0/4`, `ff00::/8` |
//! | broadcast | `255.255.255.255` |
//! | reserved | `240.0.0.0/4`; IETF protocol assignments `192.0.0.0/24`; documentation `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`; benchmarking `198.18.0.0/15`, `2001:2::/48`; 6to4 relay `192.88.99.0/24`; ORCHID `2001:10::/28`; every IPv6 address outside global unicast `2000::/3` not named above (such as discard-only `100::/64`, local-use NAT64 `64:ff9b:1::/48`, the rest of `::/8`) |
//!
//! IPv6 addresses that carry an IPv4 address are judged by it: IPv4-mapped
//! `::ffff:a.b.c.d`, SIIT `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//! NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:AABB:CCDD::/48`. Teredo
//! (`2001::/32`) is not decoded: it needs a Teredo relay the gateway hosts
//! do not run.
//!
//! A rule's `allow_cidrs` permits blocked addresses inside them ([`check`]),
//! except that a metadata address is only permitted by a CIDR naming exactly
//! that one address (`169.254.169.254/32`), so allowing `169.254.0.0/16` for
//! a link-local service does not open the metadata endpoint too.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use super::cidr::{Cidr, CidrError};

/// Why a destination address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockedRange {
    /// `0.0.0.0/8` or `::` (on Linux, connecting there reaches localhost).
    Unspecified,
    /// `127.0.0.0/8` or `::1`.
    Loopback,
    /// RFC 1918 private networks, and deprecated IPv6 site-local.
    Private,
    /// `169.254.0.0/16` or `fe80::/10`.
    LinkLocal,
    /// A cloud instance metadata or credential service.
    Metadata,
    /// `100.64.0.0/10`, carrier-grade NAT.
    SharedAddressSpace,
    /// `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4` or `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Reserved, documentation, benchmarking and other special ranges.
    Reserved,
}

impl BlockedRange {
    /// A short snake-case name, for metric labels and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BlockedRange::Unspecified => "unspecified",
            BlockedRange::Loopback => "loopback",
            BlockedRange::Private => "private",
            BlockedRange::LinkLocal => "link_local",
            BlockedRange::Metadata => "metadata",
            BlockedRange::SharedAddressSpace => "shared_address_space",
            BlockedRange::UniqueLocal => "unique_local",
            BlockedRange::Multicast => "multicast",
            BlockedRange::Broadcast => "broadcast",
            BlockedRange::Reserved => "reserved",
        }
    }
}

impl fmt::Display for BlockedRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockedRange::Unspecified => "unspecified address",
            BlockedRange::Loopback => "loopback address",
            BlockedRange::Private => "private address",
            BlockedRange::LinkLocal => "link-local address",
            BlockedRange::Metadata => "cloud metadata address",
            BlockedRange::SharedAddressSpace => "shared (carrier-grade NAT) address",
            BlockedRange::UniqueLocal => "unique-local address",
            BlockedRange::Multicast => "multicast address",
            BlockedRange::Broadcast => "broadcast address",
            BlockedRange::Reserved => "reserved address",
        })
    }
}

/// Reads `host` as an IP address if it is written as one.
///
/// IPv4 in every form `inet_aton` accepts: one to four parts separated by
/// `.`, each decimal, octal (leading `0`) or hex (`0x`), the last part
/// filling the remaining bytes (`127.1`, `127.0.1`, `2130706433`,
/// `0x7f000001`, `0177.0.0.1`, `0x7f.0.0.1`); one trailing `.` is ignored,
/// as in URLs. IPv6 bare or in brackets (`::1`, `[::ffff:127.0.0.1]`); a
/// zone id (`fe80::1%eth0`) is refused. `None` for anything else, including
/// an out-of-range part (`256.0.0.1`); such a host is not a valid name either
/// (see [`super::host`]), so it cannot be mistaken for one.
pub fn parse_host_literal(host: &str) -> Option<IpAddr> {
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    if host.contains(':') {
        return host.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    parse_ipv4_aton(host).map(IpAddr::V4)
}

/// `inet_aton`'s IPv4 forms, plus one trailing dot.
fn parse_ipv4_aton(s: &str) -> Option<Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut parts = [0u32; 4];
    let mut n = 0;
    for part in s.split('.') {
        *parts.get_mut(n)? = parse_aton_part(part)?;
        n += 1;
    }
    let [a, b, c, d] = parts;
    let value = match n {
        1 => a,
        2 if a <= 0xff && b <= 0xff_ffff => a << 24 | b,
        3 if a <= 0xff && b <= 0xff && c <= 0xffff => a << 24 | b << 16 | c,
        4 if parts.iter().all(|&p| p <= 0xff) => a << 24 | b << 16 | c << 8 | d,
        _ => return None,
    };
    Some(Ipv4Addr::from(value))
}

/// One part: `0x…` hex (`0x` alone is 0, as in glibc), `0…` octal, else
/// decimal; at most `u32::MAX`.
fn parse_aton_part(p: &str) -> Option<u32> {
    let b = p.as_bytes();
    let (radix, digits) = match b {
        [] => return None,
        [b'0', b'x' | b'X', rest @ ..] => (16, rest),
        [b'0', rest @ ..] => (8, rest),
        _ => (10, b),
    };
    let mut value: u32 = 0;
    for &c in digits {
        let d = char::from(c).to_digit(radix)?;
        value = value.checked_mul(radix)?.checked_add(d)?;
    }
    Some(value)
}

const METADATA_V4: [Ipv4Addr; 5] = [
    Ipv4Addr::new(169, 254, 169, 254),
    Ipv4Addr::new(169, 254, 170, 2),
    Ipv4Addr::new(169, 254, 170, 23),
    Ipv4Addr::new(100, 100, 100, 200),
    Ipv4Addr::new(168, 63, 129, 16),
];

const METADATA_V6: [Ipv6Addr; 3] = [
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
    Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
    Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254),
];

/// Blocked IPv4 networks as (network, prefix length, range); the first
/// match wins, so narrower entries come before wider ones.
const V4_RANGES: &[(u32, u8, BlockedRange)] = &[
    (0x0000_0000, 8, BlockedRange::Unspecified),
    (0x7f00_0000, 8, BlockedRange::Loopback),
    (0x0a00_0000, 8, BlockedRange::Private),
    (0xac10_0000, 12, BlockedRange::Private),
    (0xc0a8_0000, 16, BlockedRange::Private),
    (0xa9fe_0000, 16, BlockedRange::LinkLocal),
    (0x6440_0000, 10, BlockedRange::SharedAddressSpace),
    (0xc000_0000, 24, BlockedRange::Reserved),
    (0xc000_0200, 24, BlockedRange::Reserved),
    (0xc633_6400, 24, BlockedRange::Reserved),
    (0xcb00_7100, 24, BlockedRange::Reserved),
    (0xc612_0000, 15, BlockedRange::Reserved),
    (0xc058_6300, 24, BlockedRange::Reserved),
    (0xe000_0000, 4, BlockedRange::Multicast),
    (0xffff_ffff, 32, BlockedRange::Broadcast),
    (0xf000_0000, 4, BlockedRange::Reserved),
];

/// Blocked IPv6 networks, after the special cases of [`classify`] and
/// before its catch-all (outside `2000::/3` is reserved).
const V6_RANGES: &[(u128, u8, BlockedRange)] = &[
    (0xfe80 << 112, 10, BlockedRange::LinkLocal),
    (0xfec0 << 112, 10, BlockedRange::Private),
    (0xfc00 << 112, 7, BlockedRange::UniqueLocal),
    (0xff00 << 112, 8, BlockedRange::Multicast),
    (0x2001_0db8 << 96, 32, BlockedRange::Reserved),
    (0x3fff << 112, 20, BlockedRange::Reserved),
    (0x2001_0002 << 96, 48, BlockedRange::Reserved),
    (0x2001_0010 << 96, 28, BlockedRange::Reserved),
];

fn in_net<T>(addr: T, net: T, prefix: u8, bits: u32) -> bool
where
    T: Copy + std::ops::Shl<u32, Output = T> + std::ops::BitAnd<Output = T> + PartialEq,
    T: From<u8> + std::ops::Not<Output = T>,
{
    if prefix == 0 {
        return true;
    }
    let mask = !T::from(0u8) << (bits - u32::from(prefix));
    addr & mask == net
}

/// Why `ip` is refused as a destination, or `None` for an address the
/// gateway may connect to. See the module docs for the ranges.
pub fn classify(ip: IpAddr) -> Option<BlockedRange> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockedRange> {
    if METADATA_V4.contains(&ip) {
        return Some(BlockedRange::Metadata);
    }
    let addr = u32::from(ip);
    V4_RANGES
        .iter()
        .find(|&&(net, prefix, _)| in_net(addr, net, prefix, 32))
        .map(|&(_, _, range)| range)
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockedRange> {
    if ip.is_unspecified() {
        return Some(BlockedRange::Unspecified);
    }
    if ip.is_loopback() {
        return Some(BlockedRange::Loopback);
    }
    if METADATA_V6.contains(&ip) {
        return Some(BlockedRange::Metadata);
    }
    if let Some(v4) = embedded_ipv4(ip) {
        return classify_v4(v4);
    }
    let addr = u128::from(ip);
    let listed = V6_RANGES
        .iter()
        .find(|&&(net, prefix, _)| in_net(addr, net, prefix, 128))
        .map(|&(_, _, range)| range);
    // Only 2000::/3 is allocated for global unicast.
    listed.or((addr >> 125 != 1).then_some(BlockedRange::Reserved))
}

/// The IPv4 address an IPv6 address carries: mapped `::ffff:0:0/96`, SIIT
/// `::ffff:0:0:0/96`, compatible `::/96`, NAT64 `64:ff9b::/96`, or 6to4
/// `2002::/16` (bits 16..48).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let addr = u128::from(ip);
    let low = Ipv4Addr::from(addr as u32);
    let top96 = addr >> 32;
    match top96 {
        0xffff | 0xffff_0000 | 0 => Some(low),
        _ if top96 == 0x0064_ff9b << 64 => Some(low),
        _ if addr >> 112 == 0x2002 => Some(Ipv4Addr::from((addr >> 80) as u32)),
        _ => None,
    }
}

/// `Ok` when the gateway may connect to `ip`: it is not in a blocked range,
/// or one of `allow_cidrs` contains it (for a metadata address, only a
/// single-address CIDR naming it). Otherwise the range that blocks it.
pub fn check(ip: IpAddr, allow_cidrs: &[Cidr]) -> Result<(), BlockedRange> {
    let Some(range) = classify(ip) else {
        return Ok(());
    };
    let permitted =
        |c: &Cidr| c.contains(ip) && (range != BlockedRange::Metadata || c.is_single_address());
    if allow_cidrs.iter().any(permitted) {
        Ok(())
    } else {
        Err(range)
    }
}

#[cfg(test)]
mod tests {
    use super::BlockedRange::*;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn literal_spellings_of_ipv4() {
        for (text, want) in [
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1.", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0X7F000001", "127.0.0.1"),
            ("017700000001", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0177.0.0.01", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("0x7f.0x0.0x0.0x1", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("127.0x1", "127.0.0.1"),
            ("0177.1", "127.0.0.1"),
            ("127.65536", "127.1.0.0"),
            ("10.0.65535", "10.0.255.255"),
            ("0", "0.0.0.0"),
            ("0x", "0.0.0.0"),
            ("00", "0.0.0.0"),
            ("0.0", "0.0.0.0"),
            ("4294967295", "255.255.255.255"),
            ("0xffffffff", "255.255.255.255"),
            ("037777777777", "255.255.255.255"),
            ("169.254.43518", "169.254.169.254"),
            ("0xa9fea9fe", "169.254.169.254"),
            ("0251.0376.0251.0376", "169.254.169.254"),
            ("0x00000000000a.1", "10.0.0.1"),
            ("00000000000000000000000012.1", "10.0.0.1"),
            ("8.8.8.8", "8.8.8.8"),
            ("1", "0.0.0.1"),
        ] {
            assert_eq!(parse_host_literal(text), Some(ip(want)), "{text}");
        }
    }

    #[test]
    fn literal_spellings_of_ipv6() {
        for (text, want) in [
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::]", "::"),
            ("[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
            ("::ffff:7f00:1", "::ffff:127.0.0.1"),
            ("[0:0:0:0:0:0:0:1]", "::1"),
            ("[FE80::1]", "fe80::1"),
            ("[64:ff9b::a9fe:a9fe]", "64:ff9b::169.254.169.254"),
        ] {
            assert_eq!(parse_host_literal(text), Some(ip(want)), "{text}");
        }
    }

    #[test]
    fn not_literals() {
        for text in [
            "",
            ".",
            "..",
            "example.com",
            "127.0.0.1..",
            ".127.0.0.1",
            "127..0.1",
            "1.2.3.4.5",
            "256.0.0.1",
            "1.256.0.1",
            "1.2.256.1",
            "1.2.3.256",
            "1.16777216",
            "1.2.65536",
            "4294967296",
            "0x100000000",
            "99999999999999999999",
            "08",
            "0.08.0.1",
            "09.1",
            "0xg",
            "0x7f.0.0.1x",
            "127.0.0.1 ",
            " 127.0.0.1",
            "127.0.0.1\0",
            "+1",
            "-1",
            "1e3",
            "[::1",
            "::1]",
            "[127.0.0.1]",
            "[fe80::1%eth0]",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
            "[::1]:443",
            "127.0.0.1:80",
            ":::",
            "1::2::3",
            "xn--127.0.0.1",
            "١٢٧.0.0.1",
        ] {
            assert_eq!(parse_host_literal(text), None, "{text:?}");
        }
    }

    #[test]
    fn classify_table() {
        let table: &[(&str, Option<BlockedRange>)] = &[
            // IPv4 public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("9.255.255.255", None),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.32.0.0", None),
            ("192.0.1.1", None),
            ("192.167.255.255", None),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.20.0.0", None),
            ("223.255.255.255", None),
            // IPv4 blocked.
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.255", Some(Unspecified)),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.0.1", Some(Private)),
            ("192.168.255.255", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.253", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.254.170.2", Some(Metadata)),
            ("169.254.170.23", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("100.64.0.0", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.2.1", Some(Reserved)),
            ("198.51.100.1", Some(Reserved)),
            ("203.0.113.1", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("198.19.255.255", Some(Reserved)),
            ("192.88.99.1", Some(Reserved)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            // IPv6 public.
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("2001:db7:ffff::1", None),
            ("2001:1::1", None),
            ("2fff:ffff::1", None),
            ("3ffe::1", None),
            ("fbff::1", Some(Reserved)),
            ("fe7f::1", Some(Reserved)),
            ("feff::1", Some(Private)),
            ("1::1", Some(Reserved)),
            ("4000::1", Some(Reserved)),
            ("1fff::1", Some(Reserved)),
            ("3fff::1", Some(Reserved)),
            ("100:0:0:1::", Some(Reserved)),
            // IPv6 blocked.
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fe80::1", Some(LinkLocal)),
            ("febf:ffff::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("fc00::1", Some(UniqueLocal)),
            ("fdff:ffff::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fd00:ec2::23", Some(Metadata)),
            ("fd20:ce::254", Some(Metadata)),
            ("fd00:ec2::253", Some(UniqueLocal)),
            ("ff02::1", Some(Multicast)),
            ("ff05::1:3", Some(Multicast)),
            ("2001:db8::1", Some(Reserved)),
            ("2001:2::1", Some(Reserved)),
            ("2001:10::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("64:ff9b:1::1", Some(Reserved)),
            ("::2:0:0:1", Some(Reserved)),
            ("ff:ffff::", Some(Reserved)),
            // IPv6 with an embedded IPv4.
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.1.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:8.8.8.8", None),
            ("::ffff:0:127.0.0.1", Some(Loopback)),
            ("::ffff:0:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::10.0.0.1", Some(Private)),
            ("::0.0.0.2", Some(Unspecified)),
            ("::8.8.8.8", None),
            ("64:ff9b::127.0.0.1", Some(Loopback)),
            ("64:ff9b::a9fe:a9fe", Some(Metadata)),
            ("64:ff9b::192.168.1.1", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a9fe:a9fe::1", Some(Metadata)),
            ("2002:c0a8:101::", Some(Private)),
            ("2002:808:808::1", None),
        ];
        for &(addr, want) in table {
            assert_eq!(classify(ip(addr)), want, "{addr}");
        }
    }

    #[test]
    fn every_table_range_is_hit_at_both_ends() {
        for &(net, prefix, range) in V4_RANGES {
            let size = if prefix == 0 {
                u32::MAX
            } else {
                (1u32 << (32 - prefix)) - 1
            };
            for a in [net, net | size] {
                let got = classify(IpAddr::V4(Ipv4Addr::from(a)));
                assert!(got.is_some(), "{} in {range:?}", Ipv4Addr::from(a));
            }
        }
        for &(net, prefix, _) in V6_RANGES {
            let size = (1u128 << (128 - prefix)) - 1;
            for a in [net, net | size] {
                let got = classify(IpAddr::V6(Ipv6Addr::from(a)));
                assert!(got.is_some(), "{}", Ipv6Addr::from(a));
            }
        }
    }

    #[test]
    fn every_spelling_of_a_blocked_host_is_blocked() {
        for text in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0177.0.0.1",
            "127.1",
            "0x7f.1",
            "0",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "[0:0:0:0:0:ffff:7f00:1]",
            "[64:ff9b::7f00:1]",
            "0xa9fea9fe",
            "169.254.43518",
            "[::ffff:a9fe:a9fe]",
        ] {
            let addr = parse_host_literal(text).unwrap();
            assert!(check(addr, &[]).is_err(), "{text}");
        }
    }

    #[test]
    fn allow_cidrs_permit_blocked_addresses() {
        let cidrs: Vec<Cidr> = ["127.0.0.0/8", "fd00::/8", "169.254.0.0/16"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        assert_eq!(check(ip("8.8.8.8"), &[]), Ok(()));
        assert_eq!(check(ip("127.0.0.1"), &[]), Err(Loopback));
        assert_eq!(check(ip("127.0.0.1"), &cidrs), Ok(()));
        assert_eq!(check(ip("::ffff:127.0.0.1"), &cidrs), Ok(()));
        assert_eq!(check(ip("10.0.0.1"), &cidrs), Err(Private));
        assert_eq!(check(ip("fd12::1"), &cidrs), Ok(()));
        assert_eq!(check(ip("169.254.1.1"), &cidrs), Ok(()));
        // Metadata needs a CIDR naming exactly it.
        assert_eq!(check(ip("169.254.169.254"), &cidrs), Err(Metadata));
        assert_eq!(check(ip("fd00:ec2::254"), &cidrs), Err(Metadata));
        let exact: Cidr = "169.254.169.254/32".parse().unwrap();
        assert_eq!(check(ip("169.254.169.254"), &[exact]), Ok(()));
        assert_eq!(check(ip("::ffff:169.254.169.254"), &[exact]), Ok(()));
        let everything: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(check(ip("10.1.1.1"), &[everything]), Ok(()));
        assert_eq!(check(ip("::1"), &[everything]), Err(Loopback));
        assert_eq!(check(ip("168.63.129.16"), &[everything]), Err(Metadata));
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(Metadata.to_string(), "cloud metadata address");
        assert_eq!(SharedAddressSpace.as_str(), "shared_address_space");
    }
}
