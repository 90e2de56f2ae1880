//! The egress listener (`mode: egress`): a forward proxy (`HTTPS_PROXY`)
//! that lets each caller reach only what the `egress` rules allow.
//!
//! It is a Pingora [`ServerApp`] on Pingora's listeners (TLS, mTLS identity,
//! graceful upgrade all as on proxy listeners) that reads HTTP/1.1 requests
//! with Pingora's own parser, because a forward proxy's request flow differs
//! from a reverse proxy's: `CONNECT` turns the connection into a tunnel
//! (Pingora's proxy would forward the CONNECT itself), and the destination
//! comes from the request, not from a cluster.
//!
//! Per request: identify the caller ([`caller`]), decide with
//! [`filters::egress::CompiledEgress`], resolve the name once, refuse
//! internal addresses ([`filters::egress::ssrf`]), connect to exactly the
//! address checked, then tunnel ([`tunnel`]) or forward ([`forward`]), and
//! write one audit line. See `gateway/docs/egress.md`.

pub mod caller;
pub mod forward;
pub mod tunnel;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use filters::egress::{
    parse_client_hello_sni, ssrf, CompiledEgress, DenyReason, EgressDecision, EgressRequest,
    ObservedTable, Outcome, RequestKind, SniResult,
};
use pingora::apps::ServerApp;
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::utils::tls::WrappedX509;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::identity::PeerIdentity;
use crate::metrics::METRICS;
use crate::Gateway;
use caller::Caller;

/// Idle timeout of a tunnel.
const TUNNEL_IDLE: Duration = Duration::from_secs(60);
/// Longest life of a tunnel.
const TUNNEL_TOTAL: Duration = Duration::from_secs(3600);
/// Connect timeout to a destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the first TLS record of a tunnel (SNI check).
const CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest ClientHello read for the SNI check.
const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// Longest pause while reading a request body or writing a response.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a request header may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What the runtime keeps for egress.
pub struct EgressRuntime {
    /// The rules.
    pub rules: CompiledEgress,
    /// CA bundles of rules with `originate_tls` and `ca`, by CA file.
    pub cas: std::collections::HashMap<Arc<str>, Arc<[WrappedX509]>>,
}

/// What the egress listeners saw (admin `/egress/observed`); outlives
/// reloads, so its bound is the `observed_max_entries` of the config the
/// process started with.
static OBSERVED: OnceLock<ObservedTable> = OnceLock::new();

/// Sizes the observed-traffic table (first call wins; at startup).
pub fn init_observed(max_entries: usize) {
    let _ = OBSERVED.set(ObservedTable::new(max_entries));
}

/// The observed-traffic table.
pub fn observed() -> &'static ObservedTable {
    OBSERVED
        .get_or_init(|| ObservedTable::new(filters::egress::config::DEFAULT_OBSERVED_MAX_ENTRIES))
}

/// The egress app of one listener.
pub struct EgressApp {
    gateway: Arc<Gateway>,
    listener: Arc<str>,
}

impl EgressApp {
    /// An app for `listener`.
    pub fn new(gateway: Arc<Gateway>, listener: Arc<str>) -> Self {
        EgressApp { gateway, listener }
    }
}

/// The destination as the caller named it.
#[derive(Debug)]
struct Target {
    host: String,
    port: u16,
    kind: RequestKind,
}

/// One audit record.
struct Audit<'a> {
    listener: &'a str,
    caller: &'a Caller,
    target: Option<&'a Target>,
    decision: Option<&'a EgressDecision>,
    started: Instant,
    status: u16,
    bytes_up: u64,
    bytes_down: u64,
    note: Option<&'static str>,
}

