//! The caller's identity and how it is passed on to upstreams.
//!
//! Principals:
//! - mTLS: the SPIFFE ID of the client certificate,
//!   `spiffe://cluster-b.example/ns/shop/sa/web`;
//! - JWT: `<iss>#<sub>`, e.g. `https://issuer.cluster-b.example#user-42`.
//!   Issuers never contain `#` (checked in config, as OIDC issuers have no
//!   fragment), so the first `#` splits it unambiguously; Istio's `iss/sub`
//!   would be ambiguous with URL issuers.
//!
//! With both, the SPIFFE ID is the principal (the calling workload) and the
//! JWT principal is the request principal (on whose behalf it calls), as in
//! Istio.
//!
//! # `x-gateway-identity`
//!
//! ```text
//! principal="spiffe://cluster-b.example/ns/shop/sa/web";trust_domain="cluster-b.example";method=mtls+jwt;request_principal="https://issuer.cluster-b.example#user-42"
//! ```
//!
//! `key=value` pairs joined by `;`, in this order: `principal`,
//! `trust_domain` (of the principal), `method` (`mtls`, `jwt` or `mtls+jwt`),
//! and `request_principal` only with `mtls+jwt`. String values are in double
//! quotes; inside, `\` and `"` are escaped with `\`, and `%` and every byte
//! outside printable ASCII are percent-encoded (`%25`, `%C3%A9`), so a value
//! is always printable ASCII and never contains an unescaped `"`.
//! [`IdentityHeader::parse`] reads it back (unknown keys are ignored).
//!
//! # `x-forwarded-client-cert`
//!
//! Envoy's format: `By=<gateway URI SAN>;Hash=<hex SHA-256 of the client
//! certificate DER>;URI=<client SPIFFE ID>` (see [`XfccElement`]). The
//! gateway sets it (never appends to a caller's), like Envoy's
//! `SANITIZE_SET`.

use std::fmt::{self, Write};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwt::VerifiedJwt;
use super::spiffe::SpiffeId;

/// Name of the identity header set by the gateway (and stripped from callers).
pub const IDENTITY_HEADER: &str = "x-gateway-identity";
/// Name of Envoy's client-certificate header.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// How the caller proved who it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AuthMethods {
    /// A verified client certificate.
    pub mtls: bool,
    /// A verified bearer JWT.
    pub jwt: bool,
}

impl AuthMethods {
    /// `mtls`, `jwt`, `mtls+jwt` or `none`.
    pub fn as_str(self) -> &'static str {
        match (self.mtls, self.jwt) {
            (true, true) => "mtls+jwt",
            (true, false) => "mtls",
            (false, true) => "jwt",
            (false, false) => "none",
        }
    }

    fn parse(s: &str) -> Option<AuthMethods> {
        let (mtls, jwt) = match s {
            "mtls+jwt" => (true, true),
            "mtls" => (true, false),
            "jwt" => (false, true),
            _ => return None,
        };
        Some(AuthMethods { mtls, jwt })
    }
}

/// A caller proven by mTLS, a JWT, or both.
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    peer: Option<SpiffeId>,
    jwt: Option<VerifiedJwt>,
}

impl Identity {
    /// An identity from what was verified; `None` when nothing was.
    pub fn new(peer: Option<SpiffeId>, jwt: Option<VerifiedJwt>) -> Option<Identity> {
        (peer.is_some() || jwt.is_some()).then_some(Identity { peer, jwt })
    }

    /// A caller proven by its client certificate.
    pub fn from_mtls(peer: SpiffeId) -> Identity {
        Identity {
            peer: Some(peer),
            jwt: None,
        }
    }

    /// A caller proven by a JWT.
    pub fn from_jwt(jwt: VerifiedJwt) -> Identity {
        Identity {
            peer: None,
            jwt: Some(jwt),
        }
    }

    /// The SPIFFE ID from mTLS.
    pub fn peer(&self) -> Option<&SpiffeId> {
        self.peer.as_ref()
    }

    /// The verified JWT.
    pub fn jwt(&self) -> Option<&VerifiedJwt> {
        self.jwt.as_ref()
    }

    /// The principal: the SPIFFE ID with mTLS, else `<iss>#<sub>`.
    pub fn principal(&self) -> String {
        match (&self.peer, &self.jwt) {
            (Some(p), _) => p.to_string(),
            (None, Some(j)) => j.principal(),
            (None, None) => String::new(),
        }
    }

    /// The JWT principal `<iss>#<sub>`, if a JWT was verified.
    pub fn request_principal(&self) -> Option<String> {
        self.jwt.as_ref().map(VerifiedJwt::principal)
    }

    /// Every principal: the SPIFFE ID and/or the JWT principal.
    pub fn principals(&self) -> Vec<String> {
        let peer = self.peer.iter().map(SpiffeId::to_string);
        peer.chain(self.request_principal()).collect()
    }

    /// The trust domain of [`principal`](Self::principal).
    pub fn trust_domain(&self) -> &str {
        match (&self.peer, &self.jwt) {
            (Some(p), _) => p.trust_domain(),
            (None, Some(j)) => &j.trust_domain,
            (None, None) => "",
        }
    }

    /// Every trust domain: of the certificate and/or of the JWT issuer.
    pub fn trust_domains(&self) -> Vec<&str> {
        let peer = self.peer.iter().map(SpiffeId::trust_domain);
        peer.chain(self.jwt.iter().map(|j| j.trust_domain.as_str()))
            .collect()
    }

    /// How the caller proved who it is.
    pub fn methods(&self) -> AuthMethods {
        AuthMethods {
            mtls: self.peer.is_some(),
            jwt: self.jwt.is_some(),
        }
    }

