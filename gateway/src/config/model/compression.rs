//! Response compression of a route (`routes[].compression`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Compress responses of this route for clients that ask for it
/// (`Accept-Encoding`), as NGINX's `gzip`/`brotli` or Envoy's compressor
/// filter do. Done by Pingora's compression module, streamed: the body is
/// never held whole. Never applied to responses that already have a
/// `Content-Encoding`, to range answers (206 or `Content-Range`), to
/// `Cache-Control: no-transform`, to bodiless answers (HEAD, 204, 304),
/// or to responses smaller than `min_bytes` by their `Content-Length`.
/// Compressed answers get `Vary: Accept-Encoding`, a weakened `ETag` and no
/// `Content-Length` / `Accept-Ranges`.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Compression {
    /// Codings offered, in the gateway's order of preference: the client's
    /// highest q-value wins, and between equal q-values the earlier one
    /// here. Default `[zstd, br, gzip]`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<CompressionAlgorithm>,
    /// Smallest response compressed, in bytes, when its `Content-Length`
    /// is known (a streamed answer of unknown length is compressed).
    /// Default 1024.
    #[serde(default = "default_min_bytes")]
    pub min_bytes: u64,
    /// Media types compressed: `type/subtype` or `type/*`, compared with
    /// the response's `Content-Type` without parameters, ignoring case.
    /// A response without `Content-Type` is not compressed. Default:
    /// `text/*`, `application/json`, `application/javascript`,
    /// `application/xml`, `application/wasm`, `image/svg+xml`.
    #[serde(default = "default_content_types")]
    pub content_types: Vec<String>,
    /// Compression level for every coding, 1 (fastest) to 9 (smallest).
    /// Default 5.
    #[serde(default = "default_level")]
    pub level: u32,
}

/// A content coding the gateway can produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum CompressionAlgorithm {
    /// Zstandard (RFC 8878).
    #[serde(rename = "zstd")]
    Zstd,
    /// Brotli (RFC 7932).
    #[serde(rename = "br")]
    Br,
    /// gzip (RFC 1952).
    #[serde(rename = "gzip")]
    Gzip,
}

fn default_algorithms() -> Vec<CompressionAlgorithm> {
    vec![
        CompressionAlgorithm::Zstd,
        CompressionAlgorithm::Br,
        CompressionAlgorithm::Gzip,
    ]
}

fn default_min_bytes() -> u64 {
    1024
}

fn default_content_types() -> Vec<String> {
    [
        "text/*",
        "application/json",
        "application/javascript",
        "application/xml",
        "application/wasm",
        "image/svg+xml",
    ]
    .map(String::from)
    .to_vec()
}

fn default_level() -> u32 {
    5
}
