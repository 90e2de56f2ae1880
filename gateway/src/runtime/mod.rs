//! The compiled runtime: everything the request path reads, built from a
//! [`Config`] off the request path and swapped in whole (arc-swap). Compiling
//! is also validation: every problem is collected with its position, so
//! `gateway validate` checks exactly what `gateway run` would use.

pub mod cluster;
mod compile;
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

use crate::metrics::handles::RouteMetrics;

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
    /// Reverse proxy or egress.
    pub mode: config::ListenerMode,
    /// Per-connection L4 read buffer, bytes.
    pub read_buffer_bytes: usize,
    /// Served by the lean HTTP/1 path rather than `ProxyHttp`.
    pub lean: bool,
    /// Every request redirected (hot-reloadable, read per request).
    pub redirect: Option<filters::redirect::Redirect>,
    /// Timeouts and limits (fixed at startup).
    pub limits: crate::limits::Limits,
    /// Whose `X-Forwarded-For` is believed (`None`: nobody's).
    pub client_address: Option<Arc<crate::client_address::XffTrust>>,
    /// PROXY protocol settings (`None`: off).
    pub proxy_protocol: Option<crate::client_address::ProxyProtocolSpec>,
}

/// The listener `name`, expected at `index` of the (possibly reloaded)
/// listener list the request's snapshot holds; found by name when a reload
/// moved it, so another listener's settings never apply.
pub fn find_listener<'a>(
    listeners: &'a [ListenerSpec],
    (index, name): (usize, &str),
) -> Option<&'a ListenerSpec> {
    match listeners.get(index) {
        Some(l) if *l.name == *name => Some(l),
        _ => listeners.iter().find(|l| *l.name == *name),
    }
}

/// TLS settings of a listener, its certificates loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTlsSpec {
    /// The certificates by SNI (one, the default, for the `cert`/`key`
    /// form); a reload hands the new table to the listener's resolver.
    pub certs: Arc<tls::ListenerCerts>,
    /// Offer h2 in ALPN.
    pub h2: bool,
    /// Ask for client certificates (fixed at startup, like the address).
    pub client_auth: Option<config::ClientAuth>,
    /// Trust domains accepted for client certificates (`None`: all).
    pub client_trust_domains: Option<Vec<String>>,
}

/// Everything the request path needs, immutable once built.
pub struct Runtime {
    /// Metric handles of requests no route took (404, bad requests).
    pub unrouted_metrics: RouteMetrics,
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
    /// Trust domains, JWT issuers and the token signer.
    pub identity: crate::identity::IdentityRuntime,
    /// Egress rules, if configured.
    pub egress: Option<Arc<crate::egress::EgressRuntime>>,
    /// Every certificate and CA bundle held, with its notAfter
    /// (`gateway_certificate_expiry_timestamp_seconds`).
    pub certificates: Vec<tls::validity::CertExpiry>,
    /// Problems that do not stop this config (certificates expiring
    /// soon): printed by `gateway validate`, logged by run and reload.
    pub warnings: Vec<Diagnostic>,
}

impl Runtime {
    /// Starts active health checks and DNS discovery refreshes of the
    /// clusters that have them (clusters carried over from the previous
    /// runtime keep theirs running).
    pub fn start_background_tasks(&self) {
        for c in self.clusters.values() {
            health::start_checks(c);
            crate::discovery::start(c);
        }
    }
}

