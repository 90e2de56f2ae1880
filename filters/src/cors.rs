//! Cross-origin resource sharing per route, as Envoy's (and Istio's)
//! `corsPolicy`: the gateway answers a browser's preflight itself and adds
//! the `Access-Control-*` fields to actual responses, for allowed origins
//! only. A request from an origin that is not allowed gets no CORS field
//! at all (its preflight goes on to the route like any `OPTIONS` request,
//! as in Envoy), so the browser blocks it.
//!
//! Every field value except the echoed origin is built at load time.

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::headers::HeaderSink;
use crate::units::Duration;

/// A route's CORS policy as written in the config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed, each `{exact: "https://a.test"}`, `{suffix:
    /// ".a.test"}` or `{regex: "https://[a-z]+\\.a\\.test"}` (whole value).
    /// `{exact: "*"}` allows any origin.
    pub allow_origins: Vec<OriginMatch>,
    /// Methods a preflight may ask for (`Access-Control-Allow-Methods`).
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request fields a preflight may ask for (`Access-Control-Allow-Headers`).
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response fields scripts may read (`Access-Control-Expose-Headers`).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long the browser may cache a preflight answer.
    #[serde(default)]
    pub max_age: Option<Duration>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, client
    /// certificates, `Authorization`).
    #[serde(default)]
    pub allow_credentials: bool,
}

/// One allowed-origin condition: exactly one of its fields.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OriginMatch {
    /// The whole origin, compared ASCII case-insensitively; `*` is any.
    #[serde(default)]
    pub exact: Option<String>,
    /// The origin ends with this (e.g. `.example.com`).
    #[serde(default)]
    pub suffix: Option<String>,
    /// The whole origin matches this regular expression.
    #[serde(default)]
    pub regex: Option<String>,
}

/// Why a CORS policy cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    /// No origin would ever be allowed.
    #[error("allow_origins is empty: no origin would be allowed")]
    NoOrigins,
    /// A regular expression does not compile.
    #[error("allow_origins[{0}]: invalid regex: {1}")]
    Regex(usize, String),
    /// An origin condition sets none or several of its fields.
    #[error("allow_origins[{0}]: set exactly one of `exact`, `suffix`, `regex`")]
    OneOf(usize),
    /// A method or field name is not a valid token.
    #[error("{0}: `{1}` is not a valid name")]
    Name(&'static str, String),
}

#[derive(Debug)]
enum Origin {
    Any,
    Exact(String),
    Suffix(String),
    Regex(Regex),
}

/// A compiled CORS policy.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

