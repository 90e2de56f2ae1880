//! Response compression (`routes[].compression`): real `curl` clients
//! asking for gzip, br and zstd, the bodies decoded by curl and by strict
//! decoders (curl's brotli decoder accepts an unfinished stream), the
//! responses that must pass unchanged, q-values, `Vary`, and the metric.

use std::io::Read;
use std::path::Path;

use gateway_tests::{curl, Gateway, Reply, Upstream};

/// About 1 MiB of text: many times the module's buffers, so the answer
/// is streamed through the compressor in pieces.
fn big_text() -> String {
    let mut s = String::with_capacity(1 << 20);
    let mut i = 0u64;
    while s.len() < 1 << 20 {
        s.push_str(&format!(
            "line {i}: the quick brown fox jumps over the lazy dog {}\n",
            i * 7919 % 1000
        ));
        i += 1;
    }
    s
}

/// The upstream's answer for each test path.
fn answer(path: &str, big: &str) -> Reply {
    let text = |body: &str| Reply::text(200, body.to_string());
    match path {
        "/big" | "/plain/big" => text(big),
        "/small" => text("short answer, under min_bytes\n"),
        "/json" => Reply::status(200)
            .header("content-type", "application/json; charset=utf-8")
            .body(big[..8192].to_string()),
        "/png" => Reply::status(200)
            .header("content-type", "image/png")
            .body(big[..8192].to_string()),
        "/no-transform" => text(big).header("cache-control", "public, no-transform"),
        "/encoded" => Reply::status(200)
            .header("content-type", "text/plain")
            .header("content-encoding", "gzip")
            .body(big[..4096].to_string()),
        "/range" => Reply::status(206)
            .header("content-type", "text/plain")
            .header("content-range", "bytes 0-4095/1048576")
            .body(big[..4096].to_string()),
        _ => Reply::status(404),
    }
}

/// What curl saw: headers (names lowercase), the body as written (decoded
/// when `--compressed`), and the bytes on the wire.
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    wire_bytes: u64,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn varies_on_accept_encoding(&self) -> bool {
        self.headers.iter().any(|(k, v)| {
            k == "vary"
                && v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    }
}

/// `curl ARGS URL`, the headers and body kept in files of `dir`.
fn fetch(dir: &Path, url: &str, args: &[&str]) -> Seen {
    let heads = dir.join("heads.txt");
    let body = dir.join("body.bin");
    let mut all = vec![
        "-D",
        heads.to_str().expect("path"),
        "-o",
        body.to_str().expect("path"),
        "-w",
        "%{size_download}",
    ];
    all.extend_from_slice(args);
    all.push(url);
    let out = curl(&all, dir);
    assert_eq!(out.code, Some(0), "curl {args:?} {url}: {}", out.stderr);
    let text = std::fs::read_to_string(&heads).expect("headers file");
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        status,
        headers,
        body: std::fs::read(&body).expect("body file"),
        wire_bytes: out.stdout.trim().parse().expect("size_download"),
    }
}

/// `body` decoded from `coding` by a decoder that refuses a truncated or
/// unfinished stream.
fn decode_strictly(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => {
            flate2::read::GzDecoder::new(body)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "br" => brotli::BrotliDecompress(&mut &body[..], &mut out).expect("finished brotli stream"),
        "zstd" => out = zstd::stream::decode_all(body).expect("valid zstd"),
        other => panic!("unexpected coding {other}"),
    }
    out
}

fn gateway(up: &Upstream) -> Gateway {
    Gateway::builder()
        .cluster("web", &[up], "")
        .route("{name: plain, cluster: web, match: {path_prefix: /plain}}")
        .route(
            "{name: web, cluster: web, compression: {algorithms: [zstd, br, gzip], min_bytes: 1024, \
             content_types: [text/*, application/json], level: 5}}",
        )
        .start()
}

