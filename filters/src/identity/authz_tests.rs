//! Authorization (`crate::authz`): the allow/deny matrix and config shapes.

use crate::authz::*;
use crate::identity::Identity;
use crate::identity::{JwtAlgorithm, SpiffeId, VerifiedJwt};
use serde_json::json;
use serde_json::Value;

const WEB: &str = "spiffe://cluster-b.example/ns/shop/sa/web";
const ADMIN: &str = "spiffe://cluster-b.example/ns/ops/sa/admin";
const A_WEB: &str = "spiffe://cluster-a.example/ns/shop/sa/web";
const ISS: &str = "https://issuer.cluster-b.example";

fn mtls(id: &str) -> Identity {
    Identity::from_mtls(SpiffeId::parse(id).unwrap())
}

fn token(sub: &str, claims: Value) -> VerifiedJwt {
    let mut all = json!({"iss": ISS, "sub": sub});
    if let (Value::Object(a), Value::Object(extra)) = (&mut all, claims) {
        a.extend(extra);
    }
    VerifiedJwt {
        issuer: ISS.into(),
        subject: sub.into(),
        trust_domain: "cluster-b.example".into(),
        algorithm: JwtAlgorithm::RS256,
        kid: None,
        claims: all.as_object().cloned().unwrap_or_default(),
    }
}

fn compile(yaml: &str) -> CompiledAuthz {
    let cfg: AuthzConfig = serde_yaml::from_str(yaml).unwrap();
    CompiledAuthz::compile(&cfg).unwrap()
}

fn decide(a: &CompiledAuthz, id: Option<&Identity>, method: &str, path: &str) -> Decision {
    a.evaluate(&AuthzRequest {
        identity: id,
        method,
        path,
    })
}

#[test]
fn no_rules_allow_everyone() {
    let a = compile("{}");
    assert_eq!(decide(&a, None, "GET", "/"), Decision::Allow { rule: None });
    let required = compile("{jwt: required}");
    let d = decide(&required, Some(&mtls(WEB)), "GET", "/");
    assert_eq!(
        (d, d.status()),
        (Decision::Unauthenticated { jwt_required: true }, Some(401))
    );
    let with_jwt = Identity::from_jwt(token("u", json!({})));
    assert!(decide(&required, Some(&with_jwt), "GET", "/").is_allowed());
}

#[test]
fn allow_deny_matrix() {
    let a = compile(
        r#"
        deny:
          - {principal: "spiffe://cluster-b.example/ns/ops/*", path_prefix: /orders/admin}
          - {path_prefix: /internal}
          - claims: {tenant: evil}
        allow:
          - {principal: "spiffe://cluster-b.example/ns/shop/sa/*", methods: [get, POST]}
          - {trust_domain: cluster-b.example, path_prefixes: [/orders/admin, /health]}
          - principals: ["https://issuer.cluster-b.example#*"]
            claims: {scope: {contains: "orders:read"}, groups: staff}
        "#,
    );
    let web = mtls(WEB);
    let admin = mtls(ADMIN);
    let other_td = mtls(A_WEB);
    let reader = Identity::from_jwt(token(
        "u1",
        json!({"scope": "orders:read x", "groups": ["staff", "b"]}),
    ));
    let no_scope = Identity::from_jwt(token(
        "u2",
        json!({"scope": "orders:write", "groups": ["staff"]}),
    ));
    let evil = Identity::from_jwt(token(
        "u3",
        json!({"scope": ["orders:read"], "groups": "staff", "tenant": "evil"}),
    ));
    use Decision::*;
    let cases: Vec<(Option<&Identity>, &str, &str, Decision)> = vec![
        (Some(&web), "GET", "/orders/1", Allow { rule: Some(0) }),
        (Some(&web), "post", "/orders", Allow { rule: Some(0) }),
        (
            Some(&web),
            "DELETE",
            "/orders/1",
            Forbidden { deny_rule: None },
        ),
        (Some(&web), "DELETE", "/health", Allow { rule: Some(1) }),
        (
            Some(&web),
            "GET",
            "/internal/x",
            Forbidden { deny_rule: Some(1) },
        ),
        (
            Some(&admin),
            "GET",
            "/orders/admin/x",
            Forbidden { deny_rule: Some(0) },
        ),
        (Some(&admin), "GET", "/health", Allow { rule: Some(1) }),
        (
            Some(&admin),
            "GET",
            "/orders/1",
            Forbidden { deny_rule: None },
        ),
        (
            Some(&other_td),
            "GET",
            "/orders/1",
            Forbidden { deny_rule: None },
        ),
        (
            Some(&other_td),
            "GET",
            "/health",
            Forbidden { deny_rule: None },
        ),
        (
            Some(&reader),
            "DELETE",
            "/anything",
            Allow { rule: Some(2) },
        ),
        (Some(&reader), "GET", "/health", Allow { rule: Some(1) }),
        (
            Some(&no_scope),
            "GET",
            "/orders/1",
            Forbidden { deny_rule: None },
        ),
        (
            Some(&evil),
            "GET",
            "/orders/1",
            Forbidden { deny_rule: Some(2) },
        ),
        (
            None,
            "GET",
            "/orders/1",
            Unauthenticated {
                jwt_required: false,
            },
        ),
        (None, "GET", "/internal?x", Forbidden { deny_rule: Some(1) }),
        (
            None,
            "GET",
            "/health",
            Unauthenticated {
                jwt_required: false,
            },
        ),
    ];
    for (i, (id, method, path, want)) in cases.into_iter().enumerate() {
        let got = decide(&a, id, method, path);
        assert_eq!(got, want, "case {i}: {method} {path}");
        assert_eq!(got.status(), want.status());
    }
    assert_eq!(
        Forbidden { deny_rule: Some(1) }.reason(),
        "denied by deny[1]"
    );
    assert_eq!(Allow { rule: Some(2) }.reason(), "allowed by allow[2]");
}

