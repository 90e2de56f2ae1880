//! Evaluating the rules of a route: per-rule outcomes and the combined
//! decision with its response headers.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::config::{OnStoreError, RuleConfig, Scope};
use super::fleet::RedisStore;
use super::headers::{ceil_secs, ratelimit_value, retry_after_secs, RateLimitHeaders};
use super::keys::RequestKeys;
use super::rule::CompiledRule;
use crate::headers::HeaderSink;

/// What one rule said about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Within the quota (counted).
    Allowed,
    /// Over the quota: the request gets 429.
    Limited,
    /// A shadow rule that would have limited; the request goes through.
    WouldLimit,
    /// The request lacks a part of the rule's key; the rule does not apply.
    NoKey,
}

impl Verdict {
    /// The `decision` label value of `gateway_ratelimit_decisions_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Limited => "limited",
            Verdict::WouldLimit => "would_limit",
            Verdict::NoKey => "no_key",
        }
    }
}

/// Where a verdict came from (for `NoKey`, the rule's usual source).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A local rule's buckets.
    Local,
    /// The Redis store answered.
    Store,
    /// The store failed; the rule's `on_store_error` mode decided.
    StoreError(OnStoreError),
}

/// One rule's outcome for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleOutcome {
    /// The rule's name (`rule` label).
    pub rule: Arc<str>,
    /// The verdict (`decision` label via [`Verdict::as_str`]).
    pub verdict: Verdict,
    /// Where it came from.
    pub source: Source,
    /// Whether the rule is a shadow rule.
    pub shadow: bool,
    /// Requests still available now, when known.
    pub remaining: Option<u32>,
    /// Time until the next request is available (the wait when limited).
    pub reset: Duration,
    pub(crate) quota: u32,
    pub(crate) policy: HeaderValue,
}

impl RuleOutcome {
    /// Whether it can appear in the response headers.
    fn reportable(&self) -> bool {
        !self.shadow && self.remaining.is_some()
    }
    fn shown_remaining(&self) -> u32 {
        self.remaining.unwrap_or(0).min(self.quota)
    }
}

/// The combined decision for a request: every enforced rule must allow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `false`: answer 429.
    pub allowed: bool,
    /// How long to wait, when limited (the longest wait of the limiting rules).
    pub retry_after: Option<Duration>,
    /// Whether a store call failed for this request (count it in
    /// `gateway_ratelimit_store_errors_total`).
    pub store_error: bool,
    /// One outcome per evaluated rule: local rules in config order, then
    /// fleet rules. Fleet rules are not evaluated (and not listed) when a
    /// local rule already limits.
    pub outcomes: Vec<RuleOutcome>,
    report: Option<usize>,
}

impl Decision {
    /// The rule reported in the headers: the limiting rule with the longest
    /// wait, or else the enforced rule with the fewest requests left.
    pub fn reported_rule(&self) -> Option<&RuleOutcome> {
        self.outcomes.get(self.report?)
    }

    /// `RateLimit-Policy`, `RateLimit` and (when limited) `Retry-After`, for
    /// the most restrictive rule; `None` when no enforced rule applied.
    pub fn headers(&self) -> Option<RateLimitHeaders> {
        let o = self.reported_rule()?;
        let retry_after = self.retry_after.map(retry_after_secs);
        let t = retry_after.unwrap_or_else(|| ceil_secs(o.reset));
        let ratelimit =
            HeaderValue::from_str(&ratelimit_value(&o.rule, u64::from(o.shown_remaining()), t))
                .ok()?;
        Some(RateLimitHeaders {
            policy: o.policy.clone(),
            ratelimit,
            retry_after,
        })
    }

    /// Adds [`headers`](Self::headers) to `sink`, if any.
    pub fn apply_headers(&self, sink: &mut impl HeaderSink) {
        if let Some(h) = self.headers() {
            h.apply(sink);
        }
    }
}

/// Combines outcomes into a decision.
fn combine(outcomes: Vec<RuleOutcome>, store_error: bool) -> Decision {
    let limiting = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.verdict == Verdict::Limited)
        .max_by_key(|(_, o)| o.reset);
    let (allowed, retry_after, report) = match limiting {
        Some((i, o)) => (false, Some(o.reset), Some(i)),
        None => {
            let tightest = outcomes
                .iter()
                .enumerate()
                .filter(|(_, o)| o.reportable() && o.verdict == Verdict::Allowed)
                .min_by_key(|(_, o)| (o.shown_remaining(), std::cmp::Reverse(o.reset)))
                .map(|(i, _)| i);
            (true, None, tightest)
        }
    };
    Decision {
        allowed,
        retry_after,
        store_error,
        outcomes,
        report,
    }
}

