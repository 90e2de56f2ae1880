//! Loading PEM certificates and keys, checked before anything is handed to
//! Pingora or rustls: Pingora panics on unreadable or malformed files, so a
//! bad file must become a config error instead.

use std::path::Path;
use std::sync::Arc;

use pingora::tls::sign::CertifiedKey;
use pingora::tls::CryptoProvider;
use pingora::utils::tls::{CertKey, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::validity::Validity;

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
    certified_key(cert, key).map(|_| ())
}

/// A CA bundle in the form Pingora's upstream peers take, with the
/// narrowest validity window of its certificates.
pub fn load_ca_bundle(path: &Path) -> Result<(Arc<[WrappedX509]>, Validity), String> {
    let certs = load_certs(path)?;
    let validity = bundle_validity(path, &certs)?;
    let wrapped: Vec<WrappedX509> = certs
        .into_iter()
        .map(|c| WrappedX509::new(c.to_vec(), pingora::utils::tls::parse_x509))
        .collect();
    Ok((wrapped.into(), validity))
}

/// The narrowest validity window of a bundle read by [`load_certs`].
pub fn bundle_validity(path: &Path, certs: &[CertificateDer<'_>]) -> Result<Validity, String> {
    Validity::narrowest(certs)
        .map_err(|e| format!("`{}`: {e}", path.display()))?
        .ok_or_else(|| format!("`{}` holds no PEM certificate", path.display()))
}

/// A client certificate and key for upstream mTLS (checked with
/// [`check_cert_pair`] first), with the validity of the leaf.
pub fn load_cert_key(cert: &Path, key: &Path) -> Result<(Arc<CertKey>, Validity), String> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let validity = bundle_validity(cert, &certs[..1])?;
    Ok((
        Arc::new(CertKey::new(
            certs.into_iter().map(|c| c.to_vec()).collect(),
            key_der.secret_der().to_vec(),
        )),
        validity,
    ))
}

/// The DNS names of a certificate's subjectAltName, in order (empty when
/// it has none or cannot be parsed).
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A certificate chain and key as rustls serves them. Problems are split by
/// the file they are about, as in [`check_cert_pair`].
pub fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, Vec<(PairPart, String)>> {
    let (certs, key_der) = match (load_certs(cert), load_key(key)) {
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
    let Some(provider) = CryptoProvider::get_default() else {
        return Err(vec![(
            PairPart::Key,
            "no TLS crypto provider installed".into(),
        )]);
    };
    CertifiedKey::from_der(certs, key_der, provider).map_err(|e| {
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
