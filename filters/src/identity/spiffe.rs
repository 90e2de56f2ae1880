//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`) and the SPIFFE ID of an
//! X.509-SVID leaf certificate.
//!
//! Validation follows the SPIFFE ID specification: the scheme is exactly
//! `spiffe://`; the trust domain uses only `a-z 0-9 . - _` (so no upper case,
//! port, userinfo, query or fragment) and is at most 255 bytes; the path is
//! empty or `/`-separated segments of `a-z A-Z 0-9 . - _`, none empty, `.` or
//! `..`, with no trailing `/`; the whole ID is at most 2048 bytes.
//!
//! [`spiffe_id_from_der`] applies the X.509-SVID leaf rules: exactly one URI
//! SAN, which is a SPIFFE ID with a non-root path; not a CA; key usage
//! present with `digitalSignature` and without `keyCertSign` and `cRLSign`.
//! It does not verify the chain, validity period or signature: the gateway's
//! rustls verifier does that against the bundle of [`SpiffeId::trust_domain`].

use std::fmt;
use std::str::FromStr;

use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Longest SPIFFE ID accepted, in bytes.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
const SCHEME: &str = "spiffe://";

/// Why a string is not a valid SPIFFE ID or trust domain name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// Longer than [`MAX_SPIFFE_ID_LEN`] or [`MAX_TRUST_DOMAIN_LEN`].
    #[error("SPIFFE ID or trust domain is too long")]
    TooLong,
    /// Does not start with `spiffe://` (lower case).
    #[error("scheme must be `spiffe://`")]
    WrongScheme,
    /// `spiffe:///...`.
    #[error("trust domain is empty")]
    EmptyTrustDomain,
    /// A `:` in the authority.
    #[error("trust domain must not have a port")]
    Port,
    /// An `@` in the authority.
    #[error("trust domain must not have userinfo")]
    Userinfo,
    /// A `?` or `#` anywhere.
    #[error("SPIFFE ID must not have a query or fragment")]
    QueryOrFragment,
    /// A character outside `a-z 0-9 . - _` in the trust domain.
    #[error("trust domain may only use a-z, 0-9, `.`, `-` and `_`")]
    TrustDomainChar,
    /// A character outside `a-z A-Z 0-9 . - _` in a path segment.
    #[error("path segments may only use a-z, A-Z, 0-9, `.`, `-` and `_`")]
    PathChar,
    /// `//` in the path.
    #[error("path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("path has a `.` or `..` segment")]
    DotSegment,
    /// The path ends with `/`.
    #[error("path must not end with `/`")]
    TrailingSlash,
}

/// A validated SPIFFE ID.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    td_end: usize,
}

impl SpiffeId {
    /// Parses and validates `s` (see the module docs for the rules).
    pub fn parse(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong);
        }
        if s.contains(['?', '#']) {
            return Err(SpiffeIdError::QueryOrFragment);
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        let (td, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        validate_trust_domain(td)?;
        validate_path(path)?;
        Ok(SpiffeId {
            id: s.to_string(),
            td_end: SCHEME.len() + td.len(),
        })
    }

    /// The whole ID, `spiffe://td/path`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain name, e.g. `cluster-b.example`.
    pub fn trust_domain(&self) -> &str {
        &self.id[SCHEME.len()..self.td_end]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.td_end..]
    }

    /// Whether this ID belongs to trust domain `td`.
    pub fn is_member_of(&self, td: &str) -> bool {
        self.trust_domain() == td
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Validates a bare trust domain name such as `cluster-b.example`.
pub fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TooLong);
    }
    for c in td.chars() {
        match c {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            ':' => return Err(SpiffeIdError::Port),
            '@' => return Err(SpiffeIdError::Userinfo),
            '?' | '#' => return Err(SpiffeIdError::QueryOrFragment),
            _ => return Err(SpiffeIdError::TrustDomainChar),
        }
    }
    Ok(())
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(SpiffeIdError::TrailingSlash);
    }
    // `path` starts with '/', so the first piece is empty and skipped.
    for seg in path.split('/').skip(1) {
        match seg {
            "" => return Err(SpiffeIdError::EmptySegment),
            "." | ".." => return Err(SpiffeIdError::DotSegment),
            _ => {}
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(SpiffeIdError::PathChar);
        }
    }
    Ok(())
}

