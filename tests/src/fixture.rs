//! The test fixture: a gateway builder, typed handles on a running gateway
//! (client, reload, generation, metric matcher), shared statistics and load.
//!
//! Modelled on linkerd2-proxy's integration crate: a builder picks ports and
//! writes the admin/listener boilerplate, the test writes what it is about
//! (clusters, routes, YAML fragments), and assertions on metrics retry until
//! they match or fail with the last value seen.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::{free_port, http_client, metric_value, tpl, url, Gateway, Upstream};

/// How long [`MetricMatcher::eventually`] retries by default.
const EVENTUALLY: Duration = Duration::from_secs(5);

/// Builds the config of a gateway with one plaintext listener named
/// `public` and an admin listener, both on picked ports.
///
/// The YAML it writes is
/// `admin` + `listeners` + [`GatewayBuilder::yaml`] fragments + `clusters` +
/// `routes`; a test about the config itself passes the whole document with
/// [`GatewayBuilder::config`] instead (`${admin}` and `${port}` filled).
#[derive(Clone, Default)]
pub struct GatewayBuilder {
    admin: u16,
    port: u16,
    listener_name: Option<String>,
    listener_extra: String,
    listen_any: bool,
    dir: Option<std::sync::Arc<tempfile::TempDir>>,
    top: String,
    clusters: String,
    routes: String,
    whole: Option<String>,
    env: Vec<(String, String)>,
}

impl GatewayBuilder {
    /// A builder with fresh admin and listener ports.
    pub fn new() -> GatewayBuilder {
        GatewayBuilder {
            admin: free_port(),
            port: free_port(),
            dir: Some(std::sync::Arc::new(tempfile::tempdir().expect("tempdir"))),
            ..Default::default()
        }
    }

    /// The admin port the gateway will listen on.
    pub fn admin_port(&self) -> u16 {
        self.admin
    }

    /// The port of the `public` listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `public` listener binds every address (`0.0.0.0`), not only
    /// loopback: for a gateway in a network namespace a test made
    /// ([`crate::netns`]), reached from the others.
    pub fn listen_any(mut self) -> Self {
        self.listen_any = true;
        self
    }

    /// Extra keys of the `public` listener's flow mapping (e.g.
    /// `tls: {...}`), written after its name and address.
    pub fn listener(mut self, extra: &str) -> Self {
        self.listener_extra = format!(", {extra}");
        self
    }

