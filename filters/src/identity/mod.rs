//! Federated identity: who is calling, from which trust domain.
//!
//! Pure building blocks, no I/O: the gateway reads files, fetches JWKS and
//! terminates TLS, then hands bytes to these modules.
//!
//! - [`spiffe`]: SPIFFE IDs and the one `spiffe://` URI SAN of an X.509-SVID
//!   leaf (chain verification against the bundle of the trust domain the ID
//!   names is rustls's job in the gateway).
//! - [`jwks`]: JWKS parsing into verification keys bound to algorithms, a
//!   hot-swappable [`SharedKeySet`], and [`JwksRefresher`], the refresh state
//!   machine of a `jwks_uri` (interval, rate-limited refetch on unknown `kid`,
//!   stale-if-error).
//! - [`jwt`]: [`JwtVerifier`] for compact JWS tokens from `Authorization:
//!   Bearer`, and [`JwtError`] with the `WWW-Authenticate` challenge.
//! - [`principal`]: [`Identity`] (mTLS and/or JWT), the `x-gateway-identity`
//!   header value and an Envoy-format `x-forwarded-client-cert` element.
//!
//! Authorization on top of an [`Identity`] is in [`crate::authz`].
//!
//! # Configuration
//!
//! ```yaml
//! trust_domains:
//!   - name: cluster-b.example
//!     ca: certs/cluster-b-ca.pem
//!     jwt_issuers:                        # each entry is a JwtIssuerConfig
//!       - issuer: https://issuer.cluster-b.example
//!         audiences: [edge]               # required, non-empty
//!         jwks_uri: https://issuer.cluster-b.example/jwks.json   # or jwks_file
//!         jwks_refresh: {interval: 5m, min_refetch_interval: 10s, timeout: 5s}
//!         algorithms: [RS256, ES256, EdDSA]   # the default
//!         leeway: 60s                     # the default
//!         max_token_bytes: 8192           # the default
//!       - issuer: legacy-hmac
//!         audiences: [edge]
//!         algorithms: [HS256]             # HMAC only with a secret
//!         hmac_secret_file: keys/legacy.secret   # >= 32 bytes
//! ```
//!
//! # Use from the gateway
//!
//! 1. At config compile, per issuer: parse `jwks_file` with
//!    [`JwkSet::parse`] (or start empty for a `jwks_uri`), wrap it in a
//!    [`SharedKeySet`], read `hmac_secret_file` if set, then
//!    [`JwtVerifier::add_issuer`]. Carry the `SharedKeySet` and the
//!    [`JwksRefresher`] of an unchanged issuer over a reload.
//! 2. Off the request path, per `jwks_uri`: sleep until
//!    [`JwksRefresher::next_due`], start a fetch when [`JwksRefresher::poll`]
//!    says so, and report the body (or the error) to
//!    [`JwksRefresher::complete`], which publishes a good set and keeps the
//!    last good one otherwise.
//! 3. Per request: [`jwt::bearer_token`], then [`JwtVerifier::verify`]; on
//!    [`JwtError::UnknownKid`] call [`JwksRefresher::request_refetch`] (rate
//!    limited) and answer 401 with [`JwtError::www_authenticate`]. From the
//!    TLS handshake, [`spiffe::spiffe_id_from_der`]. Build an [`Identity`],
//!    evaluate [`crate::authz::CompiledAuthz`], strip caller-supplied
//!    identity headers and set [`Identity::header_value`].

pub mod jwks;
mod jwks_refresh;
pub mod jwt;
mod jwt_config;
mod jwt_error;
pub mod principal;
pub mod spiffe;

#[cfg(test)]
mod authz_tests;
#[cfg(test)]
mod jwks_tests;
#[cfg(test)]
mod jwt_input_tests;
#[cfg(test)]
mod jwt_tests;
#[cfg(test)]
mod principal_tests;
#[cfg(test)]
mod test_keys;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

pub use jwks::{JwkSet, JwksError, KeyKind, SkippedKey, VerificationKey};
pub use jwks_refresh::{
    FetchReason, JwksRefreshPolicy, JwksRefresher, RefreshOutcome, SharedKeySet,
};
pub use jwt::{JwtError, JwtVerifier, VerifiedJwt};
pub use jwt_config::{JwksRefreshConfig, JwtAlgorithm, JwtIssuerConfig};
pub use principal::{
    AuthMethods, Identity, IdentityHeader, XfccElement, IDENTITY_HEADER, XFCC_HEADER,
};
pub use spiffe::{SpiffeId, SpiffeIdError, SvidError};

/// A duration in identity config: a whole number and a unit, `ms`, `s`, `m`
/// or `h` (`500ms`, `60s`, `5m`); a bare `0` is zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ConfigDuration(pub std::time::Duration);

impl ConfigDuration {
    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        ConfigDuration(std::time::Duration::from_secs(s))
    }
    /// The standard-library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl FromStr for ConfigDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "0" {
            return Ok(ConfigDuration(std::time::Duration::ZERO));
        }
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration `{s}` has no unit (use ms, s, m or h)"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("duration `{s}` must start with a whole number"))?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1_000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            _ => {
                return Err(format!(
                    "duration `{s}` has unknown unit `{unit}` (use ms, s, m or h)"
                ))
            }
        }
        .ok_or_else(|| format!("duration `{s}` is too large"))?;
        Ok(ConfigDuration(std::time::Duration::from_millis(ms)))
    }
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        match ms {
            0 => write!(f, "0"),
            ms if ms % 3_600_000 == 0 => write!(f, "{}h", ms / 3_600_000),
            ms if ms % 60_000 == 0 => write!(f, "{}m", ms / 60_000),
            ms if ms % 1_000 == 0 => write!(f, "{}s", ms / 1_000),
            ms => write!(f, "{ms}ms"),
        }
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> Cow<'static, str> {
        "IdentityDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": "^(0|[0-9]+(ms|s|m|h))$",
            "description": "A duration such as `500ms`, `60s`, `5m` or `1h`."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigDuration;

    #[test]
    fn durations_parse_and_print() {
        for (text, ms) in [
            ("0", 0),
            ("500ms", 500),
            ("45s", 45_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
        ] {
            let d: ConfigDuration = text.parse().unwrap();
            assert_eq!(d.get().as_millis(), ms, "{text}");
            assert_eq!(d.to_string(), text);
        }
        assert_eq!("60s".parse::<ConfigDuration>().unwrap().to_string(), "1m");
        for bad in ["", "10", "s", "1.5s", "10d", "-1s", "99999999999999999999h"] {
            assert!(bad.parse::<ConfigDuration>().is_err(), "{bad}");
        }
    }
}
