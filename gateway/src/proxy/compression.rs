//! Response compression (`routes[].compression`) on Pingora's compression
//! module (`pingora::modules::http::compression::ResponseCompression`).
//!
//! The module does the encoding, streamed chunk by chunk, and the header
//! edits (`Content-Encoding`, `Vary`, no `Content-Length`/`Accept-Ranges`,
//! a weakened `ETag`). The gateway decides whether it runs, because the
//! module alone would get several things wrong for us (pingora-core 0.9.1,
//! `protocols/http/compression/mod.rs`):
//!
//! - it ignores q-values (`gzip;q=0` would get gzip, `br;q=0, gzip` br)
//!   and takes the client's first coding, not the route's preference: the
//!   coding is chosen here ([`choose`]) and the module is shown a request
//!   that accepts only that one;
//! - it compresses `Range` answers (206), `Cache-Control: no-transform`
//!   and any response of 20 bytes or more with a type from its own fixed
//!   list: [`CompressionPolicy::eligible`] checks status, `Content-Range`,
//!   `no-transform`, `Content-Encoding`, the route's types and `min_bytes`
//!   in `response_filter`, before the module sees the header, and turns
//!   the module off for that response otherwise;
//! - its level is one number for all codings and 0 means off: the module
//!   is built off (level 0) and only the chosen coding gets the route's
//!   level, per request.
//!
//! - its brotli encoder only flushes at the end, never finishes the
//!   stream (cloudflare/pingora#1013, open): the last meta-block is never
//!   written, and strict decoders (Node's `fetch`, the `brotli` tool)
//!   refuse every `br` body. [`BrotliEnd`], a module that runs after it,
//!   appends the one byte that ends a flushed stream.
//!
//! Where it is registered: once registered, the two modules cost every
//! request their contexts (a `Vec` and a box each) and a boxed
//! (`async_trait`) future per module and response header, whatever the
//! route, so they are registered, on both serving paths, only when some route of the
//! starting config compresses ([`register`]). A reload that adds the first
//! compressing route reports that it needs a restart ([`needs_restart`]).

use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::{HttpModule, HttpModuleBuilder, HttpModules, Module};
use pingora::protocols::http::compression::Algorithm;
use pingora::proxy::Session;

use super::ctx::RequestCtx;
use crate::config::{Compression, CompressionAlgorithm};
use crate::runtime::Runtime;

/// Whether the listeners were started with the compression module.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Adds Pingora's compression module (built off, level 0) to `modules`
/// when some route of `runtime` compresses; nothing otherwise, so that
/// requests pay nothing for a feature no route uses.
pub fn register(runtime: &Runtime, modules: &mut HttpModules) {
    if runtime
        .router
        .routes
        .iter()
        .any(|r| r.compression.is_some())
    {
        modules.add_module(ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(BrotliEndBuilder));
        REGISTERED.store(true, Ordering::Relaxed);
    }
}

/// Whether `new` compresses on some route while the listeners run without
/// the module (it can only be added when they start).
pub fn needs_restart(new: &Runtime) -> bool {
    !REGISTERED.load(Ordering::Relaxed) && new.router.routes.iter().any(|r| r.compression.is_some())
}

/// The last meta-block of a brotli stream that is byte-aligned (as after
/// a flush): `ISLAST` = 1, `ISLASTEMPTY` = 1, zero padding (RFC 7932 §9.2).
const BROTLI_LAST_EMPTY_META_BLOCK: u8 = 0x03;

/// Ends the brotli streams of Pingora's compression module (see the
/// module docs): armed by [`settle`] when the response is to be brotli
/// encoded, it checks that the module did encode it (`Content-Encoding:
/// br` after the module's header filter, the upstream's own `br` having
/// been refused before), then appends [`BROTLI_LAST_EMPTY_META_BLOCK`]
/// to the body once, at its end, after the module's final flush.
#[derive(Default)]
pub struct BrotliEnd {
    armed: bool,
    active: bool,
    ended: bool,
}

