//! A compiled rule: validated config, key recipe, and the local state that
//! may be carried over a reload.

use std::hash::RandomState;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use super::config::{
    KeySource, OnStoreError, Rate, RuleConfig, Scope, DEFAULT_MAX_KEYS, MAX_BURST,
};
use super::decision::{RuleOutcome, Source, Verdict};
use super::fleet::FleetCall;
use super::headers::{policy_value, valid_policy_name};
use super::keys::{fleet_key, local_key, KeyPart, RequestKeys};
use super::local::LocalLimiter;

/// Longest rule name.
const MAX_NAME_LEN: usize = 64;
/// Highest `max_keys`.
const MAX_MAX_KEYS: u32 = 10_000_000;

/// What makes two rules share state: everything but `shadow` and
/// `on_store_error` (toggling those keeps the buckets), defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Definition {
    name: String,
    key: Vec<KeySource>,
    rate: Rate,
    burst: u32,
    scope: Scope,
    max_keys: u32,
}

impl Definition {
    fn of(cfg: &RuleConfig) -> Self {
        Definition {
            name: cfg.name.clone().unwrap_or_else(|| cfg.key.to_string()),
            key: cfg.key.sources().to_vec(),
            rate: cfg.rate,
            burst: cfg.burst.unwrap_or(cfg.rate.count()),
            scope: cfg.scope,
            max_keys: cfg.max_keys.unwrap_or(DEFAULT_MAX_KEYS),
        }
    }
}

/// State that survives a reload when the definition is unchanged: the
/// buckets and the hash key they are indexed with.
struct RuleState {
    limiter: LocalLimiter,
    hasher: RandomState,
}

/// A rule ready for requests. Cheap to clone (state is shared).
#[derive(Clone)]
pub struct CompiledRule {
    name: Arc<str>,
    def: Arc<Definition>,
    parts: Arc<[KeyPart]>,
    shadow: bool,
    on_store_error: OnStoreError,
    policy: HeaderValue,
    interval_us: u64,
    state: Arc<RuleState>,
}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRule")
            .field("name", &self.name)
            .field("definition", &self.def)
            .field("shadow", &self.shadow)
            .field("on_store_error", &self.on_store_error)
            .finish_non_exhaustive()
    }
}

impl CompiledRule {
    /// Validates `cfg` (reporting every problem) and builds the rule with
    /// fresh state.
    pub fn compile(cfg: &RuleConfig) -> Result<Self, Vec<String>> {
        Self::compile_reusing(cfg, None)
    }

