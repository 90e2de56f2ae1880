//! External authorization (`routes[].ext_authz`): the gateway asks an
//! authorization service over HTTP whether a request may go on (Envoy's
//! `ext_authz` HTTP mode, Traefik's `forwardAuth`, NGINX's `auth_request`).
//!
//! The check request is the gateway's own HTTP request to an endpoint of
//! the service's cluster over Pingora's connector (pooled, the cluster's
//! protocol and TLS), as mirror copies are sent: method, path and query after
//! `path_prefix`, `Host`, the route's `headers_to_authz`, and the verified caller
//! (`x-gateway-principal`, `x-gateway-trust-domain`), never a body (the
//! `include_body_bytes` of Envoy is not implemented).
//!
//! Where it runs: in `request_filter`, after the route's own
//! authentication and authorization (so the caller is known and a request
//! the gateway itself refuses costs the service nothing) and before the
//! rate limits (so a denied request takes no quota).
//!
//! A failed check (no endpoint, refused connection, timeout, no valid
//! answer) answers `status_on_error`, 403 by default as Envoy does: the
//! service is part of the access decision, and "not allowed" is what the
//! client can be told about a decision that could not be made; 503 can be
//! configured for clients that should retry.
//!
//! - `cache.rs`: the verdicts kept for `cache_ttl`.

mod cache;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;
use prometheus::IntCounter;

use crate::config::ExtAuthz;
use crate::mirror::CONNECTOR;
use crate::proxy::ctx::RequestCtx;
use crate::proxy::respond;
use crate::runtime::cluster::Cluster;
use cache::Cache;

/// The caller's principal, sent to the service.
pub const PRINCIPAL: HeaderName = HeaderName::from_static("x-gateway-principal");
/// The caller's trust domain, sent to the service.
pub const TRUST_DOMAIN: HeaderName = HeaderName::from_static("x-gateway-trust-domain");
/// Most body bytes of a denying answer passed on; past it the answer is
/// a failed check (a service should explain a refusal briefly).
const MAX_DENY_BODY: usize = 64 * 1024;

/// What the service decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on, with these headers set on the upstream request.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// Answer the client with this.
    Deny {
        /// The service's status.
        status: u16,
        /// Its `headers_to_client` and `Content-Type`.
        headers: Vec<(HeaderName, HeaderValue)>,
        /// Its body.
        body: Bytes,
    },
}

/// `gateway_ext_authz_total{route,result}` handles of one route.
struct Counters {
    allowed: IntCounter,
    denied: IntCounter,
    error: IntCounter,
    cache_hit: IntCounter,
}

/// A route's compiled `ext_authz`.
pub struct ExtAuthzPolicy {
    cluster: Arc<Cluster>,
    path_prefix: String,
    timeout: Duration,
    failure_mode_allow: bool,
    status_on_error: u16,
    to_authz: Vec<HeaderName>,
    to_upstream: Vec<HeaderName>,
    to_client: Vec<HeaderName>,
    cache: Option<Cache>,
    counters: Counters,
}

impl ExtAuthzPolicy {
    /// Compiles `cfg` of route `route` against its resolved `cluster`, or
    /// the problems found, each with the field it is about (relative to
    /// `ext_authz`). Without a cluster (reported by the caller) the rest
    /// is still checked, so that every problem is reported at once.
    pub fn compile(
        route: &str,
        cfg: &ExtAuthz,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut names = |field: &str, list: &[String]| -> Vec<HeaderName> {
            let mut out = Vec::new();
            for (j, n) in list.iter().enumerate() {
                match HeaderName::from_bytes(n.as_bytes()) {
                    Ok(h) if h == PRINCIPAL || h == TRUST_DOMAIN => errors.push((
                        format!("{field}[{j}]"),
                        format!("`{n}` is set by the gateway, not passed on"),
                    )),
                    Ok(h) => out.push(h),
                    Err(_) => errors.push((
                        format!("{field}[{j}]"),
                        format!("invalid header name `{n}`"),
                    )),
                }
            }
            out
        };
        let to_authz = names("headers_to_authz", &cfg.headers_to_authz);
        let to_upstream = names("headers_to_upstream", &cfg.headers_to_upstream);
        let to_client = names("headers_to_client", &cfg.headers_to_client);
        let path_prefix = cfg.path_prefix.clone().unwrap_or_default();
        if !path_prefix.is_empty()
            && (!path_prefix.starts_with('/')
                || path_prefix.contains(['?', '#'])
                || http::uri::PathAndQuery::try_from(path_prefix.as_str()).is_err())
        {
            errors.push((
                "path_prefix".into(),
                format!("`{path_prefix}` is not a path (starts with /, no query)"),
            ));
        }
        let path_prefix = path_prefix.trim_end_matches('/').to_string();
        let timeout = cfg.timeout.get();
        if timeout.is_zero() {
            errors.push(("timeout".into(), "timeout must be positive".into()));
        }
        if !(200..=599).contains(&cfg.status_on_error) {
            errors.push((
                "status_on_error".into(),
                format!("{} is not a status from 200 to 599", cfg.status_on_error),
            ));
        }
        let Some(cluster) = cluster.filter(|_| errors.is_empty()) else {
            return Err(errors);
        };
        let counter = |result| {
            crate::metrics::METRICS
                .ext_authz
                .with_label_values(&[route, result])
        };
        Ok(ExtAuthzPolicy {
            cluster,
            path_prefix,
            timeout,
            failure_mode_allow: cfg.failure_mode_allow,
            status_on_error: cfg.status_on_error,
            to_authz,
            to_upstream,
            to_client,
            cache: cfg
                .cache_ttl
                .map(|t| t.get())
                .filter(|t| !t.is_zero())
                .map(Cache::new),
            counters: Counters {
                allowed: counter("allowed"),
                denied: counter("denied"),
                error: counter("error"),
                cache_hit: counter("cache_hit"),
            },
        })
    }
}

