//! Clients: reqwest (rustls, HTTP/1.1 and HTTP/2) and the system `curl`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::certs::TestCa;

/// Per-request timeout of every harness client: no test waits forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A plaintext HTTP/1.1 client that ignores proxy environment variables.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("build reqwest client")
}

/// Like [`http_client`], with `host` resolving to `addr`, so that
/// `http://HOST:PORT/` URLs send `Host: HOST:PORT` to the gateway.
pub fn http_client_with_host(host: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .resolve(host, addr)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("build reqwest client")
}

/// An HTTPS client that trusts only `ca` and resolves `host` to `addr`
/// (HTTP/2 via ALPN when the server offers it).
pub fn tls_client(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::Client {
    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA PEM");
    reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(host, addr)
        .timeout(CLIENT_TIMEOUT)
        .build()
        .expect("build TLS reqwest client")
}

/// What a `curl` run produced.
#[derive(Debug)]
pub struct CurlOutput {
    /// curl's exit code (0 on success; `None` if killed by a signal).
    pub code: Option<i32>,
    /// Response body followed by whatever `-w` printed.
    pub stdout: String,
    /// curl's messages.
    pub stderr: String,
}

/// Runs `/usr/bin/curl -sS --noproxy '*' --max-time 20 ARGS...` in `cwd`.
pub fn curl(args: &[&str], cwd: &Path) -> CurlOutput {
    let out = Command::new("curl")
        .args(["-sS", "--noproxy", "*", "--max-time", "20"])
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run curl (is /usr/bin/curl installed?)");
    CurlOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
