//! Compiling listeners: addresses, uniqueness, TLS files checked up front.

use super::super::*;

/// Default L4 read buffer of a plaintext listener (see `read_buffer_bytes`).
const DEFAULT_PLAIN_READ_BUFFER: usize = 4096;
/// Default L4 read buffer of a TLS listener: one full TLS record per read.
const DEFAULT_TLS_READ_BUFFER: usize = 16 * 1024;
/// Largest accepted `read_buffer_bytes`: every connection holds one.
const MAX_READ_BUFFER: usize = 1024 * 1024;

impl Compiler<'_> {
    /// The listener's engine: its `engine`, else the default
    /// (`GATEWAY_DEFAULT_ENGINE`, else `lean`) where the lean path can serve
    /// (proxy listeners, HTTP/1 clusters), else `proxy_http`. An explicit `lean` where it cannot is an error.
    fn engine(&mut self, cfg: &Config, i: usize, l: &config::Listener) -> config::ListenerEngine {
        use config::ListenerEngine::{Lean, ProxyHttp};
        let h2_cluster = cfg
            .clusters
            .iter()
            .find(|c| c.protocol != config::UpstreamProtocol::Http1);
        let proxy = l.mode == config::ListenerMode::Proxy;
        match l.engine {
            Some(Lean) if !proxy => {
                self.err(
                    Section::Listeners,
                    i,
                    "engine",
                    "`engine: lean` serves proxy listeners only",
                );
            }
            Some(Lean) => {
                if let Some(c) = h2_cluster {
                    let m = format!(
                        "`engine: lean` has no HTTP/2 upstreams yet, and cluster `{}` uses them",
                        c.name
                    );
                    self.err(Section::Listeners, i, "engine", m);
                }
            }
            Some(ProxyHttp) => {}
            None if proxy && h2_cluster.is_none() => return default_engine(),
            None => {}
        }
        l.engine.unwrap_or(ProxyHttp)
    }

    /// Checks settings outside listeners, clusters and routes.
    pub(in crate::runtime) fn telemetry(&mut self, cfg: &Config) {
        let ratio = cfg.telemetry.access_log.success_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            let d = self.src.top(
                "telemetry.access_log.success_sample_ratio",
                "must be between 0 and 1",
            );
            self.errors.push(d);
        }
        if let Some(t) = &cfg.telemetry.tracing {
            if !(0.0..=1.0).contains(&t.sample_ratio) {
                let d = self
                    .src
                    .top("telemetry.tracing.sample_ratio", "must be between 0 and 1");
                self.errors.push(d);
            }
            if !t.otlp_endpoint.starts_with("http://") && !t.otlp_endpoint.starts_with("https://") {
                let d = self.src.top(
                    "telemetry.tracing.otlp_endpoint",
                    format!("`{}` must be an http:// or https:// URL", t.otlp_endpoint),
                );
                self.errors.push(d);
            }
        }
    }

    pub(in crate::runtime) fn listeners(
        &mut self,
        cfg: &Config,
        admin: Option<SocketAddr>,
    ) -> Vec<ListenerSpec> {
        if cfg.listeners.is_empty() {
            let d = self.src.top(
                "listeners",
                "no listeners: add at least one under `listeners:`",
            );
            self.errors.push(d);
        }
        self.unique_names(
            Section::Listeners,
            cfg.listeners.iter().map(|l| l.name.as_str()),
            "listener",
        );
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        if let Some(a) = admin {
            bound.insert(a, "the admin listener".into());
        }
        let mut out = Vec::new();
        for (i, l) in cfg.listeners.iter().enumerate() {
            let addr = self.socket_addr(&l.listen, |s, m| s.at(Section::Listeners, i, "listen", m));
            if let Some(a) = addr {
                if let Some(other) = bound.insert(a, format!("listener `{}`", l.name)) {
                    self.err(
                        Section::Listeners,
                        i,
                        "listen",
                        format!("address {a} is already used by {other}"),
                    );
                }
            }
            let tls = l.tls.as_ref().and_then(|t| {
                if t.alpn.is_empty() {
                    self.err(
                        Section::Listeners,
                        i,
                        "tls.alpn",
                        "alpn must list at least one protocol",
                    );
                }
                self.client_auth(i, t, cfg);
                Some(ListenerTlsSpec {
                    certs: self.listener_certs(i, &l.name, t)?,
                    h2: t.alpn.contains(&Alpn::H2),
                    client_auth: t.client_auth,
                    client_trust_domains: t.client_trust_domains.clone(),
                })
            });
            if l.read_buffer_bytes.is_some_and(|n| n > MAX_READ_BUFFER) {
                self.err(
                    Section::Listeners,
                    i,
                    "read_buffer_bytes",
                    format!(
                        "read_buffer_bytes must be at most {MAX_READ_BUFFER} (every connection holds one)"
                    ),
                );
            }
            let lean = self.engine(cfg, i, l) == config::ListenerEngine::Lean;
            let redirect = l.redirect.as_ref().and_then(|r| {
                filters::redirect::Redirect::new(r, None)
                    .map_err(|filters::redirect::RedirectError::Field(f, why)| {
                        self.err(Section::Listeners, i, &format!("redirect.{f}"), why)
                    })
                    .ok()
            });
            let limits = self.limits(i, l);
            let (client_address, proxy_protocol) = self.client_address(i, l);
            if let Some(addr) = addr {
                let read_buffer_bytes = l.read_buffer_bytes.unwrap_or(match (&tls, lean) {
                    (Some(_), _) => DEFAULT_TLS_READ_BUFFER,
                    // The lean path reads request heads into the session's
                    // own buffer, allocated only once a request arrives.
                    (None, true) => 0,
                    (None, false) => DEFAULT_PLAIN_READ_BUFFER,
                });
                out.push(ListenerSpec {
                    name: l.name.as_str().into(),
                    addr,
                    tls,
                    h2c: l.h2c,
                    mode: l.mode,
                    read_buffer_bytes,
                    lean,
                    redirect,
                    limits,
                    client_address,
                    proxy_protocol,
                });
                if l.mode == config::ListenerMode::Egress && cfg.egress.is_none() {
                    self.err(
                        Section::Listeners,
                        i,
                        "mode",
                        "`mode: egress` needs a top-level `egress:` block with rules",
                    );
                }
            }
        }
        out
    }

    /// The listener's effective limits: its `limits`, checked, over the
    /// defaults. Zero is refused where it would make the listener useless
    /// (every body may be refused with `max_request_body_bytes: 0`).
    fn limits(&mut self, i: usize, l: &config::Listener) -> crate::limits::Limits {
        use crate::limits::{Limits, MAX_HEADER_BYTES, MIN_HEADER_BYTES};
        let c = &l.limits;
        let mut out = Limits::default();
        for (key, set, slot) in [
            (
                "request_header_timeout",
                c.request_header_timeout,
                &mut out.header_timeout,
            ),
            ("idle_timeout", c.idle_timeout, &mut out.idle_timeout),
        ] {
            match set.map(|d| d.get()) {
                Some(d) if d.is_zero() => {
                    let m = format!("{key} must be longer than 0s");
                    self.err(Section::Listeners, i, &format!("limits.{key}"), m);
                }
                Some(d) => *slot = d,
                None => {}
            }
        }
        match c.max_connections {
            Some(0) => self.err(
                Section::Listeners,
                i,
                "limits.max_connections",
                "max_connections must be at least 1 (leave it out for no limit)",
            ),
            Some(n) => out.max_connections = Some(n as usize),
            None => {}
        }
        if let Some(n) = c.max_request_header_bytes {
            let n = n as usize;
            if (MIN_HEADER_BYTES..=MAX_HEADER_BYTES).contains(&n) {
                out.max_header_bytes = n;
            } else {
                self.err(
                    Section::Listeners,
                    i,
                    "limits.max_request_header_bytes",
                    format!("max_request_header_bytes must be between {MIN_HEADER_BYTES} and {MAX_HEADER_BYTES}"),
                );
            }
        }
        out.max_body_bytes = c.max_request_body_bytes;
        match c.http2_max_concurrent_streams {
            Some(0) => self.err(
                Section::Listeners,
                i,
                "limits.http2_max_concurrent_streams",
                "http2_max_concurrent_streams must be at least 1",
            ),
            Some(n) => out.h2_max_streams = n,
            None => {}
        }
        let http_only = c.request_header_timeout.is_some()
            || c.idle_timeout.is_some()
            || c.max_request_header_bytes.is_some()
            || c.max_request_body_bytes.is_some()
            || c.http2_max_concurrent_streams.is_some();
        if l.mode == config::ListenerMode::Egress && http_only {
            self.err(
                Section::Listeners,
                i,
                "limits",
                "egress listeners take only `max_connections` of `limits`",
            );
        }
        out
    }

    /// Checks that client certificates can be verified: named trust domains
    /// exist and have a CA bundle.
    fn client_auth(&mut self, i: usize, t: &config::ListenerTls, cfg: &Config) {
        let with_ca = |name: &str| {
            cfg.trust_domains
                .iter()
                .any(|td| td.name == name && td.ca.is_some())
        };
        match (&t.client_auth, &t.client_trust_domains) {
            (None, Some(_)) => self.err(
                Section::Listeners,
                i,
                "tls.client_trust_domains",
                "client_trust_domains needs `client_auth: require` or `optional`",
            ),
            (Some(_), Some(list)) => {
                for (j, name) in list.iter().enumerate() {
                    if !with_ca(name) {
                        self.err(
                            Section::Listeners,
                            i,
                            &format!("tls.client_trust_domains[{j}]"),
                            format!("no trust domain `{name}` with a `ca` bundle"),
                        );
                    }
                }
            }
            (Some(_), None) if !cfg.trust_domains.iter().any(|td| td.ca.is_some()) => self.err(
                Section::Listeners,
                i,
                "tls.client_auth",
                "client_auth needs at least one trust domain with a `ca` bundle",
            ),
            _ => {}
        }
    }
}

/// `GATEWAY_DEFAULT_ENGINE` (`proxy_http` or `lean`), else `lean`.
fn default_engine() -> config::ListenerEngine {
    match std::env::var("GATEWAY_DEFAULT_ENGINE").as_deref() {
        Ok("proxy_http") => config::ListenerEngine::ProxyHttp,
        _ => config::ListenerEngine::Lean,
    }
}
