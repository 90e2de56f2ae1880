//! Config of a JWT issuer and its algorithms.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// Default accepted algorithms of an issuer.
pub const DEFAULT_ALGORITHMS: [JwtAlgorithm; 3] = [
    JwtAlgorithm::RS256,
    JwtAlgorithm::ES256,
    JwtAlgorithm::EdDSA,
];
/// Default clock leeway for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default largest token accepted, in bytes (8 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Largest `max_token_bytes` that may be configured (64 KiB).
pub const MAX_MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Shortest HMAC secret accepted, in bytes (RFC 7518: at least the hash size).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// A JWS algorithm (`alg`) that an issuer may use. `none` does not exist here.
#[allow(clippy::upper_case_acronyms)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// Ed25519.
    EdDSA,
    /// HMAC with SHA-256 (only with `hmac_secret_file`).
    HS256,
    /// HMAC with SHA-384 (only with `hmac_secret_file`).
    HS384,
    /// HMAC with SHA-512 (only with `hmac_secret_file`).
    HS512,
}
crate::config_enum!(JwtAlgorithm { RS256 = "RS256", RS384 = "RS384", RS512 = "RS512", PS256 = "PS256", PS384 = "PS384", PS512 = "PS512", ES256 = "ES256", EdDSA = "EdDSA", HS256 = "HS256", HS384 = "HS384", HS512 = "HS512" });

impl JwtAlgorithm {
    /// Every algorithm of the RSA family.
    pub const RSA: [JwtAlgorithm; 6] = [
        JwtAlgorithm::RS256,
        JwtAlgorithm::RS384,
        JwtAlgorithm::RS512,
        JwtAlgorithm::PS256,
        JwtAlgorithm::PS384,
        JwtAlgorithm::PS512,
    ];

    /// The algorithm named by a JWS header `alg` (case-sensitive), if supported.
    pub fn from_name(name: &str) -> Option<JwtAlgorithm> {
        use JwtAlgorithm::*;
        [
            RS256, RS384, RS512, PS256, PS384, PS512, ES256, EdDSA, HS256, HS384, HS512,
        ]
        .into_iter()
        .find(|a| a.as_str() == name)
    }

    /// The `alg` name.
    pub fn as_str(self) -> &'static str {
        use JwtAlgorithm::*;
        match self {
            RS256 => "RS256",
            RS384 => "RS384",
            RS512 => "RS512",
            PS256 => "PS256",
            PS384 => "PS384",
            PS512 => "PS512",
            ES256 => "ES256",
            EdDSA => "EdDSA",
            HS256 => "HS256",
            HS384 => "HS384",
            HS512 => "HS512",
        }
    }

    /// Whether this is a shared-secret (HMAC) algorithm.
    pub fn is_hmac(self) -> bool {
        matches!(
            self,
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512
        )
    }

    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwtAlgorithm::RS256 => A::RS256,
            JwtAlgorithm::RS384 => A::RS384,
            JwtAlgorithm::RS512 => A::RS512,
            JwtAlgorithm::PS256 => A::PS256,
            JwtAlgorithm::PS384 => A::PS384,
            JwtAlgorithm::PS512 => A::PS512,
            JwtAlgorithm::ES256 => A::ES256,
            JwtAlgorithm::EdDSA => A::EdDSA,
            JwtAlgorithm::HS256 => A::HS256,
            JwtAlgorithm::HS384 => A::HS384,
            JwtAlgorithm::HS512 => A::HS512,
        }
    }
}

/// A JWT issuer trusted by a trust domain.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerConfig {
    /// The exact `iss` claim of this issuer's tokens. Must not contain `#`
    /// (the JWT principal is `<issuer>#<sub>`).
    pub issuer: String,
    /// Accepted `aud` values (at least one); a token must name one of them.
    pub audiences: Vec<String>,
    /// A local JWKS file, read again on every config reload. At most one of
    /// `jwks_file` and `jwks_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<String>,
    /// An `http(s)://` URL of the JWKS, fetched in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// How `jwks_uri` is refreshed.
    #[serde(default)]
    pub jwks_refresh: JwksRefreshConfig,
    /// Accepted `alg` values; default `[RS256, ES256, EdDSA]`. HMAC
    /// algorithms (`HS*`) need `hmac_secret_file`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// A file holding the raw HMAC secret (at least 32 bytes) for `HS*`
    /// tokens. HMAC is refused unless this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`; default `60s`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// Largest token accepted, in bytes; default 8192, at most 65536.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
}

/// Refresh of a `jwks_uri`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwksRefreshConfig {
    /// Time between background refreshes after a success; default `5m`.
    #[serde(default = "default_refresh_interval")]
    pub interval: Duration,
    /// Least time between two fetches started by unknown `kid`s, and the
    /// first retry delay after a failed fetch (doubling up to `interval`);
    /// default `10s`.
    #[serde(default = "default_min_refetch_interval")]
    pub min_refetch_interval: Duration,
    /// Time limit of one fetch; default `5s`.
    #[serde(default = "default_fetch_timeout")]
    pub timeout: Duration,
}

impl Default for JwksRefreshConfig {
    fn default() -> Self {
        JwksRefreshConfig {
            interval: default_refresh_interval(),
            min_refetch_interval: default_min_refetch_interval(),
            timeout: default_fetch_timeout(),
        }
    }
}