#[async_trait::async_trait]
impl HttpModule for BrotliEnd {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    async fn response_header_filter(
        &mut self,
        resp: &mut ResponseHeader,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        if self.armed && !resp.status.is_informational() {
            self.active = !end_of_stream
                && resp
                    .headers
                    .get(CONTENT_ENCODING)
                    .is_some_and(|v| v.as_bytes() == b"br");
        }
        Ok(())
    }

    fn response_body_filter(
        &mut self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
    ) -> pingora::Result<()> {
        if self.active && end_of_stream && !self.ended {
            self.ended = true;
            let mut out = bytes::BytesMut::new();
            if let Some(b) = body.take() {
                out.extend_from_slice(&b);
            }
            out.extend_from_slice(&[BROTLI_LAST_EMPTY_META_BLOCK]);
            *body = Some(out.freeze());
        }
        Ok(())
    }

    fn response_done_filter(&mut self) -> pingora::Result<Option<bytes::Bytes>> {
        // Only the last module's bytes of this filter are written, so
        // answering here would replace the compression module's own final
        // flush: None keeps it. The end byte is written by the body filter
        // instead, on the body chunk that ends the response, which both
        // serving paths send for HTTP/1 upstreams before any `Done`.
        Ok(None)
    }
}

/// Builds [`BrotliEnd`]; ordered right after the compression module.
struct BrotliEndBuilder;

impl HttpModuleBuilder for BrotliEndBuilder {
    fn init(&self) -> Module {
        Box::new(BrotliEnd::default())
    }

    fn order(&self) -> i16 {
        // The compression module's order is i16::MIN / 2; larger runs first.
        i16::MIN / 2 - 1
    }
}

/// What was negotiated for a request of a compressing route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiated {
    /// The client accepts none of the route's codings: the answer stays
    /// as it is, but still varies with `Accept-Encoding`.
    Identity,
    /// The route's `n`-th coding, handed to the module.
    Coding(u8),
}

/// One coding a route offers.
struct Offer {
    algorithm: Algorithm,
    /// A request accepting only this coding: what the module is shown, so
    /// that it encodes with exactly the coding chosen here.
    probe: RequestHeader,
    /// `gateway_compressed_responses_total{route,algorithm}`.
    counter: prometheus::IntCounter,
}

/// A media type a route compresses.
#[derive(Debug, PartialEq)]
enum TypeMatch {
    /// `type/*`
    Any(String),
    /// `type/subtype`
    Exact(String),
}

/// A route's compiled compression settings.
pub struct CompressionPolicy {
    /// In the route's order of preference.
    offers: Vec<Offer>,
    min_bytes: u64,
    types: Vec<TypeMatch>,
    level: u32,
}

/// The types Pingora's module compresses at all (its `MIME_CHECK`, and no
/// type containing `zip`): a route may narrow this list, not widen it.
fn module_compresses(t: &str) -> bool {
    const IMAGES: [&str; 3] = ["image/x-icon", "image/svg+xml", "image/vnd.microsoft.icon"];
    !t.contains("zip")
        && (t.starts_with("text/")
            || t.starts_with("application/")
            || t.starts_with("font/")
            || IMAGES.contains(&t)
            || t == "binary/octet-stream")
}