/// Evaluates every rule of a route for one request.
///
/// Local rules are checked first (each counts the request). Fleet rules then
/// go to Redis together in one script call (one round trip), unless a local
/// rule already limits. The call is bounded by the store timeout; on error
/// or timeout each fleet rule's `on_store_error` decides, so this never
/// waits on Redis longer than the timeout. Without a `store`, fleet rules
/// behave as on a store error. Note: a request counts against every rule
/// that saw it, even if another rule rejected it (as in Envoy).
pub async fn evaluate<K: RequestKeys + Sync + ?Sized>(
    rules: &[CompiledRule],
    req: &K,
    store: Option<&RedisStore>,
) -> Decision {
    let mut outcomes = Vec::with_capacity(rules.len());
    let mut fleet = Vec::new();
    for rule in rules {
        if rule.scope() == Scope::Local {
            outcomes.push(rule.check_local(req, Source::Local));
        } else {
            fleet.push(rule);
        }
    }
    let locally_limited = outcomes.iter().any(|o| o.verdict == Verdict::Limited);
    let mut store_error = false;
    if !fleet.is_empty() && !locally_limited {
        let prefix = store.map_or("", |s| s.key_prefix());
        let mut calls = Vec::with_capacity(fleet.len());
        let mut asked = Vec::with_capacity(fleet.len());
        for rule in fleet {
            match rule.fleet_call(req, prefix) {
                Some(c) => {
                    calls.push(c);
                    asked.push(rule);
                }
                None => outcomes.push(rule.no_key(Source::Store)),
            }
        }
        if !calls.is_empty() {
            let answer = match store {
                Some(s) => s.run(&calls).await,
                None => Err(super::fleet::StoreError::NotConfigured),
            };
            match answer {
                Ok(replies) => {
                    for (rule, r) in asked.iter().zip(replies) {
                        outcomes.push(rule.store_outcome(r.allowed, r.remaining, r.reset));
                    }
                }
                Err(_) => {
                    store_error = true;
                    for rule in asked {
                        outcomes.push(rule.on_store_error(req));
                    }
                }
            }
        }
    }
    combine(outcomes, store_error)
}

/// The compiled rules of one route (or listener).
#[derive(Clone, Debug, Default)]
pub struct RouteRateLimits {
    rules: Vec<CompiledRule>,
}

impl RouteRateLimits {
    /// Compiles a route's rules, reporting every problem (names must be
    /// unique). Rules of `previous` (the same route in the old runtime) with
    /// the same name and definition hand over their buckets.
    pub fn compile(
        configs: &[RuleConfig],
        previous: Option<&RouteRateLimits>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut rules: Vec<CompiledRule> = Vec::with_capacity(configs.len());
        for cfg in configs {
            let prev = previous.and_then(|p| p.rules.iter().find(|r| r.same_definition(cfg)));
            match CompiledRule::compile_reusing(cfg, prev) {
                Ok(rule) => {
                    if rules.iter().any(|r| r.name() == rule.name()) {
                        errors.push(format!(
                            "rate_limit: two rules are named `{}`; give each a distinct `name`",
                            rule.name()
                        ));
                    }
                    rules.push(rule);
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        if errors.is_empty() {
            Ok(RouteRateLimits { rules })
        } else {
            Err(errors)
        }
    }

    /// The rules, in config order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }
    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
    /// Whether any rule needs the Redis store.
    pub fn has_fleet_rules(&self) -> bool {
        self.rules.iter().any(|r| r.scope() == Scope::Fleet)
    }
    /// Evaluates the rules for a request (see [`evaluate`]).
    pub async fn evaluate<K: RequestKeys + Sync + ?Sized>(
        &self,
        req: &K,
        store: Option<&RedisStore>,
    ) -> Decision {
        evaluate(&self.rules, req, store).await
    }
    /// Drops idle keys of every rule (optional housekeeping).
    pub fn purge_idle(&self) {
        for r in &self.rules {
            r.local_limiter().purge_idle();
        }
    }
}
