//! Listener settings that tell the gateway who the real client is when
//! load balancers or proxies stand in front of it: trusted proxies and
//! `X-Forwarded-For` (per request), and the PROXY protocol (per connection).

use filters::egress::Cidr;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// Whose `X-Forwarded-For` this listener believes, and how far.
///
/// The *peer* is the address the connection comes from: the TCP peer, or
/// the source a PROXY protocol header carried. Only when the peer is in
/// `trusted_proxies` is `X-Forwarded-For` read; otherwise the peer is the
/// client, and the `X-Forwarded-For` it sent is not passed upstream.
/// The result is the client address everywhere: `client_ip` rate-limit
/// keys, authorization rules, consistent hashing, the access-log `client`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAddress {
    /// CIDRs (or single addresses) of the proxies in front of this
    /// listener, e.g. the load balancer's subnet. Required; write
    /// `0.0.0.0/0` and `::/0` to trust every peer (only where nothing else
    /// can reach the listener).
    // Strings here, CIDRs in the schema: compiling them reports each bad
    // entry at its own line, and all of them at once.
    #[schemars(with = "Vec<Cidr>")]
    pub trusted_proxies: Vec<String>,
    /// Envoy's `xff_num_trusted_hops`: the number of proxies in front of
    /// the gateway, the peer included. The client is the address this many
    /// entries from the right of `X-Forwarded-For` (1: the last entry,
    /// which the peer appended); the entries on the way are not checked
    /// against `trusted_proxies`. Without it the list is walked from the
    /// right, skipping addresses in `trusted_proxies`, and the first other
    /// address is the client (NGINX `real_ip_recursive on`). A list too
    /// short, or an entry on the way that is not an IP address, leaves the
    /// peer as the client.
    #[serde(default)]
    pub xff_trusted_hops: Option<u32>,
}

/// Accept the PROXY protocol (v1 text or v2 binary, HAProxy's
/// specification) on this listener: the connection's client address is the
/// source the header carries.
///
/// Every connection must start with a header, and only from `from`: a
/// connection from another address, without a valid header, or whose
/// header does not arrive within `timeout` is closed before any HTTP (or
/// TLS) is read, and counted in `gateway_proxy_protocol_total`. A `LOCAL`
/// (v2) or `UNKNOWN` (v1) header, as sent by health checks, keeps the TCP
/// peer as the address. Fixed at startup, like the listener's address.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxyProtocol {
    /// CIDRs of the proxies allowed to send the header (the load
    /// balancer's, HAProxy's address). Required.
    #[schemars(with = "Vec<Cidr>")]
    pub from: Vec<String>,
    /// How long a new connection may take to send its header. Default 3s.
    #[serde(default = "default_proxy_protocol_timeout")]
    pub timeout: Duration,
}

fn default_proxy_protocol_timeout() -> Duration {
    Duration::from_secs(3)
}
