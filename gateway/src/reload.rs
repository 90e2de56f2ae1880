//! Hot reload: parse -> validate -> compile a new [`Runtime`] off the request
//! path -> one `arc-swap` store. Requests in flight keep the snapshot they
//! started with. An invalid config never replaces the running one; its
//! errors are logged with positions and exposed on admin `/config` and in
//! metrics.
//!
//! Triggers: file changes (notify, debounced), `SIGHUP`, admin `POST /reload`.
//! Directories are watched rather than files, so editors that save by rename
//! and Kubernetes ConfigMap symlink swaps are both seen; a content hash of
//! every source file decides whether anything really changed.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use serde::Serialize;

use crate::config::load::glob_dir;
use crate::metrics::METRICS;
use crate::runtime::{self, Runtime};
use crate::Gateway;

/// How long a burst of file events may settle before the files are read.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// Outcome of one reload attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A new runtime is serving.
    Success,
    /// The config is invalid; the previous runtime keeps serving.
    Error,
    /// Nothing changed on disk.
    Unchanged,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Error => "error",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// What admin `/config` shows about reloads.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadStatus {
    /// Generation serving now (1 = the config the process started with).
    pub generation: u64,
    /// Hash of every source file of the serving config (hex).
    pub sources_hash: String,
    /// When the last attempt finished (RFC 3339).
    pub last_attempt: Option<String>,
    /// What started it: `startup`, `watch`, `sighup`, `admin`.
    pub last_trigger: &'static str,
    /// Its outcome.
    pub last_outcome: Outcome,
    /// Its errors, `file:line:column: message` each.
    pub last_errors: Vec<String>,
    /// Warnings of the serving config (certificates expiring soon), as
    /// positioned as the errors.
    pub last_warnings: Vec<String>,
    /// When a config was last applied (RFC 3339).
    pub last_success: Option<String>,
    /// Changes that were not applied because they need a restart.
    pub restart_required: Vec<String>,
}

