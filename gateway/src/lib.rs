//! The gateway: configuration, compiled runtime, the Pingora proxy, admin
//! endpoints and telemetry. The binary (`src/main.rs`) is a thin CLI over
//! this library.

pub mod access_log;
pub mod admin;
mod alloc;
pub mod client_address;
pub mod config;
pub mod discovery;
pub mod egress;
pub mod ext_authz;
pub mod hop_by_hop;
pub mod identity;
pub mod lean;
pub mod limits;
pub mod metrics;
pub mod mirror;
pub mod proxy;
pub mod reload;
pub mod runtime;
pub mod server;
pub mod telemetry;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use config::Diagnostics;
use reload::{ReloadStatus, WatchState};
use runtime::tls::CertResolver;
use runtime::{ListenerSpec, Runtime};

/// State shared by every listener: the current runtime snapshot and what
/// outlives reloads.
pub struct Gateway {
    /// The runtime requests use; a reload stores a new one.
    pub runtime: ArcSwap<Runtime>,
    /// The main config file.
    pub config_path: PathBuf,
    /// Every listener has accepted a probe connection (admin `/readyz`).
    pub ready: AtomicBool,
    /// The listeners bound at startup (changing them needs a restart).
    pub bound_listeners: Vec<ListenerSpec>,
    /// Certificates of TLS listeners, rotated by reloads.
    pub listener_certs: HashMap<String, Arc<CertResolver>>,
    /// Serializes reloads.
    pub reload_lock: Mutex<()>,
    /// Result of the last reload attempt (admin `/config`).
    pub reload_status: Mutex<ReloadStatus>,
    /// What the config watcher looks at.
    pub watch: Mutex<WatchState>,
    /// Shutdown or upgrade has begun: answer with `Connection: close` so
    /// clients move to fresh connections before idle ones are cut.
    pub draining: AtomicBool,
    /// Every `jwks_uri` of the starting config was fetched once (admin
    /// `/readyz` waits for it, so the first tokens find their keys).
    pub jwks_ready: AtomicBool,
}

/// Loads, validates and compiles the config at `path`.
pub fn load_runtime(path: &Path) -> Result<Runtime, Diagnostics> {
    let loaded = config::load(path)?;
    runtime::compile(&loaded, None)
}

impl Gateway {
    /// Shared state around a first runtime: the listeners' certificate
    /// resolvers (serving the certificates compiled into `runtime`), the
    /// certificate expiry metric, and the config's warnings logged.
    pub fn new(config_path: PathBuf, runtime: Runtime) -> Result<Self, String> {
        let mut listener_certs = HashMap::new();
        for l in &runtime.listeners {
            if let Some(tls) = &l.tls {
                let resolver = CertResolver::new(tls.certs.clone());
                listener_certs.insert(l.name.to_string(), Arc::new(resolver));
            }
        }
        for w in &runtime.warnings {
            tracing::warn!("{w}");
        }
        metrics::METRICS.set_certificate_expiry(&[], &runtime.certificates);
        let status = ReloadStatus::startup(&runtime);
        runtime.start_background_tasks();
        let watch = WatchState::new(&runtime);
        Ok(Gateway {
            bound_listeners: runtime.listeners.clone(),
            runtime: ArcSwap::from_pointee(runtime),
            config_path,
            ready: AtomicBool::new(false),
            listener_certs,
            reload_lock: Mutex::new(()),
            reload_status: Mutex::new(status),
            watch: Mutex::new(watch),
            draining: AtomicBool::new(false),
            jwks_ready: AtomicBool::new(false),
        })
    }

    /// A copy of the watcher's state.
    pub fn watch_state(&self) -> WatchState {
        self.watch.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        self.reload_status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
