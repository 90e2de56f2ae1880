//! Parsing and validation of the rate-limit configuration.

use super::*;

fn rules(yaml: &str) -> Result<Vec<RuleConfig>, String> {
    serde_yaml::from_str(yaml).map_err(|e| e.to_string())
}

#[test]
fn the_documented_yaml_parses() {
    let r = rules(
        r#"
- {name: per-ip, key: client_ip, rate: 100/s, burst: 200}
- {name: per-user, key: "jwt:sub", rate: 1000/m, scope: fleet, on_store_error: local}
- {name: per-tenant, key: ["header:X-Tenant", "route"], rate: 50/s, shadow: true}
- {key: principal, rate: 5000/h}
"#,
    )
    .unwrap();
    assert_eq!(r[0].burst, Some(200));
    assert_eq!(r[0].key, KeySpec::One(KeySource::ClientIp));
    assert_eq!(
        (r[1].scope, r[1].on_store_error),
        (Scope::Fleet, Some(OnStoreError::Local))
    );
    assert_eq!(r[1].rate.interval(), std::time::Duration::from_millis(60));
    assert_eq!(
        r[2].key,
        KeySpec::All(vec![KeySource::Header("x-tenant".into()), KeySource::Route])
    );
    assert!(r[2].shadow);
    assert_eq!(r[3].rate.to_string(), "5000/h");

    let limits = RouteRateLimits::compile(&r, None).unwrap();
    let names: Vec<_> = limits.rules().iter().map(|r| r.name()).collect();
    assert_eq!(names, ["per-ip", "per-user", "per-tenant", "principal"]);
    assert_eq!(
        limits.rules()[2].burst(),
        50,
        "burst defaults to the rate's count"
    );
    assert!(limits.has_fleet_rules());

    // Round trip through serde keeps the meaning.
    let back: Vec<RuleConfig> = rules(&serde_yaml::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
}

#[test]
fn parse_errors_say_what_is_wrong() {
    let cases = [
        ("- {key: client_ip, rate: 100/d}", "unknown unit `d`"),
        ("- {key: client_ip, rate: 0/s}", "greater than zero"),
        ("- {key: client_ip, rate: 2000000/s}", "too high"),
        ("- {key: ip, rate: 1/s}", "unknown key `ip`"),
        (
            "- {key: \"header:bad header\", rate: 1/s}",
            "not a valid header name",
        ),
        ("- {key: \"jwt:\", rate: 1/s}", "names no claim"),
        (
            "- {key: client_ip, rate: 1/s, brust: 3}",
            "unknown field `brust`",
        ),
        (
            "- {key: client_ip, rate: 1/s, scope: global}",
            "unknown variant `global`",
        ),
        (
            "- {key: client_ip, rate: 1/s, scope: fleet, on_store_error: {fallback_local: true}}",
            "on_store_error",
        ),
    ];
    for (yaml, want) in cases {
        let err = rules(yaml).unwrap_err();
        assert!(err.contains(want), "{yaml}: {err}");
    }
}

#[test]
fn compile_reports_every_problem() {
    let r = rules(
        r#"
- {name: "bad\tname", key: [client_ip, client_ip], rate: 1/s, burst: 0, on_store_error: deny, max_keys: 0}
"#,
    )
    .unwrap();
    let errors = CompiledRule::compile(&r[0]).unwrap_err();
    let all = errors.join("\n");
    for want in [
        "printable ASCII",
        "listed twice",
        "burst must be",
        "max_keys",
        "scope: fleet",
    ] {
        assert!(all.contains(want), "missing `{want}` in:\n{all}");
    }
    assert_eq!(errors.len(), 5, "{all}");

    let dup = rules("- {key: client_ip, rate: 1/s}\n- {key: client_ip, rate: 5/m}").unwrap();
    let errors = RouteRateLimits::compile(&dup, None).unwrap_err();
    assert!(
        errors[0].contains("two rules are named `client_ip`"),
        "{errors:?}"
    );

    let empty = rules("- {key: [], rate: 1/s, name: x}").unwrap();
    assert!(CompiledRule::compile(&empty[0]).unwrap_err()[0].contains("lists no source"));
}

#[test]
fn store_config_parses_with_defaults() {
    let s: StoreConfig = serde_yaml::from_str("{redis: \"redis://127.0.0.1:6379\"}").unwrap();
    assert_eq!(s.timeout(), DEFAULT_STORE_TIMEOUT);
    assert_eq!(s.connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(s.key_prefix(), "gateway:rl:");
    assert!(s.validate().is_empty());
    let s: StoreConfig =
        serde_yaml::from_str("{redis: \"redis://h:1\", store_timeout: 20ms, key_prefix: \"x:\"}")
            .unwrap();
    assert_eq!(s.timeout(), std::time::Duration::from_millis(20));
    assert_eq!(s.key_prefix(), "x:");
    let bad = StoreConfig {
        timeout: Some(crate::units::Duration(std::time::Duration::ZERO)),
        ..StoreConfig::new("http://nope")
    };
    assert_eq!(bad.validate().len(), 2, "{:?}", bad.validate());
    assert!(serde_yaml::from_str::<StoreConfig>("{redis: x, timeout: 5}").is_err());
}

#[test]
fn schema_documents_every_field() {
    let schema = serde_json::to_value(schemars::schema_for!(RuleConfig)).unwrap();
    let props = schema["properties"].as_object().unwrap();
    for field in [
        "name",
        "key",
        "rate",
        "burst",
        "shadow",
        "scope",
        "on_store_error",
        "max_keys",
    ] {
        let p = &props[field];
        let described = p.get("description").is_some();
        assert!(described, "field `{field}` has no description: {p}");
    }
    assert_eq!(schema["additionalProperties"], false);
    let store = serde_json::to_value(schemars::schema_for!(StoreConfig)).unwrap();
    assert!(store["properties"]["timeout"].get("description").is_some());
}
