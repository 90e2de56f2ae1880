//! Downstream mTLS with SPIFFE trust domains.
//!
//! rustls's stock `WebPkiClientVerifier` accepts a chain to *any* of its
//! roots. With several trust domains that is not enough: a certificate from
//! cluster B's CA that claims `spiffe://cluster-a.example/...` would pass.
//! [`SpiffeClientVerifier`] first reads the leaf's one `spiffe://` URI SAN
//! (X.509-SVID rules: exactly one URI SAN, not a CA, `digitalSignature`),
//! then verifies the chain with the verifier of the trust domain that ID
//! names, built from that domain's CA bundle alone. The bundles come from
//! the current runtime, so a reload rotates them for new handshakes.
//!
//! [`PeerIdentityHook`] runs after a successful handshake and stores the
//! [`PeerIdentity`] in the connection's TLS digest, where the request path
//! finds it (HTTP/1 and HTTP/2 alike, once per connection).

use std::any::Any;
use std::sync::Arc;

use filters::identity::spiffe::spiffe_id_from_der;
use filters::identity::{SpiffeId, XfccElement};
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::{CertificateDer, UnixTime};
use pingora::tls::{
    ClientCertVerified, ClientCertVerifier, DigitallySignedStruct, SignatureScheme,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DistinguishedName, OtherError};

use super::PeerIdentity;
use crate::metrics::METRICS;
use crate::Gateway;

/// Verifies client certificates against the bundle of the trust domain
/// their SPIFFE ID names.
pub struct SpiffeClientVerifier {
    gateway: Arc<Gateway>,
    listener: Arc<str>,
    mandatory: bool,
    /// Accepted trust domains; `None`: every one with a CA bundle.
    allowed: Option<Vec<String>>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("listener", &self.listener)
            .field("mandatory", &self.mandatory)
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl SpiffeClientVerifier {
    /// A verifier for `listener`; `mandatory` refuses handshakes without a
    /// client certificate.
    pub fn new(
        gateway: Arc<Gateway>,
        listener: Arc<str>,
        mandatory: bool,
        allowed: Option<Vec<String>>,
    ) -> Self {
        SpiffeClientVerifier {
            gateway,
            listener,
            mandatory,
            allowed,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        }
    }

    /// Checks a chain again, without counting: the handshake hook calls
    /// this because a resumed TLS session restores the client chain without
    /// calling the verifier, and the certificate may have expired or its
    /// trust domain been removed by a reload since the full handshake.
    /// Returns the leaf's SPIFFE ID when the chain still verifies.
    pub fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<SpiffeId, String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no client certificate")?;
        let id = spiffe_id_from_der(leaf).map_err(|e| e.to_string())?;
        let td = id.trust_domain();
        let runtime = self.gateway.runtime.load();
        let allowed = self
            .allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == td));
        let verifier = runtime
            .identity
            .trust_domains
            .get(td)
            .and_then(|t| t.client_verifier.as_ref())
            .filter(|_| allowed)
            .ok_or_else(|| format!("trust domain `{td}` is no longer accepted"))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    fn refuse(&self, trust_domain: &str, result: &str, why: String) -> rustls::Error {
        count_mtls(trust_domain, result);
        tracing::info!(listener = %self.listener, trust_domain, result, "client certificate refused: {why}");
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(
            why,
        )))))
    }
}

/// Why a client certificate was refused (shown in logs and TLS errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Refused(String);

/// Counts an mTLS authentication; unknown trust domains share one label so
/// callers cannot grow the label set.
fn count_mtls(trust_domain: &str, result: &str) {
    METRICS
        .authn
        .with_label_values(&["mtls", trust_domain, result])
        .inc();
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = match spiffe_id_from_der(end_entity) {
            Ok(id) => id,
            Err(e) => return Err(self.refuse("unknown", "bad_svid", e.to_string())),
        };
        let td = id.trust_domain();
        let runtime = self.gateway.runtime.load();
        let configured = runtime.identity.trust_domains.get(td);
        let label = if configured.is_some() { td } else { "unknown" };
        let allowed = self
            .allowed
            .as_ref()
            .is_none_or(|list| list.iter().any(|a| a == td));
        let verifier = configured
            .and_then(|t| t.client_verifier.as_ref())
            .filter(|_| allowed);
        let Some(verifier) = verifier else {
            return Err(self.refuse(
                label,
                "untrusted",
                format!("trust domain `{td}` of {id} is not accepted on this listener"),
            ));
        };
        match verifier.verify_client_cert(end_entity, intermediates, now) {
            Ok(v) => {
                count_mtls(td, "success");
                Ok(v)
            }
            Err(e) => {
                let result = match &e {
                    rustls::Error::InvalidCertificate(CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(CertificateError::ExpiredContext {
                        ..
                    }) => "expired",
                    rustls::Error::InvalidCertificate(CertificateError::NotValidYet)
                    | rustls::Error::InvalidCertificate(CertificateError::NotValidYetContext {
                        ..
                    }) => "not_yet_valid",
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
                        "untrusted"
                    }
                    _ => "invalid",
                };
                count_mtls(td, result);
                tracing::info!(listener = %self.listener, trust_domain = td, "client certificate of {id} refused: {e}");
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Builds the chain verifier of one trust domain from its CA bundle.
pub fn domain_verifier(
    roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let mut store = pingora::tls::RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(roots);
    if added == 0 {
        return Err(format!(
            "no usable CA certificate in the bundle ({ignored} unparsable)"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    pingora::tls::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| format!("cannot build a verifier from the bundle: {e}"))
}

/// TLS handshake hooks of a listener: with client auth, records the
/// caller's SPIFFE identity on the connection.
pub struct PeerIdentityHook {
    verifier: Option<Arc<SpiffeClientVerifier>>,
}

impl PeerIdentityHook {
    /// A hook re-checking chains with `verifier` (listeners with client auth).
    pub fn new(verifier: Option<Arc<SpiffeClientVerifier>>) -> Self {
        PeerIdentityHook { verifier }
    }
}

/// Stored instead of a [`PeerIdentity`] when a client chain no longer
/// verifies (a resumed session of an expired or no longer trusted
/// certificate): requests on the connection are refused with 403.
#[derive(Debug)]
pub struct RevokedPeer {
    /// Why.
    pub reason: String,
}

#[async_trait::async_trait]
impl TlsAccept for PeerIdentityHook {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        let spiffe_id = match (&self.verifier, tls.peer_cert_chain_der()) {
            (Some(v), Some(chain)) => match v.recheck(chain) {
                Ok(id) => id,
                Err(reason) => {
                    count_mtls("unknown", "revoked");
                    return Some(Arc::new(RevokedPeer { reason }));
                }
            },
            // The verifier already accepted this leaf, so it parses.
            _ => spiffe_id_from_der(der).ok()?,
        };
        Some(Arc::new(PeerIdentity {
            spiffe_id,
            cert_sha256: XfccElement::hash_der(der),
        }))
    }
}

/// Why the connection's client certificate no longer counts, if it does not.
pub fn revoked(digest: Option<&pingora::protocols::tls::SslDigest>) -> Option<&str> {
    digest?
        .extension
        .get::<RevokedPeer>()
        .map(|r| r.reason.as_str())
}