/// The caller as the service is told: principal and trust domain (the
/// route's verified identity, else the connection's client certificate).
fn caller(ctx: &RequestCtx) -> Option<(String, String)> {
    if let Some(id) = ctx.identity.as_ref() {
        return Some((id.principal(), id.trust_domain().to_string()));
    }
    ctx.peer.as_ref().map(|p| {
        let id = &p.spiffe_id;
        (id.to_string(), id.trust_domain().to_string())
    })
}

/// The check request for the client's request `req`.
fn check_request(
    req: &RequestHeader,
    who: Option<&(String, String)>,
    policy: &ExtAuthzPolicy,
) -> pingora::Result<Box<RequestHeader>> {
    let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
    let path = format!("{}{target}", policy.path_prefix);
    let mut check = RequestHeader::build(
        req.method.clone(),
        path.as_bytes(),
        Some(4 + policy.to_authz.len()),
    )?;
    let host = req
        .headers
        .get(HOST)
        .cloned()
        .or_else(|| HeaderValue::from_str(req.uri.authority()?.as_str()).ok());
    if let Some(h) = host {
        check.insert_header(HOST, h)?;
    }
    for name in &policy.to_authz {
        for v in req.headers.get_all(name) {
            check.append_header(name.clone(), v.clone())?;
        }
    }
    if let Some((principal, domain)) = who {
        if let (Ok(p), Ok(d)) = (
            HeaderValue::from_str(principal),
            HeaderValue::from_str(domain),
        ) {
            check.insert_header(PRINCIPAL, p)?;
            check.insert_header(TRUST_DOMAIN, d)?;
        }
    }
    check.insert_header(CONTENT_LENGTH, "0")?;
    Ok(Box::new(check))
}

/// Why a check failed (for the log).
type Failure = String;

/// The values of `names` in the service's answer.
fn picked(
    resp: &pingora::http::ResponseHeader,
    names: &[HeaderName],
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for n in names {
        for v in resp.headers.get_all(n) {
            out.push((n.clone(), v.clone()));
        }
    }
    out
}

/// Reads the rest of the answer's body, at most `limit` bytes: the body,
/// or `None` when it is longer.
async fn read_body(s: &mut HttpSession, limit: usize) -> pingora::Result<Option<Bytes>> {
    let mut body = BytesMut::new();
    while let Some(chunk) = s.read_response_body().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body.freeze()))
}

