use std::net::IpAddr;

use super::*;

const CONFIG: &str = r#"
caller_groups:
  - {name: functions, cidrs: [10.0.0.0/8, "fd00::/8"]}
  - {name: all, cidrs: ["0.0.0.0/0"]}
dns:
  static: {api.partner.test: 127.0.0.1, "*.mock.test": "::1", "*.deep.mock.test": 10.0.0.9, v6.test: "[::2]"}
rules:
  - {name: block-admin, hosts: admin.partner.test, action: deny}
  - {name: no-delete, hosts: "*.partner.test", methods: [DELETE], action: deny}
  - name: partner-api
    hosts: [api.partner.test, "*.partner.test"]
    ports: [443]
    principals: ["https://issuer.example#fn-billing", "spiffe://cluster-b.example/*", "cidr:functions"]
    allow_cidrs: [127.0.0.0/8]
  - name: reports
    hosts: reports.test
    methods: [get]
    path_prefixes: [/v1/]
    originate_tls: true
    ca: certs/ca.pem
  - {name: public, hosts: "*.public.test"}
  - {name: known-only, hosts: known.test, principals: "*"}
  - {name: local, hosts: [localhost, 127.0.0.1], ports: [8080], allow_cidrs: [127.0.0.0/8]}
  - {name: partner-8443, hosts: api.partner.test, ports: 8443, principals: "spiffe://other.example/*"}
"#;

const SPIFFE: &str = "spiffe://cluster-b.example/ns/fn/sa/billing";
const JWT: &str = "https://issuer.example#fn-billing";