impl ReloadStatus {
    /// The status right after startup.
    pub fn startup(rt: &Runtime) -> Self {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        METRICS.config_generation.set(rt.generation as i64);
        METRICS.config_last_success.set(unix_now());
        ReloadStatus {
            generation: rt.generation,
            sources_hash: format!("{:016x}", rt.sources_hash),
            last_attempt: Some(now.clone()),
            last_trigger: "startup",
            last_outcome: Outcome::Success,
            last_errors: Vec::new(),
            last_warnings: rt.warnings.iter().map(ToString::to_string).collect(),
            last_success: Some(now),
            restart_required: Vec::new(),
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What the watcher looks at: the files and include globs of the serving
/// config and of the last attempt (which may name files the serving one
/// does not), and their content hash when the last attempt started.
#[derive(Clone, Debug, Default)]
pub struct WatchState {
    files: BTreeSet<PathBuf>,
    globs: BTreeSet<PathBuf>,
    /// Content hash taken just before the last attempt read the files; an
    /// event that leaves it unchanged (a log file written next to the
    /// config, our own reads) triggers nothing.
    seen_hash: u64,
}

impl WatchState {
    /// The watch state of a freshly started runtime.
    pub fn new(rt: &Runtime) -> Self {
        let mut w = WatchState::default();
        w.add(
            rt.watch_files.iter().cloned(),
            rt.watch_globs.iter().cloned(),
        );
        w.seen_hash = w.content_hash();
        w
    }

    fn add(
        &mut self,
        files: impl IntoIterator<Item = PathBuf>,
        globs: impl IntoIterator<Item = PathBuf>,
    ) {
        self.files.extend(files);
        self.globs.extend(globs);
    }

    /// Hash of every watched file and every current match of the globs.
    fn content_hash(&self) -> u64 {
        let mut all: Vec<PathBuf> = self.files.iter().cloned().collect();
        for g in &self.globs {
            if let Ok(paths) = glob::glob(&g.to_string_lossy()) {
                all.extend(paths.filter_map(Result::ok));
            }
        }
        all.sort();
        all.dedup();
        runtime::hash_files(&all)
    }

    /// Directories to watch (non-recursively).
    fn dirs(&self) -> HashSet<PathBuf> {
        let parent = |f: &PathBuf| match f.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut dirs: HashSet<PathBuf> = self.files.iter().map(parent).collect();
        dirs.extend(self.globs.iter().map(|g| glob_dir(g)));
        dirs
    }
}

/// Listener differences that only a restart (or `--upgrade`) can apply.
fn restart_required(gateway: &Gateway, new: &Runtime) -> Vec<String> {
    let mut out = Vec::new();
    for l in &new.listeners {
        match gateway.bound_listeners.iter().find(|b| b.name == l.name) {
            None => out.push(format!("listener `{}` is new", l.name)),
            Some(b) if b.addr != l.addr => out.push(format!(
                "listener `{}` moved from {} to {}",
                l.name, b.addr, l.addr
            )),
            Some(b) if b.tls.is_some() != l.tls.is_some() || b.h2c != l.h2c => {
                out.push(format!("listener `{}` changed protocol", l.name))
            }
            Some(b) if b.read_buffer_bytes != l.read_buffer_bytes => {
                out.push(format!("listener `{}` changed read_buffer_bytes", l.name))
            }
            Some(b) if b.limits != l.limits => {
                out.push(format!("listener `{}` changed limits", l.name))
            }
            Some(b) if b.proxy_protocol != l.proxy_protocol => {
                out.push(format!("listener `{}` changed proxy_protocol", l.name))
            }
            Some(_) => {}
        }
    }
    for b in &gateway.bound_listeners {
        if !new.listeners.iter().any(|l| l.name == b.name) {
            out.push(format!("listener `{}` was removed (still serving)", b.name));
        }
    }
    if crate::proxy::compression::needs_restart(new) {
        out.push("routes[].compression is new since the start".into());
    }
    if new.admin_addr != gateway.runtime.load().admin_addr {
        out.push(format!("admin listener moved to {}", new.admin_addr));
    }
    out
}

/// Reloads the config now (blocking: run it off the request path). Reloads
/// are serialized. `trigger` names the cause for the status and logs.
pub fn reload(gateway: &Gateway, trigger: &'static str) -> ReloadStatus {
    let _one_at_a_time = gateway
        .reload_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let current = gateway.runtime.load_full();
    let attempt = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let before = gateway.watch_state();
    let pre_hash = before.content_hash();
    let loaded = crate::config::load(&gateway.config_path);
    let (attempted_files, attempted_globs) = match &loaded {
        Ok(l) => (runtime::watched_files(l), l.sources.include_globs()),
        Err(_) => (vec![gateway.config_path.clone()], Vec::new()),
    };
    let compiled = loaded.and_then(|l| runtime::compile(&l, Some(&current)));
    let mut status = gateway.status();
    status.last_attempt = Some(attempt.clone());
    status.last_trigger = trigger;
    match compiled {
        Err(diags) => {
            let errors: Vec<String> = diags.0.iter().map(ToString::to_string).collect();
            for e in &errors {
                tracing::error!(trigger, "config reload rejected: {e}");
            }
            tracing::warn!("still serving generation {}", current.generation);
            status.last_outcome = Outcome::Error;
            status.last_errors = errors;
        }
        Ok(new) if new.sources_hash == current.sources_hash => {
            status.last_outcome = Outcome::Unchanged;
            status.last_errors.clear();
        }
        Ok(mut new) => {
            new.generation = current.generation + 1;
            let restart = restart_required(gateway, &new);
            for r in &restart {
                tracing::warn!(
                    "{r}: restart the gateway (or use `gateway run --upgrade`) to apply"
                );
            }
            // The certificates were loaded and checked by compile: hand
            // each listener its new table (one atomic store per listener).
            for l in &new.listeners {
                if let (Some(tls), Some(resolver)) = (&l.tls, gateway.listener_certs.get(&*l.name))
                {
                    if resolver.store(tls.certs.clone()) {
                        tracing::info!(listener = %l.name, "listener certificates rotated");
                    }
                }
            }
            for w in &new.warnings {
                tracing::warn!(trigger, "{w}");
            }
            METRICS.set_certificate_expiry(&current.certificates, &new.certificates);
            let generation = new.generation;
            status.generation = generation;
            status.sources_hash = format!("{:016x}", new.sources_hash);
            status.last_outcome = Outcome::Success;
            status.last_errors.clear();
            status.last_warnings = new.warnings.iter().map(ToString::to_string).collect();
            status.last_success = Some(attempt);
            status.restart_required = restart;
            new.start_background_tasks();
            let replaced: Vec<Arc<runtime::cluster::Cluster>> = current
                .clusters
                .iter()
                .filter(|(name, old)| new.clusters.get(*name).is_none_or(|c| !Arc::ptr_eq(c, old)))
                .map(|(_, old)| old.clone())
                .collect();
            gateway.runtime.store(Arc::new(new));
            replaced.iter().for_each(runtime::cluster::Cluster::retire);
            METRICS.config_generation.set(generation as i64);
            METRICS.config_last_success.set(unix_now());
            tracing::info!(trigger, generation, "config reloaded");
        }
    }
    let quiet = trigger == "watch" && status.last_outcome == Outcome::Unchanged;
    if !quiet {
        METRICS
            .config_reloads
            .with_label_values(&[status.last_outcome.label()])
            .inc();
    }
    *gateway
        .reload_status
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = status.clone();

    let serving = gateway.runtime.load();
    let mut after = WatchState::default();
    after.add(
        serving.watch_files.iter().cloned(),
        serving.watch_globs.iter().cloned(),
    );
    after.add(attempted_files, attempted_globs);
    // The pre-attempt hash is only comparable over the same set of files;
    // when the set changed, the next event decides afresh.
    after.seen_hash = if after.files == before.files && after.globs == before.globs {
        pre_hash
    } else {
        0
    };
    *gateway.watch.lock().unwrap_or_else(|p| p.into_inner()) = after;
    status
}

/// Starts the reload thread: file watching and `SIGHUP`.
pub fn spawn(gateway: Arc<Gateway>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("config-reload".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("config reload disabled: cannot start its runtime: {e}");
                    return;
                }
            };
            rt.block_on(watch_loop(gateway));
        })?;
    Ok(())
}