impl Audit<'_> {
    fn write(&self) {
        let outcome = self.decision.map_or(Outcome::Deny, EgressDecision::outcome);
        let rule = self
            .decision
            .and_then(|d| d.rule.as_deref())
            .unwrap_or("none");
        METRICS
            .egress_requests
            .with_label_values(&[outcome.as_str(), rule])
            .inc();
        METRICS
            .egress_bytes
            .with_label_values(&["up"])
            .inc_by(self.bytes_up);
        METRICS
            .egress_bytes
            .with_label_values(&["down"])
            .inc_by(self.bytes_down);
        if let Some(t) = self.target {
            observed().record(
                self.caller.principals().first().map(String::as_str),
                &t.host,
                t.port,
                outcome,
            );
        }
        let line = serde_json::json!({
            "kind": "egress",
            "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "listener": self.listener,
            "client": self.caller.client_ip.map(|ip| ip.to_string()),
            "principal": self.caller.principal(),
            "method": self.target.map(|t| match t.kind {
                RequestKind::Connect => "CONNECT",
                RequestKind::PlainHttp => "HTTP",
            }),
            "host": self.target.map(|t| t.host.as_str()),
            "port": self.target.map(|t| t.port),
            "decision": outcome.as_str(),
            "rule": rule,
            "reason": self.decision.and_then(|d| d.denial()).map(|r| r.to_string()),
            "status": self.status,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "duration_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "note": self.note,
        });
        crate::access_log::append(|buf| {
            let _ = serde_json::to_writer(buf, &line);
        });
    }
}

