//! Route matching (host, path, methods, headers, query, order), direct
//! responses, rewrites, header edits and weighted backends.

use std::collections::BTreeSet;

use gateway_tests::{fire, http_client, three_sigma, tpl, url, Gateway, Reply, Upstream};
use reqwest::header::HeaderMap;
use serde_json::Value;

/// What a client got back.
struct Got {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Got {
    /// The `x-upstream` header (which test upstream answered).
    fn upstream(&self) -> Option<&str> {
        self.headers.get("x-upstream").and_then(|v| v.to_str().ok())
    }

    /// The echo document.
    fn echo(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("expected an echo JSON body ({e}), got: {}", self.body))
    }
}

async fn send(req: reqwest::RequestBuilder) -> Got {
    let resp = req.send().await.expect("request to the gateway");
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().await.expect("response body"),
    }
}

/// GET `path` on the gateway with an explicit `Host` header.
async fn get_host(port: u16, host: &str, path: &str) -> Got {
    send(http_client().get(url(port, path)).header("host", host)).await
}

fn assert_no_route(got: &Got, what: &str) {
    assert_eq!(
        (got.status, got.body.as_str()),
        (404, "no route matched\n"),
        "expected 404 `no route matched` for {what}"
    );
}

/// Asserts that `got` is the echo of `path` unchanged when `routed`, else
/// the 404 of no route; `what` names the request.
fn assert_routed(got: &Got, routed: bool, path: &str, what: &str) {
    if !routed {
        return assert_no_route(got, what);
    }
    assert_eq!(got.status, 200, "expected {what} to be routed");
    assert_eq!(
        got.echo()["path"],
        path,
        "upstream should see the path `{path}` unchanged ({what})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_exact_and_wildcard() {
    let exact = Upstream::named("exact");
    let wild = Upstream::named("wild");
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: exact, endpoints: [{address: "${exact}"}]}
  - {name: wild, endpoints: [{address: "${wild}"}]}
routes:
  - {name: exact, match: {host: api.example.com}, cluster: exact}
  - {name: wild, match: {host: "*.example.com"}, cluster: wild}
"#,
            &[("exact", &exact.address()), ("wild", &wild.address())],
        ))
        .start();
    let port = gw.port();

    for (host, want) in [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8080", "exact"),
        ("foo.example.com", "wild"),
        ("www.example.com:443", "wild"),
    ] {
        let got = get_host(port, host, "/").await;
        assert_eq!(got.status, 200, "Host `{host}` should be routed");
        assert_eq!(
            got.upstream(),
            Some(want),
            "Host `{host}` should go to upstream `{want}`"
        );
    }
    for host in [
        "example.com",
        "fooexample.com",
        "example.org",
        "api.example.com.evil",
    ] {
        assert_no_route(&get_host(port, host, "/").await, &format!("Host `{host}`"));
    }
    assert_eq!(
        exact.count(),
        3,
        "exact upstream saw the 3 exact-host requests"
    );
    assert_eq!(
        wild.count(),
        2,
        "wildcard upstream saw the 2 wildcard requests"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_exact_prefix_and_regex() {
    let p_exact = Upstream::named("p-exact");
    let p_prefix = Upstream::named("p-prefix");
    let p_regex = Upstream::named("p-regex");
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: p-exact, endpoints: [{address: "${e}"}]}
  - {name: p-prefix, endpoints: [{address: "${p}"}]}
  - {name: p-regex, endpoints: [{address: "${r}"}]}
routes:
  - {name: p-exact, match: {path: /exact}, cluster: p-exact}
  - {name: p-prefix, match: {path_prefix: /pre}, cluster: p-prefix}
  - {name: p-regex, match: {path_regex: "/re/[0-9]+"}, cluster: p-regex}
"#,
            &[
                ("e", &p_exact.address()),
                ("p", &p_prefix.address()),
                ("r", &p_regex.address()),
            ],
        ))
        .start();
    let port = gw.port();
    let client = http_client();
    for (path, want) in [
        ("/exact", Some("p-exact")),
        ("/exact?x=1", Some("p-exact")),
        ("/exact/more", None),
        ("/exactly", None),
        ("/pre", Some("p-prefix")),
        ("/pre/a/b?q=1", Some("p-prefix")),
        ("/prefix", Some("p-prefix")),
        ("/re/123", Some("p-regex")),
        ("/re/123?x=y", Some("p-regex")),
        ("/re/12a", None),
        ("/x/re/1", None),
        ("/", None),
    ] {
        let got = send(client.get(url(port, path))).await;
        assert_routed(&got, want.is_some(), path, &format!("path `{path}`"));
        if let Some(up) = want {
            assert_eq!(
                got.upstream(),
                Some(up),
                "path `{path}` should go to `{up}`"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn methods_headers_and_query() {
    let echo = Upstream::echo();
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: echo, endpoints: [{address: "${echo}"}]}
routes:
  - {name: m, match: {path: /m, methods: [POST, PUT]}, cluster: echo}
  - {name: h-exact, match: {path: /h/exact, headers: {x-env: prod}}, cluster: echo}
  - {name: h-present, match: {path: /h/present, headers: {x-debug: {present: true}}}, cluster: echo}
  - {name: h-absent, match: {path: /h/absent, headers: {x-debug: {present: false}}}, cluster: echo}
  - {name: h-regex, match: {path: /h/regex, headers: {x-ver: {regex: "v[0-9]+"}}}, cluster: echo}
  - {name: q-exact, match: {path: /q/exact, query: {v: "1"}}, cluster: echo}
  - {name: q-present, match: {path: /q/present, query: {v: {present: true}}}, cluster: echo}
  - {name: q-absent, match: {path: /q/absent, query: {v: {present: false}}}, cluster: echo}
  - {name: q-regex, match: {path: /q/regex, query: {v: {regex: "[0-9]+"}}}, cluster: echo}
"#,
            &[("echo", &echo.address())],
        ))
        .start();
    let port = gw.port();
    let client = http_client();

    // Methods.
    for (method, routed) in [
        ("GET", false),
        ("POST", true),
        ("PUT", true),
        ("DELETE", false),
    ] {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let got = send(client.request(m, url(port, "/m"))).await;
        if routed {
            assert_eq!(
                got.status, 200,
                "{method} /m should match `methods: [POST, PUT]`"
            );
            assert_eq!(got.echo()["method"], method, "upstream should see {method}");
        } else {
            assert_no_route(&got, &format!("{method} /m with methods [POST, PUT]"));
        }
    }

    // Headers: (path, headers sent, should match).
    type HeaderCase<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let header_cases: &[HeaderCase] = &[
        ("/h/exact", &[("x-env", "prod")], true),
        ("/h/exact", &[("X-Env", "prod")], true),
        ("/h/exact", &[("x-env", "production")], false),
        ("/h/exact", &[("x-env", "pro")], false),
        ("/h/exact", &[], false),
        ("/h/present", &[("x-debug", "1")], true),
        ("/h/present", &[("x-other", "1")], false),
        ("/h/absent", &[], true),
        ("/h/absent", &[("x-debug", "1")], false),
        ("/h/regex", &[("x-ver", "v12")], true),
        ("/h/regex", &[("x-ver", "v12x")], false),
        ("/h/regex", &[("x-ver", "12")], false),
        ("/h/regex", &[], false),
    ];
    for (path, headers, routed) in header_cases {
        let mut req = client.get(url(port, path));
        for (k, v) in *headers {
            req = req.header(*k, *v);
        }
        let what = format!("GET {path} with headers {headers:?}");
        assert_routed(&send(req).await, *routed, path, &what);
    }

    // Query parameters: (path and query, should match).
    for (pq, routed) in [
        ("/q/exact?v=1", true),
        ("/q/exact?a=b&v=1", true),
        ("/q/exact?v=2", false),
        ("/q/exact?v=11", false),
        ("/q/exact", false),
        ("/q/present?v=x", true),
        ("/q/present?w=1", false),
        ("/q/present", false),
        ("/q/absent", true),
        ("/q/absent?w=1", true),
        ("/q/absent?v=1", false),
        ("/q/regex?v=123", true),
        ("/q/regex?v=12a", false),
        ("/q/regex?w=123", false),
    ] {
        let got = send(client.get(url(port, pq))).await;
        assert_routed(&got, routed, pq, &format!("`{pq}` (query condition)"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_route_wins() {
    let ups: Vec<Upstream> = ["first", "second", "third", "fourth", "fifth", "sixth"]
        .iter()
        .map(|n| Upstream::named(n))
        .collect();
    let gw = ups
        .iter()
        .fold(Gateway::builder(), |b, u| b.cluster(u.name(), &[u], ""))
        .routes_yaml(
            r#"
  - {name: broad-first, match: {path_prefix: /o}, cluster: first}
  - {name: narrow-second, match: {path_prefix: /o/x}, cluster: second}
  - {name: narrow-first, match: {path_prefix: /p/x}, cluster: third}
  - {name: broad-second, match: {path_prefix: /p}, cluster: fourth}
  - {name: same-a, match: {path: /same}, cluster: fifth}
  - {name: same-b, match: {path: /same}, cluster: sixth}
"#,
        )
        .start();
    let port = gw.port();
    for (path, want) in [
        ("/o/x/1", "first"),
        ("/o/y", "first"),
        ("/p/x/1", "third"),
        ("/p/y", "fourth"),
        ("/same", "fifth"),
    ] {
        let got = send(http_client().get(url(port, path))).await;
        assert_eq!(got.status, 200, "`{path}` should be routed");
        assert_eq!(
            got.upstream(),
            Some(want),
            "`{path}` matches several routes; the first in file order (`{want}`) must win"
        );
    }
    assert_eq!(
        ups[1].count(),
        0,
        "route listed after a broader match never wins"
    );
    assert_eq!(
        ups[5].count(),
        0,
        "the second of two identical routes never wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_response_and_no_match() {
    let gw = Gateway::builder()
        .yaml(
            r#"
routes:
  - name: teapot
    match: {path: /teapot}
    direct_response:
      status: 418
      body: "short and stout\n"
      headers: {content-type: text/plain, x-direct: "yes"}
  - name: empty
    match: {path: /empty}
    direct_response: {status: 204}
"#,
        )
        .start();
    let port = gw.port();
    let got = send(http_client().get(url(port, "/teapot"))).await;
    assert_eq!(got.status, 418, "direct_response status");
    assert_eq!(got.body, "short and stout\n", "direct_response body");
    assert_eq!(
        got.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/plain"[..]),
        "direct_response content-type header"
    );
    assert_eq!(
        got.headers.get("x-direct").map(|v| v.as_bytes()),
        Some(&b"yes"[..]),
        "direct_response custom header"
    );
    let got = send(http_client().get(url(port, "/empty"))).await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (204, ""),
        "empty direct_response"
    );

    assert_no_route(
        &send(http_client().get(url(port, "/nothing"))).await,
        "/nothing",
    );
    assert_no_route(
        &send(http_client().post(url(port, "/teapot/x")).body("x")).await,
        "POST /teapot/x",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_path_prefix_and_host() {
    let echo = Upstream::echo();
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: echo, endpoints: [{address: "${echo}"}]}
routes:
  - {name: api, match: {path_prefix: /api}, rewrite: {path_prefix: /v2}, cluster: echo}
  - {name: host, match: {path_prefix: /host}, rewrite: {host: internal.example}, cluster: echo}
"#,
            &[("echo", &echo.address())],
        ))
        .start();
    let port = gw.port();
    for (sent, want) in [
        ("/api/users?x=1", "/v2/users?x=1"),
        ("/api", "/v2"),
        ("/api/a/b", "/v2/a/b"),
    ] {
        let got = send(http_client().get(url(port, sent))).await;
        assert_eq!(got.status, 200, "{sent} should be routed");
        assert_eq!(
            got.echo()["path"],
            want,
            "rewrite /api -> /v2 should turn `{sent}` into `{want}`"
        );
    }
    let got = get_host(port, "public.example", "/host/x?y=2").await;
    assert_eq!(got.status, 200);
    let echo_doc = got.echo();
    assert_eq!(
        echo_doc["headers"]["host"][0], "internal.example",
        "rewrite.host should replace the Host header seen upstream"
    );
    assert_eq!(
        echo_doc["path"], "/host/x?y=2",
        "rewrite.host alone must not change the path"
    );
}

/// Splits every value of `name` on commas, so that `a, b` sent as one field or
/// as two fields compare equal.
fn values(doc: &Value, name: &str) -> BTreeSet<String> {
    doc["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_header_edits() {
    let echo = Upstream::echo();
    let shaped = Upstream::start("shaped", |_| {
        Reply::text(200, "shaped\n")
            .header("x-r-set", "old")
            .header("x-r-add", "orig")
            .header("x-r-remove", "gone")
            .header("x-r-keep", "kept")
    });
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: echo, endpoints: [{address: "${echo}"}]}
  - {name: shaped, endpoints: [{address: "${shaped}"}]}
routes:
  - name: req
    match: {path: /req}
    cluster: echo
    request_headers:
      set: {x-set: new, x-fresh: fresh}
      add: {x-add: added}
      remove: [x-remove]
  - name: resp
    match: {path: /resp}
    cluster: shaped
    response_headers:
      set: {x-r-set: new, x-r-fresh: fresh}
      add: {x-r-add: added}
      remove: [x-r-remove]
"#,
            &[("echo", &echo.address()), ("shaped", &shaped.address())],
        ))
        .start();
    let port = gw.port();

    let got = send(
        http_client()
            .get(url(port, "/req"))
            .header("x-set", "old")
            .header("x-add", "orig")
            .header("x-remove", "gone")
            .header("x-keep", "kept"),
    )
    .await;
    assert_eq!(got.status, 200);
    let doc = got.echo();
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(values(&doc, "x-set"), set(&["new"]), "set replaces x-set");
    assert_eq!(values(&doc, "x-fresh"), set(&["fresh"]), "set adds x-fresh");
    assert_eq!(
        values(&doc, "x-add"),
        set(&["orig", "added"]),
        "add appends to x-add and keeps the client's value"
    );
    assert!(
        doc["headers"].get("x-remove").is_none(),
        "remove drops x-remove before the upstream; upstream saw {doc}"
    );
    assert_eq!(
        values(&doc, "x-keep"),
        set(&["kept"]),
        "untouched header passes"
    );

    let got = send(http_client().get(url(port, "/resp"))).await;
    assert_eq!(got.status, 200);
    let all = |name: &str| -> BTreeSet<String> {
        got.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|s| s.split(','))
            .map(|s| s.trim().to_string())
            .collect()
    };
    assert_eq!(
        all("x-r-set"),
        set(&["new"]),
        "response set replaces x-r-set"
    );
    assert_eq!(
        all("x-r-fresh"),
        set(&["fresh"]),
        "response set adds x-r-fresh"
    );
    assert_eq!(
        all("x-r-add"),
        set(&["orig", "added"]),
        "response add appends to x-r-add"
    );
    assert!(
        all("x-r-remove").is_empty(),
        "response remove drops x-r-remove"
    );
    assert_eq!(
        all("x-r-keep"),
        set(&["kept"]),
        "untouched response header passes"
    );
    assert_eq!(got.body, "shaped\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_backends_split_90_10() {
    let big = Upstream::named("big");
    let small = Upstream::named("small");
    let gw = Gateway::builder()
        .yaml(&tpl(
            r#"
clusters:
  - {name: big, endpoints: [{address: "${big}"}]}
  - {name: small, endpoints: [{address: "${small}"}]}
routes:
  - name: split
    backends: [{cluster: big, weight: 90}, {cluster: small, weight: 10}]
"#,
            &[("big", &big.address()), ("small", &small.address())],
        ))
        .start();
    let port = gw.port();
    const N: usize = 2000;
    let seen = fire(port, "/split/", N, 8).await;
    let small_hits = seen.get("small").copied().unwrap_or(0);
    assert!(
        seen.keys().all(|up| up == "big" || up == "small"),
        "unexpected upstream among {seen:?}"
    );
    assert_eq!(
        big.count() + small.count(),
        N as u64,
        "every request reached exactly one backend"
    );
    assert_eq!(
        small.count(),
        small_hits,
        "response headers agree with counts"
    );
    let (mean, bound) = three_sigma(N as u64, 0.1);
    let got = small_hits as f64;
    assert!(
        (got - mean).abs() <= bound,
        "the weight-10 backend got {small_hits} of {N}; expected {mean} +/- {bound:.1} (3 sigma)"
    );
}
