//! CIDR parsing and containment (`filters::egress::cidr`, used by
//! `allow_cidrs` and source CIDR groups).
//!
//! The input is a CIDR, optionally followed by `\n` and an address.
//! Properties:
//! - accepted exactly when a reference reading accepts: a standard-library
//!   address, then nothing or `/` and 1-3 decimal digits no larger than the
//!   address width, with the host bits zero;
//! - the printed form parses back to the same network, and so does the
//!   serde (YAML/JSON) form; a bare address is `/32` or `/128`;
//! - `contains` agrees with bit arithmetic, an IPv4-mapped IPv6 address
//!   being its IPv4 address; a network contains its own address;
//! - `ssrf::check` with the network as `allow_cidrs` permits a blocked
//!   address only inside it, and a metadata address only by a single-address
//!   network.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use filters::egress::ssrf::{check, classify, BlockedRange};
use filters::egress::Cidr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (net_text, addr_text) = match text.split_once('\n') {
        Some((n, a)) => (n, Some(a)),
        None => (text, None),
    };
    let ours = net_text.parse::<Cidr>();
    let reference = reference_parse(net_text);
    assert_eq!(
        ours.as_ref().ok().map(|c| (c.addr(), c.prefix_len())),
        reference,
        "{net_text:?}: {ours:?}"
    );
    // serde reads the same strings as FromStr.
    let via_serde = serde_json::from_value::<Cidr>(serde_json::Value::String(net_text.into()));
    assert_eq!(
        via_serde.ok(),
        ours.as_ref().ok().copied(),
        "{net_text:?}: serde differs"
    );
    let Ok(cidr) = ours else {
        return;
    };
    let printed = cidr.to_string();
    assert_eq!(
        printed.parse::<Cidr>().ok(),
        Some(cidr),
        "{printed} does not parse back"
    );
    assert!(
        cidr.contains(cidr.addr()),
        "{cidr} does not contain its address"
    );
    let width = if cidr.addr().is_ipv4() { 32 } else { 128 };
    assert_eq!(cidr.is_single_address(), cidr.prefix_len() == width);

    let mut probes: Vec<IpAddr> = Vec::new();
    if let Some(ip) = addr_text.and_then(|a| a.parse::<IpAddr>().ok()) {
        probes.push(ip);
        // The other family's spelling of the same address.
        match ip {
            IpAddr::V4(v4) => probes.push(IpAddr::V6(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => probes.extend(v6.to_ipv4_mapped().map(IpAddr::V4)),
        }
    }
    // The last address of the network and the one just past it.
    let last = last_address(cidr);
    probes.push(last);
    probes.extend(next_address(last));
    for ip in probes {
        assert_eq!(
            cidr.contains(ip),
            reference_contains(cidr, ip),
            "{cidr} contains {ip}?"
        );
        let allowed = check(ip, &[cidr]).is_ok();
        let want = match classify(ip) {
            None => true,
            Some(BlockedRange::Metadata) => cidr.contains(ip) && cidr.is_single_address(),
            Some(_) => cidr.contains(ip),
        };
        assert_eq!(allowed, want, "check({ip}, [{cidr}])");
    }
});

fn reference_parse(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = addr.parse().ok()?;
    let width: u32 = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => width,
        Some(p) if (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse::<u32>().ok().filter(|&n| n <= width)?
        }
        Some(_) => return None,
    };
    let host_bits = bits(addr) & !mask(prefix, width);
    (host_bits == 0).then_some((addr, prefix as u8))
}

/// The address as a number, right-aligned (IPv4 in the low 32 bits).
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The network mask of `prefix` bits in a `width`-bit address.
fn mask(prefix: u32, width: u32) -> u128 {
    if prefix == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    let host = (1u128 << (width - prefix)) - 1;
    all & !host
}

fn reference_contains(c: Cidr, ip: IpAddr) -> bool {
    // An IPv4-mapped IPv6 address is its IPv4 address.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let prefix = u32::from(c.prefix_len());
    match (c.addr(), ip) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
            let width = if ip.is_ipv4() { 32 } else { 128 };
            bits(ip) & mask(prefix, width) == bits(c.addr())
        }
        (IpAddr::V6(net), IpAddr::V4(v4)) => {
            u128::from(v4.to_ipv6_mapped()) & mask(prefix, 128) == u128::from(net)
        }
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    }
}

fn last_address(c: Cidr) -> IpAddr {
    let prefix = u32::from(c.prefix_len());
    match c.addr() {
        IpAddr::V4(a) => {
            let m = mask(prefix, 32) as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | !m))
        }
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) | !mask(prefix, 128))),
    }
}

fn next_address(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(a) => u32::from(a).checked_add(1).map(|n| IpAddr::V4(n.into())),
        IpAddr::V6(a) => u128::from(a).checked_add(1).map(|n| IpAddr::V6(n.into())),
    }
}
