//! Request-path normalisation, so that routing and authorization see the
//! path the upstream will act on (Istio's `BASE` + `MERGE_SLASHES`).
//!
//! - `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are
//!   decoded (RFC 3986 §6.2.2.2), so `/%61dmin` is `/admin`; other escapes
//!   are upper-cased (§6.2.2.1), so `/%c3%a9` is `/%C3%A9`;
//! - escaped `/`, `\` and NUL (`%2F`, `%5C`, `%00`), a raw `\` and a raw NUL
//!   are refused:
//!   servers disagree on what they mean, so no reading is safe;
//! - runs of `/` are merged;
//! - `.` and `..` segments are removed (RFC 3986 §5.2.4); `..` never climbs
//!   above the root.
//!
//! A path that needs no change is returned borrowed, without allocating.

use std::borrow::Cow;

/// Why a path is refused (the answer is 400).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// `%2F`, `%5C`, `%00`, a raw backslash or a raw NUL.
    #[error("path contains an escaped slash, backslash or NUL")]
    AmbiguousEscape,
    /// A `%` not followed by two hex digits.
    #[error("path contains a malformed percent escape")]
    BadEscape,
    /// Not starting with `/`.
    #[error("path must start with /")]
    NotAbsolute,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` is already in normal form (the common case, checked
/// without allocating).
fn is_normal(path: &[u8]) -> Result<bool, PathError> {
    let mut normal = true;
    let mut i = 0;
    while i < path.len() {
        match path[i] {
            // A raw NUL is refused like an escaped one (C servers stop there).
            b'\\' | 0 => return Err(PathError::AmbiguousEscape),
            b'%' => {
                let (Some(h), Some(l)) = (
                    path.get(i + 1).copied().and_then(hex),
                    path.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let c = h * 16 + l;
                if matches!(c, b'/' | b'\\' | 0) {
                    return Err(PathError::AmbiguousEscape);
                }
                // Lower-case hex is another spelling of the same path
                // (`%c3` is `%C3`): upper-case it, so one path has one form.
                if is_unreserved(c)
                    || path[i + 1].is_ascii_lowercase()
                    || path[i + 2].is_ascii_lowercase()
                {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let rest = &path[i + 1..];
                if rest.first() == Some(&b'/')
                    || rest == b"."
                    || rest == b".."
                    || rest.starts_with(b"./")
                    || rest.starts_with(b"../")
                {
                    normal = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

/// The normal form of `path` (without the query), or why it is refused.
pub fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes)? {
        return Ok(Cow::Borrowed(path));
    }
    // Decode unreserved escapes (others stay escaped, upper-cased).
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // is_normal checked the two hex digits.
            let h = hex(bytes[i + 1]).unwrap_or(0);
            let l = hex(bytes[i + 2]).unwrap_or(0);
            let c = h * 16 + l;
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.push(b'%');
                decoded.push(bytes[i + 1].to_ascii_uppercase());
                decoded.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    // Segments, merging empty ones and resolving dot segments.
    let trailing = decoded.ends_with(b"/") || decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut out: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = Vec::with_capacity(decoded.len());
    for seg in &out {
        s.push(b'/');
        s.extend_from_slice(seg);
    }
    if s.is_empty() || trailing {
        s.push(b'/');
    }
    // Only ASCII bytes were decoded and the input was UTF-8.
    Ok(Cow::Owned(
        String::from_utf8(s).map_err(|_| PathError::BadEscape)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/orders",
            "/orders/",
            "/a/b.c/d",
            "/%C3%A9t%C3%A9",
            "/a%20b",
            "/.well-known/x",
            "/a..b/c.",
        ] {
            assert!(matches!(normalize(p), Ok(Cow::Borrowed(_))), "{p}");
        }
    }

    #[test]
    fn tricks_resolve_to_the_path_the_upstream_sees() {
        for (input, want) in [
            ("/orders//admin", "/orders/admin"),
            ("/orders/./admin", "/orders/admin"),
            ("/orders/x/../admin", "/orders/admin"),
            ("/orders/%61dmin", "/orders/admin"),
            ("/orders/%2e%2e/admin", "/admin"),
            ("/public/../orders/admin", "/orders/admin"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a//b/", "/a/b/"),
            ("/a%2fb".replace("%2f", "%7E").as_str(), "/a~b"),
            ("/x/%e2%82%ac/./", "/x/%E2%82%AC/"),
        ] {
            assert_eq!(normalize(input).unwrap(), want, "{input}");
        }
    }

    /// Found by fuzz/ (target `path`): `/caf%c3%a9` came back as it was
    /// while `/caf%c3%a9/.` became `/caf%C3%A9/`, so one path had two normal
    /// forms and a rule on one spelling missed the other.
    #[test]
    fn lower_case_escapes_are_upper_cased() {
        assert_eq!(normalize("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(normalize("/a%2a/b%Fc").unwrap(), "/a%2A/b%FC");
        assert!(matches!(normalize("/caf%C3%A9"), Ok(Cow::Borrowed(_))));
    }

    /// Found by fuzz/ (target `path`): a raw NUL passed through while `%00`
    /// was refused.
    #[test]
    fn raw_nul_is_refused() {
        assert_eq!(normalize("/a\0b"), Err(PathError::AmbiguousEscape));
        assert_eq!(normalize("/x/./\0"), Err(PathError::AmbiguousEscape));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/a%00", "/a%", "/a%4", "/a%zz",
        ] {
            assert!(normalize(p).is_err(), "{p}");
        }
        assert_eq!(normalize("orders"), Err(PathError::NotAbsolute));
    }
}