fn compiled(yaml: &str) -> CompiledEgress {
    let cfg: EgressConfig = serde_yaml::from_str(yaml).unwrap();
    CompiledEgress::compile(&cfg).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn errors(yaml: &str) -> Vec<String> {
    let cfg: EgressConfig = serde_yaml::from_str(yaml).unwrap();
    CompiledEgress::compile(&cfg).unwrap_err()
}

fn principals(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn connect(e: &CompiledEgress, who: &[&str], host: &str, port: u16) -> EgressDecision {
    let p = principals(who);
    e.evaluate(&EgressRequest {
        principals: &p,
        host,
        port,
        method: None,
        path: None,
        kind: RequestKind::Connect,
    })
}

fn http(
    e: &CompiledEgress,
    who: &[&str],
    method: &str,
    host: &str,
    port: u16,
    path: &str,
) -> EgressDecision {
    let p = principals(who);
    e.evaluate(&EgressRequest {
        principals: &p,
        host,
        port,
        method: Some(method),
        path: Some(path),
        kind: RequestKind::PlainHttp,
    })
}

/// (allowed, status, rule, message of the reason or would_deny)
fn summary(d: &EgressDecision) -> (bool, Option<u16>, Option<&str>, Option<String>) {
    (
        d.allowed,
        d.status,
        d.rule.as_deref(),
        d.denial().map(ToString::to_string),
    )
}

fn allowed_by(rule: &str) -> (bool, Option<u16>, Option<&str>, Option<String>) {
    (true, None, Some(rule), None)
}

fn refused<'a>(
    status: u16,
    rule: Option<&'a str>,
    msg: &str,
) -> (bool, Option<u16>, Option<&'a str>, Option<String>) {
    (false, Some(status), rule, Some(msg.to_string()))
}

#[test]
fn the_documented_example_compiles() {
    let e = compiled(
        r#"
audit_only: false
require_credentials: false
sni_must_match_connect: true
caller_groups:
  - {name: functions, cidrs: [10.0.0.0/8, "127.0.0.0/8"]}
dns:
  static: {api.partner.test: 127.0.0.1, "*.mock.test": "::1"}
rules:
  - name: partner-api
    hosts: [api.partner.test, "*.partner.test"]
    ports: [443]
    principals: ["https://issuer.example#fn-billing", "spiffe://cluster-b.example/*", "cidr:functions"]
    methods: [GET]
    path_prefixes: [/v1/]
    action: allow
    allow_cidrs: [127.0.0.0/8]
    originate_tls: false
    ca: certs/partner-ca.pem
"#
        .replace("    ca: certs/partner-ca.pem\n", "")
        .as_str(),
    );
    assert!(e.sni_must_match_connect());
    assert!(!e.audit_only() && !e.require_credentials());
    assert_eq!(e.observed_max_entries(), 10_000);
    // Method and path rules do not match tunnels but do match plain HTTP.
    let d = connect(&e, &[JWT], "api.partner.test", 443);
    assert_eq!(d.denial().unwrap().code(), "tunnel");
    let d = http(&e, &[JWT], "GET", "api.partner.test", 443, "/v1/x");
    assert_eq!(summary(&d), allowed_by("partner-api"));
}

#[test]
fn decisions() {
    let e = compiled(CONFIG);
    let cases = [
        (
            connect(&e, &[SPIFFE], "api.partner.test", 443),
            allowed_by("partner-api"),
        ),
        (
            connect(&e, &[SPIFFE], "API.Partner.Test.", 443),
            allowed_by("partner-api"),
        ),
        (
            connect(&e, &["cidr:functions"], "x.partner.test", 443),
            allowed_by("partner-api"),
        ),
        (
            connect(
                &e,
                &["spiffe://other.example/a", JWT],
                "a.b.partner.test",
                443,
            ),
            allowed_by("partner-api"),
        ),
        (
            connect(&e, &[SPIFFE], "api.partner.test", 9443),
            refused(403, None, "port 9443 not allowed for host api.partner.test"),
        ),
        (
            connect(&e, &[], "api.partner.test", 443),
            refused(
                407,
                None,
                "unknown caller not allowed for host api.partner.test",
            ),
        ),
        (
            connect(&e, &["cidr:all"], "api.partner.test", 443),
            refused(
                407,
                None,
                "principal cidr:all not allowed for host api.partner.test",
            ),
        ),
        (
            connect(&e, &["spiffe://other.example/a"], "api.partner.test", 443),
            refused(
                403,
                None,
                "principal spiffe://other.example/a not allowed for host api.partner.test",
            ),
        ),
        // The port-8443 rule gets further for SPIFFE (host, port) than
        // partner-api (host): its principal is what fails.
        (
            connect(&e, &[SPIFFE], "api.partner.test", 8443),
            refused(
                403,
                None,
                &format!("principal {SPIFFE} not allowed for host api.partner.test"),
            ),
        ),
        (
            connect(&e, &["spiffe://other.example/a"], "api.partner.test", 8443),
            allowed_by("partner-8443"),
        ),
        (
            connect(&e, &[SPIFFE], "admin.partner.test", 443),
            refused(403, Some("block-admin"), "denied by rule block-admin"),
        ),
        (
            connect(&e, &[], "admin.partner.test", 8443),
            refused(403, Some("block-admin"), "denied by rule block-admin"),
        ),
        (
            connect(&e, &[SPIFFE], "admin.partner.test", 22),
            refused(403, Some("block-admin"), "denied by rule block-admin"),
        ),
        (
            http(&e, &[SPIFFE], "DELETE", "x.partner.test", 443, "/"),
            refused(403, Some("no-delete"), "denied by rule no-delete"),
        ),
        (
            http(&e, &[SPIFFE], "delete", "x.partner.test", 443, "/"),
            refused(403, Some("no-delete"), "denied by rule no-delete"),
        ),
        // A deny rule with methods does not apply to a tunnel.
        (
            connect(&e, &[SPIFFE], "x.partner.test", 443),
            allowed_by("partner-api"),
        ),
        (
            connect(&e, &[SPIFFE], "reports.test", 443),
            refused(
                403,
                None,
                "CONNECT to reports.test not allowed: rule reports checks the HTTP request; \
                 send plain HTTP through the proxy",
            ),
        ),
        (
            http(&e, &[], "GET", "reports.test", 80, "/v1/x?q=1"),
            allowed_by("reports"),
        ),
        (
            http(&e, &[], "GET", "reports.test", 443, "/v1/"),
            allowed_by("reports"),
        ),
        (
            http(&e, &[], "GET", "reports.test", 8080, "/v1/"),
            refused(403, None, "port 8080 not allowed for host reports.test"),
        ),
        (
            http(&e, &[], "POST", "reports.test", 80, "/v1/x"),
            refused(403, None, "method POST not allowed for host reports.test"),
        ),
        (
            http(&e, &[], "GET", "reports.test", 80, "/v2/x"),
            refused(403, None, "path /v2/x not allowed for host reports.test"),
        ),
        (
            http(&e, &[], "GET", "reports.test", 80, "/v1?x=/v1/"),
            refused(403, None, "path /v1 not allowed for host reports.test"),
        ),
        (
            connect(&e, &[SPIFFE], "evil.test", 443),
            refused(403, None, "host evil.test not allowed"),
        ),
        (
            connect(&e, &[SPIFFE], "partner.test", 443),
            refused(403, None, "host partner.test not allowed"),
        ),
        (
            connect(&e, &[SPIFFE], "api.partner.test.evil", 443),
            refused(403, None, "host api.partner.test.evil not allowed"),
        ),
        (connect(&e, &[], "a.public.test", 80), allowed_by("public")),
        (
            http(&e, &[], "PATCH", "a.public.test", 80, "/x"),
            allowed_by("public"),
        ),
        (
            connect(&e, &[], "a.public.test", 22),
            refused(403, None, "port 22 not allowed for host a.public.test"),
        ),
        (
            connect(&e, &["cidr:functions"], "known.test", 443),
            refused(
                407,
                None,
                "principal cidr:functions not allowed for host known.test",
            ),
        ),
        (
            connect(&e, &[JWT], "known.test", 443),
            allowed_by("known-only"),
        ),
        (connect(&e, &[], "0x7f.1", 8080), allowed_by("local")),
        (connect(&e, &[], "2130706433", 8080), allowed_by("local")),
        (
            connect(&e, &[], "[::ffff:127.0.0.1]", 8080),
            allowed_by("local"),
        ),
        (connect(&e, &[], "LOCALHOST", 8080), allowed_by("local")),
        (
            connect(&e, &[], "127.0.0.2", 8080),
            refused(403, None, "host 127.0.0.2 not allowed"),
        ),
        (
            connect(&e, &[], "a b", 443),
            refused(400, None, "invalid host \"a b\""),
        ),
        (
            connect(&e, &[], "1.2.3.256", 443),
            refused(400, None, "invalid host \"1.2.3.256\""),
        ),
        (
            connect(&e, &[], "", 443),
            refused(400, None, "invalid host \"\""),
        ),
    ];
    for (i, (got, want)) in cases.iter().enumerate() {
        assert_eq!(summary(got), *want, "case {i}: {got:?}");
        assert_eq!(got.reason.is_some(), !got.allowed, "case {i}");
        assert!(got.would_deny.is_none(), "case {i}");
        let outcome = if got.allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        };
        assert_eq!(got.outcome(), outcome, "case {i}");
    }
}

