//! Compiling certificates: a listener's `tls` certificates (one pair, or a
//! list chosen by SNI), each loaded, checked and put in its SNI map; and the
//! validity of every certificate the runtime holds (expiry metric,
//! warnings).
//!
//! A listener certificate that is expired or not valid yet is an error, so
//! `gateway validate` fails and a reload is rejected with the old
//! certificates still served. Client certificates and CA bundles only warn:
//! refusing them would take down routes whose upstreams may still accept
//! them (and a CA's expiry is the upstream's problem to fix first).

use rustls_pki_types::CertificateDer;

use super::super::*;
use crate::runtime::tls::sni::{ServerName, SniMap};
use crate::runtime::tls::validity::{CertExpiry, CertKind, Check, Validity};
use crate::runtime::tls::{ListenerCerts, ServedCert};

/// One certificate of a listener as configured, in either form.
struct CertFiles<'c> {
    /// Path of its config node below the listener (`tls` or
    /// `tls.certificates[2]`).
    at: String,
    cert: &'c str,
    key: &'c str,
    names: Option<&'c [String]>,
    default: bool,
}

impl Compiler<'_> {
    /// Records a certificate the runtime holds (expiry metric) and warns,
    /// positioned by `at`, when it expires within the warning window, has
    /// expired or is not valid yet.
    pub(in crate::runtime) fn held_cert(
        &mut self,
        kind: CertKind,
        name: String,
        file: &Path,
        validity: Validity,
        at: impl FnOnce(&Sources, String) -> Diagnostic,
    ) {
        match validity.check(file, self.now) {
            Check::Fine => {}
            Check::ExpiresSoon(m) | Check::Invalid(m) => {
                let d = at(self.src, m);
                self.warnings.push(d);
            }
        }
        self.certificates.push(CertExpiry {
            kind,
            name,
            file: file.to_path_buf(),
            not_after: validity.not_after,
        });
    }

    /// The certificates of listener `i`, or `None` after reporting why not.
    pub(in crate::runtime) fn listener_certs(
        &mut self,
        i: usize,
        listener: &str,
        t: &config::ListenerTls,
    ) -> Option<Arc<ListenerCerts>> {
        let files = self.cert_files(i, t)?;
        let several = files.len() > 1;
        let mut ok = true;
        let mut entries = Vec::new();
        let mut default: Option<usize> = None;
        for (j, f) in files.iter().enumerate() {
            if f.default {
                match default {
                    Some(first) => {
                        let at = format!("{}.default", f.at);
                        let m = format!("only one certificate can be the default; certificate {first} already is");
                        self.err(Section::Listeners, i, &at, m);
                        ok = false;
                    }
                    None => default = Some(j),
                }
            }
            match self.listener_cert(i, listener, j, f, several) {
                Some(entry) => entries.push(entry),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        match SniMap::build(entries, default.unwrap_or(0)) {
            Ok(map) => Some(Arc::new(map)),
            Err(clash) => {
                let f = &files[clash.cert];
                let (at, m) = match f.names.is_some() {
                    true => (format!("{}.names[{}]", f.at, clash.name), clash.message),
                    false => (
                        format!("{}.cert", f.at),
                        format!(
                            "{} (a DNS name of its subjectAltName; give it `names` to choose what it serves)",
                            clash.message
                        ),
                    ),
                };
                self.err(Section::Listeners, i, &at, m);
                None
            }
        }
    }

    /// Loads and checks certificate `j` of listener `i` (`f`): the pair,
    /// its validity (expired or not yet valid is an error), its names; and
    /// records it for the expiry metric. `None` after reporting why not.
    fn listener_cert(
        &mut self,
        i: usize,
        listener: &str,
        j: usize,
        f: &CertFiles<'_>,
        several: bool,
    ) -> Option<(ServedCert, Vec<ServerName>)> {
        let cert = self.src.resolve(Section::Listeners, i, f.cert);
        let key = self.src.resolve(Section::Listeners, i, f.key);
        let served = match tls::certified_key(&cert, &key) {
            Ok(k) => k,
            Err(errs) => {
                self.pair_errors(Section::Listeners, i, &f.at, errs);
                return None;
            }
        };
        let cert_at = format!("{}.cert", f.at);
        let validity = match served.cert.first().map(Validity::of) {
            Some(Ok(v)) => v,
            // load_certs refuses empty files; still an error, not a panic.
            None => {
                self.err(Section::Listeners, i, &cert_at, "no certificate");
                return None;
            }
            Some(Err(m)) => {
                self.err(Section::Listeners, i, &cert_at, m);
                return None;
            }
        };
        if let Check::Invalid(m) = validity.check(&cert, self.now) {
            let m = format!("{m}; a listener does not serve it (replace the file)");
            self.err(Section::Listeners, i, &cert_at, m);
            return None;
        }
        let names = match served.cert.first() {
            Some(leaf) => self.server_names(i, f, leaf),
            None => Vec::new(),
        };
        if names.is_empty() && several && !f.default {
            let m = format!(
                "certificate `{}` has no DNS name in its subjectAltName and no `names`, so no SNI would choose it",
                cert.display()
            );
            self.err(Section::Listeners, i, &cert_at, m);
            return None;
        }
        let label = match (several, f.names.and_then(|n| n.first()), names.first()) {
            (false, ..) => listener.to_string(),
            (true, Some(first), _) => format!("{listener}/{first}"),
            (true, None, Some(first)) => format!("{listener}/{}", shown(first)),
            (true, None, None) => format!("{listener}/{j}"),
        };
        self.held_cert(CertKind::Listener, label, &cert, validity, |s, m| {
            s.at(Section::Listeners, i, &cert_at, m)
        });
        let served = ServedCert {
            key: Arc::new(served),
        };
        Some((served, names))
    }

    /// The `cert`/`key` pair or the `certificates` list: exactly one form.
    fn cert_files<'c>(
        &mut self,
        i: usize,
        t: &'c config::ListenerTls,
    ) -> Option<Vec<CertFiles<'c>>> {
        match (&t.certificates, &t.cert, &t.key) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                self.err(
                    Section::Listeners,
                    i,
                    "tls.certificates",
                    "give either `cert` and `key` (one certificate) or `certificates`, not both",
                );
                None
            }
            (Some(list), None, None) if list.is_empty() => {
                self.err(
                    Section::Listeners,
                    i,
                    "tls.certificates",
                    "`certificates` must list at least one certificate",
                );
                None
            }
            (Some(list), None, None) => Some(
                list.iter()
                    .enumerate()
                    .map(|(j, c)| CertFiles {
                        at: format!("tls.certificates[{j}]"),
                        cert: &c.cert,
                        key: &c.key,
                        names: c.names.as_deref(),
                        default: c.default,
                    })
                    .collect(),
            ),
            (None, Some(cert), Some(key)) => Some(vec![CertFiles {
                at: "tls".into(),
                cert,
                key,
                names: None,
                default: true,
            }]),
            (None, Some(_), None) | (None, None, Some(_)) => {
                self.err(
                    Section::Listeners,
                    i,
                    "tls",
                    "tls.cert and tls.key must be given together",
                );
                None
            }
            (None, None, None) => {
                self.err(
                    Section::Listeners,
                    i,
                    "tls",
                    "tls needs a certificate: `cert` and `key`, or `certificates`",
                );
                None
            }
        }
    }

    /// The names a certificate is served for: its `names`, else the DNS
    /// names of its subjectAltName (those that are no valid server name,
    /// which no SNI can carry, are left out).
    fn server_names(
        &mut self,
        i: usize,
        f: &CertFiles<'_>,
        leaf: &CertificateDer<'_>,
    ) -> Vec<ServerName> {
        match f.names {
            Some(list) => {
                let mut out = Vec::new();
                for (k, n) in list.iter().enumerate() {
                    match ServerName::parse(n) {
                        Ok(n) => out.push(n),
                        Err(m) => {
                            let at = format!("{}.names[{k}]", f.at);
                            self.err(Section::Listeners, i, &at, m);
                        }
                    }
                }
                out
            }
            None => tls::dns_names(leaf)
                .iter()
                .filter_map(|n| ServerName::parse(n).ok())
                .collect(),
        }
    }
}

/// A server name as written (`*.example.com` for a wildcard).
fn shown(n: &ServerName) -> String {
    match n {
        ServerName::Exact(s) => s.clone(),
        ServerName::Wildcard(s) => format!("*.{s}"),
    }
}