impl CompressionPolicy {
    /// Compiles `cfg` for route `route`, or the problems found, each with
    /// the field it is about (relative to `compression`).
    pub fn compile(route: &str, cfg: &Compression) -> Result<Self, Vec<(String, String)>> {
        let mut errors = Vec::new();
        if cfg.algorithms.is_empty() {
            errors.push(("algorithms".into(), "name at least one coding".into()));
        }
        let mut offers: Vec<Offer> = Vec::new();
        for (j, a) in cfg.algorithms.iter().enumerate() {
            let (algorithm, token) = match a {
                CompressionAlgorithm::Zstd => (Algorithm::Zstd, "zstd"),
                CompressionAlgorithm::Br => (Algorithm::Brotli, "br"),
                CompressionAlgorithm::Gzip => (Algorithm::Gzip, "gzip"),
            };
            if offers.iter().any(|o| o.algorithm == algorithm) {
                errors.push((
                    format!("algorithms[{j}]"),
                    format!("`{token}` is listed twice"),
                ));
                continue;
            }
            let probe = RequestHeader::build("GET", b"/", Some(1)).and_then(|mut r| {
                r.insert_header(ACCEPT_ENCODING, token)?;
                Ok(r)
            });
            let Ok(probe) = probe else {
                errors.push((format!("algorithms[{j}]"), "internal: probe request".into()));
                continue;
            };
            let counter = crate::metrics::METRICS
                .compressed_responses
                .with_label_values(&[route, token]);
            offers.push(Offer {
                algorithm,
                probe,
                counter,
            });
        }
        if !(1..=9).contains(&cfg.level) {
            errors.push((
                "level".into(),
                format!("{} is not a level from 1 to 9", cfg.level),
            ));
        }
        if cfg.content_types.is_empty() {
            errors.push((
                "content_types".into(),
                "name at least one media type".into(),
            ));
        }
        let mut types = Vec::new();
        for (j, t) in cfg.content_types.iter().enumerate() {
            let t = t.trim().to_ascii_lowercase();
            let at = format!("content_types[{j}]");
            let Some((main, sub)) = t.split_once('/') else {
                errors.push((at, format!("`{t}` is not a media type (type/subtype)")));
                continue;
            };
            if main.is_empty() || sub.is_empty() || t.contains([';', ' ', ',']) {
                errors.push((at, format!("`{t}` is not a media type (type/subtype)")));
                continue;
            }
            let m = if sub == "*" {
                if !["text", "application", "font"].contains(&main) {
                    errors.push((
                        at,
                        format!("`{t}`: Pingora's compression module compresses only some {main}/ types; name them"),
                    ));
                    continue;
                }
                TypeMatch::Any(format!("{main}/"))
            } else {
                if !module_compresses(&t) {
                    errors.push((
                        at,
                        format!("`{t}` is not compressed by Pingora's compression module (already compressed formats are not worth it)"),
                    ));
                    continue;
                }
                TypeMatch::Exact(t)
            };
            types.push(m);
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(CompressionPolicy {
            offers,
            // Pingora's module compresses nothing under 20 bytes: the same
            // floor here keeps this decision and the module's one.
            min_bytes: cfg.min_bytes.max(20),
            types,
            level: cfg.level,
        })
    }

    /// Whether the response `resp` (to a request of `method`) may be
    /// compressed under this policy, whatever the client accepts.
    pub fn eligible(&self, method: &Method, resp: &ResponseHeader) -> bool {
        let h = &resp.headers;
        let status = resp.status.as_u16();
        if *method == Method::HEAD || matches!(status, 204 | 206 | 304) || status < 200 {
            return false;
        }
        if h.contains_key(CONTENT_ENCODING) || h.contains_key(CONTENT_RANGE) {
            return false;
        }
        if has_token(h, CACHE_CONTROL, "no-transform") {
            return false;
        }
        if let Some(cl) = h.get(CONTENT_LENGTH) {
            match cl.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
                Some(n) if n >= self.min_bytes => {}
                _ => return false,
            }
        }
        let Some(ct) = h.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let media = ct.split(';').next().unwrap_or_default().trim();
        // gRPC has its own message compression, and an event stream must
        // reach the client event by event, which a compressor holding
        // bytes back would break: never, whatever `content_types` says.
        let starts = |p: &str| {
            media.len() >= p.len() && media.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
        };
        if starts("application/grpc") || media.eq_ignore_ascii_case("text/event-stream") {
            return false;
        }
        // Pingora's module compresses no type with `zip` in it; refused
        // here too, so that what is decided here is what it does.
        if media
            .as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"zip"))
        {
            return false;
        }
        self.types.iter().any(|m| match m {
            TypeMatch::Any(prefix) => {
                media.len() > prefix.len()
                    && media.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            }
            TypeMatch::Exact(t) => media.eq_ignore_ascii_case(t),
        })
    }
}

/// Whether a comma-separated field `name` of `h` lists `token` (ignoring
/// case and `=value` parts).
fn has_token(h: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    h.get_all(name).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|item| {
            let name = item.split(|b| *b == b'=').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(token.as_bytes())
        })
    })
}