#[async_trait]
impl ServerApp for EgressApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ssl = stream.get_ssl_digest();
        let revoked = crate::identity::client_auth::revoked(ssl.as_deref()).map(str::to_string);
        let peer: Option<PeerIdentity> =
            ssl.and_then(|d| d.extension.get::<PeerIdentity>().cloned());
        let client_ip = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut session = HttpSession::new(stream);
        session.set_read_timeout(Some(HEADER_TIMEOUT));
        match session.read_request().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(listener = %self.listener, "bad egress request: {e}");
                let _ = respond(&mut session, 400, "bad request\n", &[]).await;
                return None;
            }
        }
        if let Some(reason) = revoked {
            tracing::info!(listener = %self.listener, "client certificate no longer valid: {reason}");
            let _ = respond(
                &mut session,
                403,
                "egress denied: client certificate no longer valid\n",
                &[],
            )
            .await;
            return None;
        }
        // Bounded body reads and response writes: a stalled caller cannot
        // pin connections.
        session.set_read_timeout(Some(BODY_TIMEOUT));
        session.set_write_timeout(Some(BODY_TIMEOUT));
        let runtime = self.gateway.runtime.load_full();
        let Some(egress) = runtime.egress.as_ref() else {
            let _ = respond(&mut session, 503, "egress is not configured\n", &[]).await;
            return None;
        };
        let started = Instant::now();
        let caller = match caller::identify(
            &runtime,
            &egress.rules,
            session.req_header(),
            peer,
            client_ip,
        ) {
            Ok(c) => c,
            Err(refusal) => {
                let anon = Caller::anonymous(client_ip);
                Audit {
                    listener: &self.listener,
                    caller: &anon,
                    target: None,
                    decision: None,
                    started,
                    status: 407,
                    bytes_up: 0,
                    bytes_down: 0,
                    note: Some("invalid proxy credentials"),
                }
                .write();
                let challenge = [("proxy-authenticate", refusal.challenge.as_str())];
                let _ = respond(&mut session, 407, &refusal.body, &challenge).await;
                return None;
            }
        };
        let target = match target_of(&session) {
            Ok(t) => t,
            Err(msg) => {
                let _ = respond(&mut session, 400, &msg, &[]).await;
                self.audit_malformed(&caller, started, "bad_target");
                return None;
            }
        };
        if target.kind == RequestKind::PlainHttp {
            // Rules see, and the destination gets, the normalised path.
            if let Err(e) = crate::proxy::forwarding::normalize_path(session.req_header_mut()) {
                let _ = respond(&mut session, 400, &format!("bad request: {e}\n"), &[]).await;
                self.audit_malformed(&caller, started, "bad_path");
                return None;
            }
        }
        let req = session.req_header();
        let path = req.uri.path_and_query().map(|p| p.as_str());
        let mut decision = egress.rules.evaluate(&EgressRequest {
            principals: caller.principals(),
            host: &target.host,
            port: target.port,
            method: (target.kind == RequestKind::PlainHttp).then(|| req.method.as_str()),
            path: if target.kind == RequestKind::PlainHttp {
                path
            } else {
                None
            },
            kind: target.kind,
        });
        let addr = if decision.allowed {
            match destination(&egress.rules, &target, &mut decision).await {
                Ok(a) => a,
                Err(status) => {
                    let body = format!("egress error: cannot resolve {}\n", target.host);
                    let _ = respond(&mut session, status, &body, &[]).await;
                    audit(&self.listener, &caller, &target, &decision, started, status);
                    return None;
                }
            }
        } else {
            None
        };
        let addr = match (decision.allowed, addr) {
            (true, Some(a)) => a,
            _ => {
                let status = decision.status.unwrap_or(403);
                let reason = decision
                    .denial()
                    .map_or_else(|| "not allowed".to_string(), |r| r.to_string());
                let body = format!("egress denied: {reason}\n");
                let challenge = [("proxy-authenticate", "Bearer")];
                let extra: &[(&str, &str)] = if status == 407 { &challenge } else { &[] };
                let _ = respond(&mut session, status, &body, extra).await;
                audit(&self.listener, &caller, &target, &decision, started, status);
                return None;
            }
        };
        match target.kind {
            RequestKind::Connect => {
                self.tunnel(session, egress, &caller, &target, decision, addr, started)
                    .await;
                None
            }
            RequestKind::PlainHttp => {
                let ca: Option<Arc<[WrappedX509]>> = decision
                    .ca
                    .as_ref()
                    .and_then(|c| egress.cas.get(c))
                    .map(Arc::clone);
                let result =
                    forward::forward(&mut session, &target.host, addr, decision.originate_tls, ca)
                        .await;
                Audit {
                    listener: &self.listener,
                    caller: &caller,
                    target: Some(&target),
                    decision: Some(&decision),
                    started,
                    status: result.status,
                    bytes_up: result.bytes_up,
                    bytes_down: result.bytes_down,
                    note: result.error,
                }
                .write();
                if !result.reusable {
                    return None;
                }
                match session.reuse().await {
                    Ok(Some(r)) => Some(r.into_parts().0),
                    _ => None,
                }
            }
        }
    }
}

impl EgressApp {
    /// Audits (and counts as `deny`, rule `none`) a request refused with
    /// 400 before it named a usable destination.
    fn audit_malformed(&self, caller: &Caller, started: Instant, note: &'static str) {
        Audit {
            listener: &self.listener,
            caller,
            target: None,
            decision: None,
            started,
            status: 400,
            bytes_up: 0,
            bytes_down: 0,
            note: Some(note),
        }
        .write();
    }

