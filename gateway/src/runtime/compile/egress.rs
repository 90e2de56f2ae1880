//! Compiling the `egress` block: the rules (all problems at once) and the
//! CA bundles of rules that originate TLS.

use super::super::*;
use crate::egress::{EgressMetrics, EgressRuntime};
use crate::runtime::tls::validity::CertKind;

impl Compiler<'_> {
    pub(in crate::runtime) fn egress(&mut self, cfg: &Config) -> Option<Arc<EgressRuntime>> {
        let e = cfg.egress.as_ref()?;
        let rules = match filters::egress::CompiledEgress::compile(e) {
            Ok(r) => Some(r),
            Err(errs) => {
                for m in errs {
                    self.nested_err(None, "egress", m);
                }
                None
            }
        };
        let mut cas = HashMap::new();
        for (i, r) in e.rules.iter().enumerate() {
            let Some(ca) = &r.ca else { continue };
            let path = self.src.resolve_top(ca);
            match tls::load_ca_bundle(&path) {
                Ok((b, validity)) => {
                    cas.insert(Arc::<str>::from(ca.as_str()), b);
                    let name = format!("egress_rule/{}", r.name);
                    self.held_cert(CertKind::Ca, name, &path, validity, |s, m| {
                        s.top(&format!("egress.rules[{i}].ca"), m)
                    });
                }
                Err(m) => {
                    let d = self.src.top(&format!("egress.rules[{i}].ca"), m);
                    self.errors.push(d);
                }
            }
        }
        let metrics = EgressMetrics::new(e.rules.iter().map(|r| r.name.as_str()));
        Some(Arc::new(EgressRuntime {
            rules: rules?,
            cas,
            metrics,
        }))
    }
}
