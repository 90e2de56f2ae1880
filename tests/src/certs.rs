//! Test certificates made with rcgen: one CA per test, leaves signed by it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    date_time_ymd, BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A self-signed certificate authority that exists only for one test.
pub struct TestCa {
    cert: Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A new CA whose subject common name is `common_name`.
    pub fn new(common_name: &str) -> TestCa {
        Self::with_not_after(common_name, None)
    }

    /// A new CA valid until `not_after` (Unix seconds), for expiry tests.
    pub fn expiring(common_name: &str, not_after: u64) -> TestCa {
        Self::with_not_after(common_name, Some(not_after))
    }

    fn with_not_after(common_name: &str, not_after: Option<u64>) -> TestCa {
        let key = KeyPair::generate().expect("generate CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if let Some(t) = not_after {
            params.not_after = date_time_ymd(1970, 1, 1) + Duration::from_secs(t);
        }
        let cert = params.self_signed(&key).expect("self-sign CA");
        TestCa { cert, key }
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// Writes the CA certificate as PEM to `dir/file` and returns the path.
    pub fn write_pem(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.cert_pem()).expect("write CA PEM");
        path
    }

    /// A server (and client) leaf certificate for `dns_names`, signed by this CA.
    pub fn issue(&self, dns_names: &[&str]) -> LeafCert {
        let key = KeyPair::generate().expect("generate leaf key");
        let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("leaf params");
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("leaf"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        LeafCert { cert, key }
    }

    /// An X.509-SVID leaf for `spiffe_id` (its one URI SAN), with optional
    /// DNS SANs, signed by this CA: not a CA, key usage digitalSignature,
    /// EKU serverAuth + clientAuth, valid now. See [`LeafSpec`] for the
    /// deliberately broken variants.
    pub fn issue_svid(&self, spiffe_id: &str, dns_names: &[&str]) -> LeafCert {
        let mut spec = LeafSpec::new().uri(spiffe_id);
        for d in dns_names {
            spec = spec.dns(d);
        }
        self.issue_with(&spec)
    }

    /// A leaf certificate made to `spec`, signed by this CA.
    pub fn issue_with(&self, spec: &LeafSpec) -> LeafCert {
        let key = KeyPair::generate().expect("generate leaf key");
        let mut params = CertificateParams::new(spec.dns_names.clone()).expect("leaf params");
        for uri in &spec.uris {
            let uri = Ia5String::try_from(uri.as_str())
                .unwrap_or_else(|e| panic!("URI SAN `{uri}` is not IA5: {e}"));
            params.subject_alt_names.push(SanType::URI(uri));
        }
        let mut dn = DistinguishedName::new();
        let cn = spec
            .dns_names
            .first()
            .or(spec.uris.first())
            .map_or("leaf", String::as_str);
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.is_ca = if spec.is_ca {
            IsCa::Ca(BasicConstraints::Unconstrained)
        } else {
            IsCa::NoCa
        };
        params.key_usages = match (spec.digital_signature, spec.is_ca) {
            (true, false) => vec![KeyUsagePurpose::DigitalSignature],
            (true, true) => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            (false, _) => vec![KeyUsagePurpose::KeyEncipherment],
        };
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        match spec.validity {
            Validity::Current => {}
            Validity::Expired => {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            Validity::NotYetValid => {
                params.not_before = date_time_ymd(2090, 1, 1);
                params.not_after = date_time_ymd(2091, 1, 1);
            }
            Validity::Until(t) => {
                params.not_after = date_time_ymd(1970, 1, 1) + Duration::from_secs(t)
            }
        }
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        LeafCert { cert, key }
    }
}

/// When a [`LeafSpec`] certificate is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validity {
    /// From rcgen's default not-before (1975) to its default not-after
    /// (4096): valid now.
    #[default]
    Current,
    /// 2020-01-01 to 2021-01-01: expired.
    Expired,
    /// 2090-01-01 to 2091-01-01: not yet valid.
    NotYetValid,
    /// From rcgen's default not-before (1975) to this Unix time.
    Until(u64),
}

/// What [`TestCa::issue_with`] puts in a leaf: SANs, validity, whether it
/// claims to be a CA and whether it has key usage digitalSignature. The
/// default ([`LeafSpec::new`]) is a well-formed leaf with no SANs.
///
/// ```no_run
/// # use gateway_tests::{LeafSpec, TestCa};
/// let ca = TestCa::new("cluster-b CA");
/// let two_ids = ca.issue_with(
///     &LeafSpec::new()
///         .uri("spiffe://cluster-b.example/a")
///         .uri("spiffe://cluster-b.example/b"),
/// );
/// let expired = ca.issue_with(&LeafSpec::new().uri("spiffe://cluster-b.example/a").expired());
/// ```
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// DNS SANs (the first is also the subject CN).
    pub dns_names: Vec<String>,
    /// URI SANs (e.g. SPIFFE IDs), in this order.
    pub uris: Vec<String>,
    /// Validity window.
    pub validity: Validity,
    /// Basic constraints CA=true (an X.509-SVID leaf must not be a CA).
    pub is_ca: bool,
    /// Key usage digitalSignature (required of an X.509-SVID leaf); without
    /// it the key usage is keyEncipherment only.
    pub digital_signature: bool,
}