    #[allow(clippy::too_many_arguments)]
    async fn tunnel(
        &self,
        session: HttpSession,
        egress: &EgressRuntime,
        caller: &Caller,
        target: &Target,
        mut decision: EgressDecision,
        addr: SocketAddr,
        started: Instant,
    ) {
        let mut audit = Audit {
            listener: &self.listener,
            caller,
            target: Some(target),
            decision: None,
            started,
            status: 200,
            bytes_up: 0,
            bytes_down: 0,
            note: None,
        };
        let sni_check = egress.rules.sni_must_match_connect();
        // Without the SNI check, dial first so a dead destination is a 502.
        // With it, nothing reaches the destination (not even a TCP
        // connection) before the ClientHello named the CONNECT host; a
        // failed dial after the 200 closes the tunnel instead.
        let mut upstream = None;
        let mut session = session;
        if !sni_check {
            match dial(addr).await {
                Some(s) => upstream = Some(s),
                None => {
                    let body = format!(
                        "egress error: cannot connect to {}:{}\n",
                        target.host, target.port
                    );
                    let _ = respond(&mut session, 502, &body, &[]).await;
                    audit.status = 502;
                    audit.note = Some("connect_failed");
                    audit.decision = Some(&decision);
                    audit.write();
                    return;
                }
            }
        }
        let mut client = session.into_inner();
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_err()
        {
            audit.decision = Some(&decision);
            audit.note = Some("client_gone");
            audit.write();
            return;
        }
        let _ = client.flush().await;
        let mut first = Vec::new();
        if sni_check {
            let hello = read_client_hello(&mut client, &mut first).await;
            // Clients send no SNI for IP-literal hosts; a TLS hello is enough.
            let ip_target = ssrf::parse_host_literal(&target.host).is_some();
            let (matches, sni) = match hello {
                Hello::Sni(s) => (filters::egress::host::same_host(&s, &target.host), Some(s)),
                Hello::NoSni => (ip_target, None),
                Hello::NotTls => (false, None),
            };
            if !matches {
                decision.refuse(
                    DenyReason::SniMismatch {
                        host: target.host.clone(),
                        sni,
                    },
                    403,
                    egress.rules.audit_only(),
                );
                if !decision.allowed {
                    let _ = client.shutdown().await;
                    audit.decision = Some(&decision);
                    audit.status = 403;
                    audit.write();
                    return;
                }
            }
        }
        let mut upstream = match upstream {
            Some(u) => u,
            None => match dial(addr).await {
                Some(u) => u,
                None => {
                    let _ = client.shutdown().await;
                    audit.decision = Some(&decision);
                    audit.status = 502;
                    audit.note = Some("connect_failed");
                    audit.write();
                    return;
                }
            },
        };
        if !first.is_empty() && upstream.write_all(&first).await.is_err() {
            audit.decision = Some(&decision);
            audit.note = Some("upstream_gone");
            audit.write();
            return;
        }
        let stats = tunnel::splice(client, upstream, TUNNEL_IDLE, TUNNEL_TOTAL).await;
        METRICS
            .egress_tunnel_duration
            .observe(started.elapsed().as_secs_f64());
        audit.bytes_up = stats.bytes_up + first.len() as u64;
        audit.bytes_down = stats.bytes_down;
        audit.note = stats.cut;
        audit.decision = Some(&decision);
        audit.write();
    }
}

fn audit(
    listener: &str,
    caller: &Caller,
    target: &Target,
    decision: &EgressDecision,
    started: Instant,
    status: u16,
) {
    Audit {
        listener,
        caller,
        target: Some(target),
        decision: Some(decision),
        started,
        status,
        bytes_up: 0,
        bytes_down: 0,
        note: None,
    }
    .write();
}

/// Connects to the checked destination address.
async fn dial(addr: SocketAddr) -> Option<tokio::net::TcpStream> {
    let s = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let _ = s.set_nodelay(true);
    Some(s)
}

/// What a tunnel started with.
enum Hello {
    /// A TLS ClientHello with this server name.
    Sni(String),
    /// A TLS ClientHello without a server name.
    NoSni,
    /// Not a ClientHello, malformed, too large, or too slow.
    NotTls,
}

