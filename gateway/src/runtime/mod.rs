//! The compiled runtime: everything the request path reads, built from a
//! [`Config`] off the request path and swapped in whole (arc-swap). Compiling
//! is also validation: every problem is collected with its position, so
//! `gateway validate` checks exactly what `gateway run` would use.

pub mod cluster;
pub mod health;
pub mod locality;
pub mod route;
pub mod tls;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use filters::headers::CompiledHeaderEdits;
use regex::Regex;

use crate::config::{
    self, Alpn, Config, Diagnostic, Diagnostics, LbPolicy, LoadedConfig, Section, Sources,
    ValueMatch,
};
use cluster::{Cluster, ClusterPolicies, Endpoint, PeerSettings};
use route::{
    Action, Backends, DirectResponse, HostMatch, Matcher, PathMatch, RetryRt, Route, Router,
    ValueMatcher,
};

/// A listener as the server needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Name (metrics label).
    pub name: Arc<str>,
    /// Bound address.
    pub addr: SocketAddr,
    /// TLS certificate, key and ALPN.
    pub tls: Option<ListenerTlsSpec>,
    /// h2c prior knowledge on plaintext.
    pub h2c: bool,
}

/// TLS files of a listener, resolved to paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTlsSpec {
    /// PEM chain.
    pub cert: PathBuf,
    /// PEM key.
    pub key: PathBuf,
    /// Offer h2 in ALPN.
    pub h2: bool,
}

/// Everything the request path needs, immutable once built.
pub struct Runtime {
    /// Route table.
    pub router: Router,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Listeners to bind.
    pub listeners: Vec<ListenerSpec>,
    /// Admin address.
    pub admin_addr: SocketAddr,
    /// The effective config (for the admin `/config` endpoint).
    pub config: Arc<Config>,
    /// Reload generation (1 for the config the process started with).
    pub generation: u64,
    /// Hash over every source file: config files and the files they name.
    pub sources_hash: u64,
    /// Files whose change triggers a reload (config files and referenced files).
    pub watch_files: Vec<PathBuf>,
    /// The `include:` globs (new matching files trigger a reload).
    pub watch_globs: Vec<PathBuf>,
    /// Redis for fleet rate limits; kept across reloads while its config
    /// is unchanged.
    pub rate_limit_store: Option<Arc<filters::ratelimit::RedisStore>>,
}

impl Runtime {
    /// Starts active health checks of clusters that have them (clusters
    /// carried over from the previous runtime keep theirs running).
    pub fn start_health_checks(&self) {
        for c in self.clusters.values() {
            health::start_checks(c);
        }
    }
}

/// Files named by the config (certificates, keys, CA bundles), resolved.
pub fn referenced_files(loaded: &LoadedConfig) -> Vec<PathBuf> {
    let src = &loaded.sources;
    let mut out = Vec::new();
    for (i, l) in loaded.config.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            out.push(src.resolve(Section::Listeners, i, &t.cert));
            out.push(src.resolve(Section::Listeners, i, &t.key));
        }
    }
    for (i, c) in loaded.config.clusters.iter().enumerate() {
        if let Some(t) = &c.tls {
            for f in [&t.ca, &t.cert, &t.key].into_iter().flatten() {
                out.push(src.resolve(Section::Clusters, i, f));
            }
        }
    }
    out
}

/// Every file a change of which should reload this config: the config
/// files themselves and the files they name.
pub fn watched_files(loaded: &LoadedConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = loaded.sources.files().map(Path::to_path_buf).collect();
    files.extend(referenced_files(loaded));
    files.sort();
    files.dedup();
    files
}

/// Hash of the contents of `paths` (unreadable files hash as absent).
pub fn hash_files<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in paths {
        p.hash(&mut h);
        std::fs::read(p).ok().hash(&mut h);
    }
    h.finish()
}

