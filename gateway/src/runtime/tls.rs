//! Loading PEM certificates and keys, checked before anything is handed to
//! Pingora or rustls: Pingora panics on unreadable or malformed files, so a
//! bad file must become a config error instead.

use std::path::Path;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert, ServerConfig};
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads every certificate of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "`{}` is not a valid PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!("`{}` holds no PEM certificate", path.display()));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c).map_err(|e| {
            format!(
                "`{}` holds a certificate that cannot be parsed: {e}",
                path.display()
            )
        })?;
    }
    Ok(certs)
}

/// Reads one private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("`{}` holds no usable PEM private key: {e}", path.display()))
}

/// Which file of a certificate/key pair a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairPart {
    /// The certificate chain.
    Cert,
    /// The private key.
    Key,
}

/// Checks that a certificate chain and key load and belong together. Every
/// problem is returned (a missing cert and a missing key are two problems).
pub fn check_cert_pair(cert: &Path, key: &Path) -> Result<(), Vec<(PairPart, String)>> {
    let certs = load_certs(cert);
    let key_der = load_key(key);
    let (certs, key_der) = match (certs, key_der) {
        (Ok(c), Ok(k)) => (c, k),
        (c, k) => {
            let mut errs = Vec::new();
            if let Err(e) = c {
                errs.push((PairPart::Cert, e));
            }
            if let Err(e) = k {
                errs.push((PairPart::Key, e));
            }
            return Err(errs);
        }
    };
    pingora::tls::install_default_crypto_provider();
    ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map(|_| ())
        .map_err(|e| {
            vec![(
                PairPart::Key,
                format!(
                    "certificate `{}` and key `{}` cannot be used together: {e}",
                    cert.display(),
                    key.display()
                ),
            )]
        })
}

/// A CA bundle in the form Pingora's upstream peers take.
pub fn load_ca_bundle(path: &Path) -> Result<Arc<[WrappedX509]>, String> {
    let certs = load_certs(path)?;
    let wrapped: Vec<WrappedX509> = certs
        .into_iter()
        .map(|c| WrappedX509::new(c.to_vec(), pingora::utils::tls::parse_x509))
        .collect();
    Ok(wrapped.into())
}

/// A client certificate and key for upstream mTLS (checked with
/// [`check_cert_pair`] first).
pub fn load_cert_key(cert: &Path, key: &Path) -> Result<Arc<CertKey>, String> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    Ok(Arc::new(CertKey::new(
        certs.into_iter().map(|c| c.to_vec()).collect(),
        key_der.secret_der().to_vec(),
    )))
}

/// A listener's certificate, served from an arc-swapped key so a reload can
/// rotate it: the next handshake presents the new certificate, handshakes in
/// progress finish with the old one.
#[derive(Debug)]
pub struct CertResolver {
    current: arc_swap::ArcSwap<CertifiedKey>,
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider installed")?;
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| {
        format!(
            "certificate `{}` and key `{}` cannot be used together: {e}",
            cert.display(),
            key.display()
        )
    })
}

impl CertResolver {
    /// Loads the initial certificate and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, String> {
        Ok(CertResolver {
            current: arc_swap::ArcSwap::from_pointee(certified_key(cert, key)?),
        })
    }

    /// Replaces the certificate when the files now hold a different one.
    /// Returns whether it changed.
    pub fn rotate(&self, cert: &Path, key: &Path) -> Result<bool, String> {
        let new = certified_key(cert, key)?;
        if new.cert == self.current.load().cert {
            return Ok(false);
        }
        self.current.store(Arc::new(new));
        Ok(true)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}
