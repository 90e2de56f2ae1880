//! Redirects, as Envoy's route `redirect` action: the gateway answers with
//! a `Location` built from the request and the parts the config replaces
//! (scheme, host, port, path or path prefix, query kept or stripped).
//! On a listener the same settings redirect every request (the one-line
//! HTTP→HTTPS redirect: `redirect: {scheme: https}`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A redirect as written in the config.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// `http` or `https`; default: the request's. Changing it drops the
    /// request's port (the new scheme's default port) unless `port` is set.
    #[serde(default)]
    pub scheme: Option<String>,
    /// New host; default: the request's.
    #[serde(default)]
    pub host: Option<String>,
    /// New port; default: the request's (omitted when it is the scheme's
    /// default, 80 or 443).
    #[serde(default)]
    pub port: Option<u16>,
    /// New path (the whole path).
    #[serde(default)]
    pub path: Option<String>,
    /// Replacement of the route's matched `path_prefix` (the rest of the
    /// path is kept).
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// Drop the request's query string. Default: kept.
    #[serde(default)]
    pub strip_query: bool,
    /// 301 (default), 302, 303, 307 or 308.
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_status() -> u16 {
    301
}

/// Why a redirect cannot be compiled.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedirectError {
    /// A field that cannot be used, and why.
    #[error("{0}: {1}")]
    Field(&'static str, String),
}

/// A compiled redirect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    https: Option<bool>,
    host: Option<String>,
    port: Option<u16>,
    path: PathChange,
    strip_query: bool,
    /// The response status.
    pub status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathChange {
    Keep,
    Replace(String),
    Prefix { matched: String, with: String },
}

/// The parts of a request a `Location` is built from.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The request came over TLS.
    pub https: bool,
    /// `Host` as sent (may carry a port).
    pub host: &'a str,
    /// Path, without the query.
    pub path: &'a str,
    /// Query, without the `?`.
    pub query: Option<&'a str>,
}

fn field(name: &'static str, why: impl Into<String>) -> RedirectError {
    RedirectError::Field(name, why.into())
}

impl Redirect {
    /// Compiles `c`; `matched_prefix` is the route's `match.path_prefix`
    /// (`prefix_rewrite` needs one; a listener has none).
    pub fn new(
        c: &RedirectConfig,
        matched_prefix: Option<&str>,
    ) -> Result<Redirect, RedirectError> {
        let https = match c.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => None,
            Some("https") => Some(true),
            Some("http") => Some(false),
            Some(other) => return Err(field("scheme", format!("`{other}` is not http or https"))),
        };
        if let Some(h) = &c.host {
            let valid = !h.is_empty()
                && !h.contains(':')
                && http::uri::Authority::try_from(h.as_str()).is_ok();
            if !valid {
                return Err(field(
                    "host",
                    format!("`{h}` is not a host name (put a port in `port`)"),
                ));
            }
        }
        if c.port == Some(0) {
            return Err(field("port", "0 is not a port"));
        }
        let valid_path = |p: &str| {
            p.starts_with('/')
                && !p.contains(['?', '#'])
                && http::uri::PathAndQuery::try_from(p).is_ok()
        };
        let path = match (&c.path, &c.prefix_rewrite) {
            (Some(_), Some(_)) => {
                return Err(field("path", "set `path` or `prefix_rewrite`, not both"))
            }
            (Some(p), None) if !valid_path(p) => {
                return Err(field(
                    "path",
                    format!("`{p}` is not a path (no query or fragment)"),
                ))
            }
            (Some(p), None) => PathChange::Replace(p.clone()),
            (None, Some(p)) => match matched_prefix {
                None => {
                    return Err(field(
                        "prefix_rewrite",
                        "needs a `match.path_prefix` to replace",
                    ))
                }
                Some(_) if !p.is_empty() && !valid_path(p) => {
                    return Err(field("prefix_rewrite", format!("`{p}` is not a path")))
                }
                Some(m) => PathChange::Prefix {
                    matched: m.to_string(),
                    with: p.clone(),
                },
            },
            (None, None) => PathChange::Keep,
        };
        if !matches!(c.status, 301 | 302 | 303 | 307 | 308) {
            return Err(field(
                "status",
                format!("{} is not 301, 302, 303, 307 or 308", c.status),
            ));
        }
        Ok(Redirect {
            https,
            host: c.host.clone(),
            port: c.port,
            path,
            strip_query: c.strip_query,
            status: c.status,
        })
    }

    /// The `Location` for a request.
    pub fn location(&self, o: Origin<'_>) -> String {
        let (req_host, req_port) = split_host(o.host);
        let https = self.https.unwrap_or(o.https);
        let port = match self.port {
            Some(p) => Some(p),
            // A new scheme means its default port, as in Envoy.
            None if https != o.https => None,
            None => req_port,
        };
        let default_port = if https { 443 } else { 80 };
        let mut out = String::with_capacity(o.host.len() + o.path.len() + 32);
        out.push_str(if https { "https://" } else { "http://" });
        out.push_str(self.host.as_deref().unwrap_or(req_host));
        if let Some(p) = port.filter(|p| *p != default_port) {
            out.push(':');
            out.push_str(&p.to_string());
        }
        match &self.path {
            PathChange::Keep => out.push_str(o.path),
            PathChange::Replace(p) => out.push_str(p),
            PathChange::Prefix { matched, with } => {
                let rest = o.path.strip_prefix(matched.as_str()).unwrap_or(o.path);
                out.push_str(with);
                if with.is_empty() && !rest.starts_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
            }
        }
        if let Some(q) = o.query.filter(|q| !self.strip_query && !q.is_empty()) {
            out.push('?');
            out.push_str(q);
        }
        out
    }
}