/// Compiles (and so validates) a loaded config. Clusters whose definition
/// (config and the files it names) is unchanged from `previous` are carried
/// over as they are, with their live state (LB position, counters, and
/// later health and outlier status).
pub fn compile(loaded: &LoadedConfig, previous: Option<&Runtime>) -> Result<Runtime, Diagnostics> {
    let mut c = Compiler {
        src: &loaded.sources,
        errors: Vec::new(),
        previous,
        gateway_locality: locality::gateway_locality(&loaded.config.gateway.locality),
        declared_clusters: loaded
            .config
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    };
    let cfg = &loaded.config;
    let admin_addr = c.socket_addr(cfg.admin.listen.as_str(), |s, m| s.top("admin.listen", m));
    let listeners = c.listeners(cfg, admin_addr);
    let clusters = c.clusters(cfg);
    let routes = c.routes(cfg, &clusters);
    let rate_limit_store = c.rate_limit_store(cfg, &routes);
    if !c.errors.is_empty() {
        return Err(Diagnostics(c.errors));
    }
    let watch_files = watched_files(loaded);
    Ok(Runtime {
        router: Router { routes },
        clusters,
        listeners,
        admin_addr: admin_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
        config: Arc::new(cfg.clone()),
        generation: 1,
        sources_hash: hash_files(&watch_files),
        watch_globs: loaded.sources.include_globs(),
        rate_limit_store,
        watch_files,
    })
}

struct Compiler<'a> {
    src: &'a Sources,
    errors: Vec<Diagnostic>,
    previous: Option<&'a Runtime>,
    /// The gateway's own locality (config or environment).
    gateway_locality: config::Locality,
    /// Names of every declared cluster.
    declared_clusters: Vec<String>,
}

fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regular expression: {e}"))
}

