//! The rate-limit step of `request_filter`: evaluate the route's rules,
//! count the decisions, answer 429 or remember the headers for the response.

use bytes::Bytes;
use filters::ratelimit::{RedisStore, RouteRateLimits, SimpleRequestKeys};
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::respond;
use crate::metrics::METRICS;
use crate::runtime::route::Route;

/// Applies `limits`; `Ok(true)` when the request was answered with 429.
pub(super) async fn enforce(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
    limits: &RouteRateLimits,
    store: Option<&RedisStore>,
) -> pingora::Result<bool> {
    let principal = ctx.identity.as_ref().map(|i| i.principal());
    let decision = {
        let keys = SimpleRequestKeys {
            client_ip: ctx.client_ip,
            headers: Some(&session.req_header().headers),
            claims: None,
            principal: principal.as_deref(),
            route: &route.name,
        };
        limits.evaluate(&keys, store).await
    };
    for o in &decision.outcomes {
        route.metrics.ratelimit_decision(&o.rule, o.verdict);
    }
    if decision.store_error {
        METRICS.ratelimit_store_errors.inc();
        tracing::warn!(route = %route.name, "rate-limit store unavailable; on_store_error applied");
    }
    let headers = decision.headers();
    if !decision.allowed {
        let extra = headers.map(|h| h.pairs()).unwrap_or_default();
        let body = Bytes::from_static(b"rate limited\n");
        respond::write(session, ctx, 429, body, &extra).await?;
        return Ok(true);
    }
    ctx.ratelimit_headers = headers;
    Ok(false)
}
