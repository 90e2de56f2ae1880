//! The refresh loop of one discovery cluster, on the discovery thread.

use std::sync::atomic::Ordering;
use std::sync::Weak;

use crate::runtime::cluster::Cluster;

/// Refreshes `head`'s endpoints until the cluster is dropped (a reload
/// removed or changed it).
pub(super) async fn run(head: Weak<Cluster>) {
    loop {
        let delay = {
            let Some(c) = head.upgrade() else { return };
            let Some(d) = c.discovery.as_deref() else {
                return;
            };
            d.next_delay()
        };
        tokio::time::sleep(delay).await;
        let Some(c) = head.upgrade() else { return };
        if c.retired.load(Ordering::Relaxed) {
            return;
        }
        let Some(d) = c.discovery.as_deref() else {
            return;
        };
        let hosts: Vec<String> = d.spec.entries.iter().map(|e| e.host.clone()).collect();
        let answers = super::lookup_all(&d.resolver, &hosts).await;
        d.apply(&c, answers, false);
    }
}