    /// Runs the gateway in `dir` (which may already hold files the config
    /// refers to) instead of a fresh directory.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(std::sync::Arc::new(dir));
        self
    }

    /// Names the listener (default `public`).
    pub fn listener_name(mut self, name: &str) -> Self {
        self.listener_name = Some(name.to_string());
        self
    }

    /// Writes `leaf` as `gw.pem` / `gw.key` into the gateway's directory and
    /// makes the listener terminate TLS with it.
    pub fn tls(self, leaf: &crate::LeafCert) -> Self {
        leaf.write(self.dir_path(), "gw.pem", "gw.key");
        self.listener("tls: {cert: gw.pem, key: gw.key}")
    }

    /// Writes `text` to `name` in the gateway's directory (certificates,
    /// key files, anything the config refers to by relative path).
    pub fn file(self, name: &str, text: &str) -> Self {
        std::fs::write(self.dir_path().join(name), text).expect("write fixture file");
        self
    }

    /// The directory the gateway will run in (made on first use).
    pub fn dir_path(&self) -> &std::path::Path {
        self.dir
            .as_ref()
            .expect("a builder of Gateway::same_ports has no directory")
            .path()
    }

    /// A top-level YAML fragment (e.g. `telemetry: {...}`), verbatim.
    pub fn yaml(mut self, fragment: &str) -> Self {
        self.top.push_str(fragment.trim_matches('\n'));
        self.top.push('\n');
        self
    }

    /// One cluster `c` of `up` and one catch-all route `all` to it: the
    /// setup of tests about the protocol rather than the routing.
    pub fn catch_all(self, up: &Upstream) -> Self {
        self.cluster("c", &[up], "")
            .route("{name: all, cluster: c}")
    }

    /// A cluster `name` over `ups` (equal weights), with `extra` keys
    /// (flow-mapping text such as `lb: random`) after the endpoints.
    pub fn cluster(self, name: &str, ups: &[&Upstream], extra: &str) -> Self {
        let w: Vec<_> = ups.iter().map(|u| (*u, 1)).collect();
        self.weighted_cluster(name, &w, extra)
    }

    /// A cluster `name` over `(upstream, weight)` pairs, with `extra` keys.
    pub fn weighted_cluster(self, name: &str, ups: &[(&Upstream, u32)], extra: &str) -> Self {
        let eps: Vec<String> = ups
            .iter()
            .map(|(u, w)| format!("{{address: \"{}\", weight: {w}}}", u.address()))
            .collect();
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!(", {extra}")
        };
        self.cluster_yaml(&format!(
            "{{name: {name}, endpoints: [{}]{extra}}}",
            eps.join(", ")
        ))
    }

    /// A cluster as raw YAML: one list item (`{name: ..}` or a block that
    /// starts with `name:`), indented under `clusters:` for you.
    pub fn cluster_yaml(mut self, item: &str) -> Self {
        push_item(&mut self.clusters, item);
        self
    }

    /// A route as raw YAML (one list item, e.g. `{name: all, cluster: c}`).
    pub fn route(mut self, item: &str) -> Self {
        push_item(&mut self.routes, item);
        self
    }

    /// Routes as a raw YAML block: list items indented as under `routes:`
    /// (`  - name: ..`), appended verbatim.
    pub fn routes_yaml(mut self, block: &str) -> Self {
        self.routes.push_str(block.trim_matches('\n'));
        self.routes.push('\n');
        self
    }

    /// The whole config document instead of the composed one; `${admin}` and
    /// `${port}` are filled with the picked ports, `vars` with the rest.
    pub fn config(mut self, template: &str, vars: &[(&str, &dyn std::fmt::Display)]) -> Self {
        let mut all: Vec<(&str, &dyn std::fmt::Display)> =
            vec![("admin", &self.admin), ("port", &self.port)];
        all.extend_from_slice(vars);
        self.whole = Some(tpl(template, &all));
        self
    }

    /// An environment variable for the gateway process only.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// The config the gateway will be started with.
    pub fn to_yaml(&self) -> String {
        if let Some(whole) = &self.whole {
            return whole.clone();
        }
        let mut y = format!(
            "admin: {{listen: \"127.0.0.1:{}\"}}\nlisteners:\n  - {{name: {}, listen: \"{}:{}\"{}}}\n{}",
            self.admin,
            self.listener_name.as_deref().unwrap_or("public"),
            if self.listen_any { "0.0.0.0" } else { "127.0.0.1" },
            self.port,
            self.listener_extra,
            self.top
        );
        for (key, items) in [("clusters", &self.clusters), ("routes", &self.routes)] {
            if !items.is_empty() {
                let _ = write!(y, "{key}:\n{items}");
            }
        }
        y
    }

    /// Starts the gateway in its directory and waits until it is ready
    /// (see [`Gateway::start_in`]).
    pub fn start(mut self) -> Gateway {
        let yaml = self.to_yaml();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let dir = match self.dir.take().map(std::sync::Arc::try_unwrap) {
            Some(Ok(dir)) => dir,
            // A clone of this builder still holds the directory: copy its files.
            Some(Err(shared)) => {
                let dir = tempfile::tempdir().expect("tempdir");
                for e in std::fs::read_dir(shared.path()).expect("read fixture dir") {
                    let e = e.expect("fixture dir entry");
                    std::fs::copy(e.path(), dir.path().join(e.file_name())).expect("copy");
                }
                dir
            }
            None => tempfile::tempdir().expect("tempdir"),
        };
        Gateway::start_in_with_env(dir, &yaml, &env)
    }
}

fn push_item(list: &mut String, item: &str) {
    let item = item.trim_matches('\n');
    let mut lines = item.lines();
    let first = lines.next().unwrap_or_default().trim_start();
    let _ = writeln!(list, "  - {first}");
    // Continuation lines keep their indentation relative to the first.
    let indent = item
        .lines()
        .next()
        .map_or(0, |l| l.len() - l.trim_start().len());
    for l in lines {
        let cut = l.len() - l.trim_start().len();
        let _ = writeln!(list, "    {}", &l[cut.min(indent)..]);
    }
}