#[test]
fn both_principals_and_claim_operators() {
    let a = compile(
        r#"
        allow:
          - {principal: "https://issuer.cluster-b.example#alice", method: GET}
          - {principal: "*", path_prefix: /public}
          - claims: {email_verified: true, level: {equals: 3}, roles: {contains: admin, equals: admin}}
        "#,
    );
    let peer = SpiffeId::parse(A_WEB).unwrap();
    let alice = Identity::new(Some(peer.clone()), Some(token("alice", json!({})))).unwrap();
    assert_eq!(
        decide(&a, Some(&alice), "GET", "/x"),
        Decision::Allow { rule: Some(0) }
    );
    let bob = Identity::new(Some(peer), Some(token("bob", json!({})))).unwrap();
    assert_eq!(
        decide(&a, Some(&bob), "GET", "/x"),
        Decision::Forbidden { deny_rule: None }
    );
    assert_eq!(
        decide(&a, Some(&bob), "GET", "/public/a"),
        Decision::Allow { rule: Some(1) }
    );
    assert!(!decide(&a, None, "GET", "/public/a").is_allowed());

    let claims = |c: Value| Identity::from_jwt(token("c", c));
    let ok = claims(json!({"email_verified": true, "level": 3, "roles": ["admin", "x"]}));
    assert_eq!(
        decide(&a, Some(&ok), "GET", "/x"),
        Decision::Allow { rule: Some(2) }
    );
    for bad in [
        json!({"email_verified": "true", "level": 3, "roles": ["admin"]}),
        json!({"email_verified": true, "level": 4, "roles": ["admin"]}),
        json!({"email_verified": true, "level": 3, "roles": "admin x"}),
        json!({"email_verified": true, "level": 3, "roles": ["administrator"]}),
        json!({"level": 3, "roles": ["admin"]}),
    ] {
        assert!(
            !decide(&a, Some(&claims(bad.clone())), "GET", "/x").is_allowed(),
            "{bad}"
        );
    }
}

#[test]
fn config_shapes_and_errors() {
    let cfg: AuthzConfig = serde_yaml::from_str(
        "{allow: [{principals: [a, 'b*'], trust_domains: td, methods: GET, path_prefixes: [/a]}]}",
    )
    .unwrap();
    assert_eq!(cfg.allow[0].trust_domains, ["td"]);
    let back: AuthzConfig = serde_yaml::from_str(&serde_yaml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(back, cfg);
    for bad in [
        "{allow: [{prinicpal: a}]}",
        "{jwt: maybe}",
        "{allow: [{methods: 1}]}",
        "{nope: []}",
    ] {
        assert!(serde_yaml::from_str::<AuthzConfig>(bad).is_err(), "{bad}");
    }
    let cfg: AuthzConfig = serde_yaml::from_str(
        r#"
        allow:
          - {principal: "spiffe://a/*/b", trust_domain: "Bad.Example", method: "GE T", path_prefix: orders}
        deny:
          - {principal: "", claims: {scope: {}, x: {contain: y}}}
        "#,
    )
    .unwrap();
    let errs = CompiledAuthz::compile(&cfg).unwrap_err();
    assert_eq!(errs.len(), 7, "{errs:#?}");
    assert!(errs[0].starts_with("allow[0].principals: "), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.starts_with("deny[0].claims: `x`")),
        "{errs:?}"
    );
}

#[test]
fn json_schemas_generate() {
    let authz = serde_json::to_value(schemars::schema_for!(AuthzConfig)).unwrap();
    assert!(authz.to_string().contains("path_prefixes"));
    let issuer =
        serde_json::to_value(schemars::schema_for!(crate::identity::JwtIssuerConfig)).unwrap();
    let required = issuer["required"].as_array().unwrap();
    assert!(required.contains(&json!("issuer")) && required.contains(&json!("audiences")));
    assert_eq!(issuer["additionalProperties"], json!(false));
}