#[test]
fn connection_settings() {
    let e = compiled(CONFIG);
    let d = http(&e, &[], "GET", "reports.test", 80, "/v1/x");
    assert!(d.originate_tls);
    assert_eq!(d.upstream_port, 443);
    assert_eq!(d.ca.as_deref(), Some("certs/ca.pem"));
    assert!(d.allow_cidrs.is_empty());
    let d = http(&e, &[], "GET", "reports.test", 443, "/v1/x");
    assert_eq!(d.upstream_port, 443);
    let d = connect(&e, &[SPIFFE], "api.partner.test", 443);
    assert!(!d.originate_tls);
    assert_eq!(d.upstream_port, 443);
    assert_eq!(d.ca, None);
    assert_eq!(d.allow_cidrs.len(), 1);
    assert_eq!(
        ssrf::check("127.0.0.1".parse().unwrap(), &d.allow_cidrs),
        Ok(())
    );
    let d = connect(&e, &[], "a.public.test", 80);
    assert_eq!(d.upstream_port, 80);
    assert!(d.allow_cidrs.is_empty());
    let d = connect(&e, &[], "evil.test", 443);
    assert!(!d.originate_tls && d.allow_cidrs.is_empty() && d.ca.is_none());
}

#[test]
fn first_allow_rule_wins() {
    let e = compiled(
        r#"
rules:
  - {name: first, hosts: "*.test", allow_cidrs: 10.0.0.0/8}
  - {name: second, hosts: a.test, allow_cidrs: 127.0.0.0/8}
"#,
    );
    let d = connect(&e, &[], "a.test", 443);
    assert_eq!(d.rule.as_deref(), Some("first"));
    assert_eq!(d.allow_cidrs[0].to_string(), "10.0.0.0/8");
}

