//! The command line: `validate` diagnostics with positions, `run` refusing a
//! broken file, `schema` matching the committed schema, `--version`.

use std::path::Path;
use std::time::Duration;

use gateway_tests::{free_port, run_gateway, tpl, workspace_root, Gateway, TestCa};

const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// One `file:line:column: message` diagnostic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Diag {
    line: usize,
    column: usize,
    message: String,
}

/// The `file:line:column: message` lines for `file` in `output` (other
/// lines, such as a summary, are skipped).
fn diagnostics(output: &str, file: &str) -> Vec<Diag> {
    let prefix = format!("{file}:");
    output
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (line, rest) = rest.split_once(':')?;
            let (column, message) = rest.split_once(": ")?;
            Some(Diag {
                line: line.parse().ok()?,
                column: column.parse().ok()?,
                message: message.to_string(),
            })
        })
        .collect()
}

/// 1-based number of the only line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "`{needle}` should be on exactly one line of:\n{text}"
    );
    hits[0]
}

/// A directory with a real key file `gw.key` and cert `gw.pem` for configs
/// that need existing files next to the missing one.
fn dir_with_cert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    TestCa::new("cli CA")
        .issue(&["gw.test"])
        .write(dir.path(), "gw.pem", "gw.key");
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write config");
}

/// A broken config, the text of the line its one problem is on, and a word
/// the message must contain (taken from what the file says).
struct Broken {
    kind: &'static str,
    yaml: String,
    marker: &'static str,
    mentions: Option<&'static str>,
}

/// `template` with `${admin}`, `${port}`, `${tls}` and `${p2}` filled with
/// fresh ports.
fn fresh(template: &str) -> String {
    let (admin, port, tls, p2) = (free_port(), free_port(), free_port(), free_port());
    let vars = [
        ("admin", &admin),
        ("port", &port),
        ("tls", &tls),
        ("p2", &p2),
    ];
    tpl(
        template,
        &vars.map(|(n, p)| (n, p as &dyn std::fmt::Display)),
    )
}

