//! Starting mirror copies from `request_filter` (the copies themselves live
//! in [`crate::mirror`]).

use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::mirror::{self, BodyDigest};
use crate::runtime::route::Route;

/// Starts a copy for every mirror target of `route` that samples this request.
pub(super) fn start_copies(session: &mut Session, ctx: &mut RequestCtx, route: &Route) {
    let has_body = !session.is_body_empty();
    let traceparent = ctx.trace.as_ref().map(|t| t.traceparent());
    for target in &route.mirrors {
        let handle = mirror::start(
            target,
            &route.name,
            session.req_header(),
            ctx.original_host.as_ref(),
            has_body,
            &ctx.request_id,
            traceparent.as_deref(),
        );
        if let Some(h) = handle {
            if h.compare_body && ctx.body_digest.is_none() {
                ctx.body_digest = Some(BodyDigest::default());
            }
            ctx.mirrors.push(h);
        }
    }
}
