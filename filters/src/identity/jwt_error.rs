//! Why a bearer token was refused, and the `WWW-Authenticate` challenges.

/// Why a token was refused. Every variant means 401 with
/// [`www_authenticate`](Self::www_authenticate).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Longer than the size limit.
    #[error("token is {size} bytes, more than {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Not a compact JWS, or a part is not what it must be.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg: none`.
    #[error("unsigned token (alg none)")]
    AlgNone,
    /// An `alg` this gateway does not implement.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// An `alg` the issuer does not allow (HMAC included, unless configured).
    #[error("algorithm {0} not allowed for this issuer")]
    AlgorithmNotAllowed(&'static str),
    /// A `crit` header.
    #[error("critical header extensions are not supported")]
    CriticalHeader,
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim has the wrong type.
    #[error("invalid claim `{0}`")]
    InvalidClaim(&'static str),
    /// `iss` names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// The `kid` is not in the issuer's key set (refetch, rate limited).
    #[error("unknown key id `{kid}` for issuer `{issuer}`")]
    UnknownKid {
        /// The issuer whose keys were searched.
        issuer: String,
        /// The unknown `kid` (at most 128 characters kept).
        kid: String,
    },
    /// No `kid`, and no key of the issuer fits `alg`.
    #[error("no key of the issuer fits the token")]
    NoMatchingKey,
    /// The key named by `kid` cannot verify `alg`.
    #[error("key `{0}` does not fit the token algorithm")]
    KeyAlgorithmMismatch(String),
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// `exp` passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` not reached (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `aud` names none of the issuer's audiences.
    #[error("audience not accepted")]
    WrongAudience,
}

impl JwtError {
    /// HTTP status: always 401.
    pub fn status(&self) -> u16 {
        401
    }

    /// A short reason for clients, safe in a quoted header parameter.
    pub fn reason(&self) -> &'static str {
        use JwtError::*;
        match self {
            TooLarge { .. } => "token too large",
            Malformed(_) => "malformed token",
            AlgNone => "unsigned tokens are not accepted",
            UnsupportedAlgorithm => "unsupported algorithm",
            AlgorithmNotAllowed(_) => "algorithm not allowed",
            CriticalHeader => "unsupported critical header",
            MissingClaim(_) => "missing required claim",
            InvalidClaim(_) => "invalid claim",
            UnknownIssuer => "unknown issuer",
            UnknownKid { .. } => "unknown signing key",
            NoMatchingKey | KeyAlgorithmMismatch(_) => "no matching signing key",
            BadSignature => "invalid signature",
            Expired => "token expired",
            NotYetValid => "token not yet valid",
            IssuedInFuture => "token issued in the future",
            WrongAudience => "audience not accepted",
        }
    }

    /// A bounded label for `gateway_authn_total{result}`.
    pub fn metric_label(&self) -> &'static str {
        use JwtError::*;
        match self {
            TooLarge { .. } => "too_large",
            Malformed(_) | CriticalHeader | MissingClaim(_) | InvalidClaim(_) => "malformed",
            AlgNone | UnsupportedAlgorithm | AlgorithmNotAllowed(_) => "bad_algorithm",
            UnknownIssuer => "unknown_issuer",
            UnknownKid { .. } | NoMatchingKey | KeyAlgorithmMismatch(_) => "unknown_key",
            BadSignature => "bad_signature",
            Expired | NotYetValid | IssuedInFuture => "expired",
            WrongAudience => "wrong_audience",
        }
    }

    /// `WWW-Authenticate` value: `Bearer error="invalid_token",
    /// error_description="<reason>"`.
    pub fn www_authenticate(&self) -> String {
        format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            self.reason()
        )
    }
}

/// `WWW-Authenticate` value for a request without a token (RFC 6750 §3.1).
pub const MISSING_TOKEN_CHALLENGE: &str = "Bearer";

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive). `None` when the value is not a bearer credential.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim_start();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}