fn upstream() -> (Upstream, String) {
    let big = big_text();
    let b = big.clone();
    let up = Upstream::start("web", move |req| answer(&req.path, &b));
    (up, big)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_each_coding_and_it_decodes_to_the_upstream_bytes() {
    let (up, big) = upstream();
    let gw = gateway(&up);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = gw.url("/big");
    // curl's own offer (`deflate, gzip, br, zstd`): the route's first choice.
    let seen = fetch(dir.path(), &url, &["--compressed"]);
    assert_eq!(seen.status, 200);
    assert_eq!(seen.header("content-encoding"), Some("zstd"));
    assert!(
        seen.body == big.as_bytes(),
        "curl --compressed: body differs"
    );
    for (ask, coding) in [("gzip", "gzip"), ("br", "br"), ("zstd", "zstd")] {
        let h = format!("accept-encoding: {ask}");
        // As sent: decoded here, strictly.
        let raw = fetch(dir.path(), &url, &["-H", &h]);
        assert_eq!(raw.header("content-encoding"), Some(coding), "{ask}");
        assert!(
            decode_strictly(coding, &raw.body) == big.as_bytes(),
            "{ask}: strictly decoded body differs"
        );
        // And decoded by curl.
        let seen = fetch(dir.path(), &url, &["--compressed", "-H", &h]);
        assert_eq!(seen.status, 200, "{ask}");
        assert_eq!(seen.header("content-encoding"), Some(coding), "{ask}");
        assert!(
            seen.varies_on_accept_encoding(),
            "{ask}: {:?}",
            seen.headers
        );
        assert_eq!(seen.header("content-length"), None, "{ask}: streamed");
        assert!(
            seen.body == big.as_bytes(),
            "{ask}: decoded body differs ({} bytes, want {})",
            seen.body.len(),
            big.len()
        );
        assert!(
            seen.wire_bytes * 4 < big.len() as u64,
            "{ask}: {} bytes on the wire for {}",
            seen.wire_bytes,
            big.len()
        );
    }
    // HTTP/2 (h2c) is served by Pingora's own proxy on both engines: the
    // same module, the same codings.
    for coding in ["gzip", "br", "zstd"] {
        let h = format!("accept-encoding: {coding}");
        let raw = fetch(dir.path(), &url, &["--http2-prior-knowledge", "-H", &h]);
        assert_eq!(raw.header("content-encoding"), Some(coding), "h2 {coding}");
        assert!(
            decode_strictly(coding, &raw.body) == big.as_bytes(),
            "h2 {coding}: strictly decoded body differs"
        );
    }
    // A media type with parameters still matches.
    let seen = fetch(
        dir.path(),
        &gw.url("/json"),
        &["--compressed", "-H", "accept-encoding: gzip"],
    );
    assert_eq!(seen.header("content-encoding"), Some("gzip"));
    assert_eq!(seen.body, big.as_bytes()[..8192]);
    gw.metric(
        "gateway_compressed_responses_total",
        &[("route", "web"), ("algorithm", "gzip")],
    )
    .eventually(|v| v >= 2.0)
    .await;
    gw.metric(
        "gateway_compressed_responses_total",
        &[("route", "web"), ("algorithm", "zstd")],
    )
    .eventually(|v| v >= 2.0)
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_must_not_be_compressed_pass_unchanged() {
    let (up, big) = upstream();
    let gw = gateway(&up);
    let dir = tempfile::tempdir().expect("tempdir");
    let ask = ["-H", "accept-encoding: gzip, br, zstd"];
    let cases: [(&str, &[u8]); 4] = [
        ("/small", b"short answer, under min_bytes\n"),
        ("/png", &big.as_bytes()[..8192]),
        ("/no-transform", big.as_bytes()),
        ("/plain/big", big.as_bytes()),
    ];
    for (path, want) in cases {
        let seen = fetch(dir.path(), &gw.url(path), &ask);
        assert_eq!(seen.status, 200, "{path}");
        assert_eq!(seen.header("content-encoding"), None, "{path}");
        assert_eq!(
            seen.header("content-length"),
            Some(want.len().to_string().as_str()),
            "{path}"
        );
        assert!(seen.body == want, "{path}: body changed");
    }
    // Already encoded: the upstream's coding and bytes, untouched (curl
    // does not decode without --compressed).
    let seen = fetch(dir.path(), &gw.url("/encoded"), &ask);
    assert_eq!(seen.header("content-encoding"), Some("gzip"));
    assert!(seen.body == big.as_bytes()[..4096]);
    // A range answer keeps its offsets.
    let seen = fetch(
        dir.path(),
        &gw.url("/range"),
        &["-H", "accept-encoding: gzip", "-H", "range: bytes=0-4095"],
    );
    assert_eq!(seen.status, 206);
    assert_eq!(seen.header("content-encoding"), None);
    assert_eq!(seen.header("content-range"), Some("bytes 0-4095/1048576"));
    assert!(seen.body == big.as_bytes()[..4096]);
    // HEAD: no body, nothing to encode.
    let seen = fetch(
        dir.path(),
        &gw.url("/big"),
        &["-I", "-H", "accept-encoding: gzip"],
    );
    assert_eq!(seen.header("content-encoding"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_values_decide_and_identity_gets_none() {
    let (up, big) = upstream();
    let gw = gateway(&up);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = gw.url("/big");
    let cases = [
        ("gzip;q=1, br;q=0", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        ("br;q=0.4, gzip;q=0.9", Some("gzip")),
        ("zstd;q=0.2, br;q=0.8, gzip;q=0.5", Some("br")),
        ("*;q=0.5, zstd;q=0", Some("br")),
        ("identity", None),
        ("gzip;q=0, br;q=0, zstd;q=0", None),
    ];
    for (accept, want) in cases {
        let h = format!("accept-encoding: {accept}");
        let seen = fetch(dir.path(), &url, &["--compressed", "-H", &h]);
        assert_eq!(seen.header("content-encoding"), want, "{accept}");
        // Compressed or not, the answer depends on Accept-Encoding.
        assert!(
            seen.varies_on_accept_encoding(),
            "{accept}: {:?}",
            seen.headers
        );
        assert!(seen.body == big.as_bytes(), "{accept}: body differs");
    }
    // No Accept-Encoding at all: nothing compressed.
    let seen = fetch(dir.path(), &url, &[]);
    assert_eq!(seen.header("content-encoding"), None);
    assert!(seen.body == big.as_bytes());
}

#[test]
fn bad_compression_settings_are_refused_with_their_position() {
    let up = Upstream::named("web");
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "admin: {{listen: \"127.0.0.1:{}\"}}\nlisteners:\n  - {{name: public, listen: \"127.0.0.1:{}\"}}\n\
         clusters:\n  - {{name: web, endpoints: [{{address: \"{}\"}}]}}\n\
         routes:\n  - name: web\n    cluster: web\n    compression:\n      level: 12\n      content_types: [image/png]\n",
        gateway_tests::free_port(),
        gateway_tests::free_port(),
        up.address()
    );
    std::fs::write(dir.path().join("gateway.yaml"), yaml).expect("write config");
    let out = gateway_tests::run_gateway(
        &["validate", "-c", "gateway.yaml"],
        dir.path(),
        std::time::Duration::from_secs(20),
    );
    assert_ne!(out.code(), Some(0), "{}", out.stdout);
    let all = format!("{}{}", out.stdout, out.stderr);
    let line = |n: usize, what: &str| {
        all.lines()
            .any(|l| l.starts_with(&format!("gateway.yaml:{n}:")) && l.contains(what))
    };
    assert!(line(10, "12 is not a level from 1 to 9"), "{all}");
    assert!(line(11, "image/png"), "{all}");
}
