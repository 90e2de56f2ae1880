//! Compiling routes: matchers, actions, rewrites, header edits, retries,
//! rate limits, mirrors, and the fleet rate-limit store.

use super::super::*;
use crate::runtime::route::CorsPolicy;

impl Compiler<'_> {
    fn value_matcher(&mut self, i: usize, at: &str, m: &ValueMatch) -> Option<ValueMatcher> {
        match m {
            ValueMatch::Exact(s) => Some(ValueMatcher::Exact(s.clone())),
            ValueMatch::Spec(spec) => {
                let set = spec.exact.is_some() as u8
                    + spec.regex.is_some() as u8
                    + spec.present.is_some() as u8;
                if set != 1 {
                    self.err(
                        Section::Routes,
                        i,
                        at,
                        "set exactly one of `exact`, `regex` or `present`",
                    );
                    return None;
                }
                if let Some(e) = &spec.exact {
                    return Some(ValueMatcher::Exact(e.clone()));
                }
                if let Some(p) = spec.present {
                    return Some(ValueMatcher::Present(p));
                }
                match anchored(spec.regex.as_deref().unwrap_or_default()) {
                    Ok(r) => Some(ValueMatcher::Regex(r)),
                    Err(e) => {
                        self.err(Section::Routes, i, &format!("{at}.regex"), e);
                        None
                    }
                }
            }
        }
    }

    /// Header conditions (`match.headers`, `fault.headers`) at `at`.
    fn header_conditions(
        &mut self,
        i: usize,
        at: &str,
        conds: &std::collections::BTreeMap<String, ValueMatch>,
    ) -> Vec<(http::HeaderName, ValueMatcher)> {
        let mut out = Vec::new();
        for (name, vm) in conds {
            let at = format!("{at}.{name}");
            let hn = match http::HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    self.err(
                        Section::Routes,
                        i,
                        &at,
                        format!("invalid header name `{name}`"),
                    );
                    None
                }
            };
            if let (Some(hn), Some(vm)) = (hn, self.value_matcher(i, &at, vm)) {
                out.push((hn, vm));
            }
        }
        out
    }

    /// The route's fault injection, checked.
    fn fault(&mut self, i: usize, r: &config::Route) -> Option<crate::proxy::fault::FaultPolicy> {
        use crate::proxy::fault::{Abort, FaultPolicy};
        let f = r.fault.as_ref()?;
        let share = |this: &mut Self, at: &str, p: f64| {
            if !(0.0..=100.0).contains(&p) {
                this.err(
                    Section::Routes,
                    i,
                    at,
                    format!("{p} is not a percentage from 0 to 100"),
                );
            }
            p.clamp(0.0, 100.0) / 100.0
        };
        let delay = f.delay.as_ref().map(|d| {
            (
                d.fixed.get(),
                share(self, "fault.delay.percentage", d.percentage),
            )
        });
        let abort = f.abort.as_ref().and_then(|a| {
            let p = share(self, "fault.abort.percentage", a.percentage);
            match (a.http_status, a.grpc_status) {
                (Some(s), None) if (200..=599).contains(&s) => Some((Abort::Http(s), p)),
                (None, Some(g)) if g <= 16 => Some((Abort::Grpc(g), p)),
                (Some(s), None) => {
                    self.err(
                        Section::Routes,
                        i,
                        "fault.abort.http_status",
                        format!("{s} is not a status from 200 to 599"),
                    );
                    None
                }
                (None, Some(g)) => {
                    self.err(
                        Section::Routes,
                        i,
                        "fault.abort.grpc_status",
                        format!("{g} is not a gRPC status (0 to 16)"),
                    );
                    None
                }
                _ => {
                    self.err(
                        Section::Routes,
                        i,
                        "fault.abort",
                        "set exactly one of `http_status` and `grpc_status`",
                    );
                    None
                }
            }
        });
        if f.delay.is_none() && f.abort.is_none() {
            self.err(
                Section::Routes,
                i,
                "fault",
                "a fault needs a `delay` or an `abort`",
            );
        }
        let headers = self.header_conditions(i, "fault.headers", &f.headers);
        Some(FaultPolicy::new(
            &r.name,
            delay,
            abort,
            headers,
            f.max_active_delays,
        ))
    }

    fn matcher(&mut self, i: usize, m: &config::RouteMatch) -> Matcher {
        let mut out = Matcher::default();
        if let Some(h) = &m.host {
            let h = h.to_ascii_lowercase();
            if let Some(suffix) = h.strip_prefix('*') {
                if !suffix.starts_with('.') || suffix.len() < 2 || suffix.contains('*') {
                    self.err(
                        Section::Routes,
                        i,
                        "match.host",
                        "a wildcard host must look like `*.example.com`",
                    );
                }
                out.host = Some(HostMatch::Suffix(suffix.to_string()));
            } else if h.contains('*') || h.is_empty() {
                self.err(
                    Section::Routes,
                    i,
                    "match.host",
                    "host must be exact (`api.example.com`) or `*.suffix`",
                );
            } else {
                out.host = Some(HostMatch::Exact(h));
            }
        }
        let paths =
            m.path.is_some() as u8 + m.path_prefix.is_some() as u8 + m.path_regex.is_some() as u8;
        if paths > 1 {
            self.err(
                Section::Routes,
                i,
                "match",
                "use only one of `path`, `path_prefix` and `path_regex`",
            );
        }
        for (key, p) in [("path", &m.path), ("path_prefix", &m.path_prefix)] {
            if let Some(p) = p {
                if !p.starts_with('/') {
                    self.err(
                        Section::Routes,
                        i,
                        &format!("match.{key}"),
                        format!("`{p}` must start with `/`"),
                    );
                }
            }
        }
        if let Some(p) = &m.path {
            out.path = Some(PathMatch::Exact(p.clone()));
        } else if let Some(p) = &m.path_prefix {
            out.path = Some(PathMatch::Prefix(p.clone()));
        } else if let Some(r) = &m.path_regex {
            match anchored(r) {
                Ok(r) => out.path = Some(PathMatch::Regex(r)),
                Err(e) => self.err(Section::Routes, i, "match.path_regex", e),
            }
        }
        for (j, meth) in m.methods.iter().enumerate() {
            match http::Method::from_bytes(meth.to_ascii_uppercase().as_bytes()) {
                Ok(mm) => out.methods.push(mm),
                Err(_) => self.err(
                    Section::Routes,
                    i,
                    &format!("match.methods[{j}]"),
                    format!("invalid method `{meth}`"),
                ),
            }
        }
        out.headers = self.header_conditions(i, "match.headers", &m.headers);
        for (name, vm) in &m.query {
            if let Some(vm) = self.value_matcher(i, &format!("match.query.{name}"), vm) {
                out.query.push((name.clone(), vm));
            }
        }
        out
    }

    fn header_edits(
        &mut self,
        i: usize,
        at: &str,
        e: &filters::headers::HeaderEdits,
    ) -> CompiledHeaderEdits {
        match CompiledHeaderEdits::compile(e) {
            Ok(c) => c,
            Err(errs) => {
                for e in errs {
                    self.err(Section::Routes, i, at, e.to_string());
                }
                CompiledHeaderEdits::default()
            }
        }
    }

    pub(in crate::runtime) fn routes(
        &mut self,
        cfg: &Config,
        clusters: &HashMap<String, Arc<Cluster>>,
        listener_names: &Arc<[Arc<str>]>,
    ) -> Vec<Route> {
        self.unique_names(
            Section::Routes,
            cfg.routes.iter().map(|r| r.name.as_str()),
            "route",
        );
        let declared: HashSet<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
        let mut out = Vec::new();
        for (i, r) in cfg.routes.iter().enumerate() {
            let matcher = self.matcher(i, &r.matches);
            let targets = r.cluster.is_some() as u8
                + (!r.backends.is_empty()) as u8
                + r.direct_response.is_some() as u8
                + r.redirect.is_some() as u8;
            if targets != 1 {
                self.err(
                    Section::Routes,
                    i,
                    "",
                    "a route needs exactly one of `cluster`, `backends`, `direct_response` or `redirect`",
                );
            }
            let mut refs: Vec<(String, String, u32)> = Vec::new();
            if let Some(c) = &r.cluster {
                refs.push(("cluster".into(), c.clone(), 1));
            }
            for (j, b) in r.backends.iter().enumerate() {
                refs.push((
                    format!("backends[{j}].cluster"),
                    b.cluster.clone(),
                    b.weight,
                ));
            }
            let mut backends = Vec::new();
            let mut total = 0u64;
            for (at, name, weight) in &refs {
                if !declared.contains(name.as_str()) {
                    self.err(
                        Section::Routes,
                        i,
                        at,
                        format!("route `{}` refers to unknown cluster `{name}`", r.name),
                    );
                } else if let Some(c) = clusters.get(name) {
                    total += *weight as u64;
                    backends.push((c.clone(), total));
                }
            }
            if !refs.is_empty() && refs.iter().all(|(_, _, w)| *w == 0) {
                self.err(
                    Section::Routes,
                    i,
                    "backends",
                    "backend weights must not all be zero",
                );
            }
            let action = match &r.direct_response {
                Some(d) => {
                    if !(100..=599).contains(&d.status) {
                        self.err(
                            Section::Routes,
                            i,
                            "direct_response.status",
                            format!("{} is not an HTTP status", d.status),
                        );
                    }
                    let mut headers = Vec::new();
                    for (k, v) in &d.headers {
                        match (
                            http::HeaderName::from_bytes(k.as_bytes()),
                            http::HeaderValue::from_str(v),
                        ) {
                            (Ok(k), Ok(v)) => headers.push((k, v)),
                            _ => self.err(
                                Section::Routes,
                                i,
                                &format!("direct_response.headers.{k}"),
                                format!("invalid header `{k}`"),
                            ),
                        }
                    }
                    Action::Direct(DirectResponse {
                        status: d.status,
                        body: Bytes::from(d.body.clone()),
                        headers,
                    })
                }
                None => {
                    let redirect = r.redirect.as_ref().and_then(|rd| {
                        let prefix = r.matches.path_prefix.as_deref();
                        filters::redirect::Redirect::new(rd, prefix)
                            .map_err(|filters::redirect::RedirectError::Field(f, why)| {
                                self.err(Section::Routes, i, &format!("redirect.{f}"), why)
                            })
                            .ok()
                    });
                    match redirect {
                        Some(rd) => Action::Redirect(rd),
                        None => Action::Proxy(Backends {
                            clusters: backends,
                            total,
                        }),
                    }
                }
            };
            let cors = r.cors.as_ref().and_then(|c| {
                filters::cors::Cors::new(c)
                    .map(|policy| CorsPolicy::new(&r.name, policy))
                    .map_err(|e| self.err(Section::Routes, i, "cors", e.to_string()))
                    .ok()
            });
            let fault = self.fault(i, r);
            let compression = r.compression.as_ref().and_then(|c| {
                crate::proxy::compression::CompressionPolicy::compile(&r.name, c)
                    .map_err(|errs| {
                        for (field, why) in errs {
                            self.err(Section::Routes, i, &format!("compression.{field}"), why);
                        }
                    })
                    .ok()
            });
            let ext_authz = self.ext_authz(i, r, clusters);
            let mut prefix_rewrite = None;
            let mut host_rewrite = None;
            if let Some(rw) = &r.rewrite {
                if let Some(p) = &rw.path_prefix {
                    match &r.matches.path_prefix {
                        Some(matched) => prefix_rewrite = Some((matched.clone(), p.clone())),
                        None => self.err(
                            Section::Routes,
                            i,
                            "rewrite.path_prefix",
                            "rewrite.path_prefix needs a `match.path_prefix` to replace",
                        ),
                    }
                    if http::uri::PathAndQuery::try_from(p.as_str()).is_err() {
                        self.err(
                            Section::Routes,
                            i,
                            "rewrite.path_prefix",
                            format!("`{p}` is not a valid path"),
                        );
                    }
                }
                if let Some(h) = &rw.host {
                    match http::uri::Authority::try_from(h.as_str())
                        .ok()
                        .and_then(|_| http::HeaderValue::from_str(h).ok())
                    {
                        Some(v) => host_rewrite = Some(v),
                        None => self.err(
                            Section::Routes,
                            i,
                            "rewrite.host",
                            format!("`{h}` is not a valid host"),
                        ),
                    }
                }
            }
            let upgrades = crate::proxy::upgrade::UpgradePolicy::new(
                &r.upgrades.protocols,
                r.upgrades.idle_timeout.get(),
            )
            .unwrap_or_else(|e| {
                self.err(Section::Routes, i, "upgrades.protocols", e);
                crate::proxy::upgrade::UpgradePolicy::new(&[], r.upgrades.idle_timeout.get())
                    .expect("no protocols is a valid policy")
            });
            if r.upgrades.idle_timeout.get().is_zero() {
                self.err(
                    Section::Routes,
                    i,
                    "upgrades.idle_timeout",
                    "upgrades.idle_timeout must be positive",
                );
            }
            let request_headers = self.header_edits(i, "request_headers", &r.request_headers);
            let response_headers = self.header_edits(i, "response_headers", &r.response_headers);
            if r.timeout.is_some_and(|t| t.get().is_zero()) {
                self.err(
                    Section::Routes,
                    i,
                    "timeout",
                    "timeout must be greater than zero",
                );
            }
            let retry = r.retries.as_ref().map(|p| {
                if !(1..=10).contains(&p.attempts) {
                    self.err(
                        Section::Routes,
                        i,
                        "retries.attempts",
                        "attempts must be between 1 and 10 (it counts the first try)",
                    );
                }
                for (j, on) in p.on.iter().enumerate() {
                    if let config::RetryOn::Status(s) = on {
                        if !(100..=599).contains(s) {
                            self.err(
                                Section::Routes,
                                i,
                                &format!("retries.on[{j}]"),
                                format!("{s} is not an HTTP status"),
                            );
                        }
                    }
                }
                RetryRt::new(p.attempts, p.per_try_timeout.map(|t| t.get()), &p.on)
            });
            let previous_limits = self
                .previous
                .and_then(|p| p.router.routes.iter().find(|old| *old.name == *r.name))
                .and_then(|old| old.rate_limits.as_ref());
            let rate_limits = if r.rate_limit.is_empty() {
                None
            } else {
                match filters::ratelimit::RouteRateLimits::compile(&r.rate_limit, previous_limits) {
                    Ok(l) => Some(l),
                    Err(errs) => {
                        for e in errs {
                            self.err(Section::Routes, i, "rate_limit", e);
                        }
                        None
                    }
                }
            };
            let mirrors = self.mirrors(i, r, clusters);
            let identity = self.route_identity(i, r, cfg);
            let name: Arc<str> = r.name.as_str().into();
            let route_clusters = match &action {
                Action::Proxy(b) => b.clusters.iter().map(|(c, _)| c.name.clone()).collect(),
                Action::Direct(_) | Action::Redirect(_) => Vec::new(),
            };
            out.push(Route {
                metrics: RouteMetrics::new(
                    name.clone(),
                    listener_names.clone(),
                    route_clusters,
                    r.rate_limit.len(),
                ),
                identity,
                mirrors,
                rate_limits,
                name,
                matcher,
                action,
                prefix_rewrite,
                host_rewrite,
                request_headers,
                response_headers,
                timeout: r.timeout.map(|t| t.get()),
                retry,
                upgrades,
                cors,
                fault,
                max_request_body_bytes: r.max_request_body_bytes,
                compression,
                ext_authz,
            });
        }
        out
    }
    fn ext_authz(
        &mut self,
        i: usize,
        r: &config::Route,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Option<crate::ext_authz::ExtAuthzPolicy> {
        let a = r.ext_authz.as_ref()?;
        let cluster = clusters.get(&a.cluster).cloned();
        if cluster.is_none() && !self.src_has_cluster(&a.cluster) {
            let why = format!("ext_authz refers to unknown cluster `{}`", a.cluster);
            self.err(Section::Routes, i, "ext_authz.cluster", why);
        }
        crate::ext_authz::ExtAuthzPolicy::compile(&r.name, a, cluster)
            .map_err(|errs| {
                for (field, why) in errs {
                    self.err(Section::Routes, i, &format!("ext_authz.{field}"), why);
                }
            })
            .ok()
    }

    fn mirrors(
        &mut self,
        i: usize,
        r: &config::Route,
        clusters: &HashMap<String, Arc<Cluster>>,
    ) -> Vec<crate::mirror::MirrorTarget> {
        let mut out = Vec::new();
        for (j, m) in r.mirror.iter().enumerate() {
            let at = |k: &str| format!("mirror[{j}].{k}");
            let cluster = clusters.get(&m.cluster).cloned();
            if cluster.is_none() && !self.src_has_cluster(&m.cluster) {
                self.err(
                    Section::Routes,
                    i,
                    &at("cluster"),
                    format!("mirror refers to unknown cluster `{}`", m.cluster),
                );
            }
            if !(0.0..=100.0).contains(&m.percentage) {
                self.err(
                    Section::Routes,
                    i,
                    &at("percentage"),
                    "percentage must be between 0 and 100",
                );
            }
            if m.max_concurrent == 0 {
                self.err(
                    Section::Routes,
                    i,
                    &at("max_concurrent"),
                    "max_concurrent must be at least 1",
                );
            }
            let mut header =
                |name: &str, sub: &str| match http::HeaderName::from_bytes(name.as_bytes()) {
                    Ok(h) => Some(h),
                    Err(_) => {
                        self.err(
                            Section::Routes,
                            i,
                            &at(sub),
                            format!("invalid header name `{name}`"),
                        );
                        None
                    }
                };
            let sample_key = m
                .sample_key
                .as_deref()
                .and_then(|k| header(k, "sample_key"));
            let strip: Vec<_> = m
                .strip_headers
                .iter()
                .filter_map(|h| header(h, "strip_headers"))
                .collect();
            if let Some(cluster) = cluster {
                out.push(crate::mirror::MirrorTarget {
                    cluster,
                    percentage: m.percentage,
                    sample_key,
                    strip,
                    max_body_bytes: m.max_body_bytes,
                    permits: Arc::new(
                        tokio::sync::Semaphore::new(m.max_concurrent.max(1) as usize),
                    ),
                    timeout: m.timeout.get(),
                    compare_status: m.compare.as_ref().is_some_and(|c| c.status),
                    compare_body: m.compare.as_ref().is_some_and(|c| c.body),
                });
            }
        }
        out
    }

    /// Whether the config declares a cluster (it may have failed to compile).
    fn src_has_cluster(&self, name: &str) -> bool {
        self.declared_clusters.iter().any(|c| c == name)
    }

    pub(in crate::runtime) fn rate_limit_store(
        &mut self,
        cfg: &Config,
        routes: &[Route],
    ) -> Option<Arc<filters::ratelimit::RedisStore>> {
        let Some(store_cfg) = &cfg.rate_limit_store else {
            for (i, r) in routes.iter().enumerate() {
                if r.rate_limits.as_ref().is_some_and(|l| l.has_fleet_rules()) {
                    self.err(
                        Section::Routes,
                        i,
                        "rate_limit",
                        "a `scope: fleet` rule needs `rate_limit_store: {redis: redis://HOST:PORT}`",
                    );
                }
            }
            return None;
        };
        if let Some(prev) = self
            .previous
            .and_then(|p| p.rate_limit_store.as_ref())
            .filter(|s| s.config() == store_cfg)
        {
            return Some(prev.clone());
        }
        let ca = match &store_cfg.ca {
            None => None,
            Some(path) => match std::fs::read(self.src.resolve_top(path)) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    let why = format!("cannot read `{path}`: {e}");
                    let d = self.src.top("rate_limit_store.ca", why);
                    self.errors.push(d);
                    return None;
                }
            },
        };
        // rustls (for rediss://) needs the process's crypto provider.
        pingora::tls::install_default_crypto_provider();
        match filters::ratelimit::RedisStore::with_ca(store_cfg, ca.as_deref()) {
            Ok(s) => Some(Arc::new(s)),
            Err(errs) => {
                for e in errs {
                    let d = self.src.top("rate_limit_store", e);
                    self.errors.push(d);
                }
                None
            }
        }
    }
}