/// `host[:port]` or `[v6]:port` split in two; a port that does not parse
/// is treated as absent.
fn split_host(host: &str) -> (&str, Option<u16>) {
    let colon = if host.starts_with('[') {
        host.find(']')
            .and_then(|end| host[end..].find(':').map(|c| end + c))
    } else {
        host.rfind(':')
    };
    match colon {
        Some(c) => (&host[..c], host[c + 1..].parse().ok()),
        None => (host, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(yaml: &str, prefix: Option<&str>) -> Redirect {
        Redirect::new(&serde_yaml::from_str(yaml).unwrap(), prefix).unwrap()
    }

    fn origin<'a>(https: bool, host: &'a str, path: &'a str, query: Option<&'a str>) -> Origin<'a> {
        Origin {
            https,
            host,
            path,
            query,
        }
    }

    #[test]
    fn https_upgrade_drops_the_plaintext_port_and_keeps_path_and_query() {
        let r = redirect("scheme: https", None);
        assert_eq!(r.status, 301);
        let o = origin(false, "a.test:8080", "/x/y", Some("q=1"));
        assert_eq!(r.location(o), "https://a.test/x/y?q=1");
        let with_port = redirect("{scheme: https, port: 8443}", None);
        assert_eq!(with_port.location(o), "https://a.test:8443/x/y?q=1");
    }

    #[test]
    fn host_port_path_and_query_are_replaced_as_configured() {
        let r = redirect(
            "{host: b.test, path: /new, strip_query: true, status: 308}",
            None,
        );
        assert_eq!(
            r.location(origin(true, "a.test:8443", "/old", Some("q=1"))),
            "https://b.test:8443/new"
        );
        let default_port = redirect("{port: 80}", None);
        assert_eq!(
            default_port.location(origin(false, "a.test:8080", "/", None)),
            "http://a.test/"
        );
        let v6 = redirect("{port: 9000}", None);
        assert_eq!(
            v6.location(origin(false, "[::1]:8080", "/", None)),
            "http://[::1]:9000/"
        );
    }

    #[test]
    fn a_prefix_rewrite_keeps_the_rest_of_the_path() {
        let r = redirect("prefix_rewrite: /v2", Some("/v1"));
        assert_eq!(
            r.location(origin(false, "a.test", "/v1/users/7", Some("x=1"))),
            "http://a.test/v2/users/7?x=1"
        );
        let to_root = redirect("prefix_rewrite: \"\"", Some("/old/"));
        assert_eq!(
            to_root.location(origin(false, "a.test", "/old/page", None)),
            "http://a.test/page"
        );
    }

    #[test]
    fn bad_redirects_name_their_field() {
        let bad = |y: &str, prefix| match Redirect::new(&serde_yaml::from_str(y).unwrap(), prefix) {
            Err(RedirectError::Field(f, _)) => f,
            Ok(_) => panic!("{y} was accepted"),
        };
        assert_eq!(bad("scheme: ftp", None), "scheme");
        assert_eq!(bad("host: \"a.test:80\"", None), "host");
        assert_eq!(bad("status: 200", None), "status");
        assert_eq!(bad("prefix_rewrite: /x", None), "prefix_rewrite");
        assert_eq!(bad("{path: /a, prefix_rewrite: /b}", Some("/")), "path");
        assert_eq!(bad("path: \"/a?b\"", None), "path");
        assert_eq!(bad("port: 0", None), "port");
    }
}
