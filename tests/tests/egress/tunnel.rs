//! CONNECT tunnels pass half-closes on, both ways: raw TCP destinations
//! (`sni_must_match_connect: false`) that only answer after EOF, or that
//! close their side first and keep reading.

use std::time::Duration;

use gateway_tests::pseudo_random_bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

async fn start(mode: TapMode) -> (Egress, Tap) {
    let tap = Tap::start("127.0.0.1:0".parse().unwrap(), mode)
        .await
        .expect("bind tap");
    let eg = Egress::start(
        None,
        r#"
egress:
  sni_must_match_connect: false
  dns: {static: {echo.partner.test: 127.0.0.1}}
  rules:
    - {name: raw-tcp, hosts: [echo.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &tap.port())],
    );
    (eg, tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_passes_the_callers_half_close_and_the_answer_comes_back() {
    let (eg, tap) = start(TapMode::AnswerAfterEof).await;
    let authority = format!("echo.partner.test:{}", tap.port());
    let payload = pseudo_random_bytes(256 * 1024, 7);
    let tunnel = open_tunnel(&eg, &authority, &[]).await;
    let (mut rd, mut wr) = tunnel.into_split();
    tokio::time::timeout(IO_LIMIT, wr.write_all(&payload))
        .await
        .expect("write into the tunnel timed out")
        .expect("write into the tunnel");
    wr.shutdown().await.expect("shut down the write side");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(IO_LIMIT, rd.read_to_end(&mut answer)).await;
    let want = eof_answer(&payload);
    assert!(
        tap.saw_eof(),
        "the destination must see EOF after the caller's half-close (it got {} of {} bytes); read result {read:?}\n{}",
        tap.received().len(),
        payload.len(),
        eg.stderr()
    );
    assert!(
        matches!(read, Ok(Ok(_))),
        "after its half-close the caller must still read the answer to EOF, got {read:?} with {:?}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        String::from_utf8_lossy(&answer),
        want,
        "the answer sent after the destination saw EOF must reach the half-closed caller intact"
    );
    drop(wr);
    let lines = eg.expect_lines(1, "one audit line per tunnel", |v| v["method"] == "CONNECT");
    let l = &lines[0];
    assert_eq!(l["decision"], "allow", "{l}");
    assert_eq!(l["rule"], "raw-tcp", "{l}");
    assert_eq!(l["bytes_up"], payload.len() as u64, "bytes_up: {l}");
    assert_eq!(l["bytes_down"], want.len() as u64, "bytes_down: {l}");
    assert!(
        l["note"].is_null(),
        "the tunnel ended by both closes, not cut: {l}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_passes_the_destinations_half_close_and_the_caller_can_still_send() {
    let greeting = b"hello from the destination, which is done writing\n".to_vec();
    let (eg, tap) = start(TapMode::GreetThenRead(greeting.clone())).await;
    let authority = format!("echo.partner.test:{}", tap.port());
    let tunnel = open_tunnel(&eg, &authority, &[]).await;
    let (mut rd, mut wr) = tunnel.into_split();
    // The destination's half-close arrives as EOF.
    let mut got = Vec::new();
    let read = tokio::time::timeout(IO_LIMIT, rd.read_to_end(&mut got)).await;
    assert!(
        matches!(read, Ok(Ok(_))),
        "the destination's half-close must reach the caller as EOF, got {read:?} after {:?}\n{}",
        String::from_utf8_lossy(&got),
        eg.stderr()
    );
    assert_eq!(got, greeting, "the greeting must arrive before the EOF");
    // The caller's direction still works.
    let payload = pseudo_random_bytes(128 * 1024, 11);
    tokio::time::timeout(IO_LIMIT, wr.write_all(&payload))
        .await
        .expect("write after the destination's half-close timed out")
        .expect("write after the destination's half-close");
    wr.shutdown().await.expect("shut down the write side");
    assert!(
        tap.wait_eof(Duration::from_secs(10)).await,
        "the destination must receive the caller's bytes and EOF after it half-closed (got {} bytes)",
        tap.received().len()
    );
    assert_eq!(
        tap.received().len(),
        payload.len(),
        "every byte sent after the destination's half-close must arrive"
    );
    assert_eq!(tap.received(), payload, "bytes intact");
}
