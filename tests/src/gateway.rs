//! Starting and stopping the real `gateway` binary.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long [`Gateway::start`] waits for `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path of the `gateway` binary under test.
///
/// `$GATEWAY_BIN` wins when set (used as is). Otherwise the binary sits
/// next to the test executable's `deps/` directory (`target/debug/gateway`);
/// if it is missing, or older than a file under `gateway/`, `filters/` or
/// `Cargo.lock`, `cargo build -p gateway --bin gateway` runs once (per test
/// process) from the workspace root first, so a test never runs a stale
/// binary.
pub fn gateway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("GATEWAY_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current_exe");
        // target/debug/deps/<test>-<hash> -> target/debug
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps");
        let bin = profile_dir.join(format!("gateway{}", std::env::consts::EXE_SUFFIX));
        if !bin.exists() || is_stale(&bin) {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "gateway", "--bin", "gateway"])
                .current_dir(workspace_root())
                .status()
                .expect("run cargo build -p gateway");
            assert!(
                status.success(),
                "`cargo build -p gateway --bin gateway` failed ({status})"
            );
            assert!(
                bin.exists(),
                "built the gateway but {} still does not exist",
                bin.display()
            );
        }
        bin
    })
    .clone()
}

/// Newest modification time of the files under `path` (recursively).
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

/// Whether a source file of the gateway or its filters is newer than `bin`.
fn is_stale(bin: &Path) -> bool {
    let Some(built) = std::fs::metadata(bin).and_then(|m| m.modified()).ok() else {
        return true;
    };
    let root = workspace_root();
    ["gateway", "filters", "Cargo.lock"]
        .iter()
        .filter_map(|p| newest_mtime(&root.join(p)))
        .any(|t| t > built)
}

/// A blocking `GET path` over HTTP/1.1 with `Connection: close`; returns
/// the status code and body, or `None` when nothing answered in time.
fn blocking_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

fn admin_addr_of(yaml: &str) -> SocketAddr {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml)
        .unwrap_or_else(|e| panic!("test YAML does not parse ({e}):\n{yaml}"));
    let listen = doc
        .get("admin")
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or_else(|| {
            panic!("test YAML must set admin.listen to a free port (no fixed ports):\n{yaml}")
        });
    listen
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| panic!("admin.listen `{listen}` is not a socket address"))
}

fn listener_addrs_of(yaml: &str) -> Vec<SocketAddr> {
    let doc: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap_or_default();
    doc.get("listeners")
        .and_then(|l| l.as_sequence())
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l.get("listen")?.as_str()?.to_socket_addrs().ok()?.next())
                .collect()
        })
        .unwrap_or_default()
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A running gateway process (`gateway run -c DIR/gateway.yaml`), killed on drop.
///
/// Its working directory is its temporary directory, which also holds the
/// config, any files the test put there (certificates), and `stdout.log` /
/// `stderr.log`.
pub struct Gateway {
    child: Child,
    dir: TempDir,
    admin: SocketAddr,
}

impl Gateway {
    /// Writes `yaml` to a new temporary directory and starts the gateway; see
    /// [`Gateway::start_in`].
    pub fn start(yaml: &str) -> Gateway {
        Self::start_in(tempfile::tempdir().expect("tempdir"), yaml)
    }

    /// Writes `yaml` as `gateway.yaml` into `dir` (which may already hold
    /// certificates and other files the config refers to), starts
    /// `gateway run -c DIR/gateway.yaml` there with stdout and stderr
    /// captured, and waits until the admin listener (`admin.listen` in the
    /// YAML) answers `GET /readyz` with 200 and every listener accepts TCP
    /// connections. Panics, showing stderr, if the process exits or is not
    /// ready within 20 s.
    pub fn start_in(dir: TempDir, yaml: &str) -> Gateway {
        Self::start_with_args(dir, yaml, &["run"])
    }

    /// Like [`Gateway::start_in`], running `gateway ARGS... -c DIR/gateway.yaml`
    /// (e.g. `&[]` for the bare `gateway -c FILE` form).
    pub fn start_with_args(dir: TempDir, yaml: &str, args: &[&str]) -> Gateway {
        let mut gw = Self::spawn_only(dir, yaml, args);
        gw.wait_until_ready();
        gw
    }

    /// Starts `gateway run -c DIR/gateway.yaml` and returns as soon as
    /// `/readyz` answers 200, *without* also waiting for the traffic
    /// listeners to accept connections (which [`Gateway::start_in`] does).
    /// For tests of what readiness promises.
    pub fn start_readyz_only(dir: TempDir, yaml: &str) -> Gateway {
        let mut gw = Self::spawn_only(dir, yaml, &["run"]);
        gw.wait_ready();
        gw
    }

