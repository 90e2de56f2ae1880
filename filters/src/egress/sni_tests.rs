use std::sync::Arc;

use super::*;

/// The first flight of a real rustls client (ring provider, TLS 1.2 and
/// 1.3): one handshake record holding the ClientHello.
fn rustls_hello(server_name: &str, enable_sni: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    cfg.enable_sni = enable_sni;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// The handshake messages of a flight, without record headers.
fn handshake_bytes(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        out.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    out
}

/// `message` split into handshake records of at most `size` bytes.
fn fragment(message: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in message.chunks(size) {
        out.extend([22, 3, 1]);
        out.extend((chunk.len() as u16).to_be_bytes());
        out.extend(chunk);
    }
    out
}

fn hello_body(extensions: Option<&[u8]>) -> Vec<u8> {
    let mut b = vec![3, 3];
    b.extend([7u8; 32]);
    b.push(0);
    b.extend([0, 2, 0x13, 0x01]);
    b.extend([1, 0]);
    if let Some(e) = extensions {
        b.extend((e.len() as u16).to_be_bytes());
        b.extend(e);
    }
    b
}

fn ext(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend((data.len() as u16).to_be_bytes());
    e.extend(data);
    e
}

fn server_name(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend((name.len() as u16).to_be_bytes());
        list.extend(*name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend(list);
    ext(0, &data)
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind];
    m.extend(&(body.len() as u32).to_be_bytes()[1..]);
    m.extend(body);
    m
}

fn record(message: &[u8]) -> Vec<u8> {
    fragment(message, 16 * 1024)
}

fn hello_with(extensions: &[u8]) -> Vec<u8> {
    record(&handshake(1, &hello_body(Some(extensions))))
}

#[test]
fn reads_the_name_from_a_real_client_hello() {
    let hello = rustls_hello("api.partner.test", true);
    assert_eq!(
        parse_client_hello_sni(&hello),
        SniResult::Sni("api.partner.test".into())
    );
    let hello = rustls_hello("API.Partner.Test", true);
    assert_eq!(
        parse_client_hello_sni(&hello),
        SniResult::Sni("api.partner.test".into())
    );
    // Bytes after the ClientHello (early data, the next flight) are ignored.
    let mut more = rustls_hello("a.test", true);
    more.extend([23, 3, 3, 0, 1, 0]);
    assert_eq!(
        parse_client_hello_sni(&more),
        SniResult::Sni("a.test".into())
    );
}

#[test]
fn real_client_hellos_without_a_name() {
    assert_eq!(
        parse_client_hello_sni(&rustls_hello("127.0.0.1", true)),
        SniResult::NoSni
    );
    assert_eq!(
        parse_client_hello_sni(&rustls_hello("a.test", false)),
        SniResult::NoSni
    );
}

#[test]
fn every_prefix_needs_more() {
    let hello = rustls_hello("api.partner.test", true);
    for n in 0..hello.len() {
        match parse_client_hello_sni(&hello[..n]) {
            SniResult::NeedMore { at_least } => {
                assert!(at_least > n && at_least <= hello.len(), "{n}: {at_least}");
            }
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
}

#[test]
fn reassembles_fragmented_hellos() {
    let message = handshake_bytes(&rustls_hello("frag.partner.test", true));
    for size in [1, 2, 3, 4, 5, 7, 100, 511] {
        let records = fragment(&message, size);
        assert_eq!(
            parse_client_hello_sni(&records),
            SniResult::Sni("frag.partner.test".into()),
            "fragments of {size}"
        );
    }
    let records = fragment(&message, 7);
    for n in 0..records.len() {
        match parse_client_hello_sni(&records[..n]) {
            SniResult::NeedMore { at_least } => {
                assert!(at_least > n && at_least <= records.len(), "{n}: {at_least}")
            }
            other => panic!("prefix of {n} bytes: {other:?}"),
        }
    }
}

#[test]
fn survives_random_mutations() {
    let hello = rustls_hello("api.partner.test", true);
    let fragmented = fragment(&handshake_bytes(&hello), 50);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for round in 0..20_000 {
        let mut buf = if round % 2 == 0 {
            hello.clone()
        } else {
            fragmented.clone()
        };
        for _ in 0..rng.usize(1..=4) {
            match rng.u8(0..4) {
                0 | 1 => {
                    let i = rng.usize(..buf.len());
                    buf[i] = rng.u8(..);
                }
                2 => {
                    let i = rng.usize(..buf.len());
                    buf[i] ^= 1 << rng.u8(0..8);
                }
                _ => {
                    let i = rng.usize(..buf.len());
                    buf.truncate(i.max(1));
                }
            }
        }
        if let SniResult::Sni(name) = parse_client_hello_sni(&buf) {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)));
        }
    }
    // Random garbage behind a plausible record header.
    for _ in 0..5_000 {
        let len = rng.usize(0..600);
        let mut buf = vec![22, 3, 1];
        buf.extend((len as u16).to_be_bytes());
        buf.extend((0..len).map(|_| rng.u8(..)));
        if len > 0 && rng.bool() {
            buf[5] = 1;
        }
        let _ = parse_client_hello_sni(&buf);
    }
}

#[test]
fn not_tls() {
    for buf in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"\x16\x02",
        b"\x16\x03\x09",
        b"\x80\x2e\x01\x03\x01",
        b"\x17\x03\x03\x00\x01\x00",
        b"SSH-2.0-OpenSSH",
    ] {
        assert_eq!(parse_client_hello_sni(buf), SniResult::NotTls, "{buf:?}");
    }
    assert_eq!(
        parse_client_hello_sni(b"\x16"),
        SniResult::NeedMore { at_least: 6 }
    );
    assert_eq!(
        parse_client_hello_sni(b""),
        SniResult::NeedMore { at_least: 1 }
    );
}

