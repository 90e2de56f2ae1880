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
}

impl RedisServer {
    /// Starts Redis on a [`free_port`] and waits until it answers `PING`.
    /// Panics (failing the test) when `redis-server` is missing, with the
    /// install command in the message.
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{REDIS_INSTALL_HINT}"),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = RedisServer {
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !server.ping() {
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!("redis-server on port {port} exited at start ({status})");
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING within {READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
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
        self.command("PING").as_deref() == Some("+PONG")
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
