//! The PROXY protocol (HAProxy's specification, v1 and v2) at the start of
//! a connection.
//!
//! Where it is read: on TLS listeners, in Pingora's `PreTlsProcess`
//! callback, before the handshake; on plaintext listeners (both engines
//! and egress), by [`ProxyProtocolApp`], a `ServerApp` that reads it and
//! then hands the connection to the listener's own app. Listeners without
//! `proxy_protocol` get neither, so they pay nothing.
//!
//! The header bytes are cut out exactly: framing is found here (v1: a line
//! ending in CRLF within 107 bytes; v2: the 16-byte prefix and its length)
//! and whatever was read past it is put back with `l4::Stream::rewind`.
//! Parsing itself is the `ppp` crate's.
//!
//! The source the header carries becomes the stream's socket-digest peer
//! address, so `Session::client_addr()` and egress see it like a TCP peer.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use filters::egress::Cidr;
use pingora::apps::ServerApp;
use pingora::listeners::ListenerConfig;
use pingora::listeners::PreTlsProcess;
use pingora::protocols::l4::socket::SocketAddr as PingoraAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::SocketDigest;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;
use prometheus::IntCounter;
use tokio::io::AsyncReadExt;

use crate::metrics::METRICS;
use crate::runtime::ListenerSpec;

/// The v2 signature (the first 12 of its 16-byte prefix).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest v1 line, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// Largest v2 header accepted: the 16-byte prefix and 1 KiB of addresses
/// and TLVs (IPv6 addresses take 36, AWS and GCP TLVs a few dozen).
const V2_MAX: usize = 16 + 1024;
/// The most bytes [`decode`] ever needs to decide: past this many it has
/// found a header or refused.
pub const MAX_HEADER_BYTES: usize = V2_MAX;
/// Initial read buffer: any v1 line, a v2 header with IPv6 and some TLVs.
const READ_BUF: usize = 256;

/// A listener's PROXY protocol settings, as compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyProtocolSpec {
    /// Sources allowed to send the header.
    pub from: Vec<Cidr>,
    /// Time allowed for the header to arrive.
    pub timeout: Duration,
}

/// Why a connection was closed before its first request.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The TCP peer is not in `from`.
    #[error("PROXY protocol: source {0} is not allowed to send a header")]
    Source(String),
    /// Not a PROXY header, or a broken one.
    #[error("PROXY protocol: malformed header ({0})")]
    Malformed(&'static str),
    /// The header did not arrive in time.
    #[error("PROXY protocol: no header within {0:?}")]
    Timeout(Duration),
    /// The connection closed (or failed) before sending a byte: a TCP
    /// health check or a port probe rather than a broken proxy.
    #[error("PROXY protocol: connection closed before sending a header")]
    Closed,
}

/// Reads and checks the header of one listener's connections; its
/// counters (`gateway_proxy_protocol_total{listener,result}`) are resolved
/// once, here.
pub struct ProxyProtocolReader {
    from: Vec<Cidr>,
    timeout: Duration,
    accepted: IntCounter,
    refused_source: IntCounter,
    malformed: IntCounter,
    timed_out: IntCounter,
    closed: IntCounter,
}

impl ProxyProtocolReader {
    /// The reader of listener `listener`.
    pub fn new(listener: &str, spec: &ProxyProtocolSpec) -> Arc<Self> {
        let c = |result: &str| {
            METRICS
                .proxy_protocol
                .with_label_values(&[listener, result])
        };
        Arc::new(ProxyProtocolReader {
            from: spec.from.clone(),
            timeout: spec.timeout,
            accepted: c("accepted"),
            refused_source: c("refused_source"),
            malformed: c("malformed"),
            timed_out: c("timeout"),
            closed: c("closed"),
        })
    }

    /// Checks the peer, reads the header off `stream`, and makes the
    /// source it names the stream's peer address (`LOCAL`/`UNKNOWN`
    /// headers keep the TCP peer). Counts the outcome.
    pub async fn read(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let result = self.read_uncounted(stream).await;
        match &result {
            Ok(()) => self.accepted.inc(),
            Err(Refused::Source(_)) => self.refused_source.inc(),
            Err(Refused::Timeout(_)) => self.timed_out.inc(),
            Err(Refused::Malformed(_)) => self.malformed.inc(),
            Err(Refused::Closed) => self.closed.inc(),
        }
        if let Err(e) = &result {
            tracing::debug!("connection closed: {e}");
        }
        result
    }

    async fn read_uncounted(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let peer = peer_ip(stream);
        match peer {
            Some(ip) if self.from.iter().any(|c| c.contains(ip)) => {}
            Some(ip) => return Err(Refused::Source(ip.to_string())),
            None => return Err(Refused::Source("(unknown)".into())),
        }
        let source = tokio::time::timeout(self.timeout, read_header(stream))
            .await
            .map_err(|_| Refused::Timeout(self.timeout))??;
        if let Some(src) = source {
            let digest = SocketDigest::from_raw_fd(stream.as_raw_fd());
            // A fresh digest: its cell is empty, so `set` cannot fail.
            let _ = digest.peer_addr.set(Some(PingoraAddr::Inet(src)));
            stream.set_socket_digest(digest);
        }
        Ok(())
    }
}

