//! Clients: reqwest (rustls, HTTP/1.1 and HTTP/2) and the system `curl`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use crate::certs::{LeafCert, TestCa};

/// Per-request timeout of every harness client: no test waits forever.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A reqwest builder that ignores proxy environment variables and times
/// out every request after [`CLIENT_TIMEOUT`].
fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
}

/// A plaintext HTTP/1.1 client that ignores proxy environment variables.
pub fn http_client() -> reqwest::Client {
    builder()
        .http1_only()
        .build()
        .expect("build reqwest client")
}

/// Like [`http_client`], with `host` resolving to `addr`, so that
/// `http://HOST:PORT/` URLs send `Host: HOST:PORT` to the gateway.
pub fn http_client_with_host(host: &str, addr: SocketAddr) -> reqwest::Client {
    let b = builder().http1_only().resolve(host, addr);
    b.build().expect("build reqwest client")
}

/// A builder for HTTPS that trusts only `ca` and resolves `host` to `addr`.
fn tls_builder(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::ClientBuilder {
    let root = reqwest::Certificate::from_pem(ca.cert_pem().as_bytes()).expect("CA PEM");
    builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .resolve(host, addr)
}

/// An HTTPS client that trusts only `ca` and resolves `host` to `addr`
/// (HTTP/2 via ALPN when the server offers it).
pub fn tls_client(ca: &TestCa, host: &str, addr: SocketAddr) -> reqwest::Client {
    let b = tls_builder(ca, host, addr);
    b.build().expect("build TLS reqwest client")
}

/// An HTTPS client that trusts only `ca`, resolves `host` to `addr`, and
/// presents `client` (certificate and key) when the server asks for one;
/// `None` presents nothing. It keeps no idle connections, so every request
/// makes a new TLS handshake (what mTLS tests and reload polls need).
pub fn mtls_client(
    ca: &TestCa,
    client: Option<&LeafCert>,
    host: &str,
    addr: SocketAddr,
) -> reqwest::Client {
    let mut b = tls_builder(ca, host, addr).pool_max_idle_per_host(0);
    if let Some(leaf) = client {
        let id = reqwest::Identity::from_pem(leaf.identity_pem().as_bytes())
            .expect("client certificate and key PEM");
        b = b.identity(id);
    }
    b.build().expect("build mTLS reqwest client")
}

/// A rustls connector trusting only `ca`, presenting `client` when given,
/// speaking `versions` (empty: TLS 1.3 and 1.2) and, when `h1_alpn`,
/// offering ALPN `http/1.1`.
pub fn rustls_connector(
    ca: &TestCa,
    client: Option<&LeafCert>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    h1_alpn: bool,
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).expect("CA certificate");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions = match versions {
        [] => rustls::DEFAULT_VERSIONS,
        v => v,
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("TLS versions")
        .with_root_certificates(roots);
    let mut config = match client {
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert_der()], leaf.key_der())
            .expect("client certificate and key"),
        None => builder.with_no_client_auth(),
    };
    if h1_alpn {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

/// What a raw TLS exchange with a server ended in; see [`tls_exchange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsOutcome {
    /// The handshake itself failed (with TLS 1.2 this is where a refused
    /// client certificate shows; the text is rustls's error).
    HandshakeFailed(String),
    /// The handshake completed (as a TLS 1.3 client sees it), then the
    /// server sent a fatal alert or an error before any HTTP answer: how a
    /// refused client certificate shows with TLS 1.3.
    RefusedAfterHandshake(String),
    /// The handshake completed, then the connection closed without a byte.
    ClosedWithoutAnswer,
    /// An HTTP answer: its status line.
    Answered(String),
}

/// Connects to `addr` with rustls (trusting only `ca`, SNI `host`,
/// presenting `client` when given, only TLS 1.2 when `tls12_only`), sends
/// `GET path HTTP/1.1` and reads the first line of the answer. Everything
/// is bounded by 10 s. Tells apart a handshake failure, an alert after a
/// TLS 1.3 handshake, a silent close and an HTTP answer: what reqwest
/// folds into one error.
pub async fn tls_exchange(
    ca: &TestCa,
    client: Option<&LeafCert>,
    host: &str,
    addr: SocketAddr,
    path: &str,
    tls12_only: bool,
) -> TlsOutcome {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limit = Duration::from_secs(10);
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[]
    };
    let connector = rustls_connector(ca, client, versions, true);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    let tcp = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return TlsOutcome::HandshakeFailed(format!("TCP connect: {e}")),
        Err(_) => return TlsOutcome::HandshakeFailed("TCP connect timed out".into()),
    };
    let mut tls = match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return TlsOutcome::HandshakeFailed(e.to_string()),
        Err(_) => return TlsOutcome::HandshakeFailed("handshake timed out".into()),
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if let Err(e) = tls.write_all(request.as_bytes()).await {
        return TlsOutcome::RefusedAfterHandshake(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tls.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
            Ok(Err(e)) if buf.is_empty() => {
                return TlsOutcome::RefusedAfterHandshake(e.to_string())
            }
            Ok(Err(_)) => break,
        }
    }
    if buf.is_empty() {
        return TlsOutcome::ClosedWithoutAnswer;
    }
    let text = String::from_utf8_lossy(&buf);
    TlsOutcome::Answered(text.lines().next().unwrap_or_default().to_string())
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

/// The leaf certificate a TLS server at `addr` presents for `sni` (`None`:
/// the ClientHello carries no SNI, as when a client connects by IP). The
/// chain is not verified, only read: the test compares it with the
/// certificate it expects, which is the stronger check. The server must
/// still prove it holds the key (the handshake signature is verified).
pub async fn served_cert(addr: SocketAddr, sni: Option<&str>) -> CertificateDer<'static> {
    use rustls::pki_types::ServerName;
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(ReadOnly(provider)))
        .with_no_client_auth();
    // rustls sends no SNI for an IP address.
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).expect("server name"),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let limit = Duration::from_secs(10);
    let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
        .await
        .expect("TCP connect in time")
        .unwrap_or_else(|e| panic!("TCP connect to {addr}: {e}"));
    let tls = tokio::time::timeout(limit, connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .unwrap_or_else(|e| panic!("TLS handshake with {addr} (SNI {sni:?}): {e}"));
    let (_, conn) = tls.get_ref();
    conn.peer_certificates()
        .and_then(|c| c.first())
        .expect("the server presented a certificate")
        .clone()
        .into_owned()
}

/// A verifier that accepts any chain but checks handshake signatures.
#[derive(Debug)]
struct ReadOnly(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ReadOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
