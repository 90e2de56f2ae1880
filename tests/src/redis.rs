//! A real `redis-server` for the fleet rate-limit tests: started on a free
//! loopback port with persistence off, killed (SIGKILL) when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// What to do when `redis-server` cannot be found.
pub const REDIS_INSTALL_HINT: &str = "redis-server is not installed; the fleet rate-limit tests need a real Redis: run `apt-get install redis-server`";

/// How long [`RedisServer::start`] waits for the first `PONG`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `redis-server --port P --save '' --appendonly no` on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The CA of its certificate when it speaks TLS.
    tls_ca: Option<std::path::PathBuf>,
    /// Where its standard output and error go (shown when it fails to start).
    log: tempfile::NamedTempFile,
}

impl RedisServer {
    /// Starts Redis on a [`free_port`] and waits until it answers `PING`.
    /// Panics (failing the test) when `redis-server` is missing, with the
    /// install command in the message.
    pub fn start() -> RedisServer {
        Self::spawn_retrying(|_| (Vec::new(), None))
    }

    /// Starts Redis speaking only TLS on its port, with a certificate for
    /// `127.0.0.1` signed by `ca`; its files go to `dir`.
    pub fn start_tls(ca: &crate::TestCa, dir: &std::path::Path) -> RedisServer {
        Self::spawn_retrying(|port| {
            let (cert, key) = ca.issue(&["127.0.0.1"]).write(
                dir,
                &format!("redis-{port}.pem"),
                &format!("redis-{port}.key"),
            );
            let ca_path = ca.write_pem(dir, &format!("redis-{port}-ca.pem"));
            let path = |p: &std::path::Path| p.display().to_string();
            let args = vec![
                "--tls-port".to_string(),
                port.to_string(),
                "--tls-cert-file".into(),
                path(&cert),
                "--tls-key-file".into(),
                path(&key),
                "--tls-ca-cert-file".into(),
                path(&ca_path),
                "--tls-auth-clients".into(),
                "no".into(),
            ];
            (args, Some(ca_path))
        })
    }

    /// Starts a cluster-enabled node (`--cluster-enabled yes`, node timeout
    /// `node_timeout_ms`) whose node file goes to `dir`. Its cluster bus
    /// port is a second [`free_port`] given as `--cluster-port`: Redis's
    /// default (port + 10000) can land on a port another test or an
    /// outgoing connection holds, and the node then exits at start.
    fn start_cluster_node(dir: &std::path::Path, node_timeout_ms: u64) -> RedisServer {
        Self::spawn_retrying(|port| {
            let args = vec![
                "--cluster-enabled".to_string(),
                "yes".into(),
                "--cluster-port".into(),
                free_port().to_string(),
                "--cluster-config-file".into(),
                format!("nodes-{port}.conf"),
                "--cluster-node-timeout".into(),
                node_timeout_ms.to_string(),
                // A replica may take over however fresh its copy is, and its
                // first sync starts at once (the default waits 5 s): a test
                // kills a master seconds after the cluster formed.
                "--cluster-replica-validity-factor".into(),
                "0".into(),
                "--repl-diskless-sync-delay".into(),
                "0".into(),
                "--dir".into(),
                dir.display().to_string(),
            ];
            (args, None)
        })
    }

    /// Starts `redis-server` with the arguments `setup` returns for a fresh
    /// [`free_port`]. A port picked free can still be taken by someone else
    /// before Redis binds it; a server that exits at start is tried again on
    /// new ports (three times in all) and the last failure's log is shown.
    fn spawn_retrying(
        mut setup: impl FnMut(u16) -> (Vec<String>, Option<std::path::PathBuf>),
    ) -> RedisServer {
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let (args, tls_ca) = setup(port);
            match Self::spawn(port, &args, tls_ca) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}")
    }

    fn spawn(
        port: u16,
        extra: &[String],
        tls_ca: Option<std::path::PathBuf>,
    ) -> Result<RedisServer, String> {
        let log = tempfile::NamedTempFile::new().expect("redis log file");
        let mut cmd = Command::new("redis-server");
        // A TLS server listens only on its TLS port.
        let plain_port = if tls_ca.is_none() { port } else { 0 };
        let child = cmd
            .args(["--port", &plain_port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(
                log.reopen()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .stderr(
                log.reopen()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_INSTALL_HINT}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = RedisServer {
            child: Some(child),
            port,
            tls_ca,
            log,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !server.ping() {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                server.child = None;
                let said = std::fs::read_to_string(server.log.path()).unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect();
                return Err(format!(
                    "redis-server on port {port} exited at start ({status}); its last lines:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                ));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// Runs `redis-cli` against this server (with TLS when it speaks TLS)
    /// and returns its standard output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(ca) = &self.tls_ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cmd.args(args).stdin(Stdio::null()).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it answers `PING` with `PONG` within 500 ms.
    pub fn ping(&self) -> bool {
        match self.tls_ca {
            Some(_) => self.cli(&["PING"]) == "PONG",
            None => self.command("PING").as_deref() == Some("+PONG"),
        }
    }

    /// Sends one inline command (e.g. `DBSIZE`) and returns the first line of
    /// the reply (`+PONG`, `:3`), or `None` on error or after 500 ms.
    pub fn command(&self, cmd: &str) -> Option<String> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
        s.write_all(format!("{cmd}\r\n").as_bytes()).ok()?;
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n") {
            s.read_exact(&mut byte).ok()?;
            buf.push(byte[0]);
        }
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).ok()
    }

    fn signal(&self, sig: &str) -> bool {
        self.pid().is_some_and(|pid| {
            Command::new("kill")
                .args([sig, &pid.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        assert!(self.signal("-STOP"), "kill -STOP redis-server failed");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        assert!(self.signal("-CONT"), "kill -CONT redis-server failed");
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A stopped process must be continued to die promptly.
        self.signal("-CONT");
        self.kill();
    }
}

/// A Redis Cluster on loopback: `masters` masters with one replica each,
/// a short node timeout so a killed master fails over within seconds.
pub struct RedisCluster {
    /// Every node, masters and replicas.
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `2 * masters` nodes and joins them (`redis-cli --cluster
    /// create --cluster-replicas 1`); waits until the cluster is `ok`.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = tempfile::tempdir().expect("cluster dir");
        let nodes: Vec<RedisServer> = (0..2 * masters)
            .map(|_| RedisServer::start_cluster_node(dir.path(), 1000))
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = RedisCluster { nodes, _dir: dir };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(RedisServer::url)
            .collect()
    }

    /// Waits until every live node reports `cluster_state:ok` and sees
    /// as many masters as slots need (panics after `within`).
    pub fn wait_ok(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let ok = self
                .nodes
                .iter()
                .filter(|n| n.child.is_some())
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the Redis Cluster did not reach state ok within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The live master nodes, by index into [`RedisCluster::nodes`].
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .filter(|&i| self.nodes[i].cli(&["ROLE"]).starts_with("master"))
            .collect()
    }

    /// Keys matching `pattern` on node `i` (a `SCAN` of that node only).
    pub fn keys_on(&self, i: usize, pattern: &str) -> usize {
        self.nodes[i]
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    }
}
