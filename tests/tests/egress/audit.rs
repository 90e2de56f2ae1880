//! `audit_only`, admin `GET /egress/observed`, and the egress access log.

use gateway_tests::Upstream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_only_lets_would_be_denials_through_and_records_them() {
    let up = Upstream::big_download(BIG as u64);
    let port = up.port();
    // `partner-freeze` would deny every request to the partner; the allow
    // rule supplies the loopback `allow_cidrs` the audited request uses.
    let (eg, key) = Egress::for_functions(
        None,
        r#"
egress:
  audit_only: true
  dns: {static: {api.partner.test: 127.0.0.1}}
  rules:
    - {name: partner-http, hosts: [api.partner.test], ports: [${port}], allow_cidrs: [127.0.0.0/8]}
    - {name: partner-freeze, hosts: [api.partner.test], action: deny}
"#,
        &[("port", &port)],
    );
    let url = format!("http://{PARTNER}:{port}/big");
    let proxy = eg.proxy_url();
    // Twice anonymously (curl), once as fn-b (reqwest).
    for i in 0..2 {
        let d = curl_download(&["-x", &proxy, &url], &[], eg.dir(), "big.bin").await;
        d.assert_big(&eg, "200 000", &format!("audit_only, would-be denial #{i}"));
    }
    let client = proxied_client(&proxy, None, Some(&fn_token(&key, "fn-b")));
    let (status, _, len, sha) = reqwest_download(&eg, &client, &url).await;
    assert_eq!(status, 200, "audit_only, fn-b: must be let through");
    assert_big(len, &sha, "audit_only, fn-b");
    assert_eq!(
        up.count(),
        3,
        "all three audited requests reach the upstream"
    );

    eg.assert_requests("audit_deny", "partner-freeze", 3.0)
        .await;
    eg.assert_requests("deny", "partner-freeze", 0.0).await;
    eg.assert_requests("allow", "partner-http", 0.0).await;

    // The access log says why each would have been refused.
    let lines = eg.expect_lines(3, "audit_deny access-log lines", |v| {
        v["decision"] == "audit_deny"
    });
    for l in &lines {
        assert_eq!(l["host"], PARTNER, "{l}");
        assert_eq!(l["port"], port, "{l}");
        assert_eq!(l["rule"], "partner-freeze", "{l}");
        assert_eq!(l["status"], 200, "{l}");
        assert_eq!(l["bytes_down"], BIG as u64, "{l}");
        assert!(
            l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("denied by rule partner-freeze")),
            "the reason it would have been refused: {l}"
        );
    }

    // Admin /egress/observed lists both callers.
    let (code, body) = eg.gw.admin_get("/egress/observed").await;
    assert_eq!(code, 200, "GET /egress/observed: {body}");
    let doc: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("/egress/observed is not JSON ({e}): {body}"));
    assert!(
        doc["max_entries"].as_u64().is_some_and(|n| n > 0),
        "max_entries: {doc}"
    );
    assert_eq!(doc["overflow"], 0, "overflow: {doc}");
    let entries = doc["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("entries: {doc}"));
    let find = |principal: &str| {
        entries
            .iter()
            .find(|e| e["principal"] == principal && e["host"] == PARTNER && e["port"] == port)
            .unwrap_or_else(|| {
                panic!("/egress/observed has no entry for {principal} -> {PARTNER}:{port}: {doc:#}")
            })
    };
    for (principal, count) in [("-", 2), (FN_B, 1)] {
        let e = find(principal);
        assert_eq!(e["decision"], "audit_deny", "{e}");
        assert_eq!(e["count"], count, "{principal}: {e}");
        let (first, last) = (e["first_seen"].as_u64(), e["last_seen"].as_u64());
        assert!(
            first.is_some() && first <= last,
            "first_seen <= last_seen (epoch seconds): {e}"
        );
    }
    let counts: Vec<u64> = entries.iter().filter_map(|e| e["count"].as_u64()).collect();
    assert!(
        counts.windows(2).all(|w| w[0] >= w[1]),
        "entries must be most frequent first: {counts:?}"
    );

    // SSRF protection is not audited away: an unlisted loopback target is
    // still refused and never reached.
    let authority = format!("127.0.0.1:{port}");
    let r = raw_exchange(
        eg.addr(),
        &absolute_get(&format!("http://{authority}/"), &authority, &[]),
    )
    .await
    .expect("loopback literal in audit_only");
    assert_refused(
        &eg,
        "audit_only, http://127.0.0.1",
        &r,
        403,
        &["loopback address"],
    );
    assert_eq!(
        up.count(),
        3,
        "the SSRF refusal must not reach the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_egress_line_per_request() {
    let up = Upstream::named("api");
    let port = up.port();
    let (eg, key) = Egress::for_functions(
        None,
        r#"
egress:
  dns: {static: {api.partner.test: 127.0.0.1}}
  rules:
    - {name: partner-http, hosts: [api.partner.test], ports: [${port}], principals: ["https://issuer.fn.example#fn-a"], allow_cidrs: [127.0.0.0/8]}
"#,
        &[("port", &port)],
    );
    let url = format!("http://{PARTNER}:{port}/upload");
    let auth_a = format!("Proxy-Authorization: Bearer {}", fn_token(&key, "fn-a"));
    let auth_b = format!("Proxy-Authorization: Bearer {}", fn_token(&key, "fn-b"));
    let payload = "x".repeat(1000);
    let ok = curl_exchange(
        &eg,
        &[
            "-x",
            &eg.proxy_url(),
            "--proxy-header",
            &auth_a,
            "--data-binary",
            &payload,
            &url,
        ],
    )
    .await;
    assert_eq!(ok.status, 200, "fn-a upload: {:?}", ok.body);
    let no = curl_exchange(
        &eg,
        &["-x", &eg.proxy_url(), "--proxy-header", &auth_b, &url],
    )
    .await;
    assert_eq!(no.status, 403, "fn-b: {:?}", no.body);

    let allow = eg.egress_lines(1, |v| v["decision"] == "allow");
    let deny = eg.egress_lines(1, |v| v["decision"] == "deny");
    assert_eq!(
        (allow.len(), deny.len()),
        (1, 1),
        "one egress line per request expected; egress lines:\n{}",
        eg.egress_log()
    );
    let (a, d) = (&allow[0], &deny[0]);
    for (l, principal) in [(a, FN_A), (d, FN_B)] {
        assert_eq!(l["kind"], "egress", "{l}");
        assert_eq!(l["principal"], principal, "{l}");
        assert_eq!(l["host"], PARTNER, "{l}");
        assert_eq!(l["port"], port, "{l}");
        assert_eq!(l["listener"], "egress", "{l}");
        assert!(l["duration_ms"].is_number(), "duration_ms: {l}");
        assert!(
            l["bytes_up"].is_u64() && l["bytes_down"].is_u64(),
            "byte counts: {l}"
        );
    }
    assert_eq!(a["rule"], "partner-http", "{a}");
    assert_eq!(a["status"], 200, "{a}");
    assert_eq!(a["bytes_up"], 1000, "bytes_up is the request body: {a}");
    assert!(
        a["reason"].is_null(),
        "an allowed request has no reason: {a}"
    );
    assert_eq!(d["rule"], "none", "{d}");
    assert_eq!(d["status"], 403, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains(&format!("principal {FN_B}"))),
        "the deny line names the reason: {d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observed_table_honours_observed_max_entries() {
    let eg = Egress::start(
        None,
        r#"
egress:
  observed_max_entries: 2
  rules:
    - {name: nothing, hosts: [nothing.partner.test], ports: [443]}
"#,
        &[],
    );
    for host in ["one.test", "two.test", "three.test"] {
        let authority = format!("{host}:80");
        let r = raw_exchange(
            eg.addr(),
            &absolute_get(&format!("http://{authority}/"), &authority, &[]),
        )
        .await
        .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(r.status, 403, "{host}: {:?}", r.body);
    }
    // The access-log line is written after the observed table is updated.
    eg.expect_lines(3, "deny lines", |v| v["decision"] == "deny");
    let (code, body) = eg.gw.admin_get("/egress/observed").await;
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).expect("observed JSON");
    assert_eq!(
        (
            doc["max_entries"].as_u64(),
            doc["entries"].as_array().map(Vec::len),
            doc["overflow"].as_u64()
        ),
        (Some(2), Some(2), Some(1)),
        "with observed_max_entries: 2, three distinct destinations keep two entries and overflow one: {doc:#}"
    );
}