#[test]
fn no_rules_denies_everything() {
    let e = compiled("{}");
    assert_eq!(
        summary(&connect(&e, &[JWT], "a.test", 443)),
        refused(403, None, "host a.test not allowed")
    );
}

#[test]
fn audit_only_lets_would_be_denials_through() {
    let e = compiled(&format!("audit_only: true\n{CONFIG}"));
    let d = connect(&e, &[], "api.partner.test", 443);
    assert!(d.allowed);
    assert_eq!(d.status, Some(407));
    assert_eq!(d.reason, None);
    assert_eq!(d.outcome(), Outcome::AuditDeny);
    assert_eq!(
        d.would_deny,
        Some(DenyReason::PrincipalNotAllowed {
            host: "api.partner.test".into(),
            principal: None
        })
    );
    // A deny rule names itself; the matching allow rule gives the settings.
    let d = http(&e, &[SPIFFE], "DELETE", "api.partner.test", 443, "/");
    assert_eq!(
        summary(&d),
        (
            true,
            Some(403),
            Some("no-delete"),
            Some("denied by rule no-delete".into())
        )
    );
    assert_eq!(d.allow_cidrs.len(), 1);
    // Allowed requests are unchanged; invalid hosts are still refused.
    assert_eq!(
        summary(&connect(&e, &[SPIFFE], "api.partner.test", 443)),
        allowed_by("partner-api")
    );
    let d = connect(&e, &[], "a b", 443);
    assert!(!d.allowed);
    assert_eq!(d.outcome(), Outcome::Deny);
}

#[test]
fn require_credentials() {
    let yaml = format!("require_credentials: true\n{CONFIG}");
    let e = compiled(&yaml);
    for who in [&[][..], &["cidr:functions"][..]] {
        assert_eq!(
            summary(&connect(&e, who, "a.public.test", 443)),
            refused(407, None, "proxy credentials required"),
            "{who:?}"
        );
    }
    assert_eq!(
        summary(&connect(&e, &[JWT], "a.public.test", 443)),
        allowed_by("public")
    );
    let e = compiled(&format!("audit_only: true\n{yaml}"));
    let d = connect(&e, &[], "a.public.test", 443);
    assert!(d.allowed);
    assert_eq!(d.would_deny, Some(DenyReason::CredentialsRequired));
    assert_eq!(d.status, Some(407));
}

