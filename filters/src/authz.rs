//! Authorization per route: `allow` and `deny` rules over the caller's
//! [`Identity`] and the request.
//!
//! ```yaml
//! routes:
//!   - name: orders
//!     auth:                                   # an AuthzConfig
//!       jwt: required                         # optional (default) | required
//!       deny:
//!         - {path_prefix: /orders/admin, trust_domain: cluster-b.example}
//!       allow:
//!         - {principal: "spiffe://cluster-b.example/ns/shop/sa/*", methods: [GET, POST]}
//!         - principals: ["https://issuer.cluster-b.example#*"]
//!           claims: {scope: {contains: orders:read}, tenant: acme}
//! ```
//!
//! A rule matches when every condition it has holds (an empty rule matches
//! every request); a list condition holds when any entry matches:
//! - `principals` (`principal`): exact, or a prefix ending in `*`; `*` alone
//!   is any authenticated caller. Matched against the SPIFFE ID and the JWT
//!   principal `<iss>#<sub>` (see [`crate::identity::principal`]).
//! - `trust_domains` (`trust_domain`): of the certificate or the JWT issuer.
//! - `claims`: every named top-level claim must match; `name: value` (or
//!   `{equals: value}`) holds for a claim equal to the value or an array
//!   holding it; `{contains: s}` for an array holding `s` or a
//!   space-separated string (`scope`) with the word `s`. Never holds
//!   without a JWT.
//! - `methods` (`method`): case-insensitive.
//! - `path_prefixes` (`path_prefix`): plain prefix of the path without query,
//!   as Envoy's `prefix` (`/orders` also matches `/orders-x`; end with `/` for
//!   a directory). The gateway passes the normalized path it routed on.
//!
//! Decision order: `jwt: required` without a JWT → 401; any matching `deny`
//! → 403 (deny wins); no `allow` rules → allow; a matching `allow` → allow;
//! otherwise 401 for an anonymous caller and 403 for a known one.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::identity::{spiffe, Identity};

/// The `auth` block of a route.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    /// Whether a valid bearer JWT is required (`required`) or only checked
    /// when present (`optional`, the default; an invalid token is always 401).
    #[serde(default)]
    pub jwt: JwtRequirement,
    /// Rules that let a request through; with any, all else is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<AuthzRule>,
    /// Rules that refuse a request (403); they win over `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<AuthzRule>,
}

/// Whether a route needs a JWT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JwtRequirement {
    /// A token is verified when present; requests without one go on.
    #[default]
    Optional,
    /// Requests without a valid token get 401.
    Required,
}
crate::config_enum!(JwtRequirement { Optional = "optional", Required = "required" });

/// One rule: every condition given must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthzRule {
    /// Principal patterns: exact, or a prefix ending in `*` (`*`: anyone
    /// authenticated). Also `principal:` with one value.
    #[serde(default, alias = "principal", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany")]
    pub principals: Vec<String>,
    /// Trust domains of the caller. Also `trust_domain:`.
    #[serde(default, alias = "trust_domain", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany")]
    pub trust_domains: Vec<String>,
    /// JWT claim conditions by claim name; all must hold.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, ClaimCondition>,
    /// HTTP methods. Also `method:`.
    #[serde(default, alias = "method", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany")]
    pub methods: Vec<String>,
    /// Path prefixes, each starting with `/`. Also `path_prefix:`.
    #[serde(default, alias = "path_prefix", deserialize_with = "one_or_many")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "OneOrMany")]
    pub path_prefixes: Vec<String>,
}

/// A claim condition: a bare value means `{equals: value}`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ClaimCondition {
    /// Explicit operators.
    Match(ClaimMatch),
    /// The claim equals this scalar (or is an array holding it).
    Equals(Value),
}

/// Explicit claim operators; at least one, all given must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimMatch {
    /// The claim equals this value, or is an array holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<Value>,
    /// The claim is an array holding this string, or a space-separated
    /// string (like `scope`) with this word.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
}

