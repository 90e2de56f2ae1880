//! The Pingora client shared by every mirror copy (pooled connections, TLS).

use std::sync::LazyLock;

use pingora::connectors::http::Connector;

/// Pingora's client, shared by every mirror copy.
pub(crate) static CONNECTOR: LazyLock<Connector> = LazyLock::new(|| Connector::new(None));

/// Builds the shared client now (it loads the platform CA store), so the
/// first mirrored request does not pay for it on a request thread.
pub fn warm_up() {
    LazyLock::force(&CONNECTOR);
}
