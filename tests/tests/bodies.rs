//! Request and response bodies pass through intact (SHA-256 compared), with
//! fixed Content-Length and chunked transfer encoding.

use futures_util::StreamExt;
use gateway_tests::{
    http_client, pseudo_random_bytes, sha256_hex, url, Gateway, Upstream, DOWNLOAD_SEED,
};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

fn start(up: &Upstream) -> (Gateway, u16) {
    let gw = Gateway::builder()
        .cluster("up", &[up], "")
        .route("{name: all, cluster: up}")
        .start();
    let port = gw.port();
    (gw, port)
}

async fn post_and_check(port: u16, size: usize, seed: u64, chunked: bool) {
    let data = pseudo_random_bytes(size, seed);
    let want_sha = sha256_hex(&data);
    let body = gateway_tests::upload_body(data, chunked);
    let resp = http_client()
        .post(url(port, "/upload"))
        .body(body)
        .send()
        .await
        .expect("upload through the gateway");
    let kind = if chunked { "chunked" } else { "Content-Length" };
    assert_eq!(
        resp.status(),
        200,
        "{kind} upload of {size} bytes should succeed"
    );
    let doc: serde_json::Value = resp.json().await.expect("echo JSON");
    assert_eq!(
        doc["body_len"], size as u64,
        "{kind} upload: upstream should receive all {size} bytes"
    );
    assert_eq!(
        doc["body_sha256"], want_sha,
        "{kind} upload of {size} bytes: upstream SHA-256 should equal the sent body's"
    );
    if !chunked {
        assert_eq!(
            doc["headers"]["content-length"][0],
            size.to_string(),
            "upstream should see the client's Content-Length"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_with_content_length() {
    let echo = Upstream::echo();
    let (_gw, port) = start(&echo);
    post_and_check(port, MIB, 1, false).await;
    post_and_check(port, 20 * MIB, 2, false).await;
    assert_eq!(echo.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_chunked() {
    let echo = Upstream::echo();
    let (_gw, port) = start(&echo);
    post_and_check(port, MIB, 3, true).await;
    post_and_check(port, 20 * MIB, 4, true).await;
    assert_eq!(echo.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_20_mib_streams_intact() {
    let size = 20 * MIB;
    let up = Upstream::big_download(size as u64);
    let (gw, _) = start(&up);
    let want = sha256_hex(&pseudo_random_bytes(size, DOWNLOAD_SEED));
    let resp = gw.get("/download").await;
    assert_eq!(resp.status(), 200);
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("download chunk");
        len += chunk.len();
        hasher.update(&chunk);
    }
    let got: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        len, size,
        "downloaded length should equal the upstream's {size} bytes"
    );
    assert_eq!(
        got, want,
        "downloaded SHA-256 should equal the upstream body's"
    );
}