#[test]
fn late_refusals() {
    let e = compiled(CONFIG);
    let mut d = connect(&e, &[SPIFFE], "api.partner.test", 443);
    let sni = DenyReason::SniMismatch {
        host: "api.partner.test".into(),
        sni: Some("evil.test".into()),
    };
    d.refuse(sni.clone(), 403, true);
    assert!(d.allowed);
    assert_eq!(d.outcome(), Outcome::AuditDeny);
    assert_eq!(
        d.denial().unwrap().to_string(),
        "TLS server name evil.test does not match CONNECT host api.partner.test"
    );
    let blocked = DenyReason::BlockedAddress {
        host: "api.partner.test".into(),
        ip: "10.0.0.1".parse().unwrap(),
        range: BlockedRange::Private,
    };
    d.refuse(blocked.clone(), 403, false);
    assert!(!d.allowed);
    assert_eq!(d.reason, Some(blocked.clone()));
    assert_eq!(d.would_deny, None);
    assert_eq!(d.outcome(), Outcome::Deny);
    assert_eq!(
        blocked.to_string(),
        "host api.partner.test resolved to 10.0.0.1, a private address"
    );
    // The first refusal stays.
    d.refuse(sni, 403, false);
    assert_eq!(
        d.reason.as_ref().map(DenyReason::code),
        Some("blocked_address")
    );
    let none = DenyReason::SniMismatch {
        host: "a.test".into(),
        sni: None,
    };
    assert_eq!(
        none.to_string(),
        "CONNECT to a.test: the tunnel did not start with a TLS ClientHello naming it"
    );
}

#[test]
fn caller_groups() {
    let e = compiled(CONFIG);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(e.caller_group(ip("10.1.2.3")), Some("functions"));
    assert_eq!(e.caller_group(ip("::ffff:10.1.2.3")), Some("functions"));
    assert_eq!(e.caller_group(ip("fd00::1")), Some("functions"));
    assert_eq!(e.caller_group(ip("8.8.8.8")), Some("all"));
    assert_eq!(e.caller_group(ip("2001:db8::1")), None);
    assert_eq!(
        e.caller_group_principals(ip("10.1.2.3"))
            .collect::<Vec<_>>(),
        ["cidr:functions", "cidr:all"]
    );
    assert_eq!(e.caller_group_principals(ip("::1")).count(), 0);
}

#[test]
fn static_dns() {
    let e = compiled(CONFIG);
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    assert_eq!(e.resolve_static("api.partner.test"), ip("127.0.0.1"));
    assert_eq!(e.resolve_static("API.partner.test."), ip("127.0.0.1"));
    assert_eq!(e.resolve_static("x.api.partner.test"), None);
    assert_eq!(e.resolve_static("a.mock.test"), ip("::1"));
    assert_eq!(e.resolve_static("a.b.mock.test"), ip("::1"));
    assert_eq!(e.resolve_static("a.deep.mock.test"), ip("10.0.0.9"));
    assert_eq!(e.resolve_static("deep.mock.test"), ip("::1"));
    assert_eq!(e.resolve_static("mock.test"), None);
    assert_eq!(e.resolve_static("127.0.0.1"), None);
    assert_eq!(e.resolve_static("nothing.test"), None);
    assert_eq!(e.resolve_static("v6.test"), ip("::2"));
    assert_eq!(e.resolve_static("a b"), None);
}

