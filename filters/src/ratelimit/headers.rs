//! Rate-limit response headers: `Retry-After` and the IETF `RateLimit-Policy`
//! and `RateLimit` fields.
//!
//! Follows draft-ietf-httpapi-ratelimit-headers-10 (the field syntax is the
//! same from -08 to the -11 editor's copy): both fields are Structured Field
//! Lists whose items are the policy name as an sf-string, with parameters
//!
//! - `RateLimit-Policy: "<rule>";q=<rate count>;w=<period seconds>`, the
//!   sustained rate as configured (`100/s` gives `q=100;w=1`);
//! - `RateLimit: "<rule>";r=<remaining>;t=<seconds>`, where `r` is how many
//!   requests could be made right now, capped at `q` (a burst larger than the
//!   rate is not advertised), and `t` the seconds, rounded up, until the
//!   next request becomes available (draft -10's "time until additional
//!   quota is made available"; 0 on a full bucket). When limited, `t` equals
//!   `Retry-After`, as the draft requires it not to be later.
//!
//! Only the most restrictive enforced rule of a route is reported; shadow
//! rules are never reported.

use std::time::Duration;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};

use crate::headers::HeaderSink;

/// `RateLimit-Policy` (lowercase, as HTTP/2 sends it).
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Whole seconds, rounded up.
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `Retry-After` value for a wait: seconds rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    ceil_secs(wait).max(1)
}

/// Appends `name` as a Structured Field string (`"..."`, escaping `"` and `\`).
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Whether `name` can be a policy name (printable ASCII, so a valid sf-string
/// and header value).
pub fn valid_policy_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// `"<name>";q=<quota>;w=<window>`.
pub fn policy_value(name: &str, quota: u32, window_secs: u32) -> String {
    let mut s = String::with_capacity(name.len() + 24);
    push_sf_string(&mut s, name);
    s.push_str(&format!(";q={quota};w={window_secs}"));
    s
}

/// `"<name>";r=<remaining>;t=<reset seconds>`.
pub fn ratelimit_value(name: &str, remaining: u64, reset_secs: u64) -> String {
    let mut s = String::with_capacity(name.len() + 24);
    push_sf_string(&mut s, name);
    s.push_str(&format!(";r={remaining};t={reset_secs}"));
    s
}

/// The headers of one decision, ready to add to a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy` value.
    pub policy: HeaderValue,
    /// `RateLimit` value.
    pub ratelimit: HeaderValue,
    /// `Retry-After` value in seconds, on limited requests only.
    pub retry_after: Option<u64>,
}

impl RateLimitHeaders {
    /// Sets the headers on `sink` (a 429 response, or the upstream response
    /// of an allowed request).
    pub fn apply(&self, sink: &mut impl HeaderSink) {
        sink.set_header(&RATELIMIT_POLICY, &self.policy);
        sink.set_header(&RATELIMIT, &self.ratelimit);
        if let Some(secs) = self.retry_after {
            sink.set_header(&RETRY_AFTER, &HeaderValue::from(secs));
        }
    }

    /// The headers as name/value pairs.
    pub fn pairs(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut v = vec![
            (RATELIMIT_POLICY.clone(), self.policy.clone()),
            (RATELIMIT.clone(), self.ratelimit.clone()),
        ];
        if let Some(secs) = self.retry_after {
            v.push((RETRY_AFTER, HeaderValue::from(secs)));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_use_structured_field_syntax() {
        assert_eq!(policy_value("per-ip", 100, 1), r#""per-ip";q=100;w=1"#);
        assert_eq!(ratelimit_value("per-ip", 37, 1), r#""per-ip";r=37;t=1"#);
        assert_eq!(
            policy_value("per-user", 1000, 60),
            r#""per-user";q=1000;w=60"#
        );
        assert_eq!(policy_value(r#"a"b\c"#, 1, 3600), r#""a\"b\\c";q=1;w=3600"#);
        assert!(valid_policy_name("jwt:sub+route"));
        assert!(
            !valid_policy_name("") && !valid_policy_name("tab\there") && !valid_policy_name("é")
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(
            ceil_secs(Duration::from_secs(59) + Duration::from_nanos(1)),
            60
        );
    }

    #[test]
    fn headers_apply_to_a_header_map() {
        let h = RateLimitHeaders {
            policy: HeaderValue::from_static(r#""per-ip";q=100;w=1"#),
            ratelimit: HeaderValue::from_static(r#""per-ip";r=0;t=3"#),
            retry_after: Some(3),
        };
        let mut map = http::HeaderMap::new();
        h.apply(&mut map);
        assert_eq!(map["ratelimit-policy"], r#""per-ip";q=100;w=1"#);
        assert_eq!(map["ratelimit"], r#""per-ip";r=0;t=3"#);
        assert_eq!(map["retry-after"], "3");
        assert_eq!(h.pairs().len(), 3);
    }
}
