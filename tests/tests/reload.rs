//! Hot reload: config changes under load, ConfigMap symlink swaps, in-place
//! and rename writes, certificate rotation, state carried across reloads,
//! status reporting, listener changes, graceful drain and the zero-downtime
//! upgrade.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_tests::{
    free_port, http_client, metric, tpl, url, Gateway, GatewayBuilder, TestCa, Upstream,
};

/// Config version `v`: routes every request to cluster `a` or, on odd
/// versions, splits it between `a` and `b`; responses carry the version.
/// `broken` makes it invalid in one of three ways. `ports` gives the ports.
fn versioned(
    ports: &GatewayBuilder,
    a: &Upstream,
    b: &Upstream,
    v: u32,
    broken: Option<u32>,
) -> String {
    let backends = if v.is_multiple_of(2) {
        "[{cluster: a}]".to_string()
    } else {
        format!(
            "[{{cluster: a, weight: {}}}, {{cluster: b, weight: 1}}]",
            v % 5 + 1
        )
    };
    // Every third version moves cluster `a` onto both upstreams.
    let a_endpoints = if v.is_multiple_of(3) {
        format!(
            "{{address: \"{}\"}}, {{address: \"{}\"}}",
            a.address(),
            b.address()
        )
    } else {
        format!("{{address: \"{}\"}}", a.address())
    };
    let mut text = ports
        .clone()
        .config(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
clusters:
  - {name: a, endpoints: [${a_endpoints}]}
  - {name: b, endpoints: [{address: "${b}"}]}
routes:
  - name: extra-${v}
    match: {path: /never-${v}}
    direct_response: {status: 204}
  - name: main
    backends: ${backends}
    response_headers: {set: {x-config-version: "${v}"}}
"#,
            &[
                ("a_endpoints", &a_endpoints),
                ("b", &b.address()),
                ("v", &v),
                ("backends", &backends),
            ],
        )
        .to_yaml();
    match broken {
        None => {}
        Some(0) => text.push_str("  - name: [unclosed\n"),
        Some(1) => text.push_str("  - {name: dangling, match: {path: /d}, cluster: missing}\n"),
        Some(_) => text.push_str("  - {name: tls-broken, match: {path: /t}, cluster: t}\n"),
    }
    if broken == Some(2) {
        // A cluster whose CA file does not exist.
        text = text.replace(
            "clusters:\n",
            "clusters:\n  - {name: t, endpoints: [{address: \"127.0.0.1:1\"}], tls: {sni: t.test, ca: /nonexistent/ca.pem}}\n",
        );
    }
    text
}