/// Reads the first TLS record(s) of a tunnel into `buf` and reports the
/// ClientHello's server name.
async fn read_client_hello(client: &mut Stream, buf: &mut Vec<u8>) -> Hello {
    let deadline = tokio::time::Instant::now() + CLIENT_HELLO_TIMEOUT;
    let mut chunk = [0u8; 4096];
    loop {
        match parse_client_hello_sni(buf) {
            SniResult::Sni(name) => return Hello::Sni(name),
            SniResult::NoSni => return Hello::NoSni,
            SniResult::NeedMore { .. } if buf.len() < MAX_CLIENT_HELLO => {}
            _ => return Hello::NotTls,
        }
        let n = match tokio::time::timeout_at(deadline, client.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Hello::NotTls,
        };
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the caller wants to go. Pingora keeps only the path in
/// `uri` for absolute-form targets (and nothing for CONNECT), so the
/// request line's raw target is parsed here.
fn target_of(session: &HttpSession) -> Result<Target, String> {
    let req = session.req_header();
    let raw = std::str::from_utf8(req.raw_path()).map_err(|_| "request target is not UTF-8\n")?;
    if req.method == http::Method::CONNECT {
        let auth: http::uri::Authority = raw
            .parse()
            .map_err(|_| format!("CONNECT needs host:port, got {raw:?}\n"))?;
        let port = auth
            .port_u16()
            .ok_or_else(|| format!("CONNECT needs host:port, got {raw:?}\n"))?;
        return Ok(Target {
            host: auth.host().to_string(),
            port,
            kind: RequestKind::Connect,
        });
    }
    let lower = raw
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("https://") {
        return Err("only http:// URLs can be proxied; use CONNECT for https\n".into());
    }
    if lower.starts_with("http://") {
        let uri: http::Uri = raw.parse().map_err(|_| format!("invalid URL {raw:?}\n"))?;
        let auth = uri.authority().ok_or("URL has no host\n")?;
        return Ok(Target {
            host: auth.host().to_string(),
            port: auth.port_u16().unwrap_or(80),
            kind: RequestKind::PlainHttp,
        });
    }
    if !raw.starts_with('/') && raw != "*" {
        return Err(format!("unsupported request target {raw:?}\n"));
    }
    // Transparent egress: the destination is the Host header.
    let host = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or("request has no destination (absolute URL or Host)\n")?;
    let auth: http::uri::Authority = host
        .parse()
        .map_err(|_| format!("invalid Host {host:?}\n"))?;
    Ok(Target {
        host: auth.host().to_string(),
        port: auth.port_u16().unwrap_or(80),
        kind: RequestKind::PlainHttp,
    })
}

/// Resolves the target once and checks the address; refuses (in
/// `decision`) blocked ones. `Err(status)` when the name does not resolve.
async fn destination(
    rules: &CompiledEgress,
    target: &Target,
    decision: &mut EgressDecision,
) -> Result<Option<SocketAddr>, u16> {
    let port = decision.upstream_port;
    let ip: IpAddr = match ssrf::parse_host_literal(&target.host)
        .or_else(|| rules.resolve_static(&target.host))
    {
        Some(ip) => ip,
        None => match tokio::net::lookup_host((target.host.as_str(), port)).await {
            Ok(mut addrs) => match addrs.next() {
                Some(a) => a.ip(),
                None => return Err(502),
            },
            Err(_) => return Err(502),
        },
    };
    // SSRF protection is a safety property, enforced in audit_only too.
    if let Err(range) = ssrf::check(ip, &decision.allow_cidrs) {
        decision.refuse(
            DenyReason::BlockedAddress {
                host: target.host.clone(),
                ip,
                range,
            },
            403,
            false,
        );
        return Ok(None);
    }
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Writes a complete short response and closes the exchange.
async fn respond(
    session: &mut HttpSession,
    status: u16,
    body: &str,
    extra: &[(&str, &str)],
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CONNECTION, "close")?;
    if status == 403 || status == 407 {
        resp.insert_header("x-gateway-egress-decision", "deny")?;
    }
    for (n, v) in extra {
        resp.insert_header(n.to_string(), v.to_string())?;
    }
    session.set_server_keepalive(None);
    session.write_response_header(Box::new(resp)).await?;
    session.write_body(body.as_bytes()).await?;
    session.finish_body().await?;
    Ok(())
}