/// Why a leaf certificate is not a usable X.509-SVID.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    /// Not a DER certificate, or an extension could not be parsed.
    #[error("certificate cannot be parsed: {0}")]
    Parse(String),
    /// No URI SAN at all.
    #[error("certificate has no URI SAN")]
    NoUriSan,
    /// More than one URI SAN (the count).
    #[error("certificate has {0} URI SANs, exactly one is allowed")]
    MultipleUriSans(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    InvalidId(SpiffeIdError),
    /// The SPIFFE ID is a bare trust domain.
    #[error("leaf SPIFFE ID must have a path")]
    RootPath,
    /// The certificate is a CA.
    #[error("leaf certificate must not be a CA")]
    IsCa,
    /// Key usage missing `digitalSignature`, or with `keyCertSign`/`cRLSign`.
    #[error("leaf certificate key usage: {0}")]
    KeyUsage(&'static str),
}

/// The SPIFFE ID of an X.509-SVID leaf certificate given as DER.
pub fn spiffe_id_from_der(der: &[u8]) -> Result<SpiffeId, SvidError> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| SvidError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(SvidError::Parse(
            "trailing data after the certificate".into(),
        ));
    }
    let mut uris = Vec::new();
    let mut is_ca = false;
    let mut key_usage = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                uris.extend(san.general_names.iter().filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                }));
            }
            ParsedExtension::BasicConstraints(bc) => is_ca |= bc.ca,
            ParsedExtension::KeyUsage(ku) => key_usage = Some(*ku),
            ParsedExtension::UnsupportedExtension { .. } => {}
            ParsedExtension::ParseError { error } => {
                return Err(SvidError::Parse(format!("extension {}: {error}", ext.oid)))
            }
            _ => {}
        }
    }
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUriSan),
        [one] => *one,
        many => return Err(SvidError::MultipleUriSans(many.len())),
    };
    let id = SpiffeId::parse(uri).map_err(SvidError::InvalidId)?;
    if id.path().is_empty() {
        return Err(SvidError::RootPath);
    }
    if is_ca {
        return Err(SvidError::IsCa);
    }
    let ku = key_usage.ok_or(SvidError::KeyUsage("digitalSignature is required"))?;
    if !ku.digital_signature() {
        return Err(SvidError::KeyUsage("digitalSignature is required"));
    }
    if ku.key_cert_sign() || ku.crl_sign() {
        return Err(SvidError::KeyUsage(
            "keyCertSign and cRLSign are not allowed",
        ));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, IsCa, KeyPair, KeyUsagePurpose, SanType};

    #[test]
    fn spiffe_id_table() {
        use SpiffeIdError::*;
        let ok = [
            (
                "spiffe://cluster-b.example/ns/shop/sa/web",
                "cluster-b.example",
                "/ns/shop/sa/web",
            ),
            ("spiffe://td", "td", ""),
            (
                "spiffe://a_b-c.9/Upper.Case-ok_1",
                "a_b-c.9",
                "/Upper.Case-ok_1",
            ),
            ("spiffe://td/..a/b..", "td", "/..a/b.."),
        ];
        for (s, td, path) in ok {
            let id = SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!((id.trust_domain(), id.path(), id.as_str()), (td, path, s));
            assert!(id.is_member_of(td));
        }
        let long_path = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN));
        let long_td = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        let bad: &[(&str, SpiffeIdError)] = &[
            ("", Empty),
            ("https://td/a", WrongScheme),
            ("SPIFFE://td/a", WrongScheme),
            ("spiffe:/td/a", WrongScheme),
            ("spiffe://", EmptyTrustDomain),
            ("spiffe:///a", EmptyTrustDomain),
            ("spiffe://Cluster.example/a", TrustDomainChar),
            ("spiffe://td:8443/a", Port),
            ("spiffe://user@td/a", Userinfo),
            ("spiffe://td/a?x=1", QueryOrFragment),
            ("spiffe://td/a#frag", QueryOrFragment),
            ("spiffe://td/a//b", EmptySegment),
            ("spiffe://td/a/./b", DotSegment),
            ("spiffe://td/a/..", DotSegment),
            ("spiffe://td/", TrailingSlash),
            ("spiffe://td/a/", TrailingSlash),
            ("spiffe://td/a%20b", PathChar),
            ("spiffe://td/caf\u{e9}", PathChar),
            ("spiffe://t\u{e9}/a", TrustDomainChar),
            (&long_path, TooLong),
            (&long_td, TooLong),
        ];
        for (s, want) in bad {
            assert_eq!(SpiffeId::parse(s), Err(*want), "{s}");
        }
        assert_eq!(validate_trust_domain("cluster-a.example"), Ok(()));
        assert_eq!(validate_trust_domain("a.b:1"), Err(Port));
    }

    fn leaf(uris: &[&str], edit: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["workload.example".to_string()]).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI(u.to_string().try_into().unwrap()));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn svid_needs_exactly_one_spiffe_uri_san() {
        let web = "spiffe://cluster-b.example/ns/shop/sa/web";
        let id = spiffe_id_from_der(&leaf(&[web], |_| {})).unwrap();
        assert_eq!((id.as_str(), id.trust_domain()), (web, "cluster-b.example"));

        let two = leaf(&[web, "spiffe://cluster-a.example/ns/x/sa/y"], |_| {});
        assert_eq!(spiffe_id_from_der(&two), Err(SvidError::MultipleUriSans(2)));
        let mixed = leaf(&[web, "https://example.com/"], |_| {});
        assert_eq!(
            spiffe_id_from_der(&mixed),
            Err(SvidError::MultipleUriSans(2))
        );
        assert_eq!(
            spiffe_id_from_der(&leaf(&[], |_| {})),
            Err(SvidError::NoUriSan)
        );
        assert!(matches!(
            spiffe_id_from_der(&leaf(&["https://example.com/a"], |_| {})),
            Err(SvidError::InvalidId(SpiffeIdError::WrongScheme))
        ));
        assert!(matches!(
            spiffe_id_from_der(&leaf(&["spiffe://Bad.example/a"], |_| {})),
            Err(SvidError::InvalidId(SpiffeIdError::TrustDomainChar))
        ));
        assert_eq!(
            spiffe_id_from_der(&leaf(&["spiffe://cluster-b.example"], |_| {})),
            Err(SvidError::RootPath)
        );
    }

    #[test]
    fn svid_leaf_rules() {
        let web = ["spiffe://td/web"];
        let ca = leaf(&web, |p| {
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
        });
        assert_eq!(spiffe_id_from_der(&ca), Err(SvidError::IsCa));
        let no_ku = leaf(&web, |p| p.key_usages.clear());
        assert!(matches!(
            spiffe_id_from_der(&no_ku),
            Err(SvidError::KeyUsage(_))
        ));
        let signer = leaf(&web, |p| p.key_usages.push(KeyUsagePurpose::KeyCertSign));
        assert!(matches!(
            spiffe_id_from_der(&signer),
            Err(SvidError::KeyUsage(_))
        ));
        let enc_only = leaf(&web, |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyEncipherment]
        });
        assert!(matches!(
            spiffe_id_from_der(&enc_only),
            Err(SvidError::KeyUsage(_))
        ));

        let good = leaf(&web, |_| {});
        assert!(matches!(
            spiffe_id_from_der(&good[..10]),
            Err(SvidError::Parse(_))
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            spiffe_id_from_der(&trailing),
            Err(SvidError::Parse(_))
        ));
        assert!(matches!(
            spiffe_id_from_der(b"not a cert"),
            Err(SvidError::Parse(_))
        ));
    }
}