fn version_of(resp: &reqwest::Response) -> Option<u32> {
    resp.headers()
        .get("x-config-version")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn served_version(client: &reqwest::Client, port: u16) -> Option<u32> {
    version_of(&client.get(url(port, "/")).send().await.ok()?)
}

/// Polls until version `v` is served; returns how long it took. Panics
/// naming `what` after `limit`.
async fn wait_for_version(
    client: &reqwest::Client,
    port: u16,
    v: u32,
    limit: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if served_version(client, port).await == Some(v) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: version {v} not served within {limit:?}");
}

/// Four keep-alive clients sending `GET /` to a port until stopped (or a
/// time limit); each 200 is counted and handed to a check, anything else
/// is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts the clients; `check()` makes each client's check of a 200.
    fn start<F>(port: u16, limit: Duration, check: impl Fn() -> F) -> Load
    where
        F: FnMut(&reqwest::Response) -> Result<(), String> + Send + 'static,
    {
        let (stop, ok, failures) =
            <(Arc<AtomicBool>, Arc<AtomicU64>, Arc<Mutex<Vec<String>>>)>::default();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (stop, ok, failures, mut check) =
                (stop.clone(), ok.clone(), failures.clone(), check());
            tasks.push(tokio::spawn(async move {
                let client = http_client();
                let deadline = Instant::now() + limit;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let failure = match client.get(url(port, "/")).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            check(&r).err()
                        }
                        Ok(r) => Some(format!("status {}", r.status())),
                        Err(e) => Some(format!("request error: {e:?}")),
                    };
                    failures.lock().unwrap().extend(failure);
                }
            }));
        }
        Load {
            stop,
            ok,
            failures,
            tasks,
        }
    }

    /// Requests answered 200 so far.
    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients, asserts that no request failed; returns [`Load::ok`].
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(
            failures.is_empty(),
            "{} failed requests, first: {:?}",
            failures.len(),
            failures.first()
        );
        self.ok.load(Ordering::Relaxed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_changes_under_load_fail_no_request() {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let ports = Gateway::builder();
    let gw = Gateway::start(&versioned(&ports, &a, &b, 1, None));
    let port = gw.port();

    let seen = Arc::new(Mutex::new(std::collections::BTreeSet::<u32>::new()));
    let load = Load::start(port, Duration::from_secs(120), || {
        let (seen, mut last) = (seen.clone(), 0);
        move |r: &reqwest::Response| {
            let v = version_of(r).unwrap_or(0);
            seen.lock().unwrap().insert(v);
            match std::mem::replace(&mut last, v) {
                prev if v < prev => Err(format!("version went back from {prev} to {v}")),
                _ => Ok(()),
            }
        }
    });

    let probe = http_client();
    let started = Instant::now();
    let mut invalid = Vec::new();
    let mut valid = 0;
    let mut slowest = Duration::ZERO;
    let mut current = 1;
    for v in 2..=101u32 {
        if v.is_multiple_of(10) {
            // Every tenth change is invalid, in one of three ways.
            gw.write_file(
                "gateway.yaml",
                &versioned(&ports, &a, &b, v, Some(v / 10 % 3)),
            );
            invalid.push(v);
            tokio::time::sleep(Duration::from_millis(400)).await;
            assert_eq!(
                served_version(&probe, port).await,
                Some(current),
                "invalid version {v} must leave version {current} serving"
            );
        } else {
            gw.write_file("gateway.yaml", &versioned(&ports, &a, &b, v, None));
            let took = wait_for_version(&probe, port, v, Duration::from_secs(1), "valid").await;
            slowest = slowest.max(took);
            current = v;
            valid += 1;
        }
    }
    // Keep the load running a little past the last change.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ok = load.finish().await;
    let elapsed = started.elapsed();
    let seen = seen.lock().unwrap().clone();
    for v in &invalid {
        assert!(!seen.contains(v), "invalid version {v} was served");
    }
    assert!(
        elapsed >= Duration::from_secs(20),
        "the load must run at least 20 s, ran {elapsed:?}"
    );
    assert!(ok > 1000, "too little load: {ok} requests");
    eprintln!("{ok} requests ok over {elapsed:?}; slowest change took {slowest:?}");

    let metrics = gw.metrics().await;
    let reloads = |r| metric(&metrics, "gateway_config_reloads_total", &[("result", r)]);
    let generation = metric(&metrics, "gateway_config_generation", &[]);
    assert_eq!(
        generation as u32,
        1 + valid,
        "one generation per valid change"
    );
    let errors = reloads("error");
    assert!(errors >= 10.0, "10 invalid changes, {errors} counted");
    let successes = reloads("success");
    assert_eq!(successes as u32, valid, "one success per valid change");
    let cfg = gw.config_json().await;
    assert_eq!(cfg["generation"], 1 + valid);
    assert_eq!(cfg["reload"]["last_outcome"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_and_in_place_writes_are_picked_up() {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let ports = Gateway::builder();
    let gw = Gateway::start(&versioned(&ports, &a, &b, 1, None));
    let port = gw.port();
    let client = http_client();
    let dir = gw.dir().to_path_buf();

    // Turn gateway.yaml into a ConfigMap-style projection:
    // gateway.yaml -> ..data/gateway.yaml, ..data -> ..v2
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(
        dir.join("..v2/gateway.yaml"),
        versioned(&ports, &a, &b, 2, None),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml.new")).unwrap();
    std::fs::rename(dir.join("gateway.yaml.new"), dir.join("gateway.yaml")).unwrap();
    wait_for_version(
        &client,
        port,
        2,
        Duration::from_secs(2),
        "symlinked config not picked up",
    )
    .await;

    // The kubelet's atomic update: new directory, new ..data symlink renamed over the old.
    std::fs::create_dir(dir.join("..v3")).unwrap();
    std::fs::write(
        dir.join("..v3/gateway.yaml"),
        versioned(&ports, &a, &b, 3, None),
    )
    .unwrap();
    std::os::unix::fs::symlink("..v3", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v2")).unwrap();
    wait_for_version(
        &client,
        port,
        3,
        Duration::from_secs(2),
        "ConfigMap symlink swap not picked up",
    )
    .await;

    // A plain in-place write (truncate + write) of the real file.
    std::fs::write(
        dir.join("..v3/gateway.yaml"),
        versioned(&ports, &a, &b, 4, None),
    )
    .unwrap();
    wait_for_version(
        &client,
        port,
        4,
        Duration::from_secs(2),
        "in-place write not picked up",
    )
    .await;
}

/// The DER of the certificate a TLS listener presents now.
async fn presented_cert(ca: &TestCa, port: u16) -> Vec<u8> {
    let connector = gateway_tests::rustls_connector(ca, None, &[], false);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("gw.test").expect("name");
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates")[0]
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_certificate_rotates_on_disk_change() {
    let ca = TestCa::new("rotation CA");
    let first = ca.issue(&["gw.test"]);
    let second = ca.issue(&["gw.test"]);
    let gw = Gateway::builder()
        .listener_name("tls")
        .tls(&first)
        .route(r#"{name: hello, direct_response: {status: 200, body: "hi\n"}}"#)
        .start();
    let port = gw.port();
    assert_eq!(presented_cert(&ca, port).await, first.cert_der().to_vec());
    gw.write_file("gw.key", &second.key_pem());
    gw.write_file("gw.pem", &second.cert_pem());
    let start = Instant::now();
    while presented_cert(&ca, port).await != second.cert_der().to_vec() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "new certificate not presented within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_cluster_keeps_its_state() {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let ports = Gateway::builder();
    let port = ports.port();
    let yaml = |extra: &str| {
        ports.clone().config(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
clusters:
  - {name: rr, lb: round_robin, endpoints: [{address: "${a}"}, {address: "${b}"}]}
routes:
${extra}
  - {name: main, cluster: rr}
"#,
            &[("a", &a.address()), ("b", &b.address()), ("extra", &extra)],
        )
    };
    let gw = yaml("").start();
    let client = http_client();
    let hit = |c: &reqwest::Client| {
        let c = c.clone();
        async move {
            let r = c.get(url(port, "/")).send().await.expect("request");
            r.headers()["x-upstream"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(
        [hit(&client).await, hit(&client).await, hit(&client).await],
        ["a", "b", "a"]
    );
    // An unrelated change: the cluster (and its round-robin position) is
    // kept. Wait on the admin API: requests would move the round robin.
    gw.write_file(
        "gateway.yaml",
        &yaml("  - {name: other, match: {path: /other}, direct_response: {status: 204}}").to_yaml(),
    );
    gw.wait_config(
        "generation 2 (reload applied)",
        Duration::from_secs(2),
        |c| c["generation"] == 2,
    )
    .await;
    assert_eq!(
        hit(&client).await,
        "b",
        "round robin continued where it was"
    );
    assert_eq!(hit(&client).await, "a");
    let other = client
        .get(url(port, "/other"))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status(), 204, "the new route serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_sighup_and_status_tell_the_truth() {
    let (a, b) = (Upstream::named("a"), Upstream::named("b"));
    let ports = Gateway::builder();
    let gw = Gateway::start(&versioned(&ports, &a, &b, 1, None));
    let port = gw.port();
    let http = http_client();
    let post_reload = || async {
        let (code, body) = gw.reload().await;
        let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        (code, doc)
    };
    // Nothing changed: an explicit reload says so.
    let (code, body) = post_reload().await;
    assert_eq!(
        (code, body["last_outcome"].as_str()),
        (200, Some("unchanged"))
    );

    // Broken file, written in place; the watcher sees it too, so wait for
    // that attempt before asking explicitly.
    std::fs::write(
        gw.dir().join("gateway.yaml"),
        versioned(&ports, &a, &b, 2, Some(1)),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, body) = post_reload().await;
    assert_eq!(code, 422, "invalid config answers 422: {body}");
    let errors = body["last_errors"].as_array().expect("errors listed");
    assert!(
        errors.iter().any(|e| {
            let e = e.as_str().unwrap_or("");
            e.contains("gateway.yaml:") && e.contains("unknown cluster `missing`")
        }),
        "errors name the file and the problem: {errors:?}"
    );
    let cfg = gw.config_json().await;
    assert_eq!(cfg["generation"], 1, "the invalid config was not applied");
    assert_eq!(cfg["reload"]["last_outcome"], "error");
    assert_eq!(served_version(&http, port).await, Some(1));

    // Fixed: the watcher applies it; SIGHUP then reloads (nothing new).
    std::fs::write(
        gw.dir().join("gateway.yaml"),
        versioned(&ports, &a, &b, 3, None),
    )
    .unwrap();
    wait_for_version(&http, port, 3, Duration::from_secs(2), "fixed config").await;
    gw.signal("HUP");
    let cfg = gw
        .wait_config("a SIGHUP reload", Duration::from_secs(2), |c| {
            c["reload"]["last_trigger"] == "sighup"
        })
        .await;
    assert_eq!(cfg["reload"]["last_outcome"], "unchanged");
    let metrics = gw.metrics().await;
    let reloads = |r| metric(&metrics, "gateway_config_reloads_total", &[("result", r)]);
    assert_eq!(metric(&metrics, "gateway_config_generation", &[]), 2.0);
    assert!(reloads("error") >= 2.0);
    assert_eq!(
        reloads("unchanged"),
        2.0,
        "the explicit no-op reload and the SIGHUP one"
    );
    let last_success = "gateway_config_last_reload_success_timestamp_seconds";
    assert!(metric(&metrics, last_success, &[]) > 1.0e9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_address_change_reports_restart_required() {
    let (admin, port, other) = (free_port(), free_port(), free_port());
    let yaml = |p: u16, body: &str| {
        tpl(
            r#"
admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
routes:
  - {name: hello, direct_response: {status: 200, body: "${body}"}}
"#,
            &[("admin", &admin), ("port", &p), ("body", &body)],
        )
    };
    let gw = Gateway::start(&yaml(port, "one"));
    gw.write_file("gateway.yaml", &yaml(other, "two"));
    let http = http_client();
    let start = Instant::now();
    loop {
        let body = http
            .get(url(port, "/"))
            .send()
            .await
            .expect("old port serves")
            .text()
            .await
            .unwrap();
        if body == "two" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "route change not applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cfg = gw.config_json().await;
    let restart = cfg["reload"]["restart_required"].to_string();
    assert!(
        restart.contains("listener `public` moved"),
        "restart required is reported: {restart}"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", other)).is_err(),
        "the new address is not bound in place"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits() {
    let slow = Upstream::slow(Duration::from_millis(1500));
    let mut gw = Gateway::builder()
        .yaml("gateway: {drain_timeout: 10s}")
        .cluster("slow", &[&slow], "")
        .route("{name: slow, cluster: slow}")
        .start();
    let port = gw.port();
    let in_flight = tokio::spawn(async move {
        http_client()
            .get(url(port, "/"))
            .send()
            .await
            .map(|r| r.status())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    let code = gw.wait_exit(Duration::from_secs(6));
    assert_eq!(code, Some(0), "exits cleanly once drained");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exits when drained, not after the 10 s drain_timeout ({:?})",
        signalled.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_downtime_upgrade_under_load() {
    let up = Upstream::named("app");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("upgrade.sock");
    let b = Gateway::builder()
        .yaml(&format!(
            "gateway: {{upgrade_sock: \"{}\", drain_timeout: 10s}}",
            sock.display()
        ))
        .cluster("app", &[&up], "")
        .route("{name: app, cluster: app}");
    let (port, yaml) = (b.port(), b.to_yaml());
    let mut old = Gateway::start(&yaml);

    let load = Load::start(port, Duration::from_secs(60), || {
        |_: &reqwest::Response| Ok(())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut new = Gateway::spawn_only(tempfile::tempdir().unwrap(), &yaml, &["run", "--upgrade"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    new.wait_until_ready();
    let code = old.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "the old process drains and exits");
    let before = load.ok();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        load.finish().await > before,
        "the new process serves after the old one left"
    );
    assert!(new.is_running(), "the new process keeps running");
}