impl Default for LeafSpec {
    fn default() -> Self {
        LeafSpec {
            dns_names: Vec::new(),
            uris: Vec::new(),
            validity: Validity::Current,
            is_ca: false,
            digital_signature: true,
        }
    }
}

impl LeafSpec {
    /// A well-formed leaf, no SANs yet.
    pub fn new() -> LeafSpec {
        LeafSpec::default()
    }

    /// Adds a DNS SAN.
    pub fn dns(mut self, name: &str) -> LeafSpec {
        self.dns_names.push(name.to_string());
        self
    }

    /// Adds a URI SAN.
    pub fn uri(mut self, uri: &str) -> LeafSpec {
        self.uris.push(uri.to_string());
        self
    }

    /// Valid 2020-01-01 to 2021-01-01.
    pub fn expired(mut self) -> LeafSpec {
        self.validity = Validity::Expired;
        self
    }

    /// Valid from 2090-01-01.
    pub fn not_yet_valid(mut self) -> LeafSpec {
        self.validity = Validity::NotYetValid;
        self
    }

    /// Valid until `unix_secs` (notAfter; whole seconds, as X.509 keeps it).
    pub fn not_after(mut self, unix_secs: u64) -> LeafSpec {
        self.validity = Validity::Until(unix_secs);
        self
    }

    /// Marks it a CA (basic constraints CA=true, keyCertSign).
    pub fn ca(mut self) -> LeafSpec {
        self.is_ca = true;
        self
    }

    /// Leaves out key usage digitalSignature.
    pub fn without_digital_signature(mut self) -> LeafSpec {
        self.digital_signature = false;
        self
    }
}

/// A leaf certificate and its private key.
pub struct LeafCert {
    cert: Certificate,
    key: KeyPair,
}

impl LeafCert {
    /// The certificate in PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The private key in PEM (PKCS#8).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The certificate in DER.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The private key in DER, for rustls.
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// The certificate PEM followed by the key PEM, as
    /// `reqwest::Identity::from_pem` wants it.
    pub fn identity_pem(&self) -> String {
        format!("{}{}", self.cert_pem(), self.key_pem())
    }

    /// Writes `dir/cert_file` (PEM certificate) and `dir/key_file` (PEM key).
    pub fn write(&self, dir: &Path, cert_file: &str, key_file: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(cert_file);
        let key = dir.join(key_file);
        std::fs::write(&cert, self.cert_pem()).expect("write leaf cert");
        std::fs::write(&key, self.key_pem()).expect("write leaf key");
        (cert, key)
    }
}
