//! A gateway process started with extra environment variables.
//!
//! [`crate::Gateway`] starts the binary with the test process's environment;
//! changing that environment (`std::env::set_var`) would leak into every
//! gateway other tests of the same process start at the same time. An
//! [`EnvGateway`] instead sets variables (e.g. `GATEWAY_ZONE`) on its own
//! child only. It offers the little the tests of environment overrides need:
//! start and wait for readiness, the admin address, `/metrics`, stderr.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::gateway_bin;

/// How long [`EnvGateway::start`] waits for readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `gateway run -c DIR/gateway.yaml` with extra environment
/// variables, killed on drop.
pub struct EnvGateway {
    child: Child,
    dir: TempDir,
    admin: SocketAddr,
}

fn first_addr(s: &str) -> Option<SocketAddr> {
    s.to_socket_addrs().ok()?.next()
}

fn get_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let timeout = Duration::from_millis(500);
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl EnvGateway {
    /// Writes `yaml` to a new temporary directory, starts the gateway there
    /// with `env` added to its environment, and waits (up to 20 s) until
    /// admin `/readyz` answers 200 and every listener accepts connections.
    /// Panics, showing stderr, otherwise.
    pub fn start(yaml: &str, env: &[(&str, &str)]) -> EnvGateway {
        let doc: serde_yaml::Value = serde_yaml::from_str(yaml)
            .unwrap_or_else(|e| panic!("test YAML does not parse ({e}):\n{yaml}"));
        let admin = doc["admin"]["listen"]
            .as_str()
            .and_then(first_addr)
            .unwrap_or_else(|| panic!("test YAML must set admin.listen:\n{yaml}"));
        let listeners: Vec<SocketAddr> = doc["listeners"]
            .as_sequence()
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| first_addr(l["listen"].as_str()?))
                    .collect()
            })
            .unwrap_or_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("gateway.yaml");
        std::fs::write(&config, yaml).expect("write gateway.yaml");
        let child = Command::new(gateway_bin())
            .arg("run")
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("stdout.log")).expect("stdout.log"))
            .stderr(File::create(dir.path().join("stderr.log")).expect("stderr.log"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", gateway_bin().display()));
        let mut gw = EnvGateway { child, dir, admin };
        let deadline = Instant::now() + READY_TIMEOUT;
        while get_status(admin, "/readyz") != Some(200) {
            if let Ok(Some(status)) = gw.child.try_wait() {
                panic!(
                    "gateway exited before it was ready ({status})\n--- stderr ---\n{}",
                    gw.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready within {READY_TIMEOUT:?}\n--- stderr ---\n{}",
                gw.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for addr in listeners {
            while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "listener {addr} does not accept connections\n--- stderr ---\n{}",
                    gw.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        gw
    }

    /// `http://ADMIN_ADDR` (no trailing slash).
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(self.dir.path().join("stderr.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The admin `/metrics` text (asserting a 200 answer).
    pub async fn metrics(&self) -> String {
        let resp = crate::http_client()
            .get(format!("{}/metrics", self.admin_url()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET admin /metrics: {e}"));
        assert_eq!(resp.status(), 200, "expected admin /metrics to answer 200");
        resp.text().await.unwrap_or_default()
    }
}

impl Drop for EnvGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let err = self.stderr();
            let lines: Vec<&str> = err.lines().collect();
            eprintln!(
                "--- gateway stderr (last 40 lines) ---\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}
