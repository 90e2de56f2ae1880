//! Compiling clusters: endpoints (resolved now, off the request path), TLS
//! material, locality priorities, health and breaker policies, and the
//! fingerprint that lets a reload keep an unchanged cluster with its state.

use super::super::*;
use crate::runtime::tls::validity::CertKind;

impl Compiler<'_> {
    pub(in crate::runtime) fn clusters(&mut self, cfg: &Config) -> HashMap<String, Arc<Cluster>> {
        self.unique_names(
            Section::Clusters,
            cfg.clusters.iter().map(|c| c.name.as_str()),
            "cluster",
        );
        self.top_level_dns(cfg);
        let mut out = HashMap::new();
        for (i, c) in cfg.clusters.iter().enumerate() {
            if let Some(cluster) = self.cluster(i, c, cfg) {
                let kept = self
                    .previous
                    .and_then(|p| p.clusters.get(&c.name))
                    .filter(|old| old.fingerprint == cluster.fingerprint)
                    .cloned();
                // Only a new cluster resolves its DNS-discovered names: a
                // kept one keeps its discovery and its current endpoints.
                let cluster = kept.unwrap_or_else(|| Arc::new(self.resolve_discovered(i, cluster)));
                out.entry(c.name.clone()).or_insert(cluster);
            }
        }
        out
    }

    fn cluster(&mut self, i: usize, c: &config::Cluster, cfg: &Config) -> Option<Cluster> {
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
            let ca = match (&t.ca, &t.trust_domain) {
                (Some(ca), None) => Some(self.src.resolve(Section::Clusters, i, ca)),
                (None, Some(td)) => {
                    let bundle = cfg
                        .trust_domains
                        .iter()
                        .find(|d| d.name == *td)
                        .and_then(|d| d.ca.as_ref());
                    match bundle {
                        Some(ca) => Some(self.src.resolve_top(ca)),
                        None => {
                            self.err(
                                Section::Clusters,
                                i,
                                "tls.trust_domain",
                                format!("no trust domain `{td}` with a `ca` bundle"),
                            );
                            None
                        }
                    }
                }
                (Some(_), Some(_)) => {
                    self.err(
                        Section::Clusters,
                        i,
                        "tls.trust_domain",
                        "give either tls.ca or tls.trust_domain, not both",
                    );
                    None
                }
                (None, None) => None,
            };
            if let Some(ca) = ca {
                files.push(ca.clone());
                match tls::load_ca_bundle(&ca) {
                    Ok((b, validity)) => {
                        settings.ca = Some(b);
                        // Named after the key that brought the bundle in.
                        let at = if t.ca.is_some() {
                            "tls.ca"
                        } else {
                            "tls.trust_domain"
                        };
                        let name = format!("cluster/{}", c.name);
                        self.held_cert(CertKind::Ca, name, &ca, validity, |s, m| {
                            s.at(Section::Clusters, i, at, m)
                        });
                    }
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
                        Ok((ck, validity)) => {
                            settings.client_cert = Some(ck);
                            let name = c.name.clone();
                            self.held_cert(CertKind::Client, name, &cert, validity, |s, m| {
                                s.at(Section::Clusters, i, "tls.cert", m)
                            });
                        }
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
        let mut dns_entries = Vec::new();
        for (j, e) in c.endpoints.iter().enumerate() {
            let at = format!("endpoints[{j}].address");
            let addr = match e.address.parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) if c.discovery.is_some() => {
                    // Resolved by the cluster's discovery, now and later.
                    dns_entries.extend(self.dns_entry(i, j, e, c));
                    None
                }
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
        let discovery = c
            .discovery
            .as_ref()
            .and_then(|d| self.discovery_spec(i, d, cfg, dns_entries, &endpoints, settings));
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
            if c.discovery.is_some() {
                // The top-level resolver it may use is not in its own config.
                format!("{:?}", cfg.dns).hash(&mut h);
            }
            h.finish()
        };
        let static_endpoints = if discovery.is_some() {
            Vec::new()
        } else {
            endpoints
        };
        let cluster = Cluster::new(
            fingerprint,
            &c.name,
            static_endpoints,
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
        );
        Some(match discovery {
            Some((spec, resolver)) => crate::discovery::attach(cluster, spec, resolver),
            None => cluster,
        })
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
}
