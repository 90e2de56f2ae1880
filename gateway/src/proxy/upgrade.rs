//! Protocol upgrades (RFC 9110 §7.8) per route: which `Upgrade` protocols a
//! route passes on, the refusal of a WebSocket handshake it does not, the
//! tunnel's idle timeout, and the counts of upgrades and tunnel bytes.
//!
//! The tunnel itself is the engines' (Pingora's `ProxyHttp` and the lean
//! path both switch to raw bodies after a `101`); a non-`101` answer keeps
//! HTTP framing, so no bytes pass unparsed without the upstream's consent.

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::{HeaderValue, Version};
use pingora::http::RequestHeader;

use crate::metrics::METRICS;

/// The upgrades a route passes on (compiled from `routes[].upgrades`).
#[derive(Debug)]
pub struct UpgradePolicy {
    /// Allowed protocols, lower-cased, as they are sent upstream.
    protocols: Box<[HeaderValue]>,
    /// How long the upgrade request and its tunnel wait for upstream bytes.
    pub idle_timeout: Duration,
}

/// What the request asks for, under the route's [`UpgradePolicy`].
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// No upgrade, or one the route drops silently (`h2c`, unlisted).
    Nothing,
    /// An upgrade to the route's `n`-th protocol.
    Allowed(u8),
    /// A WebSocket handshake on a route that does not pass WebSocket on.
    RefusedWebSocket,
}

const WEBSOCKET: &str = "websocket";

impl UpgradePolicy {
    /// The policy for `protocols` (tokens of the `Upgrade` field); the
    /// error names what is wrong with one of them.
    pub fn new(protocols: &[String], idle_timeout: Duration) -> Result<Self, String> {
        let mut out = Vec::with_capacity(protocols.len());
        for p in protocols {
            let lower = p.to_ascii_lowercase();
            if lower.starts_with("h2c") {
                return Err("`h2c` upgrades are never passed on".into());
            }
            // A token (RFC 9110 §5.6.2), optionally `/version`.
            let token = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            };
            let valid = match lower.split_once('/') {
                Some((name, version)) => token(name) && token(version),
                None => token(&lower),
            };
            match HeaderValue::from_str(&lower) {
                Ok(v) if valid => out.push(v),
                _ => return Err(format!("`{p}` is not an `Upgrade` protocol token")),
            }
        }
        if out.len() > usize::from(u8::MAX) {
            return Err("too many upgrade protocols".into());
        }
        Ok(UpgradePolicy {
            protocols: out.into(),
            idle_timeout,
        })
    }

    /// What `req` asks for: an HTTP/1.1 request whose `Connection` names
    /// `Upgrade`, checked against the protocols it offers, in its order.
    /// Allocates nothing.
    pub fn asked(&self, req: &RequestHeader) -> Asked {
        if req.version != Version::HTTP_11
            || !crate::hop_by_hop::is_nominated(&req.headers, &UPGRADE)
        {
            return Asked::Nothing;
        }
        let offered = req
            .headers
            .get_all(UPGRADE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        let mut websocket = false;
        for o in offered {
            let allowed = self
                .protocols
                .iter()
                .position(|p| o.eq_ignore_ascii_case(p.to_str().unwrap_or("")));
            if let Some(n) = allowed {
                return Asked::Allowed(n as u8);
            }
            websocket |= o.eq_ignore_ascii_case(WEBSOCKET);
        }
        if websocket {
            Asked::RefusedWebSocket
        } else {
            Asked::Nothing
        }
    }

    /// The `n`-th allowed protocol, as sent upstream.
    pub fn protocol(&self, n: u8) -> &str {
        self.protocols
            .get(usize::from(n))
            .and_then(|p| p.to_str().ok())
            .unwrap_or("")
    }

    /// Puts the upgrade fields back on the upstream request for a protocol
    /// other than WebSocket: both engines strip them (a WebSocket
    /// handshake they restore themselves, normalized). Fields the client's
    /// `Connection` nominated stay removed.
    pub fn restore(&self, n: u8, upstream: &mut RequestHeader) -> pingora::Result<()> {
        let Some(p) = self.protocols.get(usize::from(n)) else {
            return Ok(());
        };
        if p == WEBSOCKET {
            return Ok(());
        }
        upstream.insert_header(CONNECTION, HeaderValue::from_static("Upgrade"))?;
        upstream.insert_header(UPGRADE, p.clone())?;
        Ok(())
    }
}

/// Counts an upgrade request of `route` by outcome: `switched` (101),
/// `declined` (any other answer: no tunnel) or `refused` (by the route).
/// Label lookups are fine here: upgrades are few and long-lived.
pub fn count(route: &str, protocol: &str, outcome: &str) {
    METRICS
        .upgrades
        .with_label_values(&[route, protocol, outcome])
        .inc();
}

/// Counts the bytes a tunnel of `route` carried each way.
pub fn count_bytes(route: &str, up: usize, down: usize) {
    let bytes = &METRICS.upgraded_bytes;
    bytes.with_label_values(&[route, "up"]).inc_by(up as u64);
    bytes
        .with_label_values(&[route, "down"])
        .inc_by(down as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(fields: &[(&str, &str)]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in fields {
            req.append_header(n.to_string(), *v).unwrap();
        }
        req
    }

    fn policy(protocols: &[&str]) -> UpgradePolicy {
        let p: Vec<String> = protocols.iter().map(|s| s.to_string()).collect();
        UpgradePolicy::new(&p, Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn a_listed_protocol_is_allowed_in_the_clients_order() {
        let p = policy(&["websocket", "my-proto/2"]);
        let ws = request(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(p.asked(&ws), Asked::Allowed(0));
        let other = request(&[("connection", "upgrade"), ("upgrade", "foo, My-Proto/2")]);
        assert_eq!(p.asked(&other), Asked::Allowed(1));
        assert_eq!(p.protocol(1), "my-proto/2");
    }

    #[test]
    fn an_unlisted_websocket_is_refused_and_others_are_dropped() {
        let p = policy(&[]);
        let ws = request(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert_eq!(p.asked(&ws), Asked::RefusedWebSocket);
        let h2c = request(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert_eq!(p.asked(&h2c), Asked::Nothing);
    }

    #[test]
    fn an_upgrade_field_without_connection_upgrade_asks_nothing() {
        let p = policy(&["websocket"]);
        assert_eq!(
            p.asked(&request(&[("upgrade", "websocket")])),
            Asked::Nothing
        );
        let mut old = request(&[("connection", "upgrade"), ("upgrade", "websocket")]);
        old.set_version(Version::HTTP_10);
        assert_eq!(p.asked(&old), Asked::Nothing);
    }

    #[test]
    fn h2c_and_non_tokens_are_config_errors() {
        for bad in ["h2c", "H2C", "web socket", "", "a/"] {
            assert!(
                UpgradePolicy::new(&[bad.to_string()], Duration::from_secs(1)).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn restore_puts_back_only_non_websocket_fields() {
        let p = policy(&["websocket", "custom"]);
        let mut req = request(&[]);
        p.restore(0, &mut req).unwrap();
        assert!(req.headers.get("upgrade").is_none());
        p.restore(1, &mut req).unwrap();
        assert_eq!(req.headers["upgrade"], "custom");
        assert_eq!(req.headers["connection"], "Upgrade");
    }
}