fn broken_files() -> Vec<Broken> {
    [
        (
            "YAML syntax error",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: app: oops\n",
            "app: oops",
            None,
        ),
        (
            "unknown key",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    bogus_key: 1\n    cluster: app\n",
            "bogus_key",
            Some("bogus_key"),
        ),
        (
            "route references a missing cluster",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: no-such-cluster\n",
            "no-such-cluster",
            Some("no-such-cluster"),
        ),
        (
            "duplicate cluster names",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: twin\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\n  - name: twin   # again\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: twin\n",
            "# again",
            Some("twin"),
        ),
        (
            "listener cert file does not exist",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: secure\n    listen: \"127.0.0.1:${port}\"\n    tls:\n      cert: does-not-exist.pem\n      key: gw.key\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: app\n",
            "does-not-exist.pem",
            Some("does-not-exist.pem"),
        ),
        (
            "bad listen address",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:notaport\"\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: app\n",
            "notaport",
            Some("127.0.0.1:notaport"),
        ),
        (
            "bad egress rule host (a message from filters::egress)",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: out, listen: \"127.0.0.1:${port}\", mode: egress}\negress:\n  rules:\n    - name: ok\n      hosts: [a.test]\n    - name: bad\n      hosts:\n        - \"exa mple.test\"\n",
            "exa mple.test",
            Some("rules[1].hosts"),
        ),
        (
            "bad authorization rule (a message from filters::authz)",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n    auth:\n      allow:\n        - methods: [GET]\n          path_prefix: nope\n",
            "path_prefix: nope",
            Some("nope"),
        ),
        (
            "enum field written as a map names its values",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: secure\n    listen: \"127.0.0.1:${port}\"\n    tls:\n      cert: gw.pem\n      key: gw.key\n      client_auth: {mode: require}\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "client_auth: {mode: require}",
            Some("expected one of `require`, `optional`"),
        ),
        (
            "unknown load-balancer policy names the policies",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: app\n    lb: fastest\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: app\n",
            "lb: fastest",
            Some("unknown variant `fastest`, expected one of `round_robin`, `least_request`, `random`, `consistent_hash`"),
        ),
        (
            "unknown retry condition names the conditions",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nclusters:\n  - name: app\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: app\n    retries:\n      attempts: 2\n      on: [5xx]\n",
            "on: [5xx]",
            Some("expected one of `connect-failure`, `reset`, `gateway-error`"),
        ),
        (
            "lean engine with an HTTP/2 cluster",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    engine: lean\nclusters:\n  - name: grpc\n    protocol: http2\n    endpoints: [{address: \"127.0.0.1:${p2}\"}]\nroutes:\n  - name: r1\n    cluster: grpc\n",
            "engine: lean",
            Some("has no HTTP/2 upstreams yet, and cluster `grpc` uses them"),
        ),
        (
            "lean engine on an egress listener",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: out, listen: \"127.0.0.1:${port}\", mode: egress, engine: lean}\negress:\n  rules:\n    - name: ok\n      hosts: [a.test]\n",
            "engine: lean",
            Some("serves proxy listeners only"),
        ),
        (
            "an h2c upgrade a route would pass on",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - {name: public, listen: \"127.0.0.1:${port}\"}\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n    upgrades:\n      protocols: [websocket, h2c]\n",
            "protocols: [websocket, h2c]",
            Some("`h2c` upgrades are never passed on"),
        ),
        (
            "oversized listener read buffer",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    read_buffer_bytes: 1000000000000\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "read_buffer_bytes: 1000000000000",
            Some("at most 1048576"),
        ),
        (
            "zero listener idle timeout",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    limits:\n      idle_timeout: 0s\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "idle_timeout: 0s",
            Some("idle_timeout must be longer than 0s"),
        ),
        (
            "bad trusted proxy CIDR",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    client_address:\n      trusted_proxies:\n        - 10.0.0.0/8\n        - 10.0.0.300/8\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "10.0.0.300/8",
            Some("10.0.0.300"),
        ),
        (
            "xff_trusted_hops of zero",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    client_address:\n      trusted_proxies: [10.0.0.0/8]\n      xff_trusted_hops: 0\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "xff_trusted_hops: 0",
            Some("between 1 and 16"),
        ),
        (
            "xff_trusted_hops not a number",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    client_address:\n      trusted_proxies: [10.0.0.0/8]\n      xff_trusted_hops: two\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "xff_trusted_hops: two",
            Some("two"),
        ),
        (
            "bad PROXY protocol source CIDR",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: public\n    listen: \"127.0.0.1:${port}\"\n    proxy_protocol:\n      from: [10.0.0.1/8]\nroutes:\n  - name: r1\n    direct_response: {status: 200}\n",
            "from: [10.0.0.1/8]",
            Some("host bits set"),
        ),
        (
            "X-Forwarded-For trust on an egress listener",
            "admin: {listen: \"127.0.0.1:${admin}\"}\nlisteners:\n  - name: out\n    listen: \"127.0.0.1:${port}\"\n    mode: egress\n    client_address: {trusted_proxies: [10.0.0.0/8]}\negress:\n  rules:\n    - name: ok\n      hosts: [a.test]\n",
            "client_address: {trusted_proxies",
            Some("egress listeners do not read X-Forwarded-For"),
        ),
    ]
    .into_iter()
    .map(|(kind, yaml, marker, mentions)| Broken {
        kind,
        yaml: fresh(yaml),
        marker,
        mentions,
    })
    .collect()
}

#[test]
fn validate_reports_each_kind_of_problem_with_its_position() {
    let dir = dir_with_cert();
    for b in broken_files() {
        write(dir.path(), "broken.yaml", &b.yaml);
        let out = run_gateway(&["validate", "-c", "broken.yaml"], dir.path(), CMD_TIMEOUT);
        let all = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.code(),
            Some(1),
            "{}: `gateway validate` should exit 1; output:\n{all}",
            b.kind
        );
        let diags = diagnostics(&all, "broken.yaml");
        let want_line = line_of(&b.yaml, b.marker);
        assert_eq!(
            diags.len(),
            1,
            "{}: expected exactly one `broken.yaml:LINE:COL: message` line; output:\n{all}",
            b.kind
        );
        assert_eq!(
            diags[0].line, want_line,
            "{}: the problem is on line {want_line} (`{}`); output:\n{all}",
            b.kind, b.marker
        );
        assert!(diags[0].column >= 1, "{}: column is 1-based", b.kind);
        if let Some(word) = b.mentions {
            assert!(
                diags[0].message.contains(word),
                "{}: the message should name `{word}`; got `{}`",
                b.kind,
                diags[0].message
            );
        }
    }
}

#[test]
fn validate_reports_all_problems_at_once() {
    let dir = dir_with_cert();
    let yaml = fresh(
        r#"admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - name: public
    listen: "127.0.0.1:notaport"
  - name: secure
    listen: "127.0.0.1:${port}"
    tls:
      cert: does-not-exist.pem
      key: gw.key
clusters:
  - name: twin
    endpoints: [{address: "127.0.0.1:${p2}"}]
  - name: twin   # again
    endpoints: [{address: "127.0.0.1:${p2}"}]
routes:
  - name: r1
    cluster: no-such-cluster
"#,
    );
    write(dir.path(), "many.yaml", &yaml);
    let out = run_gateway(&["validate", "-c", "many.yaml"], dir.path(), CMD_TIMEOUT);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(
        out.code(),
        Some(1),
        "validate should exit 1; output:\n{all}"
    );
    let lines: Vec<usize> = diagnostics(&all, "many.yaml")
        .iter()
        .map(|d| d.line)
        .collect();
    for marker in [
        "notaport",
        "does-not-exist.pem",
        "# again",
        "no-such-cluster",
    ] {
        let want = line_of(&yaml, marker);
        assert!(
            lines.contains(&want),
            "a problem on line {want} (`{marker}`) should be reported along with the others; output:\n{all}"
        );
    }
}

#[test]
fn validate_accepts_a_valid_file() {
    let dir = dir_with_cert();
    let yaml = fresh(
        r#"admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
  - {name: secure, listen: "127.0.0.1:${tls}", tls: {cert: gw.pem, key: gw.key}}
clusters:
  - name: app
    lb: consistent_hash
    hash_on: {header: x-user}
    connect_timeout: 1s
    endpoints: [{address: "127.0.0.1:${p2}", weight: 2}]
routes:
  - name: r1
    match: {host: "*.example.com", path_prefix: /api, methods: [GET], headers: {x-debug: {present: true}}, query: {v: {regex: "[0-9]+"}}}
    backends: [{cluster: app, weight: 90}]
    rewrite: {path_prefix: /v2, host: internal.example}
    request_headers: {set: {x-a: "1"}, add: {x-b: "2"}, remove: [x-c]}
    timeout: 1s
    retries: {attempts: 3, per_try_timeout: 500ms, on: [connect-failure, reset, 503]}
  - name: hello
    direct_response: {status: 200, body: "hi\n", headers: {content-type: text/plain}}
"#,
    );
    write(dir.path(), "ok.yaml", &yaml);
    let out = run_gateway(&["validate", "-c", "ok.yaml"], dir.path(), CMD_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(0),
        "validate should accept a valid file; stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    assert!(
        diagnostics(&format!("{}{}", out.stdout, out.stderr), "ok.yaml").is_empty(),
        "a valid file has no diagnostics"
    );
}

#[test]
fn run_refuses_a_broken_file() {
    let dir = dir_with_cert();
    for b in broken_files() {
        write(dir.path(), "broken.yaml", &b.yaml);
        let validate = run_gateway(&["validate", "-c", "broken.yaml"], dir.path(), CMD_TIMEOUT);
        let want = diagnostics(
            &format!("{}{}", validate.stdout, validate.stderr),
            "broken.yaml",
        );
        let out = run_gateway(&["run", "-c", "broken.yaml"], dir.path(), CMD_TIMEOUT);
        assert!(
            out.status.is_some(),
            "{}: `gateway run` with a broken file should exit, but was still running after {CMD_TIMEOUT:?}",
            b.kind
        );
        assert!(
            out.code() != Some(0),
            "{}: `gateway run` should exit non-zero; stderr:\n{}",
            b.kind,
            out.stderr
        );
        assert!(
            out.elapsed < Duration::from_secs(5),
            "{}: `gateway run` should fail quickly, took {:?}",
            b.kind,
            out.elapsed
        );
        let got = diagnostics(&out.stderr, "broken.yaml");
        assert!(
            !got.is_empty(),
            "{}: run should print the diagnostics on stderr:\n{}",
            b.kind,
            out.stderr
        );
        assert_eq!(
            got, want,
            "{}: `run` should print the same diagnostics on stderr as `validate`",
            b.kind
        );
    }
}

/// The smallest config that serves something, on fresh ports.
fn hello_config() -> String {
    fresh(
        r#"admin: {listen: "127.0.0.1:${admin}"}
listeners:
  - {name: public, listen: "127.0.0.1:${port}"}
routes:
  - {name: hello, direct_response: {status: 200, body: "hi\n"}}
"#,
    )
}

#[test]
fn bare_config_flag_runs_the_gateway() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gw = Gateway::start_with_args(dir, &hello_config(), &[]);
    // Gateway::start_with_args already waited for /readyz == 200.
    drop(gw);
}

/// Starts a gateway with `extra_yaml` appended and `args`, waits until it is
/// ready, and returns the lines it wrote to stderr by then.
fn log_lines_of(extra_yaml: &str, args: &[&str]) -> Vec<String> {
    let yaml = hello_config() + extra_yaml;
    let gw = Gateway::start_with_args(tempfile::tempdir().expect("tempdir"), &yaml, args);
    let lines: Vec<String> = gw.stderr().lines().map(str::to_string).collect();
    assert!(!lines.is_empty(), "the gateway logged nothing at start");
    lines
}

#[test]
fn log_lines_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let lines = log_lines_of("", &["run"]);
    for line in &lines {
        assert!(
            !line.contains('\u{1b}'),
            "ANSI escape in a log line: {line:?}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains(" INFO ")),
        "expected plain-text INFO lines: {lines:#?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    for (how, extra, args) in [
        (
            "--log-format json",
            "",
            &["run", "--log-format", "json"][..],
        ),
        (
            "telemetry.log_format: json",
            "telemetry: {log_format: json}\n",
            &["run"][..],
        ),
    ] {
        let lines = log_lines_of(extra, args);
        for line in &lines {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{how}: not one JSON object ({e}): {line:?}"));
            assert!(
                v["timestamp"].is_string() && v["level"].is_string() && v["fields"].is_object(),
                "{how}: a log object has timestamp, level and fields: {line}"
            );
        }
    }
}

#[test]
fn the_log_format_flag_wins_over_the_config() {
    let lines = log_lines_of(
        "telemetry: {log_format: json}\n",
        &["run", "--log-format", "text"],
    );
    assert!(
        lines
            .iter()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "--log-format text should win over the config's json: {lines:#?}"
    );
}

#[test]
fn schema_matches_committed_file() {
    let path = workspace_root().join("conf/schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} does not exist yet: generate it with `cargo run -p gateway -- schema > conf/schema.json`",
            path.display()
        )
    });
    let out = run_gateway(&["schema"], &workspace_root(), CMD_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(0),
        "`gateway schema` should exit 0: {}",
        out.stderr
    );
    serde_json::from_str::<serde_json::Value>(&out.stdout).expect("`gateway schema` prints JSON");
    assert!(
        out.stdout == committed,
        "`gateway schema` differs from conf/schema.json: regenerate it with `cargo run -p gateway -- schema > conf/schema.json`"
    );
}

#[test]
fn version_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run_gateway(&["--version"], dir.path(), CMD_TIMEOUT);
    assert_eq!(out.code(), Some(0), "`gateway --version` should exit 0");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        out.stdout.contains(version),
        "`gateway --version` should print the workspace version {version}, got {:?}",
        out.stdout
    );
}

/// Every example configuration in `conf/` validates as it is.
#[test]
fn shipped_examples_validate() {
    let conf = workspace_root().join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf).expect("conf/ exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let file = path.to_string_lossy().into_owned();
        let out = run_gateway(&["validate", "-c", &file], &conf, CMD_TIMEOUT);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(0),
            "{file} should validate; stderr:\n{}",
            out.stderr
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected quickstart.yaml and edge.yaml, checked {checked}"
    );
}