async fn watch_loop(gateway: Arc<Gateway>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        // Reads (our own, while reloading) must not trigger reloads.
        if let Ok(ev) = res {
            if !matches!(ev.kind, EventKind::Access(_)) {
                let _ = tx.send(());
            }
        }
    });
    let mut watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!("file watching disabled ({e}); reload with SIGHUP or POST /reload");
            None
        }
    };
    let mut watched: HashSet<PathBuf> = HashSet::new();
    let sync = |watcher: &mut Option<notify::RecommendedWatcher>,
                watched: &mut HashSet<PathBuf>| {
        let Some(w) = watcher.as_mut() else { return };
        let want = gateway.watch_state().dirs();
        for d in watched.difference(&want) {
            let _ = w.unwatch(d);
        }
        for d in want.difference(watched) {
            if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                tracing::warn!("cannot watch {}: {e}", d.display());
            }
        }
        *watched = want;
    };
    sync(&mut watcher, &mut watched);
    tracing::info!(dirs = ?watched, "watching the config for changes");

    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("SIGHUP reload disabled: {e}");
            None
        }
    };
    loop {
        let trigger = tokio::select! {
            ev = rx.recv() => {
                if ev.is_none() {
                    return;
                }
                // Debounce: let the burst settle for a fixed window, then take
                // everything it queued. (A window that restarts on every event
                // would never end next to a busy log file in the same directory.)
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                let state = gateway.watch_state();
                if state.content_hash() == state.seen_hash {
                    tracing::debug!("file events, but no watched content changed");
                    continue;
                }
                "watch"
            }
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "sighup",
        };
        let gw = gateway.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reload(&gw, trigger)).await {
            tracing::error!("config reload task failed: {e}");
        }
        sync(&mut watcher, &mut watched);
    }
}