fn default_algorithms() -> Vec<JwtAlgorithm> {
    DEFAULT_ALGORITHMS.to_vec()
}
fn default_leeway() -> Duration {
    DEFAULT_LEEWAY
}
fn default_max_token_bytes() -> usize {
    DEFAULT_MAX_TOKEN_BYTES
}
fn default_refresh_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_min_refetch_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_fetch_timeout() -> Duration {
    Duration::from_secs(5)
}

impl JwtIssuerConfig {
    /// A config with the defaults, for `issuer` and `audiences` (no key source).
    pub fn new(issuer: &str, audiences: &[&str]) -> Self {
        JwtIssuerConfig {
            issuer: issuer.to_string(),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            jwks_file: None,
            jwks_uri: None,
            jwks_refresh: JwksRefreshConfig::default(),
            algorithms: default_algorithms(),
            hmac_secret_file: None,
            leeway: DEFAULT_LEEWAY,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    /// Every problem of this config (empty when valid), each naming its field.
    pub fn validate(&self) -> Vec<String> {
        let mut errs = Vec::new();
        if self.issuer.is_empty() {
            errs.push("issuer: must not be empty".to_string());
        }
        if self.issuer.contains('#') {
            errs.push("issuer: must not contain `#`".to_string());
        }
        if self.audiences.is_empty() {
            errs.push("audiences: at least one audience is required".to_string());
        }
        if self.audiences.iter().any(|a| a.is_empty()) {
            errs.push("audiences: an audience is empty".to_string());
        }
        if self.jwks_file.is_some() && self.jwks_uri.is_some() {
            errs.push("jwks_file and jwks_uri: set at most one".to_string());
        }
        if let Some(uri) = &self.jwks_uri {
            if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                errs.push(format!(
                    "jwks_uri: `{uri}` must be an http:// or https:// URL"
                ));
            }
        }
        if self.algorithms.is_empty() {
            errs.push("algorithms: at least one algorithm is required".to_string());
        }
        let hmac = self.algorithms.iter().any(|a| a.is_hmac());
        let asymmetric = self.algorithms.iter().any(|a| !a.is_hmac());
        match (hmac, self.hmac_secret_file.is_some()) {
            (true, false) => errs.push(
                "algorithms: HS256/HS384/HS512 need hmac_secret_file on this issuer".to_string(),
            ),
            (false, true) => errs
                .push("hmac_secret_file: set, but no HS256/HS384/HS512 in algorithms".to_string()),
            _ => {}
        }
        if asymmetric && self.jwks_file.is_none() && self.jwks_uri.is_none() {
            errs.push("jwks_file or jwks_uri: required for asymmetric algorithms".to_string());
        }
        if self.max_token_bytes == 0 || self.max_token_bytes > MAX_MAX_TOKEN_BYTES {
            errs.push(format!(
                "max_token_bytes: must be 1..={MAX_MAX_TOKEN_BYTES}"
            ));
        }
        let r = &self.jwks_refresh;
        if r.interval.get().is_zero()
            || r.min_refetch_interval.get().is_zero()
            || r.timeout.get().is_zero()
        {
            errs.push("jwks_refresh: durations must be greater than 0".to_string());
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_defaults_and_validation() {
        let cfg: JwtIssuerConfig = serde_yaml::from_str(
            "{issuer: 'https://issuer.b.example', audiences: [edge], jwks_file: b.json}",
        )
        .unwrap();
        assert_eq!(cfg.algorithms, DEFAULT_ALGORITHMS.to_vec());
        assert_eq!((cfg.leeway, cfg.max_token_bytes), (DEFAULT_LEEWAY, 8192));
        assert_eq!(cfg.jwks_refresh, JwksRefreshConfig::default());
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        let back: JwtIssuerConfig =
            serde_yaml::from_str(&serde_yaml::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);

        assert!(
            serde_yaml::from_str::<JwtIssuerConfig>("{issuer: a, audiences: [b], foo: 1}").is_err()
        );
        assert!(serde_yaml::from_str::<JwtIssuerConfig>("{issuer: a}").is_err());
        assert!(serde_yaml::from_str::<JwtIssuerConfig>(
            "{issuer: a, audiences: [b], algorithms: [none]}"
        )
        .is_err());

        let bad: JwtIssuerConfig = serde_yaml::from_str(
            "{issuer: 'a#b', audiences: [], jwks_file: f, jwks_uri: 'ftp://x', algorithms: [HS256, RS256], max_token_bytes: 0}",
        )
        .unwrap();
        let errs = bad.validate();
        assert_eq!(errs.len(), 6, "{errs:?}");

        let hmac_only: JwtIssuerConfig = serde_yaml::from_str(
            "{issuer: a, audiences: [b], algorithms: [HS256], hmac_secret_file: s}",
        )
        .unwrap();
        assert!(hmac_only.validate().is_empty());
        let mut stray = JwtIssuerConfig::new("a", &["b"]);
        stray.jwks_uri = Some("https://a/jwks".into());
        stray.hmac_secret_file = Some("s".into());
        assert_eq!(stray.validate().len(), 1);
        assert_eq!(
            JwtIssuerConfig::new("a", &["b"]).validate().len(),
            1,
            "no key source"
        );
    }

    #[test]
    fn algorithm_names() {
        for a in DEFAULT_ALGORITHMS.iter().chain(JwtAlgorithm::RSA.iter()) {
            assert_eq!(JwtAlgorithm::from_name(a.as_str()), Some(*a));
        }
        assert_eq!(JwtAlgorithm::from_name("none"), None);
        assert_eq!(JwtAlgorithm::from_name("rs256"), None);
        assert!(JwtAlgorithm::HS512.is_hmac() && !JwtAlgorithm::EdDSA.is_hmac());
    }
}
