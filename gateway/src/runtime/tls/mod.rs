//! TLS material: PEM files checked before Pingora or rustls see them
//! ([`pem`]), validity windows ([`validity`]), and the certificates of TLS
//! listeners chosen by SNI ([`sni`], [`CertResolver`]).

mod pem;
pub mod sni;
pub mod validity;

use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, ResolvesServerCert};

pub use pem::{
    bundle_validity, certified_key, check_cert_pair, dns_names, load_ca_bundle, load_cert_key,
    load_certs, load_key, PairPart,
};
use sni::SniMap;

/// One certificate of a listener, ready for rustls.
#[derive(Clone, Debug)]
pub struct ServedCert {
    /// Chain and signing key.
    pub key: Arc<CertifiedKey>,
}

/// Two served certificates are the same when their chains are: the key
/// must match the leaf, so a new key comes with a new leaf.
impl PartialEq for ServedCert {
    fn eq(&self, other: &Self) -> bool {
        self.key.cert == other.key.cert
    }
}

impl Eq for ServedCert {}

/// The certificates of one listener by server name (see [`sni`]).
pub type ListenerCerts = SniMap<ServedCert>;

/// A listener's certificates, served from an arc-swapped [`ListenerCerts`]
/// so a reload can rotate them, or change the list, in one store: the next
/// handshake uses the new table, handshakes in progress finish with the old.
#[derive(Debug)]
pub struct CertResolver {
    current: arc_swap::ArcSwap<ListenerCerts>,
}

impl CertResolver {
    /// Serves `certs` (compiled, so already checked).
    pub fn new(certs: Arc<ListenerCerts>) -> Self {
        CertResolver {
            current: arc_swap::ArcSwap::new(certs),
        }
    }

    /// Serves `certs` from the next handshake on. Returns whether anything
    /// (a certificate, a name, the default) changed.
    pub fn store(&self, certs: Arc<ListenerCerts>) -> bool {
        if **self.current.load() == *certs {
            return false;
        }
        self.current.store(certs);
        true
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load().select(hello.server_name()).key.clone())
    }
}
