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
//! Per request, [`decide::decide`] identifies the caller ([`caller`]),
//! applies [`filters::egress::CompiledEgress`], resolves the name once and
//! refuses internal addresses ([`filters::egress::ssrf`]): the result is an
//! [`decide::Allowed`] address or a typed [`decide::Refusal`]. A refusal is
//! answered, audited and counted by [`audit::Audit::refuse`]; an allowed
//! request is tunnelled ([`tunnel`]) or forwarded ([`forward`]) to exactly
//! the address checked, then audited by [`audit::Audit::finished`]. This
//! file is the Pingora glue. See `gateway/docs/egress.md`.

pub mod audit;
pub mod caller;
pub mod decide;
pub mod forward;
pub mod tunnel;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use filters::egress::{CompiledEgress, ObservedTable, RequestKind};
use pingora::apps::ServerApp;
use pingora::protocols::http::v1::server::HttpSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::utils::tls::WrappedX509;
use pingora::ErrorType::{ConnectionClosed, ReadError, ReadTimedout};

use crate::identity::PeerIdentity;
use crate::Gateway;
use audit::Audit;
pub use audit::EgressMetrics;
// `forward` answers its own upstream failures.
use audit::respond;
use caller::Caller;
use decide::{decide, Connection, Refusal};

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
    /// The request counters of the rules.
    pub metrics: EgressMetrics,
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

#[async_trait]
impl ServerApp for EgressApp {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        _shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let ssl = stream.get_ssl_digest();
        let conn = Connection {
            revoked: crate::identity::client_auth::revoked(ssl.as_deref()).map(str::to_string),
            peer: ssl.and_then(|d| d.extension.get::<PeerIdentity>().cloned()),
            client_ip: stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        };
        let mut session = HttpSession::new(stream);
        // Bounded reads and writes: a stalled caller cannot pin connections.
        session.set_read_timeout(Some(HEADER_TIMEOUT));
        session.set_write_timeout(Some(BODY_TIMEOUT));
        let read = session.read_request().await;
        let runtime = self.gateway.runtime.load_full();
        let audit = Audit {
            listener: &self.listener,
            metrics: runtime.egress.as_deref().map(|e| &e.metrics),
            started: Instant::now(),
        };
        let mut caller = Caller::anonymous(conn.client_ip);
        match read {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            // No request came (idle, gone, or stalled): nothing to answer.
            Err(e) if matches!(e.etype(), ReadTimedout | ConnectionClosed | ReadError) => {
                tracing::debug!(listener = %self.listener, "egress connection ended: {e}");
                return None;
            }
            Err(e) => {
                tracing::debug!(listener = %self.listener, "bad egress request: {e}");
                let refusal = Refusal::Unparsable(e.etype().as_str().to_string());
                audit.refuse(Some(&mut session), &caller, &refusal).await;
                return None;
            }
        }
        session.set_read_timeout(Some(BODY_TIMEOUT));
        let (allowed, egress) = match decide(&runtime, conn, &mut session, &mut caller).await {
            Ok(a) => a,
            Err(refusal) => {
                if let Refusal::CertificateRevoked(why) = &refusal {
                    tracing::info!(listener = %self.listener, "client certificate no longer valid: {why}");
                }
                audit.refuse(Some(&mut session), &caller, &refusal).await;
                return None;
            }
        };
        if allowed.target.kind == RequestKind::Connect {
            tunnel::connect(session, egress, &audit, &caller, allowed).await;
            return None;
        }
        let (done, reusable) = forward::forward(&mut session, egress, &allowed).await;
        audit.finished(&caller, &allowed.target, &allowed.decision, done);
        if !reusable {
            return None;
        }
        match session.reuse().await {
            Ok(Some(r)) => Some(r.into_parts().0),
            _ => None,
        }
    }
}
