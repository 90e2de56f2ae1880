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
                let cert = self.src.resolve(Section::Listeners, i, &t.cert);
                let key = self.src.resolve(Section::Listeners, i, &t.key);
                if t.alpn.is_empty() {
                    self.err(
                        Section::Listeners,
                        i,
                        "tls.alpn",
                        "alpn must list at least one protocol",
                    );
                }
                self.client_auth(i, t, cfg);
                match tls::check_cert_pair(&cert, &key) {
                    Ok(()) => Some(ListenerTlsSpec {
                        cert,
                        key,
                        h2: t.alpn.contains(&Alpn::H2),
                        client_auth: t.client_auth,
                        client_trust_domains: t.client_trust_domains.clone(),
                    }),
                    Err(errs) => {
                        self.pair_errors(Section::Listeners, i, "tls", errs);
                        None
                    }
                }
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
