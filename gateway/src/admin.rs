//! The admin listener: `/healthz` (process alive), `/readyz` (listeners are
//! up), `/metrics` (Prometheus text), `/config` (the effective config as
//! JSON, secrets redacted, with the reload status), `POST /reload` (reload
//! now; answers with the outcome and any errors, 422 when the config is
//! invalid), `/clusters` (every cluster's endpoints and their state; see
//! [`clusters`]).

pub mod clusters;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::METRICS;
use crate::Gateway;

/// Keys whose values never leave the process.
const SECRET_KEYS: &[&str] = &["secret", "password", "token", "client_secret"];

/// The admin HTTP application.
pub struct AdminApp {
    gateway: Arc<Gateway>,
}

impl AdminApp {
    /// An admin app over the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        AdminApp { gateway }
    }
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// Replaces the values of secret-looking keys, and passwords in URLs
/// (`redis://user:secret@host`), recursively.
pub fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => {
            if let Some((scheme, rest)) = s.split_once("://") {
                if let Some((userinfo, host)) = rest.split_once('@') {
                    let user = userinfo.split(':').next().unwrap_or("");
                    *s = format!("{scheme}://{user}:<redacted>@{host}");
                }
            }
        }
        serde_json::Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if SECRET_KEYS.contains(&k.as_str()) && !val.is_null() {
                    *val = serde_json::Value::String("<redacted>".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

impl AdminApp {
    /// `POST /reload`: reloads now (off this task) and answers with the
    /// outcome; 422 with the errors when the config is invalid.
    async fn reload(&self) -> Response<Vec<u8>> {
        let gateway = self.gateway.clone();
        let status =
            match tokio::task::spawn_blocking(move || crate::reload::reload(&gateway, "admin"))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    return reply(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("reload failed: {e}\n").into_bytes(),
                    )
                }
            };
        let code = match status.last_outcome {
            crate::reload::Outcome::Error => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        };
        let mut body = serde_json::to_vec_pretty(&status).unwrap_or_default();
        body.push(b'\n');
        reply(code, "application/json", body)
    }

    /// `None` once every listener accepts connections, else their names.
    /// Pingora binds listeners on its service threads and reports nothing,
    /// so readiness is probed with a TCP connect (sticky once true).
    async fn unbound_listeners(&self) -> Option<String> {
        if self.gateway.ready.load(Ordering::Relaxed) {
            return None;
        }
        let runtime = self.gateway.runtime.load_full();
        let mut unbound = Vec::new();
        for l in &runtime.listeners {
            let mut addr = l.addr;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    Ipv4Addr::LOCALHOST.into()
                } else {
                    Ipv6Addr::LOCALHOST.into()
                });
            }
            let probe = tokio::time::timeout(
                Duration::from_millis(250),
                tokio::net::TcpStream::connect(addr),
            );
            if !matches!(probe.await, Ok(Ok(_))) {
                unbound.push(&*l.name);
            }
        }
        if unbound.is_empty() {
            self.gateway.ready.store(true, Ordering::Relaxed);
            None
        } else {
            Some(unbound.join(", "))
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() == "/reload" {
            if req.method != Method::POST {
                return reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "text/plain",
                    b"use POST /reload\n".to_vec(),
                );
            }
            return self.reload().await;
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"use GET\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => match self.unbound_listeners().await {
                None if !self
                    .gateway
                    .jwks_ready
                    .load(std::sync::atomic::Ordering::Relaxed) =>
                {
                    reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        b"not ready: first JWKS fetch pending\n".to_vec(),
                    )
                }
                None => reply(StatusCode::OK, "text/plain", b"ready\n".to_vec()),
                Some(names) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: listeners not accepting yet: {names}\n").into_bytes(),
                ),
            },
            "/metrics" => {
                METRICS.refresh_endpoint_health(&self.gateway.runtime.load());
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    METRICS.render(),
                )
            }
            "/config" => {
                let runtime = self.gateway.runtime.load();
                let mut config = serde_json::to_value(&*runtime.config).unwrap_or_default();
                redact(&mut config);
                let body = serde_json::json!({
                    "source": self.gateway.config_path.display().to_string(),
                    "generation": runtime.generation,
                    "reload": self.gateway.status(),
                    "config": config,
                });
                let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
                bytes.push(b'\n');
                reply(StatusCode::OK, "application/json", bytes)
            }
            "/clusters" => {
                let doc = clusters::report(&self.gateway.runtime.load());
                let mut bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
                bytes.push(b'\n');
                reply(StatusCode::OK, "application/json", bytes)
            }
            "/egress/observed" => {
                let mut bytes = serde_json::to_vec_pretty(&crate::egress::observed().report())
                    .unwrap_or_default();
                bytes.push(b'\n');
                reply(StatusCode::OK, "application/json", bytes)
            }
            "/.well-known/jwks.json" => {
                let runtime = self.gateway.runtime.load();
                let doc =
                    crate::identity::token::jwks_document(runtime.identity.token_signer.as_deref());
                let mut bytes = serde_json::to_vec(&doc).unwrap_or_default();
                bytes.push(b'\n');
                reply(StatusCode::OK, "application/jwk-set+json", bytes)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found; try /healthz /readyz /metrics /config /clusters /.well-known/jwks.json\n"
                    .to_vec(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let mut v =
            serde_json::json!({"a": {"secret": "s3cr3t", "name": "x"}, "b": [{"token": "t"}]});
        redact(&mut v);
        assert_eq!(v["a"]["secret"], "<redacted>");
        assert_eq!(v["a"]["name"], "x");
        assert_eq!(v["b"][0]["token"], "<redacted>");
    }

    #[test]
    fn url_passwords_are_redacted() {
        let mut v = serde_json::json!({"store": {"redis": "redis://app:hunter2@127.0.0.1:6379/0"},
            "plain": "redis://127.0.0.1:6379"});
        redact(&mut v);
        assert_eq!(
            v["store"]["redis"],
            "redis://app:<redacted>@127.0.0.1:6379/0"
        );
        assert_eq!(v["plain"], "redis://127.0.0.1:6379");
    }
}
