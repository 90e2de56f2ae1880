//! Harness for the black-box integration tests of the gateway.
//!
//! Everything here talks to real things over loopback: the real `gateway`
//! binary ([`Gateway`]), real HTTP upstream servers built on hyper
//! ([`Upstream`]), real certificates made with rcgen ([`TestCa`]), real
//! clients (reqwest, and `curl` through [`curl`]).
//!
//! # The fixture
//!
//! * [`Gateway::builder`] ([`GatewayBuilder`]) picks the admin and listener
//!   ports and writes that boilerplate; a test adds clusters of upstreams
//!   ([`GatewayBuilder::cluster`]), routes and YAML fragments as text, env
//!   vars for the gateway process, or the whole document
//!   ([`GatewayBuilder::config`]) when the test is about the config.
//! * [`Upstream`] is the one upstream type: echo, custom handler, TLS, and
//!   run-time switches (health, failing, delay; [`Upstream::switchable`]),
//!   each with a request log ([`Upstream::requests`]).
//! * Handles on a running [`Gateway`]: [`Gateway::get`], [`Gateway::url`],
//!   [`Gateway::reload`], [`Gateway::wait_generation`],
//!   [`Gateway::metric`]`(..).eventually(..)` (retries, then fails with the
//!   last value), [`Gateway::access_log`]; dropping it stops the process.
//! * Shared helpers: [`fire`] (load), [`three_sigma`] (statistics),
//!   [`wait_metrics`], [`tail`], [`error_chain`].
//!
//! A typical test (`fixture_example` in `tests/harness.rs` is exactly this):
//!
//! ```no_run
//! use gateway_tests::{Gateway, Upstream};
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn fixture_example() {
//!     let up = Upstream::named("a");
//!     let gw = Gateway::builder()
//!         .cluster("c", &[&up], "")
//!         .route("{name: all, cluster: c}")
//!         .start();
//!     let resp = gw.get("/hello").await;
//!     assert_eq!(resp.status(), 200);
//!     assert_eq!(resp.headers()["x-upstream"], "a");
//!     gw.metric("gateway_requests_total", &[("route", "all")])
//!         .eventually(|v| v == 1.0)
//!         .await;
//!     assert_eq!(up.requests()[0].path, "/hello");
//! }
//! ```
//!
//! Tests that write their own YAML pick every port with [`free_port`];
//! [`tpl`] fills `${name}` placeholders so that YAML flow mappings need no
//! `{{` escaping.

mod certs;
mod client;
mod dns;
mod fixture;
mod gateway;
pub mod jwt;
pub mod netns;
pub mod otlp;
mod prom;
mod prom_families;
mod redis;
mod upstream;

pub use certs::{LeafCert, LeafSpec, TestCa, Validity};
pub use client::{
    curl, http_client, http_client_with_host, mtls_client, rustls_connector, served_cert,
    tls_client, tls_exchange, CurlOutput, TlsOutcome,
};
pub use dns::{DnsServer, DNSMASQ_INSTALL_HINT};
pub use fixture::{
    endpoints, error_chain, fire, fire_with, metric, tail, three_sigma, upload_body, wait_metrics,
    GatewayBuilder, MetricMatcher, UpstreamCounts,
};
pub use gateway::{gateway_bin, run_gateway, workspace_root, Gateway, GatewayOutput};
pub use otlp::{show_spans, AttrValue, OtlpReceiver, ReceivedSpan, SpanKind};
pub use prom::{metric_value, parse_prometheus, Sample};
pub use prom_families::{parse_families, Family};
pub use redis::{RedisCluster, RedisServer, REDIS_INSTALL_HINT};
pub use upstream::{
    pseudo_random_bytes, sha256_hex, Reply, RequestInfo, Upstream, UpstreamHandler, DOWNLOAD_SEED,
    GENERATED_CHUNK, SWITCHABLE_BODY_LEN, SWITCHABLE_HEALTH_PATH,
};

use std::collections::HashSet;
use std::fmt::Display;
use std::sync::{Mutex, OnceLock};

/// A TCP port on 127.0.0.1 that is free now and that nothing else in this
/// test process will be handed: bound, read back, and released.
///
/// Ports come from below the kernel's ephemeral range (read from
/// `/proc/sys/net/ipv4/ip_local_port_range`), so that upstreams bound to port
/// 0 and outgoing connections can never take a port a test picked for its
/// gateway, and a "dead" endpoint port stays dead. Without that file it falls
/// back to binding port 0.
pub fn free_port() -> u16 {
    static TAKEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let taken = TAKEN.get_or_init(Default::default);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(0);
    if low > 12_000 {
        for _ in 0..1000 {
            let port = fastrand::u16(10_000..low);
            let mut taken = taken.lock().expect("port set");
            if taken.contains(&port) {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                taken.insert(port);
                return port;
            }
        }
    }
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if taken.lock().expect("port set").insert(port) {
            return port;
        }
    }
}

/// Replaces every `${name}` in `template` with the matching value and panics
/// if a placeholder is left over (a typo in a test's YAML).
///
/// ```
/// let y = gateway_tests::tpl("admin: {listen: 127.0.0.1:${admin}}", &[("admin", &9901)]);
/// assert_eq!(y, "admin: {listen: 127.0.0.1:9901}");
/// ```
pub fn tpl(template: &str, vars: &[(&str, &dyn Display)]) -> String {
    let mut out = template.to_string();
    for (name, value) in vars {
        out = out.replace(&format!("${{{name}}}"), &value.to_string());
    }
    if let Some(i) = out.find("${") {
        let end = out[i..].find('}').map_or(out.len(), |e| i + e + 1);
        panic!(
            "template placeholder {} was not given a value; template:\n{template}",
            &out[i..end]
        );
    }
    out
}

/// `http://127.0.0.1:{port}{path}`.
pub fn url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}
