//! Validity windows of certificates: what `gateway validate` and reloads
//! refuse or warn about, and what `gateway_certificate_expiry_timestamp_seconds`
//! exports.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;

/// A certificate expiring sooner than this draws a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);

/// The validity window of a certificate, in Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: i64,
    /// notAfter.
    pub not_after: i64,
}

impl Validity {
    /// The window of a DER certificate (already parsed once by
    /// [`super::load_certs`], so a failure here is unexpected but reported).
    pub fn of(der: &CertificateDer<'_>) -> Result<Validity, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("certificate cannot be parsed: {e}"))?;
        let v = cert.validity();
        Ok(Validity {
            not_before: v.not_before.timestamp(),
            not_after: v.not_after.timestamp(),
        })
    }

    /// The narrowest window over `certs`: latest notBefore, earliest
    /// notAfter (a CA bundle is in trouble as soon as its first CA expires).
    pub fn narrowest<'a>(
        certs: impl IntoIterator<Item = &'a CertificateDer<'a>>,
    ) -> Result<Option<Validity>, String> {
        let mut out: Option<Validity> = None;
        for c in certs {
            let v = Validity::of(c)?;
            out = Some(match out {
                None => v,
                Some(o) => Validity {
                    not_before: o.not_before.max(v.not_before),
                    not_after: o.not_after.min(v.not_after),
                },
            });
        }
        Ok(out)
    }

    /// How this window looks at `now` (Unix seconds) for the certificate in
    /// `file`; the messages name the file and the date.
    pub fn check(&self, file: &Path, now: i64) -> Check {
        let file = file.display();
        if now < self.not_before {
            Check::Invalid(format!(
                "certificate `{file}` is not valid yet (notBefore {})",
                format_unix(self.not_before)
            ))
        } else if now > self.not_after {
            Check::Invalid(format!(
                "certificate `{file}` expired on {}",
                format_unix(self.not_after)
            ))
        } else if self.not_after - now < EXPIRY_WARNING.as_secs() as i64 {
            let days = (self.not_after - now) as f64 / 86_400.0;
            Check::ExpiresSoon(format!(
                "certificate `{file}` expires on {} (in {days:.1} days)",
                format_unix(self.not_after)
            ))
        } else {
            Check::Fine
        }
    }
}

/// The outcome of [`Validity::check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// Valid for longer than [`EXPIRY_WARNING`].
    Fine,
    /// Valid, but expires within [`EXPIRY_WARNING`]: a warning.
    ExpiresSoon(String),
    /// Expired or not valid yet.
    Invalid(String),
}

/// What a held certificate is for: the `kind` label of
/// `gateway_certificate_expiry_timestamp_seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CertKind {
    /// Served by a TLS listener.
    Listener,
    /// Presented to upstreams (a cluster's mTLS client certificate).
    Client,
    /// A CA bundle: trust domain, cluster upstream CA, egress rule CA.
    Ca,
}

impl CertKind {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            CertKind::Listener => "listener",
            CertKind::Client => "client",
            CertKind::Ca => "ca",
        }
    }
}

/// A certificate (or bundle) the compiled config holds, and when it
/// expires (for a bundle: its earliest notAfter).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertExpiry {
    /// What it is for.
    pub kind: CertKind,
    /// Which one (the `name` label; see the README's metrics section).
    pub name: String,
    /// The PEM file it came from.
    pub file: PathBuf,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-12-09T10:00:00Z` for a Unix time (clamped to the epoch: notAfter
/// dates before 1970 exist only in broken certificates).
pub fn format_unix(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_tells_expired_soon_and_fine_apart() {
        let day = 86_400;
        let now = 1_800_000_000;
        let f = Path::new("a.pem");
        let v = |nb: i64, na: i64| Validity {
            not_before: nb,
            not_after: na,
        };
        assert_eq!(v(0, now + 30 * day).check(f, now), Check::Fine);
        match v(0, now + 3 * day).check(f, now) {
            Check::ExpiresSoon(m) => {
                assert!(m.contains("`a.pem`") && m.contains("2027-01-18"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        match v(0, now - 1).check(f, now) {
            Check::Invalid(m) => assert!(m.contains("expired on"), "{m}"),
            other => panic!("{other:?}"),
        }
        match v(now + 1, now + 30 * day).check(f, now) {
            Check::Invalid(m) => assert!(m.contains("not valid yet"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
