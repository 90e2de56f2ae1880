//! Compiling listeners: addresses, uniqueness, TLS files checked up front.

use super::super::*;

impl Compiler<'_> {
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
                match tls::check_cert_pair(&cert, &key) {
                    Ok(()) => Some(ListenerTlsSpec {
                        cert,
                        key,
                        h2: t.alpn.contains(&Alpn::H2),
                    }),
                    Err(errs) => {
                        self.pair_errors(Section::Listeners, i, "tls", errs);
                        None
                    }
                }
            });
            if let Some(addr) = addr {
                out.push(ListenerSpec {
                    name: l.name.as_str().into(),
                    addr,
                    tls,
                    h2c: l.h2c,
                });
            }
        }
        out
    }
}