    /// The JWT claims, if a JWT was verified.
    pub fn claims(&self) -> Option<&Map<String, Value>> {
        self.jwt.as_ref().map(|j| &j.claims)
    }

    /// The `x-gateway-identity` fields of this identity.
    pub fn header(&self) -> IdentityHeader {
        let methods = self.methods();
        IdentityHeader {
            principal: self.principal(),
            trust_domain: self.trust_domain().to_string(),
            methods,
            request_principal: self.request_principal().filter(|_| methods.mtls),
        }
    }

    /// The `x-gateway-identity` value (see the module docs).
    pub fn header_value(&self) -> String {
        self.header().to_string()
    }
}

/// The fields of an `x-gateway-identity` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityHeader {
    /// The principal.
    pub principal: String,
    /// Its trust domain.
    pub trust_domain: String,
    /// How the caller proved it.
    pub methods: AuthMethods,
    /// The JWT principal, present with `mtls+jwt`.
    pub request_principal: Option<String>,
}

/// Why an `x-gateway-identity` value cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed x-gateway-identity: {0}")]
pub struct IdentityHeaderError(&'static str);

impl fmt::Display for IdentityHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "principal=\"{}\";", Escaped(&self.principal))?;
        write!(f, "trust_domain=\"{}\";", Escaped(&self.trust_domain))?;
        write!(f, "method={}", self.methods.as_str())?;
        if let Some(rp) = &self.request_principal {
            write!(f, ";request_principal=\"{}\"", Escaped(rp))?;
        }
        Ok(())
    }
}

struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' | '"' => write!(f, "\\{c}")?,
                '%' => f.write_str("%25")?,
                ' '..='~' => f.write_char(c)?,
                _ => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        write!(f, "%{b:02X}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

impl IdentityHeader {
    /// Reads an `x-gateway-identity` value written by [`fmt::Display`].
    pub fn parse(s: &str) -> Result<IdentityHeader, IdentityHeaderError> {
        let err = IdentityHeaderError;
        let mut fields: Vec<(&str, String)> = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let (key, after) = rest.split_once('=').ok_or(err("expected key=value"))?;
            let (value, after) = match after.strip_prefix('"') {
                Some(quoted) => read_quoted(quoted).ok_or(err("bad quoted value"))?,
                None => {
                    let end = after.find(';').unwrap_or(after.len());
                    (after[..end].to_string(), &after[end..])
                }
            };
            if fields.iter().any(|(k, _)| *k == key) {
                return Err(err("duplicate key"));
            }
            fields.push((key, value));
            rest = match after.strip_prefix(';') {
                Some(next) if !next.is_empty() => next,
                Some(_) => return Err(err("trailing `;`")),
                None if after.is_empty() => after,
                None => return Err(err("expected `;`")),
            };
        }
        let mut take = |k: &str| {
            let i = fields.iter().position(|(key, _)| *key == k)?;
            Some(fields.swap_remove(i).1)
        };
        let header = IdentityHeader {
            principal: take("principal").ok_or(err("no principal"))?,
            trust_domain: take("trust_domain").ok_or(err("no trust_domain"))?,
            methods: take("method")
                .and_then(|m| AuthMethods::parse(&m))
                .ok_or(err("bad method"))?,
            request_principal: take("request_principal"),
        };
        Ok(header)
    }
}

/// Reads up to the closing quote; returns the unescaped value and the rest.
fn read_quoted(s: &str) -> Option<(String, &str)> {
    let mut bytes = Vec::new();
    let mut it = s.char_indices();
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Some((String::from_utf8(bytes).ok()?, &s[i + 1..])),
            '\\' => bytes.push(u8::try_from(it.next()?.1).ok()?),
            '%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))?;
                bytes.push(u8::from_str_radix(hex, 16).ok()?);
                it.next();
                it.next();
            }
            ' '..='~' => bytes.push(c as u8),
            _ => return None,
        }
    }
    None
}

/// One element of an `x-forwarded-client-cert` header (Envoy's format).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XfccElement {
    /// URI SAN of the gateway's own certificate.
    pub by: Option<String>,
    /// Lower-case hex SHA-256 of the client certificate DER.
    pub hash: Option<String>,
    /// Subject of the client certificate (always quoted).
    pub subject: Option<String>,
    /// URI SANs of the client certificate.
    pub uri: Vec<String>,
    /// DNS SANs of the client certificate.
    pub dns: Vec<String>,
}

impl XfccElement {
    /// `By`, `Hash` of `client_cert_der` and `URI` of the caller's SPIFFE ID.
    pub fn for_client(by: Option<&str>, client_cert_der: &[u8], uri: &SpiffeId) -> Self {
        XfccElement {
            by: by.map(str::to_string),
            hash: Some(Self::hash_der(client_cert_der)),
            uri: vec![uri.to_string()],
            ..Default::default()
        }
    }

    /// Lower-case hex SHA-256 of a certificate DER.
    pub fn hash_der(der: &[u8]) -> String {
        Sha256::digest(der)
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

impl fmt::Display for XfccElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut pair = |f: &mut fmt::Formatter<'_>, k: &str, v: &str, always: bool| {
            let quote = always || v.contains([',', ';', '=', '"']);
            let r = if quote {
                write!(
                    f,
                    "{sep}{k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                )
            } else {
                write!(f, "{sep}{k}={v}")
            };
            sep = ";";
            r
        };
        if let Some(by) = &self.by {
            pair(f, "By", by, false)?;
        }
        if let Some(hash) = &self.hash {
            pair(f, "Hash", hash, false)?;
        }
        if let Some(subject) = &self.subject {
            pair(f, "Subject", subject, true)?;
        }
        for u in &self.uri {
            pair(f, "URI", u, false)?;
        }
        for d in &self.dns {
            pair(f, "DNS", d, false)?;
        }
        Ok(())
    }
}