/// The q-value of an `Accept-Encoding` element's parameters (`;q=0.5`),
/// 1 without one; a malformed one counts as 0 (not acceptable).
fn q_value(params: &[u8]) -> u16 {
    let mut q = 1000;
    for p in params.split(|b| *b == b';') {
        let p = p.trim_ascii();
        let Some(v) = p.strip_prefix(b"q=").or_else(|| p.strip_prefix(b"Q=")) else {
            continue;
        };
        q = parse_qvalue(v).unwrap_or(0);
    }
    q
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )` in
/// thousandths (RFC 9110 §12.4.2).
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (int, frac) = match v.iter().position(|b| *b == b'.') {
        Some(i) => (&v[..i], &v[i + 1..]),
        None => (v, &[][..]),
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for k in 0..3 {
        thousandths = thousandths * 10 + frac.get(k).map_or(0, |d| u16::from(d - b'0'));
    }
    match int {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// The coding to use among `offers` (in preference order) for the
/// `Accept-Encoding` fields `accept`: the highest q-value above 0, the
/// earlier offer on a tie; a coding not named takes the q-value of `*`
/// (0 without one). No field at all: none (RFC 9110 allows any coding
/// then, but clients that can decode say so, and an old client cannot).
pub fn choose<'a>(
    accept: impl Iterator<Item = &'a HeaderValue>,
    offers: &[Algorithm],
) -> Option<usize> {
    const UNSET: u16 = u16::MAX;
    let mut q = [UNSET; 3];
    let mut star = UNSET;
    let mut seen = false;
    for v in accept {
        seen = true;
        for item in v.as_bytes().split(|b| *b == b',') {
            let (coding, params) = match item.iter().position(|b| *b == b';') {
                Some(i) => (&item[..i], &item[i + 1..]),
                None => (item, &[][..]),
            };
            let coding = coding.trim_ascii();
            if coding.is_empty() {
                continue;
            }
            let qv = q_value(params);
            if coding == b"*" {
                star = qv;
                continue;
            }
            let Ok(name) = std::str::from_utf8(coding) else {
                continue;
            };
            let alg = Algorithm::from(name);
            if let Some(i) = offers.iter().position(|o| *o == alg) {
                if let Some(slot) = q.get_mut(i) {
                    *slot = qv;
                }
            }
        }
    }
    if !seen {
        return None;
    }
    let mut best: Option<(usize, u16)> = None;
    for (i, explicit) in q.iter().take(offers.len()).enumerate() {
        let qv = match *explicit {
            UNSET if star == UNSET => 0,
            UNSET => star,
            v => v,
        };
        if qv > 0 && best.is_none_or(|(_, b)| qv > b) {
            best = Some((i, qv));
        }
    }
    best.map(|(i, _)| i)
}

/// The module's context of this request, if it was registered.
fn module(session: &mut Session) -> Option<&mut ResponseCompression> {
    session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
}

/// `request_filter`, for a request about to be proxied on a compressing
/// route: chooses the coding and sets the module up for it. Runs after
/// the gateway's own answers (401, 429, ...) could have been written, so
/// those are never compressed.
pub fn negotiate(session: &mut Session, ctx: &mut RequestCtx, policy: &CompressionPolicy) {
    let req = session.downstream_session.req_header();
    if req.method == Method::HEAD {
        return;
    }
    let mut algs = [Algorithm::Any; 3];
    for (slot, o) in algs.iter_mut().zip(&policy.offers) {
        *slot = o.algorithm;
    }
    let offers = &algs[..policy.offers.len().min(3)];
    let chosen = choose(req.headers.get_all(ACCEPT_ENCODING).iter(), offers);
    let Some(m) = session
        .downstream_modules_ctx
        .get_mut::<ResponseCompression>()
    else {
        return;
    };
    ctx.compression = Some(match chosen {
        None => Negotiated::Identity,
        Some(i) => {
            if !m.is_header_phase() {
                return;
            }
            let offer = &policy.offers[i];
            m.adjust_level(0);
            m.adjust_algorithm_level(offer.algorithm, policy.level);
            m.request_filter(&offer.probe);
            Negotiated::Coding(i as u8)
        }
    });
}

/// `response_filter`: keeps the module on only for a response it may
/// compress, and marks an eligible one as varying with `Accept-Encoding`
/// (also when this client accepted no coding, for caches).
pub fn settle(
    session: &mut Session,
    ctx: &RequestCtx,
    policy: &CompressionPolicy,
    resp: &mut ResponseHeader,
) -> pingora::Result<()> {
    let Some(negotiated) = ctx.compression else {
        return Ok(());
    };
    if resp.status.is_informational() {
        // Not the final answer; decided on that one.
        return Ok(());
    }
    let eligible = policy.eligible(&session.req_header().method, resp);
    if eligible && !has_token(&resp.headers, VARY, "accept-encoding") {
        resp.append_header(VARY, HeaderValue::from_static("accept-encoding"))?;
    }
    match (negotiated, eligible) {
        (Negotiated::Coding(_), false) => withdraw(session),
        (Negotiated::Coding(i), true) => {
            let br = policy
                .offers
                .get(usize::from(i))
                .is_some_and(|o| o.algorithm == Algorithm::Brotli);
            if let (true, Some(end)) = (br, session.downstream_modules_ctx.get_mut::<BrotliEnd>()) {
                end.armed = true;
            }
        }
        (Negotiated::Identity, _) => {}
    }
    Ok(())
}

/// Turns the module off for the rest of this request (an answer the
/// gateway writes itself, a response that may not be compressed).
pub fn withdraw(session: &mut Session) {
    if let Some(m) = module(session) {
        if m.is_header_phase() {
            m.adjust_level(0);
        }
    }
}

/// `logging`: counts a response the module did compress.
pub fn count(session: &Session, ctx: &RequestCtx) {
    let Some(Negotiated::Coding(i)) = ctx.compression else {
        return;
    };
    let Some(policy) = ctx.route().and_then(|r| r.compression.as_ref()) else {
        return;
    };
    let used = session
        .downstream_modules_ctx
        .get::<ResponseCompression>()
        .and_then(|m| m.get_info())
        .is_some();
    if let (true, Some(o)) = (used, policy.offers.get(usize::from(i))) {
        o.counter.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERS: [Algorithm; 3] = [Algorithm::Zstd, Algorithm::Brotli, Algorithm::Gzip];

    fn pick(accept: &str) -> Option<&'static str> {
        let v = HeaderValue::from_str(accept).unwrap();
        choose(std::iter::once(&v), &OFFERS).map(|i| OFFERS[i].as_str())
    }

    #[test]
    fn q_values_and_the_route_preference_choose_the_coding() {
        assert_eq!(pick("gzip"), Some("gzip"));
        assert_eq!(pick("gzip, br"), Some("br"), "route preference on a tie");
        assert_eq!(pick("gzip;q=1, br;q=0"), Some("gzip"));
        assert_eq!(pick("br;q=0.5, gzip;q=0.8"), Some("gzip"));
        assert_eq!(pick("identity"), None);
        assert_eq!(pick("gzip;q=0"), None);
        assert_eq!(pick("*"), Some("zstd"));
        assert_eq!(pick("*;q=0, gzip"), Some("gzip"));
        assert_eq!(pick("zstd;q=0, *;q=0.1"), Some("br"));
        assert_eq!(pick("GZIP;Q=0.5"), Some("gzip"));
        assert_eq!(pick("gzip;q=2"), None, "malformed q is not acceptable");
        assert_eq!(pick("deflate, gzip, br, zstd"), Some("zstd"));
        assert_eq!(choose(std::iter::empty(), &OFFERS), None);
    }

    #[test]
    fn qvalues_parse_by_the_grammar() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0.125"), Some(125));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        assert_eq!(parse_qvalue(b"1.5"), None);
        assert_eq!(parse_qvalue(b"0.1234"), None);
        assert_eq!(parse_qvalue(b"x"), None);
    }

    fn policy(types: &[&str]) -> Result<CompressionPolicy, Vec<(String, String)>> {
        let cfg = Compression {
            algorithms: vec![CompressionAlgorithm::Gzip],
            min_bytes: 100,
            content_types: types.iter().map(|t| t.to_string()).collect(),
            level: 5,
        };
        CompressionPolicy::compile("t", &cfg)
    }

    fn resp(fields: &[(&str, &str)], status: u16) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in fields {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn eligibility_follows_the_response() {
        let p = policy(&["text/*", "application/json"]).unwrap();
        let get = Method::GET;
        let ok = [
            ("content-type", "text/html; charset=utf-8"),
            ("content-length", "100"),
        ];
        assert!(p.eligible(&get, &resp(&ok, 200)));
        assert!(p.eligible(&get, &resp(&[("content-type", "Application/JSON")], 404)));
        assert!(!p.eligible(&Method::HEAD, &resp(&ok, 200)));
        assert!(!p.eligible(&get, &resp(&ok, 206)));
        assert!(!p.eligible(
            &get,
            &resp(
                &[("content-type", "text/plain"), ("content-length", "99")],
                200
            )
        ));
        assert!(!p.eligible(&get, &resp(&[("content-type", "image/png")], 200)));
        assert!(!p.eligible(&get, &resp(&[("content-type", "text")], 200)));
        assert!(!p.eligible(&get, &resp(&[], 200)));
        for extra in [
            ("content-encoding", "gzip"),
            ("content-range", "bytes 0-9/100"),
            ("cache-control", "public, No-Transform"),
        ] {
            let mut f = ok.to_vec();
            f.push(extra);
            assert!(!p.eligible(&get, &resp(&f, 200)), "{extra:?}");
        }
    }

    /// Pingora's module and [`BrotliEnd`] as a session runs them: header,
    /// body pieces (the last one ending the body), then the done filter.
    async fn brotli_through_the_modules(level: u32, body: &[u8]) -> Vec<u8> {
        let mut modules = HttpModules::new();
        modules.add_module(ResponseCompressionBuilder::enable(0));
        modules.add_module(Box::new(BrotliEndBuilder));
        let mut ctx = modules.build_ctx();
        let m = ctx.get_mut::<ResponseCompression>().unwrap();
        m.adjust_level(0);
        m.adjust_algorithm_level(Algorithm::Brotli, level);
        let mut probe = RequestHeader::build("GET", b"/", None).unwrap();
        probe.insert_header(ACCEPT_ENCODING, "br").unwrap();
        m.request_filter(&probe);
        ctx.get_mut::<BrotliEnd>().unwrap().armed = true;
        let mut resp = resp(&[("content-type", "text/plain")], 200);
        ctx.response_header_filter(&mut resp, false).await.unwrap();
        assert_eq!(resp.headers["content-encoding"], "br");
        let mut out = Vec::new();
        let pieces: Vec<&[u8]> = body.chunks(16 * 1024).collect();
        for (k, piece) in pieces.iter().enumerate() {
            let mut b = Some(bytes::Bytes::copy_from_slice(piece));
            ctx.response_body_filter(&mut b, k + 1 == pieces.len())
                .unwrap();
            out.extend_from_slice(&b.unwrap_or_default());
        }
        if let Some(b) = ctx.response_done_filter().unwrap() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[tokio::test]
    async fn brotli_streams_end_and_decode_strictly_at_every_level() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of a text that compresses\n").into_bytes())
            .collect();
        for level in 1..=9 {
            let encoded = brotli_through_the_modules(level, &text).await;
            assert_eq!(encoded.last(), Some(&BROTLI_LAST_EMPTY_META_BLOCK));
            let mut decoded = Vec::new();
            brotli::BrotliDecompress(&mut &encoded[..], &mut decoded)
                .unwrap_or_else(|e| panic!("level {level}: {e}"));
            assert!(decoded == text, "level {level}");
            // Without the end byte the stream is unfinished: what strict
            // decoders refuse (cloudflare/pingora#1013).
            let mut cut = Vec::new();
            let unfinished = &encoded[..encoded.len() - 1];
            assert!(brotli::BrotliDecompress(&mut &unfinished[..], &mut cut).is_err());
        }
    }

    #[test]
    fn types_the_module_cannot_compress_are_refused() {
        let e = policy(&["image/png", "image/*", "application/zip", "nonsense"])
            .err()
            .unwrap();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "content_types[0]",
                "content_types[1]",
                "content_types[2]",
                "content_types[3]"
            ]
        );
        assert!(policy(&["image/svg+xml", "font/*"]).is_ok());
    }
}
