//! The identity step of `request_filter` and `upstream_request_filter`:
//! forged identity headers removed, the caller authenticated and authorized
//! for the route (401/403 otherwise), and the identity passed upstream.

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use super::respond;
use crate::identity::request;
use crate::runtime::route::Route;

/// Checks the caller; `Ok(true)` when the request was answered (401/403).
pub(super) async fn enforce(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &Route,
) -> pingora::Result<bool> {
    let ssl = session.digest().and_then(|d| d.ssl_digest.clone());
    if let Some(reason) = crate::identity::client_auth::revoked(ssl.as_deref()) {
        tracing::info!(route = %route.name, "client certificate no longer valid: {reason}");
        session.set_keepalive(None);
        let body = Bytes::from_static(b"forbidden: client certificate no longer valid\n");
        respond::write(session, ctx, 403, body, &[]).await?;
        return Ok(true);
    }
    let peer = request::peer_identity(session);
    let checked = request::check(
        &ctx.runtime.identity,
        &route.name,
        &route.identity,
        peer.as_ref(),
        session.req_header(),
    );
    match checked {
        Ok(identity) => {
            ctx.identity = identity;
            ctx.peer = peer;
            Ok(false)
        }
        Err(refusal) => {
            let mut extra = Vec::with_capacity(1);
            if let Some(c) = refusal
                .challenge
                .as_deref()
                .and_then(|c| http::HeaderValue::from_str(c).ok())
            {
                extra.push((http::header::WWW_AUTHENTICATE, c));
            }
            tracing::debug!(route = %route.name, status = refusal.status, "refused: {}", refusal.reason);
            let body = format!("{}: {}\n", status_text(refusal.status), refusal.reason);
            respond::write(session, ctx, refusal.status, body.into(), &extra).await?;
            Ok(true)
        }
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        _ => "forbidden",
    }
}

/// Removes caller-supplied identity headers (every request, every route).
pub(super) fn strip(req: &mut RequestHeader) {
    request::strip_caller_headers(req);
}

/// Sets `x-gateway-identity`, XFCC and a minted token on the upstream request.
pub(super) fn pass_on(
    ctx: &RequestCtx,
    route: &Route,
    upstream: &mut RequestHeader,
) -> pingora::Result<()> {
    request::set_upstream_headers(
        &ctx.runtime.identity,
        &route.identity,
        ctx.identity.as_ref(),
        ctx.peer.as_ref(),
        upstream,
    )
}