impl Compiler<'_> {
    fn err(&mut self, section: Section, idx: usize, sub: &str, msg: impl Into<String>) {
        let d = self.src.at(section, idx, sub, msg);
        self.errors.push(d);
    }

    fn pair_errors(
        &mut self,
        section: Section,
        i: usize,
        at: &str,
        errs: Vec<(tls::PairPart, String)>,
    ) {
        for (part, msg) in errs {
            let key = match part {
                tls::PairPart::Cert => "cert",
                tls::PairPart::Key => "key",
            };
            self.err(section, i, &format!("{at}.{key}"), msg);
        }
    }

    fn socket_addr(
        &mut self,
        s: &str,
        at: impl FnOnce(&Sources, String) -> Diagnostic,
    ) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                let d = at(
                    self.src,
                    format!("`{s}` is not a valid `ip:port` listen address"),
                );
                self.errors.push(d);
                None
            }
        }
    }

    fn unique_names<'n>(
        &mut self,
        section: Section,
        names: impl Iterator<Item = &'n str>,
        what: &str,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, n) in names.enumerate() {
            if n.is_empty() {
                self.err(section, i, "name", format!("{what} name must not be empty"));
            } else if let Some(first) = seen.insert(n, i) {
                let loc = self.src.at(section, first, "name", "");
                self.err(
                    section,
                    i,
                    "name",
                    format!(
                        "duplicate {what} name `{n}` (first defined at {}:{}:{})",
                        loc.file.display(),
                        loc.line,
                        loc.column
                    ),
                );
            }
        }
    }

    fn listeners(&mut self, cfg: &Config, admin: Option<SocketAddr>) -> Vec<ListenerSpec> {
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

    fn clusters(&mut self, cfg: &Config) -> HashMap<String, Arc<Cluster>> {
        self.unique_names(
            Section::Clusters,
            cfg.clusters.iter().map(|c| c.name.as_str()),
            "cluster",
        );
        let mut out = HashMap::new();
        for (i, c) in cfg.clusters.iter().enumerate() {
            if let Some(cluster) = self.cluster(i, c) {
                let kept = self
                    .previous
                    .and_then(|p| p.clusters.get(&c.name))
                    .filter(|old| old.fingerprint == cluster.fingerprint)
                    .cloned();
                out.entry(c.name.clone())
                    .or_insert_with(|| kept.unwrap_or_else(|| Arc::new(cluster)));
            }
        }
        out
    }

    fn cluster(&mut self, i: usize, c: &config::Cluster) -> Option<Cluster> {
        let before = self.errors.len();
        if c.endpoints.is_empty() {
            self.err(
                Section::Clusters,
                i,
                "endpoints",
                "a cluster needs at least one endpoint",
            );
        }
        if c.hash_on.is_some() && c.lb != LbPolicy::ConsistentHash {
            self.err(
                Section::Clusters,
                i,
                "hash_on",
                "`hash_on` is only used with `lb: consistent_hash`",
            );
        }
        let b = &c.retry_budget;
        self.health_policies(i, c);
        if !(0.0..=100.0).contains(&b.budget_percent) {
            self.err(
                Section::Clusters,
                i,
                "retry_budget.budget_percent",
                "budget_percent must be between 0 and 100",
            );
        }
        if let Some(h) = c.hash_on.as_ref().and_then(|h| h.header.as_ref()) {
            if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                self.err(
                    Section::Clusters,
                    i,
                    "hash_on.header",
                    format!("invalid header name `{h}`"),
                );
            }
        }
        let mut settings = PeerSettings {
            tls_sni: None,
            ca: None,
            client_cert: None,
            protocol: c.protocol,
            connect_timeout: c.connect_timeout.get(),
            read_timeout: c.read_timeout.get(),
            idle_timeout: c.idle_timeout.get(),
            group_key: cluster::hash_key(c.name.as_bytes()),
        };
        if c.protocol == config::UpstreamProtocol::Auto && c.tls.is_none() {
            self.err(
                Section::Clusters,
                i,
                "protocol",
                "`protocol: auto` negotiates by ALPN and needs `tls`; use `http2` for h2c",
            );
        }
        let mut files: Vec<PathBuf> = Vec::new();
        if let Some(t) = &c.tls {
            if t.sni.trim().is_empty() {
                self.err(
                    Section::Clusters,
                    i,
                    "tls.sni",
                    "tls.sni must not be empty (an empty SNI disables certificate verification)",
                );
            }
            settings.tls_sni = Some(t.sni.clone());
            if let Some(ca) = &t.ca {
                let ca = self.src.resolve(Section::Clusters, i, ca);
                files.push(ca.clone());
                match tls::load_ca_bundle(&ca) {
                    Ok(b) => settings.ca = Some(b),
                    Err(m) => self.err(Section::Clusters, i, "tls.ca", m),
                }
            }
            match (&t.cert, &t.key) {
                (Some(cert), Some(key)) => {
                    let (cert, key) = (
                        self.src.resolve(Section::Clusters, i, cert),
                        self.src.resolve(Section::Clusters, i, key),
                    );
                    files.extend([cert.clone(), key.clone()]);
                    match tls::check_cert_pair(&cert, &key).and_then(|()| {
                        tls::load_cert_key(&cert, &key).map_err(|e| vec![(tls::PairPart::Cert, e)])
                    }) {
                        Ok(ck) => settings.client_cert = Some(ck),
                        Err(errs) => self.pair_errors(Section::Clusters, i, "tls", errs),
                    }
                }
                (None, None) => {}
                _ => self.err(
                    Section::Clusters,
                    i,
                    "tls",
                    "tls.cert and tls.key must be given together",
                ),
            }
        }
        let mut endpoints = Vec::new();
        for (j, e) in c.endpoints.iter().enumerate() {
            let at = format!("endpoints[{j}].address");
            let addr = match e.address.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_)
                    if e.address
                        .rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
                {
                    // hostname:port, resolved now (off the request path).
                    match e.address.to_socket_addrs().map(|mut it| it.next()) {
                        Ok(Some(a)) => Some(a),
                        Ok(None) => {
                            self.err(
                                Section::Clusters,
                                i,
                                &at,
                                format!("`{}` resolved to no address", e.address),
                            );
                            None
                        }
                        Err(err) => {
                            self.err(
                                Section::Clusters,
                                i,
                                &at,
                                format!("cannot resolve `{}`: {err}", e.address),
                            );
                            None
                        }
                    }
                }
                Err(_) => {
                    self.err(
                        Section::Clusters,
                        i,
                        &at,
                        format!("`{}` is not `ip:port` or `hostname:port`", e.address),
                    );
                    None
                }
            };
            if let Some(addr) = addr {
                let locality = config::Locality {
                    region: e.region.clone(),
                    zone: e.zone.clone(),
                    cluster: e.cluster.clone(),
                };
                let priority =
                    locality::classify(&self.gateway_locality, &locality, c.locality.mode);
                let initially_healthy = c.health_check.as_ref().is_none_or(|h| h.initially_healthy);
                endpoints.push(Arc::new(Endpoint::new(
                    addr,
                    e.address.clone(),
                    e.weight,
                    locality,
                    priority,
                    initially_healthy,
                    settings.peer(addr),
                )));
            }
        }
        if self.errors.len() != before {
            return None;
        }
        // Same config, same files, same resolved addresses => same cluster.
        let fingerprint = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(c).unwrap_or_default().hash(&mut h);
            hash_files(&files).hash(&mut h);
            for e in &endpoints {
                e.addr.hash(&mut h);
            }
            format!("{:?}", self.gateway_locality).hash(&mut h);
            h.finish()
        };
        Some(Cluster::new(
            fingerprint,
            &c.name,
            endpoints,
            ClusterPolicies {
                lb: c.lb,
                hash_on: c.hash_on.clone().unwrap_or_default(),
                read_timeout: c.read_timeout.get(),
                retry_budget: b.clone(),
                locality: c.locality.clone(),
                health_check: c.health_check.clone(),
                outlier: c.outlier_detection.clone(),
                breaker: c.circuit_breaker.clone(),
            },
        ))
    }

    fn health_policies(&mut self, i: usize, c: &config::Cluster) {
        let l = &c.locality;
        if l.overprovisioning_factor.is_nan() || l.overprovisioning_factor <= 0.0 {
            self.err(
                Section::Clusters,
                i,
                "locality.overprovisioning_factor",
                "must be greater than 0",
            );
        }
        if !(0.0..=100.0).contains(&l.panic_threshold) {
            self.err(
                Section::Clusters,
                i,
                "locality.panic_threshold",
                "must be between 0 and 100",
            );
        }
        if let Some(hc) = &c.health_check {
            if hc.interval.get().is_zero() || hc.timeout.get().is_zero() {
                self.err(
                    Section::Clusters,
                    i,
                    "health_check",
                    "interval and timeout must be greater than zero",
                );
            }
            if hc.healthy_threshold == 0 || hc.unhealthy_threshold == 0 {
                self.err(
                    Section::Clusters,
                    i,
                    "health_check",
                    "thresholds must be at least 1",
                );
            }
            if hc.kind == config::HealthCheckKind::Http {
                if c.tls.is_some() {
                    self.err(
                        Section::Clusters,
                        i,
                        "health_check.type",
                        "HTTP health checks speak plaintext HTTP/1.1; use `type: tcp` for a TLS cluster",
                    );
                }
                if !hc.path.starts_with('/') {
                    self.err(
                        Section::Clusters,
                        i,
                        "health_check.path",
                        "the path must start with `/`",
                    );
                }
            }
            for (j, s) in hc.expected_statuses.iter().enumerate() {
                if !(100..=599).contains(s) {
                    self.err(
                        Section::Clusters,
                        i,
                        &format!("health_check.expected_statuses[{j}]"),
                        format!("{s} is not an HTTP status"),
                    );
                }
            }
        }
        if let Some(od) = &c.outlier_detection {
            if od.max_ejection_percent > 100 {
                self.err(
                    Section::Clusters,
                    i,
                    "outlier_detection.max_ejection_percent",
                    "must be between 0 and 100",
                );
            }
            if od.base_ejection_time.get().is_zero() {
                self.err(
                    Section::Clusters,
                    i,
                    "outlier_detection.base_ejection_time",
                    "must be greater than zero",
                );
            }
        }
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

    fn rate_limit_store(
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
        match filters::ratelimit::RedisStore::new(store_cfg) {
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
        for (name, vm) in &m.headers {
            let at = format!("match.headers.{name}");
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
                out.headers.push((hn, vm));
            }
        }
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

    fn routes(&mut self, cfg: &Config, clusters: &HashMap<String, Arc<Cluster>>) -> Vec<Route> {
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
                + r.direct_response.is_some() as u8;
            if targets != 1 {
                self.err(
                    Section::Routes,
                    i,
                    "",
                    "a route needs exactly one of `cluster`, `backends` or `direct_response`",
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
                None => Action::Proxy(Backends {
                    clusters: backends,
                    total,
                }),
            };
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
            out.push(Route {
                mirrors,
                rate_limits,
                name: r.name.as_str().into(),
                matcher,
                action,
                prefix_rewrite,
                host_rewrite,
                request_headers,
                response_headers,
                timeout: r.timeout.map(|t| t.get()),
                retry,
            });
        }
        out
    }
}
