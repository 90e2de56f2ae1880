//! `sni_must_match_connect`: the first TLS record in a CONNECT tunnel must
//! name the CONNECT host, else the tunnel is closed before anything
//! reaches the destination (a [`Tap`] relaying to a TLS server that would
//! accept either name, so only the gateway can stop it).

use gateway_tests::{TestCa, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

struct Setup {
    eg: Egress,
    ca: TestCa,
    tls: Upstream,
    tap: Tap,
}

async fn setup() -> Setup {
    let ca = TestCa::new("egress partner CA");
    // The server would happily serve other.test too.
    let tls = Upstream::echo_tls("partner-tls", &ca.issue(&[PARTNER, "other.test"]));
    let tap = Tap::start("127.0.0.1:0".parse().unwrap(), TapMode::Relay(tls.addr()))
        .await
        .expect("bind tap");
    let eg = Egress::start(
        Some(&ca),
        r#"
egress:
  sni_must_match_connect: true
  dns: {static: {api.partner.test: 127.0.0.1, other.test: 127.0.0.1}}
  rules:
    - {name: partner-tls, hosts: [api.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &tap.port())],
    );
    Setup { eg, ca, tls, tap }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sni_mismatch_is_refused_before_any_byte_reaches_the_destination() {
    let Setup { eg, ca, tls, tap } = setup().await;
    let port = tap.port();
    let authority = format!("{PARTNER}:{port}");

    // 1. Raw client: CONNECT api.partner.test, then a ClientHello for other.test.
    let tunnel = open_tunnel(&eg, &authority, &[]).await;
    let got = https_over_tunnel(tunnel, &ca, "other.test", "other.test", "/mismatch").await;
    assert!(
        got.is_err(),
        "CONNECT {authority} + TLS SNI other.test must be cut by the gateway, but the exchange completed: {got:?}"
    );

    // 2. curl --connect-to: the CONNECT names api.partner.test, the TLS
    // handshake names other.test.
    let url = format!("https://other.test:{port}/curl-mismatch");
    let connect_to = format!("other.test:{port}:{PARTNER}:{port}");
    let run = curl(
        &[
            "-v",
            "-x",
            &eg.proxy_url(),
            "--connect-to",
            &connect_to,
            "--cacert",
            "ca.pem",
            "-o",
            "/dev/null",
            "-w",
            "%{http_connect} %{http_code}",
            &url,
        ],
        &[],
        eg.dir(),
    )
    .await;
    assert!(
        run.stderr
            .contains(&format!("CONNECT {authority} HTTP/1.1")),
        "curl --connect-to must send `CONNECT {authority}`; curl stderr:\n{}",
        run.stderr
    );
    assert!(
        run.code != Some(0) && run.stdout == "200 000",
        "curl: the CONNECT succeeds (200) but the TLS handshake naming other.test must fail; exit {:?}, -w {:?}, stderr:\n{}",
        run.code,
        run.stdout,
        tail(&run.stderr, 15)
    );

    // 3. Not TLS at all: the tunnel closes without relaying the bytes.
    let mut tunnel = open_tunnel(&eg, &authority, &[]).await;
    tunnel
        .write_all(format!("GET / HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .expect("write plaintext into the tunnel");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(IO_LIMIT, tunnel.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "plaintext in a CONNECT tunnel with sni_must_match_connect: the tunnel must close without an answer, got {read:?} / {:?}",
        String::from_utf8_lossy(&buf)
    );

    assert_eq!(
        tap.bytes_in(),
        0,
        "not a byte of a refused tunnel may reach the destination"
    );
    assert_eq!(tls.count(), 0, "no request may reach the TLS server");
    eg.assert_requests("deny", "partner-tls", 3.0).await;
    let lines = eg.expect_lines(3, "deny lines of the refused tunnels", |v| {
        v["decision"] == "deny" && v["host"] == PARTNER
    });
    let mismatches = lines
        .iter()
        .filter(|l| {
            l["reason"].as_str().is_some_and(|r| {
                r.contains("other.test")
                    && r.contains(&format!("does not match CONNECT host {PARTNER}"))
            })
        })
        .count();
    assert_eq!(
        mismatches, 2,
        "two lines must name the mismatched server name: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l["reason"]
            .as_str()
            .is_some_and(|r| r.contains("did not start with a TLS ClientHello"))),
        "the plaintext tunnel's line must say it was not TLS: {lines:?}"
    );

    // 4. A matching server name works, raw and with curl.
    let tunnel = open_tunnel(&eg, &authority, &[]).await;
    let (status, body) = https_over_tunnel(tunnel, &ca, PARTNER, PARTNER, "/match")
        .await
        .unwrap_or_else(|e| panic!("CONNECT {authority} + SNI {PARTNER}: {e}\n{}", eg.stderr()));
    assert!(status.contains(" 200 "), "matching SNI: {status} {body:?}");
    assert!(
        body.contains("\"path\":\"/match\""),
        "matching SNI: echo body {body:?}"
    );
    let run = curl(
        &[
            "-x",
            &eg.proxy_url(),
            "--cacert",
            "ca.pem",
            &format!("https://{authority}/curl-match"),
        ],
        &[],
        eg.dir(),
    )
    .await;
    assert!(
        run.code == Some(0) && run.stdout.contains("\"path\":\"/curl-match\""),
        "curl with matching SNI must get the echo: exit {:?}, stdout {:?}, stderr {}",
        run.code,
        run.stdout,
        run.stderr
    );
    assert!(
        tap.bytes_in() > 0,
        "the matching tunnels reached the destination"
    );
    assert_eq!(tls.count(), 2);
    eg.assert_requests("allow", "partner-tls", 2.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_sni_mismatch_opens_no_connection_to_the_destination() {
    let Setup { eg, ca, tap, .. } = setup().await;
    let authority = format!("{PARTNER}:{}", tap.port());
    let tunnel = open_tunnel(&eg, &authority, &[]).await;
    let got = https_over_tunnel(tunnel, &ca, "other.test", "other.test", "/").await;
    assert!(
        got.is_err(),
        "SNI other.test in CONNECT {authority} must be cut: {got:?}"
    );
    // Let a late dial show up.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        tap.accepted(),
        0,
        "a tunnel refused for its SNI must not have opened a TCP connection to the destination"
    );
}