/// A string or a list of strings.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What to do with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let it through: `rule` is the matching `allow` index (`None`: the
    /// route has no `allow` rules).
    Allow {
        /// Index into `allow`.
        rule: Option<usize>,
    },
    /// 401 (with `WWW-Authenticate: Bearer`): no or insufficient credentials.
    Unauthenticated {
        /// `true` for `jwt: required` without a token; `false` when no
        /// `allow` rule matched an anonymous caller.
        jwt_required: bool,
    },
    /// 403: a known caller that is not allowed.
    Forbidden {
        /// Index into `deny` of the matching rule; `None` when no `allow`
        /// rule matched.
        deny_rule: Option<usize>,
    },
}

impl Decision {
    /// Whether the request goes on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The refusal status: 401 or 403; `None` when allowed.
    pub fn status(&self) -> Option<u16> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Unauthenticated { .. } => Some(401),
            Decision::Forbidden { .. } => Some(403),
        }
    }

    /// A short text for logs and response bodies, naming the rule.
    pub fn reason(&self) -> String {
        match self {
            Decision::Allow { rule: Some(i) } => format!("allowed by allow[{i}]"),
            Decision::Allow { rule: None } => "allowed (no allow rules)".into(),
            Decision::Unauthenticated { jwt_required: true } => "a bearer token is required".into(),
            Decision::Unauthenticated {
                jwt_required: false,
            } => "authentication required".into(),
            Decision::Forbidden { deny_rule: Some(i) } => format!("denied by deny[{i}]"),
            Decision::Forbidden { deny_rule: None } => "no allow rule matched".into(),
        }
    }
}

/// The request as authorization sees it.
#[derive(Clone, Copy, Debug)]
pub struct AuthzRequest<'a> {
    /// The verified caller, if any.
    pub identity: Option<&'a Identity>,
    /// The HTTP method.
    pub method: &'a str,
    /// The normalized path (a query, if left on, is ignored).
    pub path: &'a str,
}

#[derive(Clone, Debug, PartialEq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Rule {
    principals: Vec<Pattern>,
    trust_domains: Vec<String>,
    claims: Vec<(String, ClaimMatch)>,
    methods: Vec<String>,
    path_prefixes: Vec<String>,
}

/// Validated rules of one route, ready to evaluate.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompiledAuthz {
    jwt_required: bool,
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl CompiledAuthz {
    /// Validates `cfg`, reporting every problem as `allow[i].field: ...`.
    pub fn compile(cfg: &AuthzConfig) -> Result<CompiledAuthz, Vec<String>> {
        let mut errs = Vec::new();
        let mut rules = |list: &[AuthzRule], name: &str| -> Vec<Rule> {
            let at = |i: usize, field: &str| format!("{name}[{i}].{field}");
            list.iter()
                .enumerate()
                .map(|(i, r)| {
                    compile_rule(r, &mut |field, msg| {
                        errs.push(format!("{}: {msg}", at(i, field)))
                    })
                })
                .collect()
        };
        let allow = rules(&cfg.allow, "allow");
        let deny = rules(&cfg.deny, "deny");
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(CompiledAuthz {
            jwt_required: cfg.jwt == JwtRequirement::Required,
            allow,
            deny,
        })
    }

    /// The decision for `req` (see the module docs for the order).
    pub fn evaluate(&self, req: &AuthzRequest<'_>) -> Decision {
        if self.jwt_required && req.identity.and_then(Identity::jwt).is_none() {
            return Decision::Unauthenticated { jwt_required: true };
        }
        let path = req.path.split('?').next().unwrap_or_default();
        let matches = |r: &Rule| rule_matches(r, req.identity, req.method, path);
        if let Some(i) = self.deny.iter().position(matches) {
            return Decision::Forbidden { deny_rule: Some(i) };
        }
        if self.allow.is_empty() {
            return Decision::Allow { rule: None };
        }
        match (self.allow.iter().position(matches), req.identity) {
            (Some(i), _) => Decision::Allow { rule: Some(i) },
            (None, None) => Decision::Unauthenticated {
                jwt_required: false,
            },
            (None, Some(_)) => Decision::Forbidden { deny_rule: None },
        }
    }
}

