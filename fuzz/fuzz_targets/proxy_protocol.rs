//! PROXY protocol v1/v2 header framing and parsing
//! (`gateway::client_address::decode_proxy_header`), the first bytes a
//! load balancer, or anyone who reaches a `proxy_protocol` listener, sends.
//!
//! Properties:
//! - on any bytes: never panics; a header's length is within the input;
//!   "need more" only below `MAX_PROXY_HEADER_BYTES`; more bytes never
//!   change an answer other than "need more";
//! - round trip: a v1 line and a v2 header written here (by hand, from the
//!   specification, not with the `ppp` crate the gateway parses with) for
//!   fuzzer-chosen addresses and ports decode to that source and length,
//!   with any bytes after them left alone.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use gateway::client_address::{decode_proxy_header, Decoded, MAX_PROXY_HEADER_BYTES};
use libfuzzer_sys::fuzz_target;

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fuzz_target!(|data: &[u8]| {
    check_any(data);
    round_trip(data);
});

fn check_any(data: &[u8]) {
    let full = decode_proxy_header(data);
    match &full {
        Ok(Decoded::Need) => assert!(
            data.len() < MAX_PROXY_HEADER_BYTES,
            "still undecided after {} bytes",
            data.len()
        ),
        Ok(Decoded::Header { len, .. }) => assert!(*len <= data.len() && *len > 0),
        Err(_) => {}
    }
    for cut in [data.len() / 3, data.len() / 2, data.len().saturating_sub(1)] {
        match decode_proxy_header(&data[..cut]) {
            Ok(Decoded::Need) => {}
            decided => assert_eq!(decided, full, "{cut} bytes decided otherwise"),
        }
    }
}

/// Builds a source address and a destination from the first 36 bytes
/// (family, addresses, ports) and checks both encodings of it.
fn round_trip(data: &[u8]) {
    if data.len() < 37 {
        return;
    }
    let (fixed, rest) = data.split_at(37);
    let v6 = fixed[0] & 1 == 1;
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let (src, dst) = if v6 {
        let a: [u8; 16] = fixed[1..17].try_into().unwrap_or_default();
        let b: [u8; 16] = fixed[17..33].try_into().unwrap_or_default();
        (IpAddr::from(Ipv6Addr::from(a)), IpAddr::from(Ipv6Addr::from(b)))
    } else {
        let a: [u8; 4] = fixed[1..5].try_into().unwrap_or_default();
        let b: [u8; 4] = fixed[5..9].try_into().unwrap_or_default();
        (IpAddr::from(Ipv4Addr::from(a)), IpAddr::from(Ipv4Addr::from(b)))
    };
    let (sport, dport) = (port(&fixed[33..35]), port(&fixed[35..37]));
    let source = SocketAddr::new(src, sport);

    // v1: "PROXY TCP4|TCP6 src dst sport dport\r\n".
    let family = if v6 { "TCP6" } else { "TCP4" };
    let mut v1 = format!("PROXY {family} {src} {dst} {sport} {dport}\r\n").into_bytes();
    let v1_len = v1.len();
    v1.extend_from_slice(rest);
    expect(&v1, v1_len, source, "v1");

    // v2: signature, version 2 + PROXY, family (TCP over v4/v6), length,
    // addresses, ports; then TLVs taken from the rest (as many whole ones
    // as fit) so their length counts too.
    let mut addrs = Vec::new();
    match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            addrs.extend_from_slice(&a.octets());
            addrs.extend_from_slice(&b.octets());
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            addrs.extend_from_slice(&a.octets());
            addrs.extend_from_slice(&b.octets());
        }
        _ => return,
    }
    addrs.extend_from_slice(&sport.to_be_bytes());
    addrs.extend_from_slice(&dport.to_be_bytes());
    let tlv_len = rest.len().min(200);
    if tlv_len >= 3 {
        // One NOOP TLV (type 0x04) carrying the fuzzer's bytes.
        addrs.push(0x04);
        addrs.extend_from_slice(&((tlv_len - 3) as u16).to_be_bytes());
        addrs.extend_from_slice(&rest[..tlv_len - 3]);
    }
    let mut v2 = V2_SIGNATURE.to_vec();
    v2.push(0x21);
    v2.push(if v6 { 0x21 } else { 0x11 });
    v2.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    v2.extend_from_slice(&addrs);
    let v2_len = v2.len();
    v2.extend_from_slice(rest);
    expect(&v2, v2_len, source, "v2");
}

fn expect(wire: &[u8], len: usize, source: SocketAddr, what: &str) {
    match decode_proxy_header(wire) {
        Ok(Decoded::Header { len: l, source: s }) => {
            assert_eq!(l, len, "{what} length");
            assert_eq!(s, Some(source), "{what} source");
        }
        other => panic!("{what} header {:?} decoded as {other:?}", String::from_utf8_lossy(&wire[..len])),
    }
}
