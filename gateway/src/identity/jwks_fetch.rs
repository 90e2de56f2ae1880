//! Keeps `jwks_uri` key sets fresh, on one background thread.
//!
//! The request path never waits for a fetch: it reads the issuer's
//! [`SharedKeySet`](filters::identity::SharedKeySet) and, when a token names
//! an unknown `kid`, asks for a refetch with [`request_refetch`] (a
//! non-blocking send; the refresher rate-limits refetches). Failed fetches
//! keep the last good set (stale-if-error) and retry with backoff, as
//! [`JwksRefresher`] decides. Issuers carried over a reload keep their
//! refresher and key set.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use filters::identity::jwks::MAX_JWKS_BYTES;
use filters::identity::{JwksRefreshPolicy, JwksRefresher, RefreshOutcome};

use crate::Gateway;

/// Longest sleep between looks at the runtime (new issuers after a reload).
const MAX_SLEEP: Duration = Duration::from_millis(250);

static REFETCH: OnceLock<SyncSender<Arc<str>>> = OnceLock::new();

/// Asks the fetcher to refetch `issuer`'s JWKS soon (a token named a `kid`
/// that is not in the set). Never blocks; dropped when the queue is full.
pub fn request_refetch(issuer: &Arc<str>) {
    if let Some(tx) = REFETCH.get() {
        let _ = tx.try_send(issuer.clone());
    }
}

struct Entry {
    uri: String,
    policy: JwksRefreshPolicy,
    refresher: JwksRefresher,
}

/// Starts the fetcher thread. Sets `gateway.jwks_ready` after the first
/// attempt at every `jwks_uri` of the starting config.
pub fn spawn(gateway: Arc<Gateway>) -> std::io::Result<()> {
    let (tx, rx) = sync_channel(64);
    if REFETCH.set(tx).is_err() {
        return Ok(()); // already running (one gateway per process)
    }
    std::thread::Builder::new()
        .name("jwks-fetch".into())
        .spawn(move || run(gateway, rx))
        .map(|_| ())
}

fn run(gateway: Arc<Gateway>, rx: Receiver<Arc<str>>) {
    let client = match reqwest::blocking::Client::builder()
        .user_agent(concat!("gateway/", env!("CARGO_PKG_VERSION")))
        // A key set comes from the configured URI, not wherever it points.
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("cannot build the JWKS HTTP client: {e}; jwks_uri issuers get no keys");
            gateway.jwks_ready.store(true, Ordering::Relaxed);
            return;
        }
    };
    let mut entries: HashMap<Arc<str>, Entry> = HashMap::new();
    loop {
        sync(&gateway, &mut entries);
        for (issuer, e) in entries.iter_mut() {
            let uri = e.uri.as_str();
            let now = Instant::now();
            let Some(reason) = e.refresher.poll(now) else {
                continue;
            };
            let body = fetch(&client, uri, e.policy.timeout);
            let outcome = e
                .refresher
                .complete(Instant::now(), body.as_deref().map_err(String::clone));
            match outcome {
                RefreshOutcome::Updated { keys, skipped } => {
                    tracing::info!(issuer = %issuer, uri, ?reason, keys, skipped, "JWKS refreshed")
                }
                RefreshOutcome::KeptStale { error } => {
                    tracing::warn!(issuer = %issuer, uri, ?reason, "JWKS fetch failed, keeping the last good keys: {error}")
                }
                RefreshOutcome::NoKeys { error } => {
                    tracing::warn!(issuer = %issuer, uri, ?reason, "JWKS fetch failed, no keys yet: {error}")
                }
            }
        }
        gateway.jwks_ready.store(true, Ordering::Relaxed);
        let now = Instant::now();
        let next = entries
            .values()
            .map(|e| e.refresher.next_due())
            .min()
            .map_or(MAX_SLEEP, |due| due.saturating_duration_since(now))
            .min(MAX_SLEEP);
        match rx.recv_timeout(next) {
            Ok(issuer) => {
                let now = Instant::now();
                for i in std::iter::once(issuer).chain(rx.try_iter()) {
                    if let Some(e) = entries.get_mut(&i) {
                        e.refresher.request_refetch(now);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Makes the refreshers match the current runtime's `jwks_uri` sources.
fn sync(gateway: &Gateway, entries: &mut HashMap<Arc<str>, Entry>) {
    let runtime = gateway.runtime.load();
    let sources = &runtime.identity.jwks_sources;
    entries.retain(|issuer, e| {
        sources.iter().any(|s| {
            &s.issuer == issuer
                && s.uri == e.uri
                && s.policy == e.policy
                && s.keys.ptr_eq(e.refresher.keys())
        })
    });
    for s in sources {
        entries.entry(s.issuer.clone()).or_insert_with(|| Entry {
            uri: s.uri.clone(),
            policy: s.policy,
            refresher: JwksRefresher::new(s.policy, s.keys.clone(), Instant::now()),
        });
    }
}

fn fetch(
    client: &reqwest::blocking::Client,
    uri: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let resp = client
        .get(uri)
        .timeout(timeout)
        .send()
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("GET {uri}: status {}", resp.status()));
    }
    let mut body = Vec::new();
    resp.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!(
            "GET {uri}: JWKS larger than {MAX_JWKS_BYTES} bytes"
        ));
    }
    Ok(body)
}