/// What a request is, for CORS.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen<'a> {
    /// No `Origin`, or an origin the policy does not allow.
    NotCors,
    /// A preflight (`OPTIONS` with `Access-Control-Request-Method`) from
    /// an allowed origin: answered at the gateway.
    Preflight(&'a HeaderValue),
    /// An actual request from an allowed origin: its response gets the
    /// CORS fields.
    Actual(&'a HeaderValue),
}

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;
const TRUE: HeaderValue = HeaderValue::from_static("true");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

fn joined(what: &'static str, items: &[String]) -> Result<Option<HeaderValue>, CorsError> {
    for i in items {
        if HeaderName::from_bytes(i.as_bytes()).is_err()
            && Method::from_bytes(i.as_bytes()).is_err()
        {
            return Err(CorsError::Name(what, i.clone()));
        }
    }
    if items.is_empty() {
        return Ok(None);
    }
    HeaderValue::from_str(&items.join(", "))
        .map(Some)
        .map_err(|_| CorsError::Name(what, items.join(", ")))
}

impl Cors {
    /// Compiles `c`.
    pub fn new(c: &CorsConfig) -> Result<Cors, CorsError> {
        if c.allow_origins.is_empty() {
            return Err(CorsError::NoOrigins);
        }
        let mut origins = Vec::with_capacity(c.allow_origins.len());
        for (i, o) in c.allow_origins.iter().enumerate() {
            origins.push(match (&o.exact, &o.suffix, &o.regex) {
                (Some(s), None, None) if s == "*" => Origin::Any,
                (Some(s), None, None) => Origin::Exact(s.to_ascii_lowercase()),
                (None, Some(s), None) => Origin::Suffix(s.to_ascii_lowercase()),
                (None, None, Some(r)) => Origin::Regex(
                    Regex::new(&format!("^(?:{r})$"))
                        .map_err(|e| CorsError::Regex(i, e.to_string()))?,
                ),
                _ => return Err(CorsError::OneOf(i)),
            });
        }
        Ok(Cors {
            origins,
            allow_methods: joined("allow_methods", &c.allow_methods)?,
            allow_headers: joined("allow_headers", &c.allow_headers)?,
            expose_headers: joined("expose_headers", &c.expose_headers)?,
            max_age: c.max_age.map(|d| HeaderValue::from(d.get().as_secs())),
            credentials: c.allow_credentials,
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| match o {
            Origin::Any => true,
            Origin::Exact(e) => origin.eq_ignore_ascii_case(e),
            Origin::Suffix(s) => {
                origin.len() >= s.len()
                    && origin.as_bytes()[origin.len() - s.len()..]
                        .eq_ignore_ascii_case(s.as_bytes())
            }
            Origin::Regex(r) => r.is_match(origin),
        })
    }

    /// Classifies a request by its method and fields.
    pub fn see<'a>(&self, method: &Method, headers: &'a HeaderMap) -> Seen<'a> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Seen::NotCors;
        };
        if !origin.to_str().is_ok_and(|o| self.allows(o)) {
            return Seen::NotCors;
        }
        if method == Method::OPTIONS && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            Seen::Preflight(origin)
        } else {
            Seen::Actual(origin)
        }
    }

    /// The fields of the gateway's answer to a preflight from `origin`.
    pub fn preflight_fields(&self, origin: &HeaderValue) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::with_capacity(6);
        out.push((ALLOW_ORIGIN, origin.clone()));
        let optional = [
            (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
            (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                out.push((name, v.clone()));
            }
        }
        self.common(&mut out);
        out
    }

    /// Adds the CORS fields for `origin` to an actual response.
    pub fn add_response_fields(&self, origin: &HeaderValue, resp: &mut impl HeaderSink) {
        resp.set_header(&ALLOW_ORIGIN, origin);
        if let Some(v) = &self.expose_headers {
            resp.set_header(&header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
        if self.credentials {
            resp.set_header(&header::ACCESS_CONTROL_ALLOW_CREDENTIALS, &TRUE);
        }
        resp.add_header(&header::VARY, &VARY_ORIGIN);
    }

    /// Credentials and `Vary: Origin` (the answer depends on the origin,
    /// so a shared cache must not serve it to another).
    fn common(&self, out: &mut Vec<(HeaderName, HeaderValue)>) {
        if self.credentials {
            out.push((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE));
        }
        out.push((header::VARY, VARY_ORIGIN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(yaml: &str) -> Cors {
        Cors::new(&serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const POLICY: &str = r#"
allow_origins: [{exact: "https://App.test"}, {suffix: ".corp.test"}, {regex: "https://[a-z]+\\.r\\.test"}]
allow_methods: [GET, PUT]
allow_headers: [content-type, x-token]
expose_headers: [x-request-id]
max_age: 10m
allow_credentials: true
"#;

    #[test]
    fn origins_match_exactly_by_suffix_and_by_whole_regex() {
        let c = cors(POLICY);
        for ok in [
            "https://app.test",
            "https://a.corp.test",
            "https://abc.r.test",
        ] {
            assert!(c.allows(ok), "{ok}");
        }
        for no in [
            "https://app.test.evil",
            "https://corp.test",
            "https://abc.r.test.x",
            "null",
        ] {
            assert!(!c.allows(no), "{no}");
        }
        assert!(cors("allow_origins: [{exact: \"*\"}]").allows("https://any.where"));
    }

    #[test]
    fn a_preflight_is_told_apart_from_an_actual_request() {
        let c = cors(POLICY);
        let pre = headers(&[
            ("origin", "https://app.test"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(matches!(c.see(&Method::OPTIONS, &pre), Seen::Preflight(_)));
        assert!(matches!(c.see(&Method::GET, &pre), Seen::Actual(_)));
        let plain_options = headers(&[("origin", "https://app.test")]);
        assert!(matches!(
            c.see(&Method::OPTIONS, &plain_options),
            Seen::Actual(_)
        ));
        let evil = headers(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "PUT"),
        ]);
        assert_eq!(c.see(&Method::OPTIONS, &evil), Seen::NotCors);
        assert_eq!(c.see(&Method::GET, &HeaderMap::new()), Seen::NotCors);
    }

    #[test]
    fn the_preflight_answer_carries_the_policy() {
        let c = cors(POLICY);
        let origin = HeaderValue::from_static("https://app.test");
        let fields = c.preflight_fields(&origin);
        let get = |n: HeaderName| {
            fields
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_str().unwrap())
        };
        assert_eq!(get(ALLOW_ORIGIN), Some("https://app.test"));
        assert_eq!(get(header::ACCESS_CONTROL_ALLOW_METHODS), Some("GET, PUT"));
        assert_eq!(
            get(header::ACCESS_CONTROL_ALLOW_HEADERS),
            Some("content-type, x-token")
        );
        assert_eq!(get(header::ACCESS_CONTROL_MAX_AGE), Some("600"));
        assert_eq!(get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS), Some("true"));
        assert_eq!(get(header::VARY), Some("Origin"));
    }

    #[test]
    fn an_actual_response_gets_origin_expose_and_vary_added() {
        let c = cors(POLICY);
        let mut resp = headers(&[("vary", "Accept-Encoding")]);
        c.add_response_fields(&HeaderValue::from_static("https://app.test"), &mut resp);
        assert_eq!(resp[ALLOW_ORIGIN], "https://app.test");
        assert_eq!(resp[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        let vary: Vec<_> = resp.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
    }

    #[test]
    fn bad_policies_are_refused() {
        let bad = |y: &str| Cors::new(&serde_yaml::from_str(y).unwrap()).unwrap_err();
        assert_eq!(bad("allow_origins: []"), CorsError::NoOrigins);
        assert!(matches!(
            bad("allow_origins: [{regex: \"(\"}]"),
            CorsError::Regex(0, _)
        ));
        assert_eq!(
            bad("allow_origins: [{exact: a, suffix: b}]"),
            CorsError::OneOf(0)
        );
        assert!(matches!(
            bad("allow_origins: [{exact: a}]\nallow_headers: [\"bad header\"]"),
            CorsError::Name("allow_headers", _)
        ));
    }
}