impl Gateway {
    /// A [`GatewayBuilder`] with fresh ports.
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::new()
    }

    /// A fresh builder on this gateway's admin and first listener ports, to
    /// write a changed config with [`Gateway::rewrite`].
    pub fn same_ports(&self) -> GatewayBuilder {
        GatewayBuilder {
            admin: self.admin_addr().port(),
            port: self.port(),
            ..Default::default()
        }
    }

    /// Writes `b`'s config over `gateway.yaml` (atomically, as
    /// [`Gateway::write_file`]); the gateway's file watcher reloads it.
    pub fn rewrite(&self, b: GatewayBuilder) {
        self.write_file("gateway.yaml", &b.to_yaml());
    }

    /// The port of the first listener of the config.
    pub fn port(&self) -> u16 {
        self.listener_addrs()
            .first()
            .expect("the config has a listener")
            .port()
    }

    /// `http://127.0.0.1:{port}{path}` on the first listener.
    pub fn url(&self, path: &str) -> String {
        url(self.port(), path)
    }

    /// `GET path` on the first listener with a fresh client.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        http_client()
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} through the gateway: {e}"))
    }

    /// `POST {admin}/reload`: status and body.
    pub async fn reload(&self) -> (u16, String) {
        let resp = http_client()
            .post(format!("{}/reload", self.admin_url()))
            .send()
            .await
            .expect("POST admin /reload");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// Polls admin `/config` (up to 10 s) until `generation` is exactly `want`.
    pub async fn wait_generation(&self, want: u64) {
        let what = format!("generation == {want}");
        self.wait_config(&what, Duration::from_secs(10), |c| c["generation"] == want)
            .await;
    }

    /// Polls admin `/config` (up to `limit`) until `generation` is at least `want`.
    pub async fn wait_generation_at_least(&self, want: u64, limit: Duration) {
        let what = format!("generation >= {want}");
        self.wait_config(&what, limit, |c| {
            c["generation"].as_u64().unwrap_or(0) >= want
        })
        .await;
    }

    /// Admin `/config` as JSON (asserting a 200 answer).
    pub async fn config_json(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/config").await;
        assert_eq!(status, 200, "expected admin /config to answer 200: {body}");
        serde_json::from_str(&body).expect("admin /config is JSON")
    }

    /// Polls admin `/config` (up to `limit`) until `ok(document)`; returns
    /// the document. Panics after the limit naming `what` and what it saw.
    pub async fn wait_config(
        &self,
        what: &str,
        limit: Duration,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        let mut last = serde_json::Value::Null;
        while start.elapsed() < limit {
            let (status, body) = self.admin_get("/config").await;
            if status == 200 {
                last = serde_json::from_str(&body).unwrap_or_default();
                if ok(&last) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "expected admin /config {what} within {limit:?}; last saw generation {} (reload: {})\n--- gateway stderr ---\n{}",
            last["generation"],
            last["reload"],
            tail(&self.stderr(), 40)
        );
    }

    /// A matcher on the sum of the series `name{labels}` of `/metrics`.
    pub fn metric<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> MetricMatcher<'a> {
        MetricMatcher {
            gw: self,
            name,
            labels,
            limit: EVENTUALLY,
        }
    }
}

