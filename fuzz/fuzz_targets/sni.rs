//! ClientHello / SNI parser (`filters::egress::sni`).
//!
//! Properties, on any bytes:
//! - never panics; `NeedMore { at_least }` always asks for more than it has;
//! - more bytes never change a decided answer: the answer for a prefix that
//!   is not `NeedMore` is the answer for the whole input, and a `NeedMore`
//!   bound never exceeds the length that then sufficed;
//! - a name is lower-case ASCII, at most 254 bytes, of `[a-z0-9._-]`;
//! - differential against rustls (`rustls::server::Acceptor`, the TLS stack
//!   the gateway terminates with): where both read a complete ClientHello,
//!   rustls never sees a server name that we miss or read differently. We
//!   may name a host rustls ignores only when rustls does not take it as a
//!   DNS name (it drops IP literals and invalid names).
#![no_main]

use filters::egress::sni::{parse_client_hello_sni, SniResult, MAX_CLIENT_HELLO_BYTES};
use libfuzzer_sys::fuzz_target;
use rustls::pki_types::DnsName;

fuzz_target!(|data: &[u8]| {
    let full = parse_client_hello_sni(data);
    check_shape(data, &full);

    // A decided answer for a prefix must stay decided the same way.
    let cut = data.len() / 2;
    let prefix = parse_client_hello_sni(&data[..cut]);
    check_shape(&data[..cut], &prefix);
    match &prefix {
        SniResult::NeedMore { at_least } => {
            if matches!(full, SniResult::Sni(_) | SniResult::NoSni) {
                assert!(
                    *at_least <= data.len(),
                    "prefix of {cut} asked for {at_least}, but {} sufficed",
                    data.len()
                );
            }
        }
        decided => assert_eq!(decided, &full, "more bytes changed a decided answer"),
    }

    differential_rustls(data, &full);
});

fn check_shape(buf: &[u8], r: &SniResult) {
    match r {
        SniResult::NeedMore { at_least } => {
            assert!(
                *at_least > buf.len(),
                "NeedMore {at_least} with {} bytes",
                buf.len()
            );
            // The parser refuses (Malformed) rather than wait past its bound.
            assert!(
                *at_least <= MAX_CLIENT_HELLO_BYTES,
                "NeedMore past the bound: {at_least}"
            );
        }
        SniResult::Sni(name) => {
            assert!(
                !name.is_empty() && name.len() <= 254,
                "name length {}",
                name.len()
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
                "name {name:?}"
            );
        }
        SniResult::NotTls | SniResult::NoSni | SniResult::Malformed(_) => {}
    }
}

/// What rustls's own ClientHello parser says about the same bytes: `None`
/// when it wants more or refuses them, else the server name it reports.
fn rustls_server_name(data: &[u8]) -> Option<Option<String>> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Some(accepted.client_hello().server_name().map(str::to_string)),
        Ok(None) | Err(_) => None,
    }
}

fn differential_rustls(data: &[u8], ours: &SniResult) {
    if !matches!(ours, SniResult::Sni(_) | SniResult::NoSni) {
        return;
    }
    let Some(theirs) = rustls_server_name(data) else {
        return;
    };
    let norm = |s: &str| s.trim_end_matches('.').to_ascii_lowercase();
    match (ours, theirs) {
        (SniResult::Sni(a), Some(b)) => {
            assert_eq!(norm(a), norm(&b), "rustls reads another server name");
        }
        (SniResult::NoSni, Some(b)) => panic!("rustls sees server name {b:?}, we see none"),
        (SniResult::Sni(a), None) => {
            // rustls drops a name that is not a DNS name (an IP literal, or
            // a label it refuses); anything else it would have reported.
            let is_ip = a.trim_end_matches('.').parse::<std::net::IpAddr>().is_ok();
            assert!(
                is_ip || DnsName::try_from(a.as_str()).is_err(),
                "we read {a:?}, rustls reads no server name"
            );
        }
        _ => {}
    }
}
