//! The access-log line of one request: a borrowed struct serialized
//! straight into the worker's log buffer (no `serde_json::Value` map, no
//! intermediate `String`).

use std::fmt::Display;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

/// One request as the access log records it. Field names are the log's
/// contract (see the README's observability section).
#[derive(Serialize)]
pub struct AccessLine<'a> {
    /// RFC 3339 time with milliseconds, UTC.
    #[serde(serialize_with = "as_display")]
    pub time: humantime::Rfc3339Timestamp,
    /// Listener name.
    pub listener: &'a str,
    /// Route name, or `none`.
    pub route: &'a str,
    /// Cluster name, or `none`.
    pub cluster: &'a str,
    /// Endpoint address, or `""`.
    pub endpoint: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request path (normalised, without the query).
    pub path: &'a str,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// Status sent (0: none).
    pub status: u16,
    /// Request body bytes read.
    pub bytes_in: usize,
    /// Response body bytes sent.
    pub bytes_out: usize,
    /// Time from request start to this line.
    pub duration_ms: f64,
    /// Upstream tries.
    pub tries: u32,
    /// The request id.
    pub request_id: &'a str,
    /// W3C trace id, hex.
    #[serde(serialize_with = "opt_display")]
    pub trace_id: Option<opentelemetry::trace::TraceId>,
    /// Client address.
    pub client: Option<IpAddr>,
    /// Pingora's error type when the request failed.
    pub error: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Appends the line (one JSON object, no newline) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Serializing plain fields into a Vec cannot fail.
        let _ = serde_json::to_writer(out, self);
    }
}

fn as_display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

fn opt_display<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let line = AccessLine {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::UNIX_EPOCH),
            listener: "public",
            route: "r\"1",
            cluster: "none",
            endpoint: "",
            method: "GET",
            path: "/a\nb",
            protocol: "HTTP/1.1",
            status: 200,
            bytes_in: 0,
            bytes_out: 1024,
            duration_ms: 1.5,
            tries: 1,
            request_id: "abc",
            trace_id: Some(opentelemetry::trace::TraceId::from_bytes([1; 16])),
            client: Some([127, 0, 0, 1].into()),
            error: None,
        };
        let mut out = Vec::new();
        line.write_to(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["route"], "r\"1");
        assert_eq!(v["path"], "/a\nb");
        assert_eq!(v["trace_id"], "01010101010101010101010101010101");
        assert_eq!(v["client"], "127.0.0.1");
        assert!(v["error"].is_null());
        assert_eq!(v.as_object().unwrap().len(), 17);
    }
}