/// Pingora's hook before a TLS handshake: the header precedes the ClientHello.
#[async_trait]
impl PreTlsProcess for ProxyProtocolReader {
    async fn process(&self, stream: &mut L4Stream) -> pingora::Result<()> {
        self.read(stream)
            .await
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::AcceptError, e.to_string()))
    }
}

fn peer_ip(stream: &L4Stream) -> Option<IpAddr> {
    let digest = stream.get_socket_digest()?;
    digest.peer_addr()?.as_inet().map(|a| a.ip())
}

/// Where the header ends in `buf`, if it can be told yet.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// Not enough bytes yet.
    Need,
    /// The header is `buf[..n]`.
    Header(usize),
}

/// Frames the header at the start of `buf` (v1 line or v2 prefix and
/// length) without parsing it.
fn framing(buf: &[u8]) -> Result<Framing, Refused> {
    if buf.is_empty() {
        return Ok(Framing::Need);
    }
    let seen = buf.len().min(V2_SIGNATURE.len());
    if buf[..seen] == V2_SIGNATURE[..seen] {
        if buf.len() < 16 {
            return Ok(Framing::Need);
        }
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > V2_MAX {
            return Err(Refused::Malformed("v2 header too long"));
        }
        return Ok(if buf.len() >= len {
            Framing::Header(len)
        } else {
            Framing::Need
        });
    }
    let seen = buf.len().min(V1_PREFIX.len());
    if buf[..seen] != V1_PREFIX[..seen] {
        return Err(Refused::Malformed("not a PROXY header"));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Framing::Header(i + 2)),
        None if buf.len() >= V1_MAX => Err(Refused::Malformed("v1 line too long")),
        None => Ok(Framing::Need),
    }
}

/// The source a complete header names; `None` for `LOCAL`, `UNKNOWN` and
/// non-IP families (the TCP peer stays the address).
fn parse(header: &[u8]) -> Result<Option<SocketAddr>, Refused> {
    if header.starts_with(V2_SIGNATURE) {
        use ppp::v2::{Addresses, Command};
        let h =
            ppp::v2::Header::try_from(header).map_err(|_| Refused::Malformed("bad v2 header"))?;
        if h.command == Command::Local {
            return Ok(None);
        }
        return Ok(match h.addresses {
            Addresses::IPv4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            Addresses::IPv6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
            Addresses::Unspecified | Addresses::Unix(_) => None,
        });
    }
    use ppp::v1::Addresses;
    let h = ppp::v1::Header::try_from(header).map_err(|_| Refused::Malformed("bad v1 header"))?;
    Ok(match h.addresses {
        Addresses::Tcp4(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Tcp6(a) => Some(SocketAddr::new(a.source_address.into(), a.source_port)),
        Addresses::Unknown => None,
    })
}

/// What the first bytes of a connection hold, as far as they go.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Too few bytes to tell: read more (never past [`MAX_HEADER_BYTES`]).
    Need,
    /// A complete header of `len` bytes naming `source`; `None` for
    /// `LOCAL`, `UNKNOWN` and non-IP families (the TCP peer stays).
    Header {
        /// The header's length: the connection's own bytes start here.
        len: usize,
        /// The client the proxy in front speaks for.
        source: Option<SocketAddr>,
    },
}

/// Frames and parses the PROXY header at the start of `buf`. More bytes
/// never change an answer other than [`Decoded::Need`] (the fuzz target
/// `proxy_protocol` holds it to that).
pub fn decode(buf: &[u8]) -> Result<Decoded, Refused> {
    Ok(match framing(buf)? {
        Framing::Need => Decoded::Need,
        Framing::Header(len) => Decoded::Header {
            len,
            source: parse(&buf[..len])?,
        },
    })
}