/// One exchange with the service.
async fn ask(policy: &ExtAuthzPolicy, check: Box<RequestHeader>) -> Result<Verdict, Failure> {
    // The current endpoint set (a DNS-discovered cluster swaps it).
    let cluster = &policy.cluster.current();
    let pick = cluster
        .select(None, &[])
        .ok_or_else(|| format!("cluster `{}` has no healthy endpoint", cluster.name))?;
    let mut peer = cluster.endpoints[pick.index].peer.clone();
    let t = Some(policy.timeout);
    peer.options.connection_timeout = t;
    peer.options.total_connection_timeout = t;
    peer.options.read_timeout = t;
    peer.options.write_timeout = t;
    let (mut s, _) = CONNECTOR
        .get_http_session(&peer)
        .await
        .map_err(|e| e.to_string())?;
    let fail = |e: Box<pingora::Error>| e.to_string();
    s.write_request_header(check).await.map_err(fail)?;
    s.finish_request_body().await.map_err(fail)?;
    let status = crate::hop_by_hop::final_response(&mut s)
        .await
        .map_err(fail)?;
    let resp = s
        .response_header()
        .filter(|_| status >= 200)
        .ok_or_else(|| format!("no final answer (status {status})"))?;
    let verdict_headers = if (200..300).contains(&status) {
        picked(resp, &policy.to_upstream)
    } else {
        let mut h = picked(resp, &policy.to_client);
        if let Some(ct) = resp.headers.get(CONTENT_TYPE) {
            h.push((CONTENT_TYPE, ct.clone()));
        }
        h
    };
    // An allowing answer's body is read only to reuse the connection.
    let body = read_body(&mut s, MAX_DENY_BODY).await.map_err(fail)?;
    let Some(body) = body else {
        return Err(format!("answer body over {MAX_DENY_BODY} bytes"));
    };
    CONNECTOR
        .release_http_session(s, &peer, peer.options.idle_timeout)
        .await;
    Ok(if (200..300).contains(&status) {
        Verdict::Allow(verdict_headers)
    } else {
        Verdict::Deny {
            status,
            headers: verdict_headers,
            body,
        }
    })
}

/// The `request_filter` step: asks the service (or the cache) about the
/// request; `Ok(true)` when it was answered (denied, or the check failed).
pub async fn enforce(
    session: &mut Session,
    ctx: &mut RequestCtx,
    policy: &ExtAuthzPolicy,
) -> pingora::Result<bool> {
    let who = caller(ctx);
    let req = session.req_header();
    let key = policy.cache.as_ref().map(|c| {
        let mut k = c.key();
        k.add(req.method.as_str().as_bytes());
        k.add(
            req.uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        if let Some((p, d)) = &who {
            k.add(p.as_bytes());
            k.add(d.as_bytes());
        }
        for name in &policy.to_authz {
            for v in req.headers.get_all(name) {
                k.add(v.as_bytes());
            }
            k.add(b"\0");
        }
        k.finish()
    });
    let now = Instant::now();
    if let (Some(c), Some(k)) = (&policy.cache, key) {
        if let Some(v) = c.get(k, now) {
            policy.counters.cache_hit.inc();
            return apply(session, ctx, &v).await;
        }
    }
    let check = check_request(req, who.as_ref(), policy)?;
    let outcome = match tokio::time::timeout(policy.timeout, ask(policy, check)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", policy.timeout)),
    };
    match outcome {
        Ok(v) => {
            match &v {
                Verdict::Allow(_) => policy.counters.allowed.inc(),
                Verdict::Deny { .. } => policy.counters.denied.inc(),
            }
            let v = Arc::new(v);
            if let (Some(c), Some(k)) = (&policy.cache, key) {
                c.insert(k, v.clone(), now);
            }
            apply(session, ctx, &v).await
        }
        Err(why) => {
            policy.counters.error.inc();
            tracing::warn!(route = %ctx.route_name(), "external authorization failed: {why}");
            if policy.failure_mode_allow {
                return Ok(false);
            }
            let body = Bytes::from_static(b"forbidden: authorization service unavailable\n");
            respond::write(session, ctx, policy.status_on_error, body, &[]).await?;
            Ok(true)
        }
    }
}

/// Carries out a verdict.
async fn apply(session: &mut Session, ctx: &mut RequestCtx, v: &Verdict) -> pingora::Result<bool> {
    match v {
        Verdict::Allow(headers) => {
            if !headers.is_empty() {
                ctx.ext_authz_headers = headers.clone();
            }
            Ok(false)
        }
        Verdict::Deny {
            status,
            headers,
            body,
        } => {
            respond::write(session, ctx, *status, body.clone(), headers).await?;
            Ok(true)
        }
    }
}

/// The `upstream_request_filter` step: the allowing answer's headers,
/// replacing the client's.
pub fn pass_on(ctx: &RequestCtx, upstream: &mut RequestHeader) -> pingora::Result<()> {
    let mut last: Option<&HeaderName> = None;
    for (n, v) in &ctx.ext_authz_headers {
        // The first value replaces the client's, the others are added.
        if last != Some(n) {
            upstream.insert_header(n.clone(), v.clone())?;
        } else {
            upstream.append_header(n.clone(), v.clone())?;
        }
        last = Some(n);
    }
    Ok(())
}
