//! Shared fixtures of the egress tests: starting a gateway with one egress
//! listener, raw HTTP/CONNECT exchanges, `curl` runs, proxied reqwest
//! clients, TCP "taps" that count every connection and byte reaching a
//! destination, and the assertions every refusal needs.

use std::fmt::Display;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

pub use gateway_tests::{error_chain, tail};
use gateway_tests::{pseudo_random_bytes, sha256_hex, tpl, Gateway, TestCa, DOWNLOAD_SEED};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The JWT issuer of the functions' trust domain.
pub const ISSUER: &str = "https://issuer.fn.example";
/// The audience egress tokens carry.
pub const AUDIENCE: &str = "egress";
/// The principal of function `fn-a` (`<iss>#<sub>`).
pub const FN_A: &str = "https://issuer.fn.example#fn-a";
/// The principal of function `fn-b`.
pub const FN_B: &str = "https://issuer.fn.example#fn-b";
/// The partner API every test reaches (mapped to loopback by `dns.static`).
pub const PARTNER: &str = "api.partner.test";
/// Size of the big downloads whose SHA-256 must survive the proxy.
pub const BIG: usize = 10 * 1024 * 1024;
/// Bound of every single network wait of a raw client.
pub const IO_LIMIT: Duration = Duration::from_secs(15);

/// The `trust_domains` block for the functions' JWT issuer (reads
/// `jwks.json` from the gateway directory).
pub const TRUST_DOMAINS: &str = r#"
trust_domains:
  - name: fn.example
    jwt_issuers:
      - issuer: https://issuer.fn.example
        audiences: [egress]
        jwks_file: jwks.json
"#;

/// Lowercase hex SHA-256 of the [`BIG`] download body
/// (`pseudo_random_bytes(BIG, DOWNLOAD_SEED)`, what the upstreams send).
pub fn big_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| sha256_hex(&pseudo_random_bytes(BIG, DOWNLOAD_SEED)))
}

/// A gateway with one egress listener.
pub struct Egress {
    pub gw: Gateway,
    pub port: u16,
}

impl Egress {
    /// Starts the gateway (in a fresh directory holding `ca` as `ca.pem`
    /// when given) with `admin`, one listener `egress` (`mode: egress`) and
    /// then `template`: further top-level YAML (`egress:`,
    /// `trust_domains:`) whose placeholders [`tpl`] fills from `vars`.
    pub fn start(ca: Option<&TestCa>, template: &str, vars: &[(&str, &dyn Display)]) -> Egress {
        let dir = tempfile::tempdir().expect("tempdir");
        Egress::start_in(dir, ca, &tpl(template, vars))
    }

    fn start_in(dir: TempDir, ca: Option<&TestCa>, rest: &str) -> Egress {
        if let Some(ca) = ca {
            ca.write_pem(dir.path(), "ca.pem");
        }
        let gw = Gateway::builder()
            .in_dir(dir)
            .listener_name("egress")
            .listener("mode: egress")
            .yaml(rest)
            .start();
        let port = gw.port();
        Egress { gw, port }
    }

