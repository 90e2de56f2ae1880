//! The one exit of every egress exchange: a [`Refusal`] is answered,
//! audited and counted here ([`Audit::refuse`]); an exchange that went
//! ahead is audited and counted here when it ends ([`Audit::finished`]).
//! Either way: one access-log line of `kind: "egress"`,
//! `gateway_egress_requests_total{decision,rule}`,
//! `gateway_egress_bytes_total{direction}`, and the observed table.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;

use filters::egress::{EgressDecision, Outcome, RequestKind};
use pingora::http::ResponseHeader;
use pingora::protocols::http::v1::server::HttpSession;
use prometheus::IntCounter;

use super::caller::Caller;
use super::decide::{Refusal, Target};
use crate::metrics::METRICS;

/// `gateway_egress_requests_total` handles of one rule, by [`Outcome`].
type Slots = [OnceLock<IntCounter>; 3];

/// Handles of rule `none` (no rule decided), shared by every runtime.
static NONE: Slots = [const { OnceLock::new() }; 3];

/// `gateway_egress_bytes_total{direction="up"|"down"}`.
static BYTES: LazyLock<[IntCounter; 2]> =
    LazyLock::new(|| ["up", "down"].map(|d| METRICS.egress_bytes.with_label_values(&[d])));

/// The egress request counters of one compiled config, resolved once per
/// rule and outcome on first use (as [`crate::metrics::handles`] does for
/// routes): the request path hashes the rule name once instead of taking
/// the vector's lock.
#[derive(Default)]
pub struct EgressMetrics {
    rules: HashMap<String, Slots>,
}

impl EgressMetrics {
    /// Handles for the rules named `rules`.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a str>) -> Self {
        EgressMetrics {
            rules: rules
                .into_iter()
                .map(|r| (r.to_string(), Default::default()))
                .collect(),
        }
    }
}

/// Counts one request; without the runtime's handles (egress not
/// configured) or for an unknown rule it still counts, by lookup.
fn count(metrics: Option<&EgressMetrics>, outcome: Outcome, rule: &str) {
    let slots = if rule == "none" {
        Some(&NONE)
    } else {
        metrics.and_then(|m| m.rules.get(rule))
    };
    let resolve = || {
        METRICS
            .egress_requests
            .with_label_values(&[outcome.as_str(), rule])
    };
    // One slot per outcome, in the order `Outcome` declares them.
    match slots {
        Some(s) => s[outcome as usize].get_or_init(resolve).inc(),
        None => resolve().inc(),
    }
}

/// How an exchange that went ahead ended.
#[derive(Debug, Default)]
pub struct Done {
    /// Status the caller got (200 for a tunnel).
    pub status: u16,
    /// Bytes from the caller to the destination.
    pub bytes_up: u64,
    /// Bytes from the destination to the caller.
    pub bytes_down: u64,
    /// What failed or cut the exchange, if anything.
    pub note: Option<&'static str>,
}

/// The audit context of one request on one listener.
pub struct Audit<'a> {
    /// The listener's name.
    pub listener: &'a str,
    /// The runtime's counters (`None`: egress not configured).
    pub metrics: Option<&'a EgressMetrics>,
    /// When the request was read.
    pub started: Instant,
}

impl Audit<'_> {
    /// Answers `refusal` on `session` (which then closes), audits it and
    /// counts it. Without a session (a tunnel closed after its `200`, the
    /// caller cannot be answered any more) it is only audited and counted.
    pub async fn refuse(
        &self,
        session: Option<&mut HttpSession>,
        caller: &Caller,
        refusal: &Refusal,
    ) {
        let (status, body, note) = refusal.answer();
        if let Some(session) = session {
            let _ = respond(session, status, &body, refusal.challenge()).await;
        }
        let checked = refusal.checked().map(|c| (&c.target, &c.decision));
        let done = Done {
            status,
            note,
            ..Done::default()
        };
        self.write(caller, checked, Some(refusal.to_string()), done);
    }

    /// Audits and counts an allowed exchange when it ends.
    pub fn finished(
        &self,
        caller: &Caller,
        target: &Target,
        decision: &EgressDecision,
        done: Done,
    ) {
        let reason = decision.denial().map(ToString::to_string);
        self.write(caller, Some((target, decision)), reason, done);
    }

    /// One audit line, with the counters: `decision` and `rule` are the
    /// verdict's, `deny` and `none` before the rules saw the request.
    fn write(
        &self,
        caller: &Caller,
        checked: Option<(&Target, &EgressDecision)>,
        reason: Option<String>,
        done: Done,
    ) {
        let target = checked.map(|(t, _)| t);
        let outcome = checked.map_or(Outcome::Deny, |(_, d)| d.outcome());
        let rule = checked
            .and_then(|(_, d)| d.rule.as_deref())
            .unwrap_or("none");
        count(self.metrics, outcome, rule);
        let [up, down] = &*BYTES;
        up.inc_by(done.bytes_up);
        down.inc_by(done.bytes_down);
        if let Some(t) = target {
            super::observed().record(
                caller.principals().first().map(String::as_str),
                &t.host,
                t.port,
                outcome,
            );
        }
        let line = serde_json::json!({
            "kind": "egress",
            "ts": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "listener": self.listener,
            "client": caller.client_ip.map(|ip| ip.to_string()),
            "principal": caller.principal(),
            "method": target.map(|t| match t.kind {
                RequestKind::Connect => "CONNECT",
                RequestKind::PlainHttp => "HTTP",
            }),
            "host": target.map(|t| t.host.as_str()),
            "port": target.map(|t| t.port),
            "decision": outcome.as_str(),
            "rule": rule,
            "reason": reason,
            "status": done.status,
            "bytes_up": done.bytes_up,
            "bytes_down": done.bytes_down,
            "duration_ms": self.started.elapsed().as_secs_f64() * 1000.0,
            "note": done.note,
        });
        crate::access_log::append(|buf| {
            let _ = serde_json::to_writer(buf, &line);
        });
    }
}

/// Writes a complete short response (with a 407's `Proxy-Authenticate`
/// challenge) and closes the exchange.
pub async fn respond(
    session: &mut HttpSession,
    status: u16,
    body: &str,
    challenge: Option<&str>,
) -> pingora::Result<()> {
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header(http::header::CONNECTION, "close")?;
    if status == 403 || status == 407 {
        resp.insert_header("x-gateway-egress-decision", "deny")?;
    }
    if let Some(c) = challenge {
        resp.insert_header("proxy-authenticate", c.to_string())?;
    }
    session.set_server_keepalive(None);
    session.write_response_header(Box::new(resp)).await?;
    session.write_body(body.as_bytes()).await?;
    session.finish_body().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(decision: &str, rule: &str) -> u64 {
        METRICS
            .egress_requests
            .with_label_values(&[decision, rule])
            .get()
    }

    #[test]
    fn handles_count_into_the_registry_series() {
        let m = EgressMetrics::new(["audit-test-rule"]);
        count(Some(&m), Outcome::Allow, "audit-test-rule");
        count(Some(&m), Outcome::Allow, "audit-test-rule");
        count(Some(&m), Outcome::AuditDeny, "audit-test-rule");
        // A rule the handles do not know, and no handles at all, still count.
        count(Some(&m), Outcome::Deny, "audit-test-other");
        count(None, Outcome::Deny, "audit-test-rule");
        assert_eq!(value("allow", "audit-test-rule"), 2);
        assert_eq!(value("audit_deny", "audit-test-rule"), 1);
        assert_eq!(value("deny", "audit-test-rule"), 1);
        assert_eq!(value("deny", "audit-test-other"), 1);
    }
}