#[test]
fn reports_every_problem_at_once() {
    let errs = errors(
        r#"
caller_groups:
  - {name: g, cidrs: [10.0.0.1/8, nonsense]}
  - {name: g, cidrs: []}
  - {name: "a*", cidrs: 10.0.0.0/8}
dns:
  static: {"bad name": 1.2.3.4, ok.test: not-an-ip, "*": 1.1.1.1, A.test: 1.1.1.1, a.test.: 1.1.1.2, 10.0.0.1: 1.1.1.1}
rules:
  - {name: dup, hosts: []}
  - {name: dup, hosts: ["a.*.test", "x.test:443"], ports: [0, 443]}
  - {name: "", hosts: x.test, ports: []}
  - {name: p, hosts: x.test, principals: []}
  - {name: q, hosts: x.test, principals: ["", "a*b", "cidr:nope", "cidr:g", "cidr:*"]}
  - {name: m, hosts: x.test, methods: ["GET", "G E", "connect"], path_prefixes: [v1]}
  - {name: d, hosts: x.test, action: deny, allow_cidrs: [10.0.0.0/8], originate_tls: true, ca: x.pem}
  - {name: c, hosts: x.test, ca: x.pem, allow_cidrs: [bad]}
  - {name: e, hosts: x.test, originate_tls: true, ca: ""}
"#,
    );
    let want = [
        "caller_groups[0].cidrs: `10.0.0.1/8` has host bits set (did you mean `10.0.0.0/8`?)",
        "caller_groups[0].cidrs: `nonsense` is not an IP address",
        "caller_groups[1].name: duplicate group name `g`",
        "caller_groups[1].cidrs: at least one CIDR",
        "caller_groups[2].name: 1-64 printable ASCII characters, no spaces or `*`",
        "dns.static.*: a name or `*.suffix`, not an address or `*`",
        "dns.static.10.0.0.1: a name or `*.suffix`, not an address or `*`",
        "dns.static.a.test.: given twice (names are case-insensitive)",
        "dns.static.bad name: `bad name` is not a valid host name or address",
        "dns.static.ok.test: `not-an-ip` is not an IP address",
        "rules[0].hosts: at least one host",
        "rules[1].name: duplicate rule name `dup`",
        "rules[1].hosts: `a.*.test`: a wildcard is only allowed as a leading `*.`",
        "rules[1].hosts: `x.test:443`: give the port in `ports`",
        "rules[1].ports: port 0 is not a destination port",
        "rules[2].name: 1-64 printable ASCII characters, no spaces",
        "rules[2].ports: at least one port (or omit `ports`)",
        "rules[3].principals: an empty list matches nobody; omit `principals` to match every caller",
        "rules[4].principals: ``: use an exact value or one trailing `*`",
        "rules[4].principals: `a*b`: use an exact value or one trailing `*`",
        "rules[4].principals: `cidr:nope`: no caller group `nope`",
        "rules[5].methods: `G E` is not an HTTP method",
        "rules[5].methods: `CONNECT` is not a method here: a rule without methods or paths matches CONNECT",
        "rules[5].path_prefixes: `v1` must start with `/`",
        "rules[6].allow_cidrs: only for `allow` rules",
        "rules[6].originate_tls: only for `allow` rules",
        "rules[6].ca: only for `allow` rules",
        "rules[7].ca: only with `originate_tls: true`",
        "rules[7].allow_cidrs: `bad` is not an IP address",
        "rules[8].ca: an empty path",
    ];
    assert_eq!(errs, want);
}

#[test]
fn reason_codes_and_messages() {
    let host = || "h.test".to_string();
    let rule: std::sync::Arc<str> = "r".into();
    let all = [
        (DenyReason::InvalidHost { host: "a b".into() }, "invalid_host", "invalid host \"a b\""),
        (DenyReason::CredentialsRequired, "credentials_required", "proxy credentials required"),
        (DenyReason::HostNotAllowed { host: host() }, "host", "host h.test not allowed"),
        (
            DenyReason::PortNotAllowed { host: host(), port: 8443 },
            "port",
            "port 8443 not allowed for host h.test",
        ),
        (
            DenyReason::PrincipalNotAllowed { host: host(), principal: Some("p".into()) },
            "principal",
            "principal p not allowed for host h.test",
        ),
        (
            DenyReason::MethodNotAllowed { host: host(), method: "POST".into() },
            "method",
            "method POST not allowed for host h.test",
        ),
        (
            DenyReason::PathNotAllowed { host: host(), path: "/x".into() },
            "path",
            "path /x not allowed for host h.test",
        ),
        (DenyReason::DeniedByRule { rule: rule.clone() }, "deny_rule", "denied by rule r"),
        (
            DenyReason::TunnelNotAllowed { host: host(), rule },
            "tunnel",
            "CONNECT to h.test not allowed: rule r checks the HTTP request; send plain HTTP through the proxy",
        ),
    ];
    for (reason, code, msg) in all {
        assert_eq!(reason.code(), code);
        assert_eq!(reason.to_string(), msg);
    }
    assert_eq!(Outcome::AuditDeny.as_str(), "audit_deny");
    assert_eq!(
        serde_json::to_string(&Outcome::AuditDeny).unwrap(),
        "\"audit_deny\""
    );
}
