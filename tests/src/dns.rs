//! A real DNS server for the discovery tests: `dnsmasq` on a free loopback
//! port, answering only from a hosts file the test edits (re-read on
//! `SIGHUP`), with a 1 s TTL; killed (SIGKILL) when dropped.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// What to do when `dnsmasq` cannot be found.
pub const DNSMASQ_INSTALL_HINT: &str = "dnsmasq is not installed; the DNS discovery tests need a real DNS server: run `apt-get install dnsmasq-base` (or `bash tests/install-deps.sh`)";

/// A running `dnsmasq` serving the names of its hosts file.
pub struct DnsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn dnsmasq_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("dnsmasq"))
            .find(|f| f.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/dnsmasq");
        sbin.is_file().then_some(sbin)
    })
}

impl DnsServer {
    /// Starts dnsmasq answering `records` (name, address). Without dnsmasq,
    /// `None` after printing why, so the caller can skip; under CI (`CI`
    /// set) a missing dnsmasq fails the test instead.
    pub fn start(records: &[(&str, IpAddr)]) -> Option<DnsServer> {
        let Some(bin) = dnsmasq_bin() else {
            if std::env::var_os("CI").is_some() {
                panic!("{DNSMASQ_INSTALL_HINT}");
            }
            eprintln!("skipping: {DNSMASQ_INSTALL_HINT}");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        // dnsmasq started as root drops to `nobody`, who must still read
        // the hosts file when it is re-read on SIGHUP.
        set_mode(dir.path(), 0o755);
        let port = free_port();
        let server = DnsServer {
            child: None,
            port,
            dir,
        };
        server.set_records(records);
        let hosts = server.hosts_path();
        let child = Command::new(bin)
            .arg("--keep-in-foreground")
            .arg(format!("--port={port}"))
            .args(["--listen-address=127.0.0.1", "--bind-interfaces"])
            .args(["--no-resolv", "--no-hosts", "--conf-file=/dev/null"])
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg("--local-ttl=1")
            .arg(format!(
                "--pid-file={}",
                server.dir.path().join("pid").display()
            ))
            .arg("--log-facility=-")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq: {e}"));
        let mut server = server;
        server.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!("dnsmasq on port {port} exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq on port {port} did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    /// The loopback port it answers on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, for a `dns: {nameservers: [..]}` block.
    pub fn nameserver(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.path().join("hosts")
    }

    /// Replaces the records and makes dnsmasq re-read them (SIGHUP).
    pub fn set_records(&self, records: &[(&str, IpAddr)]) {
        let text: String = records
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect();
        let path = self.hosts_path();
        let tmp = self.dir.path().join("hosts.tmp");
        std::fs::write(&tmp, text).expect("write dnsmasq hosts file");
        set_mode(&tmp, 0o644);
        std::fs::rename(&tmp, &path).expect("replace dnsmasq hosts file");
        if let Some(c) = &self.child {
            signal(c.id(), "HUP");
        }
    }

    /// Kills dnsmasq (SIGKILL): DNS is down from now on.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}
