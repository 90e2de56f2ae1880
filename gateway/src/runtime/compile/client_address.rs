//! Compiling a listener's `client_address` and `proxy_protocol`.

use super::super::*;
use crate::client_address::{ProxyProtocolSpec, XffTrust};
use filters::egress::Cidr;

/// Largest `xff_trusted_hops`: more proxies in a row than this is a typo.
const MAX_TRUSTED_HOPS: u32 = 16;

impl Compiler<'_> {
    /// The `i`-th listener's trusted proxies and PROXY protocol settings.
    pub(in crate::runtime) fn client_address(
        &mut self,
        i: usize,
        l: &config::Listener,
    ) -> (Option<Arc<XffTrust>>, Option<ProxyProtocolSpec>) {
        let xff = l.client_address.as_ref().map(|c| {
            if l.mode == config::ListenerMode::Egress {
                self.err(
                    Section::Listeners,
                    i,
                    "client_address",
                    "egress listeners do not read X-Forwarded-For; use `proxy_protocol` to pass the caller's address",
                );
            }
            if c.trusted_proxies.is_empty() {
                self.err(
                    Section::Listeners,
                    i,
                    "client_address.trusted_proxies",
                    "trusted_proxies must list at least one CIDR (`0.0.0.0/0` and `::/0` trust every peer)",
                );
            }
            if let Some(n) = c.xff_trusted_hops {
                if !(1..=MAX_TRUSTED_HOPS).contains(&n) {
                    self.err(
                        Section::Listeners,
                        i,
                        "client_address.xff_trusted_hops",
                        format!(
                            "xff_trusted_hops must be between 1 and {MAX_TRUSTED_HOPS} (leave it out to skip trusted addresses instead)"
                        ),
                    );
                }
            }
            Arc::new(XffTrust {
                trusted: self.cidrs(i, "client_address.trusted_proxies", &c.trusted_proxies),
                hops: c.xff_trusted_hops,
            })
        });
        let pp = l.proxy_protocol.as_ref().map(|p| {
            if p.from.is_empty() {
                self.err(
                    Section::Listeners,
                    i,
                    "proxy_protocol.from",
                    "proxy_protocol.from must list the CIDRs allowed to send a header",
                );
            }
            let timeout = p.timeout.get();
            if timeout.is_zero() || timeout > std::time::Duration::from_secs(60) {
                self.err(
                    Section::Listeners,
                    i,
                    "proxy_protocol.timeout",
                    "proxy_protocol.timeout must be between 1ms and 60s",
                );
            }
            ProxyProtocolSpec {
                from: self.cidrs(i, "proxy_protocol.from", &p.from),
                timeout,
            }
        });
        (xff, pp)
    }

    /// The CIDRs of list `field` of the `i`-th listener; each bad one is
    /// reported at its entry.
    fn cidrs(&mut self, i: usize, field: &str, list: &[String]) -> Vec<Cidr> {
        let mut out = Vec::with_capacity(list.len());
        for (j, s) in list.iter().enumerate() {
            match s.parse::<Cidr>() {
                Ok(c) => out.push(c),
                Err(e) => self.err(
                    Section::Listeners,
                    i,
                    &format!("{field}[{j}]"),
                    e.to_string(),
                ),
            }
        }
        out
    }
}
