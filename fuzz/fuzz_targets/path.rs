//! Request-path normalisation (`filters::path::normalize`), which routing
//! and authorization trust.
//!
//! Properties, on any string:
//! - idempotent: the normal form is its own normal form, returned borrowed
//!   (so `is_normal`'s fast path never passes a path needing work);
//! - the normal form starts with `/` and has no `.` or `..` segment, no empty
//!   segment, no NUL, no backslash, no `%2F`/`%5C`/`%00`, no escaped
//!   unreserved character, and its escapes are upper-case (one spelling
//!   per path, as RFC 3986 §6.2.2.1 normalises);
//! - routing and authorization see the same path: for a path that arrives
//!   in a request (one `http::uri::PathAndQuery` accepts), the gateway's
//!   `normalize_path` leaves exactly the normal form in the request URI, the
//!   query kept;
//! - differential against the `url` crate (WHATWG path parsing) on the paths
//!   both define: only RFC 3986 `pchar`s, valid escapes, no `//`; after
//!   url's dot-segment removal, decoding its unreserved escapes and
//!   upper-casing the others gives our normal form.
#![no_main]

use std::borrow::Cow;

use filters::path::{normalize, PathError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let result = normalize(path);
    if let Ok(out) = &result {
        check_normal_form(path, out);
    }
    same_path_for_routing_and_upstream(path, &result);
    differential_url(path, &result);
});

fn check_normal_form(input: &str, out: &str) {
    assert!(out.starts_with('/'), "{input:?} -> {out:?}");
    match normalize(out) {
        Ok(Cow::Borrowed(again)) => assert_eq!(again, out),
        other => panic!("{input:?} -> {out:?} -> {other:?}: not idempotent"),
    }
    let bytes = out.as_bytes();
    assert!(!bytes.contains(&0) && !bytes.contains(&b'\\'), "{out:?}");
    let segments: Vec<&str> = out[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        assert!(
            !seg.is_empty() || last,
            "{input:?} -> {out:?}: empty segment"
        );
        assert!(
            *seg != "." && *seg != "..",
            "{input:?} -> {out:?}: dot segment"
        );
    }
    let mut i = 0;
    while let Some(off) = out[i..].find('%') {
        let at = i + off;
        let esc = &out[at + 1..at + 3];
        let c = u8::from_str_radix(esc, 16).expect("escape of two hex digits");
        assert!(!matches!(c, b'/' | b'\\' | 0), "{out:?} keeps %{esc}");
        assert!(!is_unreserved(c), "{out:?} keeps escaped unreserved %{esc}");
        // One spelling per path: `%c3` and `%C3` must not route apart.
        assert_eq!(
            esc,
            esc.to_ascii_uppercase(),
            "{input:?} -> {out:?}: lower-case escape"
        );
        i = at + 3;
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The proxy's `normalize_path` leaves the normal form in the request URI,
/// the one routing, authorization and the upstream request read.
fn same_path_for_routing_and_upstream(path: &str, result: &Result<Cow<'_, str>, PathError>) {
    // Origin-form request targets (`*` and absolute forms are not paths).
    let arrives = path.starts_with('/')
        && path
            .parse::<http::uri::PathAndQuery>()
            .is_ok_and(|pq| pq.path() == path);
    if !arrives {
        return;
    }
    let target = format!("{path}?q=1");
    let Ok(mut req) = pingora::http::RequestHeader::build("GET", target.as_bytes(), None) else {
        return;
    };
    assert_eq!(req.uri.path(), path);
    let outcome = gateway::proxy::forwarding::normalize_path(&mut req);
    match (outcome, result) {
        (Ok(()), Ok(normal)) => {
            assert_eq!(
                req.uri.path(),
                normal.as_ref(),
                "{path:?}: the URI kept another path"
            );
            assert_eq!(req.uri.query(), Some("q=1"), "{path:?}: query lost");
        }
        (Err(e), Err(want)) => assert_eq!(&e, want),
        (got, want) => panic!("{path:?}: normalize_path {got:?}, normalize {want:?}"),
    }
}

fn differential_url(path: &str, result: &Result<Cow<'_, str>, PathError>) {
    let pchar = |b: u8| is_unreserved(b) || b"!$&'()*+,;=:@%/".contains(&b);
    if !path.starts_with('/') || path.contains("//") || !path.bytes().all(pchar) {
        return;
    }
    // rust-url keeps a Windows drive letter segment (`/M:/..` is `/M:/`)
    // even for http; RFC 3986 knows no such thing, so that case is undefined.
    let drive = |seg: &str| {
        let b = seg.as_bytes();
        b.len() == 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
    };
    if path.split('/').any(drive) {
        return;
    }
    let Ok(ours) = result else {
        // Only escapes we refuse (bad, or of `/`, `\`, NUL) fail here.
        return;
    };
    let Ok(url) = url::Url::parse(&format!("http://h{path}")) else {
        return;
    };
    // Decode what we decode (unreserved), upper-case the rest.
    let theirs = url.path();
    let mut want = String::with_capacity(theirs.len());
    let mut rest = theirs;
    while let Some(at) = rest.find('%') {
        want.push_str(&rest[..at]);
        let esc = &rest[at + 1..at + 3];
        let c = u8::from_str_radix(esc, 16).expect("url keeps our valid escapes");
        if is_unreserved(c) {
            want.push(char::from(c));
        } else {
            want.push('%');
            want.push_str(&esc.to_ascii_uppercase());
        }
        rest = &rest[at + 3..];
    }
    want.push_str(rest);
    assert_eq!(ours.as_ref(), want, "{path:?}: url reads {theirs:?}");
}
