//! What a request offers to build rate-limit keys from, and how a rule turns
//! it into a key: a keyed 64-bit hash for local state (no allocation) and a
//! SHA-1 based Redis key for fleet state (one `String`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use super::config::KeySource;

/// The request data rate-limit keys are made of. The gateway implements this
/// on its per-request context; every lookup returns `None` when the request
/// does not have that piece, and the rule then does not apply.
pub trait RequestKeys {
    /// The client's address (as the gateway decided to trust it).
    fn client_ip(&self) -> Option<IpAddr>;
    /// The first value of request header `name`.
    fn header(&self, name: &HeaderName) -> Option<&[u8]>;
    /// A claim of the verified JWT: strings as they are, other JSON values in
    /// their JSON text form. `None` without a verified token or claim.
    fn jwt_claim(&self, claim: &str) -> Option<Cow<'_, str>>;
    /// The authenticated principal (SPIFFE ID, JWT subject), if any.
    fn principal(&self) -> Option<&str>;
    /// The route name.
    fn route(&self) -> &str;
}

/// A plain [`RequestKeys`] made of borrowed parts, for tests and simple callers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimpleRequestKeys<'a> {
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The request headers.
    pub headers: Option<&'a HeaderMap>,
    /// The verified JWT claims, as strings.
    pub claims: Option<&'a HashMap<String, String>>,
    /// The authenticated principal.
    pub principal: Option<&'a str>,
    /// The route name.
    pub route: &'a str,
}

impl RequestKeys for SimpleRequestKeys<'_> {
    fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.headers?.get(name).map(|v| v.as_bytes())
    }
    fn jwt_claim(&self, claim: &str) -> Option<Cow<'_, str>> {
        self.claims?.get(claim).map(|v| Cow::Borrowed(v.as_str()))
    }
    fn principal(&self) -> Option<&str> {
        self.principal
    }
    fn route(&self) -> &str {
        self.route
    }
}

/// A key source ready for lookups (header names parsed once).
#[derive(Clone, Debug)]
pub(crate) enum KeyPart {
    ClientIp,
    Header(HeaderName),
    JwtClaim(String),
    Principal,
    Route,
}

impl KeyPart {
    pub(crate) fn compile(src: &KeySource) -> Result<Self, String> {
        Ok(match src {
            KeySource::ClientIp => KeyPart::ClientIp,
            KeySource::Header(h) => KeyPart::Header(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("`{h}` is not a valid header name"))?,
            ),
            KeySource::JwtClaim(c) => KeyPart::JwtClaim(c.clone()),
            KeySource::Principal => KeyPart::Principal,
            KeySource::Route => KeyPart::Route,
        })
    }
}

/// Feeds the key's parts, unambiguously (tag + length + bytes), to `sink`.
/// Returns `None` (and may have fed a prefix) when a part is missing.
fn feed<K: RequestKeys + ?Sized>(
    parts: &[KeyPart],
    req: &K,
    sink: &mut dyn FnMut(u8, &[u8]),
) -> Option<()> {
    for part in parts {
        match part {
            KeyPart::ClientIp => match req.client_ip()?.to_canonical() {
                IpAddr::V4(a) => sink(1, &a.octets()),
                IpAddr::V6(a) => sink(2, &a.octets()),
            },
            KeyPart::Header(h) => sink(3, req.header(h)?),
            KeyPart::JwtClaim(c) => sink(4, req.jwt_claim(c)?.as_bytes()),
            KeyPart::Principal => sink(5, req.principal()?.as_bytes()),
            KeyPart::Route => sink(6, req.route().as_bytes()),
        }
    }
    Some(())
}

/// The key of a request for local state: a 64-bit SipHash keyed per rule
/// (random keys, so clients cannot craft collisions). `None` when a part is
/// missing.
pub(crate) fn local_key<K: RequestKeys + ?Sized, S: BuildHasher>(
    parts: &[KeyPart],
    req: &K,
    hasher: &S,
) -> Option<u64> {
    let mut h = hasher.build_hasher();
    feed(parts, req, &mut |tag, bytes| {
        h.write_u8(tag);
        bytes.hash(&mut h);
    })?;
    Some(h.finish())
}

/// The Redis key of a request for a fleet rule:
/// `<prefix><rule>:<hex sha1(route, parts)>`. The same on every instance and
/// build; its length does not depend on client input. `None` when a part is
/// missing.
pub(crate) fn fleet_key<K: RequestKeys + ?Sized>(
    prefix: &str,
    rule: &str,
    parts: &[KeyPart],
    req: &K,
) -> Option<String> {
    let mut sha = sha1_smol::Sha1::new();
    let mut add = |tag: u8, bytes: &[u8]| {
        sha.update(&[tag]);
        sha.update(&(bytes.len() as u64).to_le_bytes());
        sha.update(bytes);
    };
    add(0, req.route().as_bytes());
    feed(parts, req, &mut add)?;
    let digest = sha.digest().bytes();
    let mut key = String::with_capacity(prefix.len() + rule.len() + 1 + 2 * digest.len());
    key.push_str(prefix);
    key.push_str(rule);
    key.push(':');
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in digest {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::RandomState;

    fn parts(srcs: &[&str]) -> Vec<KeyPart> {
        srcs.iter()
            .map(|s| KeyPart::compile(&s.parse().unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn keys_need_every_part_and_are_unambiguous() {
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "ab".parse().unwrap());
        let req = SimpleRequestKeys {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            headers: Some(&headers),
            route: "r1",
            ..Default::default()
        };
        let s = RandomState::new();
        let p = parts(&["header:x-tenant", "route"]);
        assert!(local_key(&p, &req, &s).is_some());
        assert!(local_key(&parts(&["principal"]), &req, &s).is_none());
        assert!(local_key(&parts(&["jwt:sub"]), &req, &s).is_none());
        assert!(fleet_key("p:", "x", &parts(&["header:x-missing"]), &req).is_none());

        // IPv4-mapped IPv6 is the same client as IPv4.
        let mapped = SimpleRequestKeys {
            client_ip: Some("::ffff:10.0.0.1".parse().unwrap()),
            ..req
        };
        let ip = parts(&["client_ip"]);
        assert_eq!(local_key(&ip, &req, &s), local_key(&ip, &mapped, &s));

        // "ab"+"r1" must differ from "a"+"br1": parts are length-prefixed.
        let mut h2 = HeaderMap::new();
        h2.insert("x-tenant", "a".parse().unwrap());
        let other = SimpleRequestKeys {
            headers: Some(&h2),
            route: "br1",
            ..req
        };
        assert_ne!(local_key(&p, &req, &s), local_key(&p, &other, &s));
        assert_ne!(fleet_key("", "n", &p, &req), fleet_key("", "n", &p, &other));
    }

    #[test]
    fn fleet_keys_are_stable_and_bounded() {
        let long = "x".repeat(10_000);
        let mut headers = HeaderMap::new();
        headers.insert("x-user", long.parse().unwrap());
        let req = SimpleRequestKeys {
            headers: Some(&headers),
            route: "orders",
            ..Default::default()
        };
        let k = fleet_key("gateway:rl:", "per-user", &parts(&["header:x-user"]), &req).unwrap();
        assert!(k.starts_with("gateway:rl:per-user:"));
        assert_eq!(k.len(), "gateway:rl:per-user:".len() + 40);
        let again = fleet_key("gateway:rl:", "per-user", &parts(&["header:x-user"]), &req);
        assert_eq!(Some(k), again);
    }
}