/// Files named by the config (certificates, keys, CA bundles), resolved.
pub fn referenced_files(loaded: &LoadedConfig) -> Vec<PathBuf> {
    let src = &loaded.sources;
    let mut out = Vec::new();
    for (i, l) in loaded.config.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            let pairs = t.certificates.iter().flatten().map(|c| (&c.cert, &c.key));
            let single = t.cert.iter().chain(t.key.iter());
            for f in pairs.flat_map(|(c, k)| [c, k]).chain(single) {
                out.push(src.resolve(Section::Listeners, i, f));
            }
        }
    }
    for (i, c) in loaded.config.clusters.iter().enumerate() {
        if let Some(t) = &c.tls {
            for f in [&t.ca, &t.cert, &t.key].into_iter().flatten() {
                out.push(src.resolve(Section::Clusters, i, f));
            }
        }
    }
    for td in &loaded.config.trust_domains {
        out.extend(td.ca.iter().map(|f| src.resolve_top(f)));
        for iss in &td.jwt_issuers {
            for f in [&iss.jwks_file, &iss.hmac_secret_file]
                .into_iter()
                .flatten()
            {
                out.push(src.resolve_top(f));
            }
        }
    }
    if let Some(t) = &loaded.config.token_issuer {
        out.push(src.resolve_top(&t.key));
    }
    if let Some(e) = &loaded.config.egress {
        out.extend(
            e.rules
                .iter()
                .filter_map(|r| r.ca.as_ref())
                .map(|f| src.resolve_top(f)),
        );
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
        warnings: Vec::new(),
        certificates: Vec::new(),
        now: tls::validity::unix_now(),
    };
    let cfg = &loaded.config;
    let admin_addr = c.socket_addr(cfg.admin.listen.as_str(), |s, m| s.top("admin.listen", m));
    let listeners = c.listeners(cfg, admin_addr);
    c.telemetry(cfg);
    let identity = c.identity(cfg);
    let egress = c.egress(cfg);
    let clusters = c.clusters(cfg);
    let listener_names: Arc<[Arc<str>]> = listeners.iter().map(|l| l.name.clone()).collect();
    let routes = c.routes(cfg, &clusters, &listener_names);
    let rate_limit_store = c.rate_limit_store(cfg, &routes);
    if !c.errors.is_empty() {
        return Err(Diagnostics(c.errors));
    }
    let watch_files = watched_files(loaded);
    Ok(Runtime {
        router: Router { routes },
        unrouted_metrics: RouteMetrics::new("none".into(), listener_names, Vec::new(), 0),
        clusters,
        listeners,
        admin_addr: admin_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9901))),
        config: Arc::new(cfg.clone()),
        generation: 1,
        sources_hash: hash_files(&watch_files),
        watch_globs: loaded.sources.include_globs(),
        rate_limit_store,
        watch_files,
        identity,
        egress,
        certificates: c.certificates,
        warnings: c.warnings,
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
    /// Problems that do not stop the config.
    warnings: Vec<Diagnostic>,
    /// Certificates the runtime will hold, for the expiry metric.
    certificates: Vec<tls::validity::CertExpiry>,
    /// Unix seconds at the start of compiling (validity checks).
    now: i64,
}

fn anchored(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$")).map_err(|e| format!("invalid regular expression: {e}"))
}

impl Compiler<'_> {
    fn err(&mut self, section: Section, idx: usize, sub: &str, msg: impl Into<String>) {
        let d = self.src.at(section, idx, sub, msg);
        self.errors.push(d);
    }

    /// Reports a message of a filters module placed under `base`. Those
    /// messages start with the field they are about (`rules[2].hosts: ...`,
    /// `allow[0].principals: ...`); that path is used for the position, so
    /// the diagnostic points at the offending line, not at the block.
    fn nested_err(&mut self, section: Option<(Section, usize)>, base: &str, msg: String) {
        let path = match msg.split_once(": ") {
            Some((field, _))
                if !field.is_empty()
                    && field.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']')
                    }) =>
            {
                let full = format!("{base}.{field}");
                // List fields have singular aliases (`path_prefix:` for
                // `path_prefixes`): find the key as it was written.
                let singular = full
                    .strip_suffix("prefixes")
                    .map(|p| format!("{p}prefix"))
                    .or_else(|| full.strip_suffix('s').map(str::to_string));
                match singular {
                    Some(s) if !self.src.has(section, &full) && self.src.has(section, &s) => s,
                    _ => full,
                }
            }
            _ => base.to_string(),
        };
        let d = match section {
            Some((s, i)) => self.src.at(s, i, &path, msg),
            None => self.src.top(&path, msg),
        };
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
}