#[test]
fn hand_made_hellos() {
    let sni = |name: &[u8]| server_name(&[(0, name)]);
    let other = ext(10, &[0, 2, 0, 29]);
    let cases: Vec<(Vec<u8>, SniResult)> = vec![
        (hello_with(&sni(b"x.test")), SniResult::Sni("x.test".into())),
        (
            hello_with(&[other.clone(), sni(b"X.Test.")].concat()),
            SniResult::Sni("x.test.".into()),
        ),
        (hello_with(&other), SniResult::NoSni),
        (hello_with(&[]), SniResult::NoSni),
        (record(&handshake(1, &hello_body(None))), SniResult::NoSni),
        (
            hello_with(&server_name(&[(1, b"x.test")])),
            SniResult::NoSni,
        ),
        (
            hello_with(&server_name(&[(1, b"other"), (0, b"x.test")])),
            SniResult::Sni("x.test".into()),
        ),
        (
            hello_with(&[sni(b"a.test"), sni(b"b.test")].concat()),
            SniResult::Malformed("duplicate server_name extension"),
        ),
        (
            hello_with(&server_name(&[(0, b"a.test"), (0, b"b.test")])),
            SniResult::Malformed("two host names in server_name"),
        ),
        (
            hello_with(&server_name(&[])),
            SniResult::Malformed("empty server_name list"),
        ),
        (
            hello_with(&sni(b"")),
            SniResult::Malformed("invalid host name in server_name"),
        ),
        (
            hello_with(&sni(b"a b.test")),
            SniResult::Malformed("invalid host name in server_name"),
        ),
        (
            hello_with(&sni(b"a.test\0.evil")),
            SniResult::Malformed("invalid host name in server_name"),
        ),
        (
            hello_with(&ext(0, &[0, 9, 0, 0, 1, b'a'])),
            SniResult::Malformed("truncated server_name list"),
        ),
        (
            hello_with(&ext(0, &[0, 4, 0, 0, 5, b'a'])),
            SniResult::Malformed("truncated server name"),
        ),
        (
            hello_with(&ext(0, &[0, 4, 0, 0, 1, b'a', 0])),
            SniResult::Malformed("bytes after the server_name list"),
        ),
        (
            hello_with(&[0, 0, 0]),
            SniResult::Malformed("truncated extension"),
        ),
        (
            record(&handshake(2, &hello_body(None))),
            SniResult::Malformed("first handshake message is not a ClientHello"),
        ),
        (
            record(&handshake(1, &[3, 3, 1])),
            SniResult::Malformed("truncated random"),
        ),
        (
            record(&handshake(1, &[])),
            SniResult::Malformed("truncated ClientHello"),
        ),
        (
            record(&handshake(1, &[[2, 0].as_slice(), &[0; 40]].concat())),
            SniResult::Malformed("bad ClientHello version"),
        ),
        (
            {
                let mut b = hello_body(Some(&sni(b"x.test")));
                b.push(0);
                record(&handshake(1, &b))
            },
            SniResult::Malformed("bytes after the extensions"),
        ),
        (
            vec![22, 3, 1, 0, 0],
            SniResult::Malformed("empty handshake record"),
        ),
        (
            vec![22, 3, 1, 0x40, 1],
            SniResult::Malformed("record longer than 2^14 bytes"),
        ),
        (
            vec![22, 3, 1, 0, 4, 1, 0x01, 0, 0],
            SniResult::Malformed("ClientHello larger than 16 KiB"),
        ),
    ];
    for (i, (buf, want)) in cases.into_iter().enumerate() {
        assert_eq!(parse_client_hello_sni(&buf), want, "case {i}");
    }
}

#[test]
fn interleaved_records_and_huge_fragmented_hellos() {
    let message = handshake(1, &hello_body(Some(&server_name(&[(0, b"x.test")]))));
    let mut buf = fragment(&message[..10], 10);
    buf.extend([21, 3, 3, 0, 2, 2, 40]);
    assert_eq!(
        parse_client_hello_sni(&buf),
        SniResult::Malformed("ClientHello interrupted by another record type")
    );
    let mut buf = fragment(&message[..10], 10);
    buf.extend([22, 2, 0, 0, 1, 0]);
    assert_eq!(
        parse_client_hello_sni(&buf),
        SniResult::Malformed("bad record version")
    );
    // A 12 KiB hello in 1-byte records would need 6 × 12 KiB of buffer.
    let padding = ext(21, &vec![0; 12 * 1024]);
    let big = handshake(1, &hello_body(Some(&padding)));
    let records = fragment(&big, 1);
    let mut n = 0;
    let result = loop {
        match parse_client_hello_sni(&records[..n.min(records.len())]) {
            SniResult::NeedMore { at_least } => {
                assert!(at_least > n);
                n = at_least;
            }
            other => break other,
        }
    };
    assert_eq!(
        result,
        SniResult::Malformed("ClientHello larger than 16 KiB")
    );
    assert!(n <= MAX_CLIENT_HELLO_BYTES + 6, "{n}");
    // In one record it fits.
    assert_eq!(parse_client_hello_sni(&record(&big)), SniResult::NoSni);
}

#[test]
fn matches_hosts() {
    assert!(sni_matches_host("api.partner.test", "API.partner.test."));
    assert!(sni_matches_host("api.partner.test.", "api.partner.test"));
    assert!(!sni_matches_host("evil.test", "api.partner.test"));
    assert!(!sni_matches_host("", ""));
}
