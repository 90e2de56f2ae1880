//! Compiling identity: trust domains (client CA bundles, JWT issuers and
//! their keys), the gateway's token signer, and each route's `auth` and
//! `identity` blocks. Key sets fetched from a `jwks_uri` are carried over a
//! reload while the issuer's config is unchanged, so a reload never loses
//! keys.

use filters::authz::CompiledAuthz;
use filters::identity::{spiffe, JwkSet, JwksRefreshPolicy, JwtVerifier, SharedKeySet};

use super::super::*;
use crate::identity::client_auth::domain_verifier;
use crate::identity::request::{MintSpec, RouteIdentity};
use crate::identity::token::TokenSigner;
use crate::identity::{IdentityRuntime, JwksSource, TrustDomainRt};
use crate::runtime::tls::validity::CertKind;

impl Compiler<'_> {
    pub(in crate::runtime) fn identity(&mut self, cfg: &Config) -> IdentityRuntime {
        let mut out = IdentityRuntime {
            jwt: JwtVerifier::new(),
            ..IdentityRuntime::default()
        };
        for (i, td) in cfg.trust_domains.iter().enumerate() {
            let at = |k: &str| format!("trust_domains[{i}].{k}");
            if let Err(e) = spiffe::validate_trust_domain(&td.name) {
                self.top(&at("name"), format!("`{}`: {e}", td.name));
            }
            if out.trust_domains.contains_key(&td.name) {
                self.top(&at("name"), format!("duplicate trust domain `{}`", td.name));
            }
            let mut rt = TrustDomainRt {
                client_verifier: None,
                ca: None,
            };
            if let Some(ca) = &td.ca {
                let path = self.src.resolve_top(ca);
                let bundle = tls::load_certs(&path).and_then(|certs| {
                    let validity = tls::bundle_validity(&path, &certs)?;
                    Ok((domain_verifier(certs)?, validity))
                });
                match bundle {
                    Ok((v, validity)) => {
                        rt.client_verifier = Some(v);
                        let name = format!("trust_domain/{}", td.name);
                        let at = at("ca");
                        self.held_cert(CertKind::Ca, name, &path, validity, |s, m| s.top(&at, m));
                    }
                    Err(e) => self.top(&at("ca"), e),
                }
                rt.ca = Some(path);
            }
            for (j, iss) in td.jwt_issuers.iter().enumerate() {
                self.jwt_issuer(&mut out, &td.name, iss, &at(&format!("jwt_issuers[{j}]")));
            }
            out.trust_domains.insert(td.name.clone(), rt);
        }
        if let Some(t) = &cfg.token_issuer {
            let path = self.src.resolve_top(&t.key);
            match TokenSigner::load(&t.issuer, &path, t.kid.as_deref()) {
                Ok(s) => out.token_signer = Some(Arc::new(s)),
                Err(e) => self.top("token_issuer.key", e),
            }
        }
        out
    }

    fn jwt_issuer(
        &mut self,
        out: &mut IdentityRuntime,
        trust_domain: &str,
        iss: &filters::identity::JwtIssuerConfig,
        at: &str,
    ) {
        let keys = if let Some(file) = &iss.jwks_file {
            let path = self.src.resolve_top(file);
            match std::fs::read(&path)
                .map_err(|e| format!("cannot read `{}`: {e}", path.display()))
                .and_then(|b| JwkSet::parse(&b).map_err(|e| format!("`{}`: {e}", path.display())))
            {
                Ok(set) => SharedKeySet::new(set),
                Err(e) => {
                    self.top(&format!("{at}.jwks_file"), e);
                    return;
                }
            }
        } else if let Some(uri) = &iss.jwks_uri {
            let policy = JwksRefreshPolicy::from(&iss.jwks_refresh);
            // Keep the keys of an unchanged issuer across the reload.
            let previous = self.previous.and_then(|p| {
                p.identity
                    .jwks_sources
                    .iter()
                    .find(|s| *s.issuer == *iss.issuer && s.uri == *uri && s.policy == policy)
            });
            let keys =
                previous.map_or_else(|| SharedKeySet::new(JwkSet::default()), |s| s.keys.clone());
            out.jwks_sources.push(JwksSource {
                issuer: iss.issuer.as_str().into(),
                uri: uri.clone(),
                policy,
                keys: keys.clone(),
            });
            keys
        } else {
            SharedKeySet::new(JwkSet::default())
        };
        let secret = match &iss.hmac_secret_file {
            Some(f) => {
                let path = self.src.resolve_top(f);
                match std::fs::read(&path) {
                    Ok(mut b) => {
                        while b.last().is_some_and(u8::is_ascii_whitespace) {
                            b.pop();
                        }
                        Some(b)
                    }
                    Err(e) => {
                        self.top(
                            &format!("{at}.hmac_secret_file"),
                            format!("cannot read `{}`: {e}", path.display()),
                        );
                        return;
                    }
                }
            }
            None => None,
        };
        if let Err(errs) = out
            .jwt
            .add_issuer(trust_domain, iss, keys, secret.as_deref())
        {
            for e in errs {
                self.nested_err(None, at, e);
            }
        }
    }

    /// Compiles a route's `auth` and `identity` blocks.
    pub(in crate::runtime) fn route_identity(
        &mut self,
        i: usize,
        r: &config::Route,
        cfg: &Config,
    ) -> RouteIdentity {
        let mut out = RouteIdentity::default();
        if let Some(a) = &r.auth {
            match CompiledAuthz::compile(a) {
                Ok(c) => out.authz = Some(c),
                Err(errs) => {
                    for e in errs {
                        self.nested_err(Some((Section::Routes, i)), "auth", e);
                    }
                }
            }
            let has_issuers = cfg.trust_domains.iter().any(|t| !t.jwt_issuers.is_empty());
            if a.jwt == filters::authz::JwtRequirement::Required && !has_issuers {
                self.err(
                    Section::Routes,
                    i,
                    "auth.jwt",
                    "`jwt: required` but no trust domain has jwt_issuers",
                );
            }
        }
        if let Some(f) = &r.identity {
            out.xfcc = f.xfcc;
            if let Some(t) = &f.token {
                if cfg.token_issuer.is_none() {
                    self.err(
                        Section::Routes,
                        i,
                        "identity.token",
                        "minting a token needs a top-level `token_issuer`",
                    );
                }
                if t.audience.is_empty() {
                    self.err(
                        Section::Routes,
                        i,
                        "identity.token.audience",
                        "must not be empty",
                    );
                }
                match http::HeaderName::from_bytes(t.header.as_bytes()) {
                    Ok(header) => {
                        out.token = Some(MintSpec {
                            audience: t.audience.clone(),
                            ttl: t.ttl.get(),
                            header,
                        })
                    }
                    Err(_) => self.err(
                        Section::Routes,
                        i,
                        "identity.token.header",
                        format!("invalid header name `{}`", t.header),
                    ),
                }
            }
        }
        out
    }

    fn top(&mut self, path: &str, msg: impl Into<String>) {
        let d = self.src.top(path, msg);
        self.errors.push(d);
    }
}