/// A flow sequence of endpoints at `addresses` (`{address: "A"}, ...`),
/// for endpoints that are not [`Upstream`]s (dead ports, other hosts).
pub fn endpoints(addresses: &[String]) -> String {
    addresses
        .iter()
        .map(|a| format!("{{address: \"{a}\"}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sum of the series `name{labels}` of one `/metrics` text; 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_value(text, name, labels).unwrap_or(0.0)
}

/// A metric of a running gateway, read now or retried until it matches.
pub struct MetricMatcher<'a> {
    gw: &'a Gateway,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
    limit: Duration,
}

impl MetricMatcher<'_> {
    /// Retry for `limit` instead of 5 s.
    pub fn within(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// The value now (0 when no series matches).
    pub async fn value(&self) -> f64 {
        metric(&self.gw.metrics().await, self.name, self.labels)
    }

    /// Polls `/metrics` until `pred(value)` holds; returns the value and how
    /// long it took. Panics after the limit with the last value and series.
    pub async fn eventually(&self, pred: impl Fn(f64) -> bool) -> (f64, Duration) {
        let start = Instant::now();
        let mut text;
        loop {
            text = self.gw.metrics().await;
            let v = metric(&text, self.name, self.labels);
            if pred(v) {
                return (v, start.elapsed());
            }
            if start.elapsed() >= self.limit {
                let series: Vec<&str> = text.lines().filter(|l| l.starts_with(self.name)).collect();
                panic!(
                    "metric {}{:?} did not match within {:?}; last value {v}; its series:\n{}",
                    self.name,
                    self.labels,
                    self.limit,
                    series.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// [`MetricMatcher::eventually`] `== want`; returns how long it took.
    pub async fn eventually_eq(&self, want: f64) -> Duration {
        self.eventually(|v| v == want).await.1
    }
}

/// Polls `/metrics` (up to `limit`) until `done(text)`; returns the last text
/// either way, for the caller to assert on.
pub async fn wait_metrics(gw: &Gateway, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = gw.metrics().await;
        if done(&text) || start.elapsed() > limit {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Mean and 3 sigma of a binomial(n, p) count.
pub fn three_sigma(n: u64, p: f64) -> (f64, f64) {
    let n = n as f64;
    (n * p, 3.0 * (n * p * (1.0 - p)).sqrt())
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The whole `source()` chain of an error, for failure messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let _ = write!(s, ": {c}");
        cur = c.source();
    }
    s
}

/// A request body of `data`: streamed in [`crate::GENERATED_CHUNK`]-sized
/// chunks (chunked transfer encoding) when `chunked`, else whole (with
/// Content-Length).
pub fn upload_body(data: Vec<u8>, chunked: bool) -> reqwest::Body {
    if !chunked {
        return reqwest::Body::from(data);
    }
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = data
        .chunks(crate::GENERATED_CHUNK)
        .map(|c| Ok(c.to_vec()))
        .collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// Sends `n` GETs of `{prefix}{i}` to `port` from `workers` concurrent
/// tasks; panics unless every answer is 200 (see [`fire_with`]).
pub async fn fire(port: u16, prefix: &str, n: usize, workers: usize) -> UpstreamCounts {
    let prefix = prefix.to_string();
    fire_with(n, workers, move |client, i| {
        client.get(url(port, &format!("{prefix}{i}")))
    })
    .await
}

/// How many answers each `x-upstream` value sent (`""` for none).
pub type UpstreamCounts = std::collections::BTreeMap<String, u64>;

/// Sends the `n` requests `make(client, i)` from `workers` concurrent tasks;
/// panics unless every answer is 200 (naming the status and the
/// `x-upstream` that sent it). Returns the answers by `x-upstream`.
pub async fn fire_with(
    n: usize,
    workers: usize,
    make: impl Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
) -> UpstreamCounts {
    let client = http_client();
    let make = std::sync::Arc::new(make);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (client, make) = (client.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut counts = UpstreamCounts::new();
            for i in (w..n).step_by(workers) {
                let resp = make(&client, i)
                    .send()
                    .await
                    .expect("request through the gateway");
                assert_eq!(
                    resp.status(),
                    200,
                    "expected every request to be served (200), got {} from {:?}",
                    resp.status(),
                    resp.headers().get("x-upstream")
                );
                let from = resp
                    .headers()
                    .get("x-upstream")
                    .and_then(|v| v.to_str().ok());
                *counts
                    .entry(from.unwrap_or_default().to_string())
                    .or_default() += 1;
                let _ = resp.bytes().await;
            }
            counts
        }));
    }
    let mut all = UpstreamCounts::new();
    for t in tasks {
        for (k, v) in t.await.expect("worker") {
            *all.entry(k).or_default() += v;
        }
    }
    all
}
