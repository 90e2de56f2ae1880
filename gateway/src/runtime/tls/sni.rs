//! Choosing a listener's certificate by the SNI of the ClientHello.
//!
//! The rules, as Envoy's filter chain match and NGINX's `server_name`:
//! an exact name wins over a wildcard; a wildcard `*.example.com` covers
//! exactly one label (`a.example.com`, not `example.com` nor
//! `a.b.example.com`); names match case-insensitively; no SNI, or a name no
//! certificate claims, gets the default certificate.
//!
//! The map is built when the config is compiled; a handshake does two hash
//! lookups at most, lower-casing into a stack buffer (no allocation).

use std::collections::HashMap;

/// The longest DNS name (RFC 1035); longer SNI values can match nothing.
const MAX_NAME: usize = 253;

/// A server name a certificate is served for, normalised (lower case, no
/// trailing dot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerName {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`, stored as its parent `example.com`.
    Wildcard(String),
}

impl ServerName {
    /// Parses a configured or SAN name: letters, digits, `-`, `_` and dots,
    /// with `*.` allowed only as the whole leftmost label.
    pub fn parse(name: &str) -> Result<ServerName, String> {
        let lower = name.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if rest.is_empty() {
            return Err(format!("`{name}` is not a server name"));
        }
        if rest.len() > MAX_NAME {
            return Err(format!("`{name}` is longer than {MAX_NAME} characters"));
        }
        if rest.contains('*') {
            return Err(format!(
                "`{name}`: a wildcard is only `*.` as the whole leftmost label (`*.example.com`)"
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !rest.split('.').all(label_ok) {
            return Err(format!(
                "`{name}` is not a DNS name (labels of letters, digits, `-`, separated by dots)"
            ));
        }
        Ok(if wildcard {
            ServerName::Wildcard(rest.to_string())
        } else {
            ServerName::Exact(rest.to_string())
        })
    }
}

/// A problem building an [`SniMap`]: the certificate and name it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameClash {
    /// Index of the certificate whose name clashes.
    pub cert: usize,
    /// Index of the name within that certificate's names.
    pub name: usize,
    /// What is wrong.
    pub message: String,
}

/// Certificates (`T`) by server name, with a default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SniMap<T> {
    certs: Vec<T>,
    exact: HashMap<Box<str>, usize>,
    /// Keyed by the parent of the wildcard: `*.example.com` is `example.com`.
    wildcard: HashMap<Box<str>, usize>,
    default: usize,
}

impl<T> SniMap<T> {
    /// Builds the map from each certificate with its names; `default` is
    /// the index served without a matching name (out of range is an error).
    /// Two certificates claiming the same name (exact, or the same
    /// wildcard) are refused; a certificate repeating a name of its own is
    /// not a clash.
    pub fn build(entries: Vec<(T, Vec<ServerName>)>, default: usize) -> Result<Self, NameClash> {
        let mut exact: HashMap<Box<str>, usize> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, usize> = HashMap::new();
        let mut certs = Vec::with_capacity(entries.len());
        for (i, (cert, names)) in entries.into_iter().enumerate() {
            for (j, n) in names.iter().enumerate() {
                let (table, key, shown) = match n {
                    ServerName::Exact(s) => (&mut exact, s, s.clone()),
                    ServerName::Wildcard(s) => (&mut wildcard, s, format!("*.{s}")),
                };
                match table.get(key.as_str()) {
                    Some(&first) if first != i => {
                        return Err(NameClash {
                            cert: i,
                            name: j,
                            message: format!(
                                "server name `{shown}` is already claimed by certificate {first}"
                            ),
                        })
                    }
                    Some(_) => {}
                    None => {
                        table.insert(key.as_str().into(), i);
                    }
                }
            }
            certs.push(cert);
        }
        if default >= certs.len() {
            return Err(NameClash {
                cert: default,
                name: 0,
                message: format!("no certificate {default} to be the default"),
            });
        }
        Ok(SniMap {
            certs,
            exact,
            wildcard,
            default,
        })
    }

    /// The index of the certificate for `sni`.
    pub fn index(&self, sni: Option<&str>) -> usize {
        let mut buf = [0u8; MAX_NAME];
        let Some(name) = sni.and_then(|s| lower_into(s, &mut buf)) else {
            return self.default;
        };
        if let Some(&i) = self.exact.get(name) {
            return i;
        }
        match name.split_once('.') {
            Some((label, parent)) if !label.is_empty() => {
                self.wildcard.get(parent).copied().unwrap_or(self.default)
            }
            _ => self.default,
        }
    }