fn compile_rule(r: &AuthzRule, err: &mut dyn FnMut(&str, String)) -> Rule {
    let mut principals = Vec::new();
    for p in &r.principals {
        match p.find('*') {
            _ if p == "*" => principals.push(Pattern::Any),
            None if !p.is_empty() => principals.push(Pattern::Exact(p.clone())),
            Some(i) if i + 1 == p.len() => principals.push(Pattern::Prefix(p[..i].to_string())),
            _ => err(
                "principals",
                format!("`{p}`: use an exact value or one trailing `*`"),
            ),
        }
    }
    for td in &r.trust_domains {
        if let Err(e) = spiffe::validate_trust_domain(td) {
            err("trust_domains", format!("`{td}`: {e}"));
        }
    }
    let mut claims = Vec::new();
    for (name, cond) in &r.claims {
        let m = match cond {
            ClaimCondition::Equals(Value::Object(_)) => {
                err(
                    "claims",
                    format!("`{name}`: unknown operator (use `equals` or `contains`)"),
                );
                continue;
            }
            ClaimCondition::Equals(v) => ClaimMatch {
                equals: Some(v.clone()),
                contains: None,
            },
            ClaimCondition::Match(m) => m.clone(),
        };
        if name.is_empty() || (m.equals.is_none() && m.contains.is_none()) {
            err(
                "claims",
                format!("`{name}`: needs a name and `equals` or `contains`"),
            );
        }
        claims.push((name.clone(), m));
    }
    let valid_method = |m: &String| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic());
    if let Some(m) = r.methods.iter().find(|m| !valid_method(m)) {
        err("methods", format!("`{m}` is not an HTTP method"));
    }
    if let Some(p) = r.path_prefixes.iter().find(|p| !p.starts_with('/')) {
        err("path_prefixes", format!("`{p}` must start with `/`"));
    }
    Rule {
        principals,
        trust_domains: r.trust_domains.clone(),
        claims,
        methods: r.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
        path_prefixes: r.path_prefixes.clone(),
    }
}

fn rule_matches(r: &Rule, id: Option<&Identity>, method: &str, path: &str) -> bool {
    let principals_ok = r.principals.is_empty()
        || id.is_some_and(|id| {
            let names = id.principals();
            r.principals
                .iter()
                .any(|p| names.iter().any(|n| pattern_matches(p, n)))
        });
    let tds_ok = r.trust_domains.is_empty()
        || id.is_some_and(|id| {
            id.trust_domains()
                .iter()
                .any(|td| r.trust_domains.iter().any(|t| t == td))
        });
    let claims_ok = r.claims.is_empty()
        || id.and_then(Identity::claims).is_some_and(|claims| {
            r.claims
                .iter()
                .all(|(name, m)| claims.get(name).is_some_and(|v| claim_matches(m, v)))
        });
    let method_ok =
        r.methods.is_empty() || r.methods.iter().any(|m| m.eq_ignore_ascii_case(method));
    let path_ok =
        r.path_prefixes.is_empty() || r.path_prefixes.iter().any(|p| path.starts_with(p.as_str()));
    principals_ok && tds_ok && claims_ok && method_ok && path_ok
}

fn pattern_matches(p: &Pattern, name: &str) -> bool {
    match p {
        Pattern::Any => true,
        Pattern::Exact(e) => e == name,
        Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
    }
}

fn claim_matches(m: &ClaimMatch, claim: &Value) -> bool {
    let equals_ok = m.equals.as_ref().is_none_or(|want| match claim {
        Value::Array(items) => items.contains(want),
        other => other == want,
    });
    let contains_ok = m.contains.as_deref().is_none_or(|want| match claim {
        Value::Array(items) => items.iter().any(|v| v.as_str() == Some(want)),
        Value::String(s) => s.split_ascii_whitespace().any(|w| w == want),
        _ => false,
    });
    equals_ok && contains_ok
}

// The unit tests live in `identity/authz_tests.rs`, next to the identity
// fixtures they use.