    /// [`Egress::start`] for the functions: a fresh key's `jwks.json` in
    /// the directory, [`TRUST_DOMAINS`], then `template`. Returns the key too.
    pub fn for_functions(
        ca: Option<&TestCa>,
        template: &str,
        vars: &[(&str, &dyn Display)],
    ) -> (Egress, gateway_tests::jwt::SigningKey) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = jwks_in(dir.path());
        let rest = format!("{TRUST_DOMAINS}{}", tpl(template, vars));
        (Egress::start_in(dir, ca, &rest), key)
    }

    /// The egress listener's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`: what `HTTPS_PROXY` / `curl -x` get.
    pub fn proxy_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The gateway's directory (certificates, downloads).
    pub fn dir(&self) -> &Path {
        self.gw.dir()
    }

    /// The last 40 lines of the gateway's stderr, for failure messages.
    pub fn stderr(&self) -> String {
        tail(&self.gw.stderr(), 40)
    }

    /// Asserts `gateway_egress_requests_total{decision,rule}` equals `want`,
    /// polling up to 5 s (the gateway answers before it counts).
    pub async fn assert_requests(&self, decision: &str, rule: &str, want: f64) {
        let labels = [("decision", decision), ("rule", rule)];
        self.gw
            .metric("gateway_egress_requests_total", &labels)
            .eventually_eq(want)
            .await;
    }

    /// Waits (up to 5 s) for `n` access-log lines of kind `egress`
    /// satisfying `pred`, and returns every such line.
    pub fn egress_lines(
        &self,
        n: usize,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        self.gw.wait_access_log(n, Duration::from_secs(5), |v| {
            v["kind"] == "egress" && pred(v)
        })
    }

    /// [`Egress::egress_lines`] that must find exactly `n` lines; `what`
    /// names them in the failure message.
    pub fn expect_lines(
        &self,
        n: usize,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let lines = self.egress_lines(n, pred);
        assert_eq!(
            lines.len(),
            n,
            "{what}: expected {n} access-log lines; egress lines:\n{}",
            self.egress_log()
        );
        lines
    }

    /// Every access-log line of kind `egress` so far, one per line (for
    /// failure messages).
    pub fn egress_log(&self) -> String {
        self.gw
            .access_log()
            .into_iter()
            .filter(|v| v["kind"] == "egress")
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 exchanges with the proxy.
// ---------------------------------------------------------------------------

/// A complete HTTP answer read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and header lines, as received.
    pub head: String,
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn parse_head(head: &str) -> Result<u16, String> {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {head:?}"))
}

/// Reads a response head one byte at a time (never past the blank line, so
/// tunnel bytes that follow a `200` stay in the stream).
async fn read_head(s: &mut TcpStream, deadline: Instant) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 * 1024 {
            return Err("response head longer than 64 KiB".into());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let problem = match tokio::time::timeout(left, s.read(&mut byte)).await {
            Ok(Ok(0)) => "connection closed (no complete response head)".to_string(),
            Ok(Ok(_)) => {
                head.push(byte[0]);
                continue;
            }
            Ok(Err(e)) => format!("read error: {e}"),
            Err(_) => "no complete response head within the time limit".to_string(),
        };
        return Err(format!(
            "{problem}; got {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    Ok(String::from_utf8_lossy(&head[..head.len() - 4]).into_owned())
}

/// Reads the body after `head`: `Content-Length` bytes, else to EOF.
async fn read_body(s: &mut TcpStream, head: &str, deadline: Instant) -> Result<String, String> {
    let len = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    let mut body = Vec::new();
    let left = deadline.saturating_duration_since(Instant::now());
    let read = async {
        match len {
            Some(n) => {
                body.resize(n, 0);
                s.read_exact(&mut body).await.map(|_| ())
            }
            None => s.read_to_end(&mut body).await.map(|_| ()),
        }
    };
    match tokio::time::timeout(left, read).await {
        Err(_) => Err(format!(
            "body not complete within the time limit (head {head:?})"
        )),
        Ok(Err(e)) => Err(format!("body read error: {e} (head {head:?})")),
        Ok(Ok(())) => Ok(String::from_utf8_lossy(&body).into_owned()),
    }
}

async fn dial(addr: SocketAddr) -> Result<TcpStream, String> {
    match tokio::time::timeout(IO_LIMIT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("connect to the proxy {addr}: {e}")),
        Err(_) => Err(format!("connect to the proxy {addr} timed out")),
    }
}

/// Sends `request` (complete, with its blank line) to `addr` and reads
/// one answer; everything bounded by [`IO_LIMIT`].
pub async fn raw_exchange(addr: SocketAddr, request: &str) -> Result<RawResponse, String> {
    let deadline = Instant::now() + IO_LIMIT;
    let mut s = dial(addr).await?;
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write request: {e}"))?;
    let head = read_head(&mut s, deadline).await?;
    let status = parse_head(&head)?;
    let body = read_body(&mut s, &head, deadline).await?;
    Ok(RawResponse { status, head, body })
}

/// A request head: `first` line, `Host: {host}`, the `extra` header lines
/// and the blank line.
fn request_head(first: &str, host: &str, extra: &[(&str, &str)]) -> String {
    let mut req = format!("{first}\r\nHost: {host}\r\n");
    for (k, v) in extra {
        let _ = write!(req, "{k}: {v}\r\n");
    }
    req + "\r\n"
}

/// `GET {url}` in absolute form with `Host: {host_header}` and optional
/// extra header lines, `Connection: close`.
pub fn absolute_get(url: &str, host_header: &str, extra: &[(&str, &str)]) -> String {
    let mut extra = extra.to_vec();
    extra.push(("Connection", "close"));
    request_head(&format!("GET {url} HTTP/1.1"), host_header, &extra)
}

/// What a `CONNECT` got.
#[derive(Debug)]
pub enum Connect {
    /// `200`: the tunnel, positioned right after the response head.
    Tunnel(TcpStream),
    /// Any other answer, read whole.
    Refused(RawResponse),
}

/// Sends `CONNECT {authority}` (with `Host: {authority}` and `extra`
/// header lines) and reads the answer head; bounded by [`IO_LIMIT`].
pub async fn connect(
    addr: SocketAddr,
    authority: &str,
    extra: &[(&str, &str)],
) -> Result<Connect, String> {
    let deadline = Instant::now() + IO_LIMIT;
    let mut s = dial(addr).await?;
    let req = request_head(&format!("CONNECT {authority} HTTP/1.1"), authority, extra);
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write CONNECT: {e}"))?;
    let head = read_head(&mut s, deadline).await?;
    let status = parse_head(&head)?;
    if status == 200 {
        return Ok(Connect::Tunnel(s));
    }
    let body = read_body(&mut s, &head, deadline).await?;
    Ok(Connect::Refused(RawResponse { status, head, body }))
}

/// [`connect`] that must give a tunnel; panics with what it got instead.
pub async fn open_tunnel(eg: &Egress, authority: &str, extra: &[(&str, &str)]) -> TcpStream {
    match connect(eg.addr(), authority, extra).await {
        Ok(Connect::Tunnel(s)) => s,
        Ok(Connect::Refused(r)) => panic!(
            "CONNECT {authority}: expected `200 Connection established`, got {} {:?} (head {:?})\n--- gateway stderr ---\n{}",
            r.status,
            r.body,
            r.head,
            eg.stderr()
        ),
        Err(e) => panic!(
            "CONNECT {authority}: {e}\n--- gateway stderr ---\n{}",
            eg.stderr()
        ),
    }
}

/// Over an open tunnel: a TLS handshake naming `sni` (trusting `ca`),
/// then `GET path` with `Host: host`; returns the status line and body,
/// or where it failed. Bounded by [`IO_LIMIT`].
pub async fn https_over_tunnel(
    tunnel: TcpStream,
    ca: &TestCa,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<(String, String), String> {
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    let mut tls = match tokio::time::timeout(
        IO_LIMIT,
        gateway_tests::rustls_connector(ca, None, &[], true).connect(name, tunnel),
    )
    .await
    {
        Err(_) => return Err("TLS handshake timed out".into()),
        Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        Ok(Ok(t)) => t,
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write over TLS: {e}"))?;
    let mut buf = Vec::new();
    match tokio::time::timeout(IO_LIMIT, tls.read_to_end(&mut buf)).await {
        Err(_) => return Err("answer over TLS timed out".into()),
        // A peer that closes without close_notify still gave its answer.
        Ok(Err(e)) if buf.is_empty() => return Err(format!("read over TLS: {e}")),
        Ok(_) => {}
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// What a `curl` run produced.
#[derive(Debug)]
pub struct CurlRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `curl -sS --max-time 30 ARGS...` in `cwd` with every proxy
/// variable of this process removed and `env` set (e.g. `HTTPS_PROXY`);
/// killed after 45 s. (The harness `curl` passes `--noproxy '*'`, which
/// also disables `-x`.)
pub async fn curl(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> CurlRun {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30"])
        .args(args)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for v in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        cmd.env_remove(v).env_remove(v.to_uppercase());
    }
    cmd.envs(env.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(45), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("curl {args:?} did not finish within 45 s"))
        .expect("run curl (is curl installed?)");
    CurlRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Asserts a downloaded body is the [`BIG`] one (length and SHA-256).
pub fn assert_big(len: usize, sha256: &str, what: &str) {
    assert_eq!(
        (len, sha256),
        (BIG, big_sha()),
        "{what}: the 10 MiB body must arrive intact (length, SHA-256)"
    );
}

impl CurlDownload {
    /// Asserts curl exited 0 with `-w` codes `codes` (and, on failure,
    /// shows curl's and the gateway's stderr), then that the body is
    /// [`BIG`]'s.
    pub fn assert_big(&self, eg: &Egress, codes: &str, what: &str) {
        assert_eq!(
            (self.code, self.codes.as_str()),
            (Some(0), codes),
            "{what}: expected exit 0 and codes {codes}; stderr: {}\n--- gateway stderr ---\n{}",
            self.stderr,
            eg.stderr()
        );
        assert_big(self.len, &self.sha256, what);
    }
}

/// A download with curl into `file` (in `cwd`): curl's exit code, `-w`
/// output (`%{http_code}` and `%{http_connect}`), and the file's length and
/// SHA-256.
pub struct CurlDownload {
    pub code: Option<i32>,
    /// `"<http_code> <http_connect>"`, e.g. `200 000` or `200 200`.
    pub codes: String,
    pub stderr: String,
    pub len: usize,
    pub sha256: String,
}

pub async fn curl_download(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: &Path,
    file: &str,
) -> CurlDownload {
    let mut all = vec!["-o", file, "-w", "%{http_code} %{http_connect}"];
    all.extend_from_slice(args);
    let run = curl(&all, env, cwd).await;
    let data = std::fs::read(cwd.join(file)).unwrap_or_default();
    let _ = std::fs::remove_file(cwd.join(file));
    CurlDownload {
        code: run.code,
        codes: run.stdout,
        stderr: run.stderr,
        len: data.len(),
        sha256: sha256_hex(&data),
    }
}

// ---------------------------------------------------------------------------
// reqwest through the proxy
// ---------------------------------------------------------------------------

/// A reqwest client that sends everything through `proxy_url` (absolute
/// form for `http://`, CONNECT for `https://`), trusting only `ca` for
/// HTTPS, with `Proxy-Authorization: Bearer <token>` when given. No
/// pooled connections, so each request is its own proxy exchange.
pub fn proxied_client(
    proxy_url: &str,
    ca: Option<&TestCa>,
    token: Option<&str>,
) -> reqwest::Client {
    let mut proxy = reqwest::Proxy::all(proxy_url).expect("proxy URL");
    if let Some(t) = token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {t}"))
            .expect("token header value");
        proxy = proxy.custom_http_auth(value);
    }
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .proxy(proxy)
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60));
    if let Some(ca) = ca {
        let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA PEM");
        b = b.add_root_certificate(root);
    }
    b.build().expect("build proxied reqwest client")
}

/// `GET url` through `client`: status, headers, body length and SHA-256;
/// panics (with gateway stderr) on a transport error.
pub async fn reqwest_download(
    eg: &Egress,
    client: &reqwest::Client,
    url: &str,
) -> (u16, reqwest::header::HeaderMap, usize, String) {
    let resp = client.get(url).send().await.unwrap_or_else(|e| {
        panic!(
            "reqwest GET {url} through the proxy failed: {}\n--- gateway stderr ---\n{}",
            error_chain(&e),
            eg.stderr()
        )
    });
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.unwrap_or_else(|e| {
        panic!(
            "reqwest GET {url}: body broken after status {status}: {}\n--- gateway stderr ---\n{}",
            error_chain(&e),
            eg.stderr()
        )
    });
    (status, headers, body.len(), sha256_hex(&body))
}

// ---------------------------------------------------------------------------
// Refusal assertions
// ---------------------------------------------------------------------------

/// Asserts a refusal: exact `status`, `x-gateway-egress-decision: deny`,
/// and a body starting `egress denied:` that contains every `needle`.
pub fn assert_refused(eg: &Egress, what: &str, r: &RawResponse, status: u16, needles: &[&str]) {
    assert_eq!(
        r.status,
        status,
        "{what}: expected {status}, got {} with body {:?}\n--- head ---\n{}\n--- gateway stderr ---\n{}",
        r.status,
        r.body,
        r.head,
        eg.stderr()
    );
    assert_eq!(
        r.header("x-gateway-egress-decision").as_deref(),
        Some("deny"),
        "{what}: a refusal must carry `x-gateway-egress-decision: deny`; head:\n{}",
        r.head
    );
    assert!(
        r.body.starts_with("egress denied:"),
        "{what}: the body must start with `egress denied:`, got {:?}",
        r.body
    );
    for n in needles {
        assert!(
            r.body.contains(n),
            "{what}: the body must name the reason (contain {n:?}), got {:?}",
            r.body
        );
    }
}

// ---------------------------------------------------------------------------
// Taps: destinations that count every connection and every byte.
// ---------------------------------------------------------------------------

/// What a [`Tap`] does with a connection.
#[derive(Clone)]
pub enum TapMode {
    /// Relays the bytes to this address (e.g. a hyper [`gateway_tests::Upstream`]),
    /// passing half-closes on.
    Relay(SocketAddr),
    /// Reads until EOF, then answers `eof after N bytes, sha256 HEX\n` and
    /// closes: the answer proves it saw the caller's half-close.
    AnswerAfterEof,
    /// Sends these bytes and shuts its write side down at once, then reads
    /// until EOF.
    GreetThenRead(Vec<u8>),
}

/// Counters of a [`Tap`].
#[derive(Default)]
pub struct TapStats {
    accepted: AtomicU64,
    bytes_in: AtomicU64,
    eof: AtomicBool,
    received: Mutex<Vec<u8>>,
}

/// A TCP listener standing in for a destination: counts accepted
/// connections and the bytes that arrive, whatever it then does with them.
pub struct Tap {
    addr: SocketAddr,
    stats: Arc<TapStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The answer of [`TapMode::AnswerAfterEof`] for `data`.
pub fn eof_answer(data: &[u8]) -> String {
    format!(
        "eof after {} bytes, sha256 {}\n",
        data.len(),
        sha256_hex(data)
    )
}

impl Tap {
    /// Listens on `bind` (port 0: any) in the current tokio runtime.
    pub async fn start(bind: SocketAddr, mode: TapMode) -> std::io::Result<Tap> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(TapStats::default());
        let st = stats.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                st.accepted.fetch_add(1, Ordering::SeqCst);
                let st = st.clone();
                let mode = mode.clone();
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(60), serve_tap(s, mode, st)).await;
                });
            }
        });
        Ok(Tap { addr, stats, task })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Bytes received from callers so far.
    pub fn bytes_in(&self) -> u64 {
        self.stats.bytes_in.load(Ordering::SeqCst)
    }

    /// Whether a connection's read side reached EOF (the caller's
    /// half-close arrived).
    pub fn saw_eof(&self) -> bool {
        self.stats.eof.load(Ordering::SeqCst)
    }

    /// What the last connection that reached EOF received.
    pub fn received(&self) -> Vec<u8> {
        self.stats.received.lock().expect("tap lock").clone()
    }

    /// Waits up to `limit` for [`Tap::saw_eof`].
    pub async fn wait_eof(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while !self.saw_eof() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// A stream that counts the bytes read from it.
struct Counting<S> {
    inner: S,
    stats: Arc<TapStats>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.stats.bytes_in.fetch_add(n as u64, Ordering::SeqCst);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_tap(s: TcpStream, mode: TapMode, stats: Arc<TapStats>) {
    let _ = s.set_nodelay(true);
    let mut s = Counting {
        inner: s,
        stats: stats.clone(),
    };
    match mode {
        TapMode::Relay(to) => {
            let Ok(mut up) = TcpStream::connect(to).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
        }
        TapMode::AnswerAfterEof => {
            let mut data = Vec::new();
            if s.read_to_end(&mut data).await.is_err() {
                return;
            }
            *stats.received.lock().expect("tap lock") = data.clone();
            stats.eof.store(true, Ordering::SeqCst);
            let _ = s.write_all(eof_answer(&data).as_bytes()).await;
            let _ = s.shutdown().await;
        }
        TapMode::GreetThenRead(greeting) => {
            if s.write_all(&greeting).await.is_err() {
                return;
            }
            let _ = s.shutdown().await;
            let mut data = Vec::new();
            if s.read_to_end(&mut data).await.is_err() {
                return;
            }
            *stats.received.lock().expect("tap lock") = data;
            stats.eof.store(true, Ordering::SeqCst);
        }
    }
}

// ---------------------------------------------------------------------------
// JWTs and curl exchanges with headers
// ---------------------------------------------------------------------------

/// A new ES256 signing key whose JWKS is written to `dir/jwks.json` (the
/// file [`TRUST_DOMAINS`] names).
pub fn jwks_in(dir: &Path) -> gateway_tests::jwt::SigningKey {
    let key = gateway_tests::jwt::SigningKey::es256("fn-key-1");
    std::fs::write(
        dir.join("jwks.json"),
        gateway_tests::jwt::jwks_json(&[&key]),
    )
    .expect("write jwks.json");
    key
}

/// A token for function `sub` of [`ISSUER`], audience [`AUDIENCE`], valid now.
pub fn fn_token(key: &gateway_tests::jwt::SigningKey, sub: &str) -> String {
    key.sign(&gateway_tests::jwt::claims(ISSUER, sub, AUDIENCE))
}

/// `curl -D - ARGS...` (headers and body on stdout), read back as a
/// [`RawResponse`] (the last response head, e.g. after a CONNECT's). Panics
/// with curl's stderr when there is no HTTP answer.
pub async fn curl_exchange(eg: &Egress, args: &[&str]) -> RawResponse {
    let mut all = vec!["-D", "-"];
    all.extend_from_slice(args);
    let run = curl(&all, &[], eg.dir()).await;
    let mut rest = run.stdout.as_str();
    let mut last = None;
    // Heads (a CONNECT's, then the request's) come one after another.
    while rest.starts_with("HTTP/") {
        let Some((head, after)) = rest.split_once("\r\n\r\n") else {
            break;
        };
        last = Some(head.to_string());
        rest = after;
    }
    let head = last.unwrap_or_else(|| {
        panic!(
            "curl {args:?}: no HTTP answer (exit {:?}); stderr: {}\nstdout: {:?}\n--- gateway stderr ---\n{}",
            run.code,
            run.stderr,
            run.stdout,
            eg.stderr()
        )
    });
    let status = parse_head(&head).expect("curl printed a status line");
    RawResponse {
        status,
        head,
        body: rest.to_string(),
    }
}
