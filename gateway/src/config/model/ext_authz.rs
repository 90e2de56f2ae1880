//! External authorization of a route (`routes[].ext_authz`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Duration;

/// Ask an authorization service about each request before it is proxied
/// (Envoy's `ext_authz` in HTTP mode, Traefik's `forwardAuth`, NGINX's
/// `auth_request`). The gateway sends the request's method, its path and
/// query after `path_prefix`, its `Host`, the `headers_to_authz` and the
/// verified caller (`x-gateway-principal`, `x-gateway-trust-domain`) without a body
/// to a `cluster` endpoint. A 2xx answer lets the request through, with
/// the answer's `headers_to_upstream` set on it; any other answer goes to
/// the client as it is (status, `headers_to_client`, `Content-Type`,
/// body up to 64 KiB) and the upstream never sees the request. Runs after
/// the route's own authentication and authorization (`auth`), before its
/// rate limits.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtAuthz {
    /// The cluster of the authorization service.
    pub cluster: String,
    /// Put before the request's path in the check request (`/check` turns
    /// `/orders?id=1` into `/check/orders?id=1`). Default: none.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Longest wait for the service's answer, connection included; past it
    /// the check failed. Default 200ms.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Let the request through when the check fails (service unreachable,
    /// timed out, no valid answer). Default false: answer `status_on_error`.
    #[serde(default)]
    pub failure_mode_allow: bool,
    /// Status answered when the check fails and `failure_mode_allow` is
    /// false. Default 403 (Envoy's `status_on_error`).
    #[serde(default = "default_status_on_error")]
    pub status_on_error: u16,
    /// Request headers sent to the service (names; `Host` always is).
    #[serde(default)]
    pub headers_to_authz: Vec<String>,
    /// Headers of an allowing answer set on the upstream request
    /// (replacing the client's).
    #[serde(default)]
    pub headers_to_upstream: Vec<String>,
    /// Headers of a denying answer passed to the client.
    #[serde(default)]
    pub headers_to_client: Vec<String>,
    /// Keep each answer this long for the same method, path, caller and
    /// `headers_to_authz` values (0: no cache). Per route, bounded, cleared
    /// by a reload. Default 0s.
    #[serde(default)]
    pub cache_ttl: Option<Duration>,
}

fn default_timeout() -> Duration {
    Duration::from_millis(200)
}

fn default_status_on_error() -> u16 {
    403
}