    /// Like [`compile`](Self::compile), but keeps `previous`'s buckets when
    /// it has the same definition (see [`same_definition`](Self::same_definition)).
    pub fn compile_reusing(
        cfg: &RuleConfig,
        previous: Option<&CompiledRule>,
    ) -> Result<Self, Vec<String>> {
        let def = Definition::of(cfg);
        let mut errors = Vec::new();
        let label = format!("rate_limit `{}`", def.name);
        if !valid_policy_name(&def.name) || def.name.len() > MAX_NAME_LEN {
            errors.push(format!(
                "{label}: the name must be 1 to {MAX_NAME_LEN} printable ASCII characters{}",
                if cfg.name.is_none() {
                    " (set `name`)"
                } else {
                    ""
                }
            ));
        }
        if def.key.is_empty() {
            errors.push(format!("{label}: `key` lists no source"));
        }
        for (i, k) in def.key.iter().enumerate() {
            if def.key[..i].contains(k) {
                errors.push(format!("{label}: key source `{k}` is listed twice"));
            }
        }
        let parts: Vec<KeyPart> = def
            .key
            .iter()
            .filter_map(|k| {
                KeyPart::compile(k)
                    .map_err(|e| errors.push(format!("{label}: {e}")))
                    .ok()
            })
            .collect();
        if def.burst == 0 || def.burst > MAX_BURST {
            errors.push(format!("{label}: burst must be between 1 and {MAX_BURST}"));
        }
        if def.max_keys == 0 || def.max_keys > MAX_MAX_KEYS {
            errors.push(format!(
                "{label}: max_keys must be between 1 and {MAX_MAX_KEYS}"
            ));
        }
        if def.scope == Scope::Local && cfg.on_store_error.is_some() {
            errors.push(format!(
                "{label}: on_store_error applies to `scope: fleet` rules only"
            ));
        }
        let policy = HeaderValue::from_str(&policy_value(
            &def.name,
            def.rate.count(),
            def.rate.period_secs(),
        ));
        let (Some(burst), Some(max_keys), Ok(policy), true) = (
            NonZeroU32::new(def.burst),
            NonZeroU32::new(def.max_keys),
            policy,
            errors.is_empty(),
        ) else {
            if errors.is_empty() {
                errors.push(format!("{label}: invalid rule"));
            }
            return Err(errors);
        };
        let state = match previous {
            Some(p) if *p.def == def => p.state.clone(),
            _ => Arc::new(RuleState {
                limiter: LocalLimiter::new(def.rate, burst, max_keys),
                hasher: RandomState::new(),
            }),
        };
        let interval_us = u64::try_from(def.rate.interval().as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        Ok(CompiledRule {
            name: def.name.as_str().into(),
            def: Arc::new(def),
            parts: parts.into(),
            shadow: cfg.shadow,
            on_store_error: cfg.on_store_error.unwrap_or_default(),
            policy,
            interval_us,
            state,
        })
    }

    /// Whether `other` would keep this rule's buckets: same name (or derived
    /// name), key, rate, burst, scope and max_keys. `shadow` and
    /// `on_store_error` may differ.
    pub fn same_definition(&self, other: &RuleConfig) -> bool {
        *self.def == Definition::of(other)
    }

    /// Whether `self` and `other` share their buckets.
    pub fn shares_state_with(&self, other: &CompiledRule) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    /// The rule's name (policy name, metric label).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Local or fleet.
    pub fn scope(&self) -> Scope {
        self.def.scope
    }
    /// Whether the rule only reports.
    pub fn is_shadow(&self) -> bool {
        self.shadow
    }
    /// The configured rate.
    pub fn rate(&self) -> Rate {
        self.def.rate
    }
    /// The effective burst.
    pub fn burst(&self) -> u32 {
        self.def.burst
    }
    /// The local limiter (a `local` rule's buckets, or a `fleet` rule's
    /// fallback buckets): for memory gauges and housekeeping.
    pub fn local_limiter(&self) -> &LocalLimiter {
        &self.state.limiter
    }

    /// Checks the request against the local buckets.
    pub(crate) fn check_local<K: RequestKeys + ?Sized>(
        &self,
        req: &K,
        source: Source,
    ) -> RuleOutcome {
        let Some(key) = local_key(&self.parts, req, &self.state.hasher) else {
            return self.outcome(Verdict::NoKey, source, None, Duration::ZERO);
        };
        let o = self.state.limiter.check(key);
        self.outcome(self.verdict(o.allowed), source, Some(o.remaining), o.reset)
    }

    /// The Redis call for this request, or `None` when a key part is missing.
    pub(crate) fn fleet_call<K: RequestKeys + ?Sized>(
        &self,
        req: &K,
        prefix: &str,
    ) -> Option<FleetCall> {
        Some(FleetCall {
            key: fleet_key(prefix, &self.name, &self.parts, req)?,
            interval_us: self.interval_us,
            burst: self.def.burst,
        })
    }

    /// The outcome when the request lacks a key part.
    pub(crate) fn no_key(&self, source: Source) -> RuleOutcome {
        self.outcome(Verdict::NoKey, source, None, Duration::ZERO)
    }

    /// The outcome of a store answer.
    pub(crate) fn store_outcome(
        &self,
        allowed: bool,
        remaining: u32,
        reset: Duration,
    ) -> RuleOutcome {
        self.outcome(self.verdict(allowed), Source::Store, Some(remaining), reset)
    }

    /// The outcome when the store failed: `on_store_error` decides.
    pub(crate) fn on_store_error<K: RequestKeys + ?Sized>(&self, req: &K) -> RuleOutcome {
        let source = Source::StoreError(self.on_store_error);
        match self.on_store_error {
            OnStoreError::Local => self.check_local(req, source),
            OnStoreError::Allow => self.outcome(Verdict::Allowed, source, None, Duration::ZERO),
            OnStoreError::Deny => {
                self.outcome(self.verdict(false), source, Some(0), Duration::from_secs(1))
            }
        }
    }

    fn verdict(&self, allowed: bool) -> Verdict {
        match (allowed, self.shadow) {
            (true, _) => Verdict::Allowed,
            (false, false) => Verdict::Limited,
            (false, true) => Verdict::WouldLimit,
        }
    }

    fn outcome(
        &self,
        verdict: Verdict,
        source: Source,
        remaining: Option<u32>,
        reset: Duration,
    ) -> RuleOutcome {
        RuleOutcome {
            rule: self.name.clone(),
            verdict,
            source,
            shadow: self.shadow,
            remaining,
            reset,
            quota: self.def.rate.count(),
            policy: self.policy.clone(),
        }
    }
}