    /// The `listen` addresses of the YAML's `listeners`.
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        listener_addrs_of(&read_lossy(&self.dir.path().join("gateway.yaml")))
    }

    /// Waits (up to 20 s) until every listener of the config accepts TCP
    /// connections; panics otherwise.
    fn wait_listeners(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        for addr in self.listener_addrs() {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "listener {addr} does not accept connections {READY_TIMEOUT:?} after start\n--- stderr ---\n{}",
                    self.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts `gateway ARGS... -c DIR/gateway.yaml` and returns at once,
    /// without waiting for readiness (e.g. `run --upgrade`, which waits for
    /// the old process to hand over its sockets). Call
    /// [`Gateway::wait_until_ready`] afterwards.
    pub fn spawn_only(dir: TempDir, yaml: &str, args: &[&str]) -> Gateway {
        Self::spawn_env(dir, yaml, args, &[])
    }

    /// [`Gateway::start_in`] with `env` added to the gateway's own
    /// environment only (changing the test process's environment would leak
    /// into every gateway other tests start at the same time).
    pub fn start_in_with_env(dir: TempDir, yaml: &str, env: &[(&str, &str)]) -> Gateway {
        let mut gw = Self::spawn_env(dir, yaml, &["run"], env);
        gw.wait_until_ready();
        gw
    }

    fn spawn_env(dir: TempDir, yaml: &str, args: &[&str], env: &[(&str, &str)]) -> Gateway {
        let admin = admin_addr_of(yaml);
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, yaml).expect("write gateway.yaml");
        let stdout = File::create(dir.path().join("stdout.log")).expect("stdout.log");
        let stderr = File::create(dir.path().join("stderr.log")).expect("stderr.log");
        let child = Command::new(gateway_bin())
            .args(args)
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", gateway_bin().display()));
        Gateway { child, dir, admin }
    }

    /// Waits for `/readyz` and for every listener to accept connections.
    pub fn wait_until_ready(&mut self) {
        self.wait_ready();
        self.wait_listeners();
    }

    /// The gateway's process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `"HUP"`, `"TERM"`, `"QUIT"`) with `kill(1)`.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} failed", self.pid());
    }

    /// Waits up to `limit` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Writes `text` to `name` in the gateway's directory atomically
    /// (temporary file + rename, as editors and GitOps tools do).
    pub fn write_file(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write temporary file");
        std::fs::rename(&tmp, self.dir.path().join(name)).expect("rename into place");
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = None;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gateway exited before it was ready ({status})\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- config ---\n{}",
                    self.stderr(),
                    self.stdout(),
                    read_lossy(&self.dir.path().join("gateway.yaml"))
                );
            }
            last = blocking_get(self.admin, "/readyz", Duration::from_millis(500)).or(last);
            if matches!(last, Some((200, _))) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "gateway not ready within {READY_TIMEOUT:?}: last /readyz answer {last:?}\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://ADMIN_ADDR` (no trailing slash).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The gateway's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the gateway wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.dir.path().join("stdout.log"))
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.dir.path().join("stderr.log"))
    }

    /// The stdout lines that are JSON objects (the access log), parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(|v| v.is_object())
            .collect()
    }

    /// Polls [`Gateway::access_log`] (up to `timeout`) until at least `n`
    /// entries satisfy `pred`; returns those entries (possibly fewer than `n`
    /// on timeout, for the caller to assert on).
    pub fn wait_access_log(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits: Vec<_> = self.access_log().into_iter().filter(|v| pred(v)).collect();
            if hits.len() >= n || Instant::now() > deadline {
                return hits;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET {admin}{path}`: status and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let resp = crate::http_client()
            .get(format!("{}{path}", self.admin_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET admin {path}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    /// The admin `/metrics` text (asserting a 200 answer).
    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, 200, "expected admin /metrics to answer 200");
        body
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            // The test failed: show what the gateway said (tail only).
            eprintln!(
                "--- gateway stderr (last 40 lines) ---\n{}\n--- config ---\n{}",
                crate::tail(&self.stderr(), 40),
                read_lossy(&self.dir.path().join("gateway.yaml"))
            );
        }
    }
}

/// The outcome of a gateway command run to completion by [`run_gateway`].
#[derive(Debug)]
pub struct GatewayOutput {
    /// Exit status; `None` if it had to be killed at the timeout.
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl GatewayOutput {
    /// The exit code (`None` when killed or ended by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Runs `gateway ARGS...` in `cwd`, killing it after `timeout`.
pub fn run_gateway(args: &[&str], cwd: &Path, timeout: Duration) -> GatewayOutput {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out_path = out_dir.path().join("stdout");
    let err_path = out_dir.path().join("stderr");
    let start = Instant::now();
    let mut child = Command::new(gateway_bin())
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", gateway_bin().display()));
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    GatewayOutput {
        status,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
        elapsed: start.elapsed(),
    }
}
