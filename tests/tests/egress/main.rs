//! Egress forward proxy, black-box: the contract of gateway/docs/egress.md.
//!
//! Workloads reach "external" services through the gateway's egress
//! listener (`mode: egress`) the way real ones do: `curl -x` /
//! `HTTPS_PROXY` and reqwest with a proxy. Every destination lives on
//! loopback; `dns.static` maps the partner names there and rules say
//! `allow_cidrs: [127.0.0.0/8]` where a destination is meant to be reached.
//! Destinations that must *not* be reached are [`common::Tap`]s, which count
//! every TCP connection and byte that arrives.
//!
//! - `allowed`: plain HTTP (absolute form), HTTPS via CONNECT, TLS
//!   origination — a 10 MiB download keeps its SHA-256 each way;
//! - `denied`: host, port, principal, method, path, deny rule — exact
//!   status, reason in the body, `gateway_egress_requests_total`; CONNECT
//!   refusals; `https://` absolute URLs are not sent in plaintext; each
//!   request on a kept-alive proxy connection is decided alone;
//! - `ssrf`: every spelling of an internal address is refused (absolute
//!   form and CONNECT) without a connection to the destination;
//! - `principals`: per-function allowlists by JWT subject, 407s;
//! - `audit`: `audit_only`, admin `/egress/observed` (and
//!   `observed_max_entries`), the access log;
//! - `refusals`: unparsable requests, revoked client certificates and a
//!   listener without `egress:` config are answered, audited and counted;
//! - `sni`: the ClientHello server name must match the CONNECT host;
//! - `tunnel`: half-closes pass through a CONNECT tunnel both ways.
//!
//! Run: `cargo test -p gateway-tests --test egress`.

mod allowed;
mod audit;
mod common;
mod denied;
mod principals;
mod refusals;
mod sni;
mod ssrf;
mod tunnel;