    /// The certificate for `sni`.
    pub fn select(&self, sni: Option<&str>) -> &T {
        &self.certs[self.index(sni)]
    }

    /// Every certificate, in configured order.
    pub fn certs(&self) -> &[T] {
        &self.certs
    }
}

/// `name` lower-cased into `buf`, without a trailing dot; `None` when it
/// cannot be a DNS name (too long).
fn lower_into<'b>(name: &str, buf: &'b mut [u8; MAX_NAME]) -> Option<&'b str> {
    let name = name.strip_suffix('.').unwrap_or(name).as_bytes();
    let out = buf.get_mut(..name.len())?;
    for (o, b) in out.iter_mut().zip(name) {
        *o = b.to_ascii_lowercase();
    }
    // ASCII lower-casing keeps UTF-8 valid; this cannot fail.
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<ServerName> {
        list.iter()
            .map(|n| ServerName::parse(n).expect("valid name"))
            .collect()
    }

    fn map(default: usize) -> SniMap<&'static str> {
        SniMap::build(
            vec![
                ("a", names(&["a.example.com", "www.a.example.com"])),
                ("b", names(&["b.example.com", "*.b.example.com"])),
                ("c", names(&["*.example.com", "exact.b.example.com"])),
            ],
            default,
        )
        .expect("no clash")
    }

    #[test]
    fn exact_names_select_their_certificate() {
        let m = map(0);
        assert_eq!(m.select(Some("a.example.com")), &"a");
        assert_eq!(m.select(Some("www.a.example.com")), &"a");
        assert_eq!(m.select(Some("b.example.com")), &"b");
    }

    #[test]
    fn wildcards_cover_one_label_and_exact_names_win() {
        let m = map(0);
        assert_eq!(m.select(Some("x.b.example.com")), &"b");
        assert_eq!(
            m.select(Some("exact.b.example.com")),
            &"c",
            "an exact name beats a wildcard, whatever the order"
        );
        assert_eq!(m.select(Some("zzz.example.com")), &"c");
        assert_eq!(
            m.select(Some("x.y.b.example.com")),
            &"a",
            "two labels under a wildcard: default"
        );
        assert_eq!(
            m.select(Some("example.com")),
            &"a",
            "the wildcard's parent itself is not covered"
        );
        assert_eq!(m.select(Some(".b.example.com")), &"a", "empty label");
    }

    #[test]
    fn names_match_case_insensitively_and_ignore_a_trailing_dot() {
        let m = map(0);
        assert_eq!(m.select(Some("A.Example.COM")), &"a");
        assert_eq!(m.select(Some("X.B.EXAMPLE.COM")), &"b");
        assert_eq!(m.select(Some("b.example.com.")), &"b");
        let upper = SniMap::build(vec![("u", names(&["UP.Example.com"]))], 0).unwrap();
        assert_eq!(upper.index(Some("up.example.com")), 0);
    }

    #[test]
    fn no_or_unknown_sni_gets_the_default() {
        assert_eq!(map(0).select(None), &"a");
        assert_eq!(map(2).select(None), &"c");
        assert_eq!(map(1).select(Some("other.test")), &"b");
        let long = "a".repeat(300);
        assert_eq!(map(1).select(Some(&long)), &"b");
    }

    #[test]
    fn two_certificates_claiming_one_name_are_refused() {
        let clash = SniMap::build(
            vec![
                ("a", names(&["a.example.com"])),
                ("b", names(&["b.example.com", "A.example.com"])),
            ],
            0,
        )
        .unwrap_err();
        assert_eq!((clash.cert, clash.name), (1, 1));
        assert!(
            clash.message.contains("`a.example.com`") && clash.message.contains("certificate 0"),
            "{}",
            clash.message
        );
        let wild = SniMap::build(
            vec![
                ("a", names(&["*.example.com"])),
                ("b", names(&["*.example.com"])),
            ],
            0,
        )
        .unwrap_err();
        assert!(wild.message.contains("`*.example.com`"), "{}", wild.message);
        // One certificate naming a host twice (SAN and `names`) is fine.
        SniMap::build(vec![("a", names(&["a.test", "a.test"]))], 0).unwrap();
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            ServerName::parse("*.Example.com."),
            Ok(ServerName::Wildcard("example.com".into()))
        );
        for bad in ["", "*.", "a.*.com", "*a.com", "a b.com", "a..com", "*"] {
            assert!(ServerName::parse(bad).is_err(), "`{bad}` must be refused");
        }
    }
}