/// Reads one header off `stream`; bytes read past it are put back.
async fn read_header(stream: &mut L4Stream) -> Result<Option<SocketAddr>, Refused> {
    let mut buf = Vec::with_capacity(READ_BUF);
    loop {
        match decode(&buf)? {
            Decoded::Header { len, source } => {
                stream.rewind(&buf[len..]);
                return Ok(source);
            }
            Decoded::Need => {
                if buf.len() == buf.capacity() {
                    // Only a v2 header longer than the first buffer gets
                    // here; framing bounds it by `V2_MAX`.
                    buf.reserve(V2_MAX.saturating_sub(buf.len()) + 1);
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) if buf.is_empty() => return Err(Refused::Closed),
                    Ok(0) | Err(_) => {
                        return Err(Refused::Malformed("connection closed mid-header"))
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

/// A plaintext listener's app behind a PROXY protocol header: reads the
/// header, then serves the connection with the listener's app.
pub struct ProxyProtocolApp<A> {
    inner: Arc<A>,
    reader: Arc<ProxyProtocolReader>,
}

impl<A> ProxyProtocolApp<A> {
    /// `inner` served behind `reader`.
    pub fn new(inner: A, reader: Arc<ProxyProtocolReader>) -> Self {
        ProxyProtocolApp {
            inner: Arc::new(inner),
            reader,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for ProxyProtocolApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Plaintext listener streams are Pingora's L4 stream.
        let mut l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        self.reader.read(&mut l4).await.ok()?;
        // Keep-alive reuse stays inside: a reused stream handed back to
        // Pingora would come here again and be read for a second header.
        let mut next = self.inner.process_new(l4, shutdown).await;
        while let Some(stream) = next {
            next = self.inner.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// The service of listener `l`: `app` on `endpoint` (TLS already set on
/// it if the listener has TLS). With `proxy_protocol`, the header is read
/// before the TLS handshake (Pingora's pre-TLS callback) or, on plaintext,
/// by a [`ProxyProtocolApp`] around `app`; without it, `app` as it is.
pub fn listener_service<A: ServerApp + Send + Sync + 'static>(
    name: String,
    app: A,
    endpoint: ListenerConfig,
    l: &ListenerSpec,
) -> Box<dyn ServiceWithDependents> {
    let Some(pp) = &l.proxy_protocol else {
        let mut svc = Service::new(name, app);
        svc.add_listener(endpoint);
        return Box::new(svc);
    };
    let reader = ProxyProtocolReader::new(&l.name, pp);
    if l.tls.is_some() {
        let mut svc = Service::new(name, app);
        svc.add_listener(endpoint);
        svc.endpoints().set_pre_tls_callback(reader);
        Box::new(svc)
    } else {
        let mut svc = Service::new(name, ProxyProtocolApp::new(app, reader));
        svc.add_listener(endpoint);
        Box::new(svc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(addr: &[u8], family: u8, command: u8) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addr.len() as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h
    }

    #[test]
    fn v1_lines_are_framed_at_their_crlf() {
        let line = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n";
        let Framing::Header(n) = framing(line).unwrap() else {
            panic!("complete")
        };
        assert_eq!(&line[n..], b"GET / HTTP/1.1\r\n");
        let src = parse(&line[..n]).unwrap().unwrap();
        assert_eq!(src, "203.0.113.7:5555".parse().unwrap());
        assert_eq!(framing(b"PROX").unwrap(), Framing::Need);
        assert_eq!(framing(b"").unwrap(), Framing::Need);
        assert!(parse(b"PROXY UNKNOWN\r\n").unwrap().is_none());
    }

    #[test]
    fn v2_headers_are_framed_by_their_length() {
        let mut addr = vec![203, 0, 113, 7, 10, 0, 0, 1];
        addr.extend_from_slice(&5555u16.to_be_bytes());
        addr.extend_from_slice(&80u16.to_be_bytes());
        let mut h = v2(&addr, 0x11, 1);
        let len = h.len();
        h.extend_from_slice(b"GET /");
        assert_eq!(framing(&h[..10]).unwrap(), Framing::Need);
        assert_eq!(framing(&h[..len - 1]).unwrap(), Framing::Need);
        assert_eq!(framing(&h).unwrap(), Framing::Header(len));
        let src = parse(&h[..len]).unwrap().unwrap();
        assert_eq!(src, "203.0.113.7:5555".parse().unwrap());
        // LOCAL keeps the TCP peer.
        assert!(parse(&v2(&[], 0x00, 0)).unwrap().is_none());
    }

    /// A header longer than the first read buffer (a 600-byte TLV), with
    /// the request right behind it: the header is cut out exactly and the
    /// request bytes are read next.
    #[tokio::test]
    async fn a_long_v2_header_is_read_and_the_rest_put_back() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut addrs = vec![192, 0, 2, 9, 127, 0, 0, 1, 0x1f, 0x90, 0, 80];
        addrs.extend_from_slice(&[0x04, 0x02, 0x58]); // NOOP TLV, 600 bytes
        addrs.extend_from_slice(&[0u8; 600]);
        let mut wire = v2(&addrs, 0x11, 1);
        wire.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let client = tokio::spawn(async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(&wire).await.unwrap();
            c
        });
        let (server, _) = listener.accept().await.unwrap();
        let _client = client.await.unwrap();
        let mut stream = L4Stream::from(server);
        let src = read_header(&mut stream).await.unwrap();
        assert_eq!(src, Some("192.0.2.9:8080".parse().unwrap()));
        let mut rest = [0u8; 16];
        stream.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn garbage_is_refused() {
        assert!(framing(b"GET / HTTP/1.1\r\n").is_err());
        assert!(framing(&[b'P', b'R', b'O', b'X', b'Y', b' ', b'x'].repeat(20)).is_err());
        assert!(parse(b"PROXY TCP4 nonsense\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n").is_err());
        let mut long = V2_SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(framing(&long).is_err());
        // A v2 prefix with a bad version.
        let mut bad = v2(&[0; 12], 0x11, 1);
        bad[12] = 0x31;
        assert!(parse(&bad).is_err());
    }
}
