//! Listener limits: what a client may hold of a listener and how long
//! (header and idle timeouts, connections, header, body and HTTP/2 stream
//! limits), and how refusals are answered and counted.
//!
//! - `head.rs`: reading a request head under the header timeout and size
//!   limit, and the raw 408/431 answers; used by both HTTP/1 engines.
//! - `gate.rs`: [`ConnectionGate`], a [`pingora::apps::ServerApp`] wrapper
//!   that caps the connections a listener serves at once.
//! - `front.rs`: [`ProxyHttpFront`], the connection loop of `engine:
//!   proxy_http` listeners, which reads the first head of a connection
//!   under the limits before Pingora's `HttpProxy` takes over.
//!
//! Body limits are request policy and live with the hooks
//! (`crate::proxy::limits`), so both engines and HTTP/2 share them.
//!
//! Cost on the request path: none of this allocates, locks or makes a
//! syscall per request. The head reader scans the bytes it read for the
//! blank line (memchr) and arms one timer for the whole head, which tokio
//! registers only if the head is not already readable (usually it is,
//! since the first byte was waited for). The connection cap is one atomic
//! add and one subtract per connection, not per request.

mod front;
mod gate;
pub mod head;

use std::time::Duration;

pub use front::ProxyHttpFront;
pub use gate::ConnectionGate;

use crate::metrics::handles::ListenerRefusals;

/// Default `request_header_timeout` (Envoy's `request_headers_timeout` is
/// off by default, NGINX's `client_header_timeout` 60 s; 30 s is enough for
/// any real client and halves what a slow-loris holds).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `idle_timeout` (NGINX's `keepalive_timeout` is 75 s, Pingora's
/// HTTP/1 keep-alive 60 s, which the gateway always used).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `max_request_header_bytes`: 60 KiB, Envoy's default
/// `max_request_headers_kb`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 60 * 1024;
/// Smallest accepted `max_request_header_bytes`.
pub const MIN_HEADER_BYTES: usize = 1024;
/// Largest accepted `max_request_header_bytes`: Pingora's own ceiling
/// (`MAX_HEADER_SIZE` of its HTTP/1 parser).
pub const MAX_HEADER_BYTES: usize = 1_048_575;
/// Default `http2_max_concurrent_streams` (Envoy's and NGINX's 100, also
/// Pingora's default).
pub const DEFAULT_H2_STREAMS: u32 = 100;

/// The effective limits of a listener (config defaults applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time for a whole request head, from its first byte; also how long a
    /// new connection may stay silent.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Connections served at once; `None`: unlimited.
    pub max_connections: Option<usize>,
    /// Largest request head, bytes.
    pub max_header_bytes: usize,
    /// Largest request body, bytes, unless the route says otherwise.
    pub max_body_bytes: Option<u64>,
    /// HTTP/2 streams per connection.
    pub h2_max_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: None,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_body_bytes: None,
            h2_max_streams: DEFAULT_H2_STREAMS,
        }
    }
}

impl Limits {
    /// The idle timeout as Pingora's HTTP/1 keep-alive setting: whole
    /// seconds, rounded up (0 would mean "forever" there).
    pub fn keepalive_secs(&self) -> u64 {
        let d = self.idle_timeout;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// Pingora's HTTP/2 server settings for these limits: its bounded
    /// defaults, with the stream and header-list limits set.
    pub fn h2_options(&self) -> pingora::protocols::http::v2::server::H2Options {
        let mut o = pingora::protocols::http::v2::server::default_h2_options();
        o.max_concurrent_streams(self.h2_max_streams);
        // At most MAX_HEADER_BYTES (validated), which fits in a u32.
        o.max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        o
    }
}

/// A listener's limits with the counters of what they refused: one per
/// listener, shared by its apps and hooks.
pub struct Gatekeeper {
    /// The limits.
    pub limits: Limits,
    /// `gateway_listener_refusals_total{listener,reason}`, resolved once.
    pub refusals: ListenerRefusals,
}

impl Gatekeeper {
    /// The gatekeeper of the listener `name`.
    pub fn new(name: &str, limits: Limits) -> Self {
        Gatekeeper {
            limits,
            refusals: ListenerRefusals::new(name),
        }
    }

    /// The HTTP/1 keep-alive to give a session: the idle timeout, or none
    /// once the server shuts down (as Pingora's own service does).
    pub fn keepalive(&self, shutdown: &pingora::server::ShutdownWatch) -> Option<u64> {
        (!*shutdown.borrow()).then_some(self.limits.keepalive_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalive_seconds_round_up_and_never_reach_zero() {
        let with = |ms| Limits {
            idle_timeout: Duration::from_millis(ms),
            ..Limits::default()
        };
        assert_eq!(with(60_000).keepalive_secs(), 60);
        assert_eq!(with(1_500).keepalive_secs(), 2);
        assert_eq!(with(200).keepalive_secs(), 1);
    }
}
