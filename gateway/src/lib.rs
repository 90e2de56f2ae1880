//! The gateway: configuration, compiled runtime, the Pingora proxy, admin
//! endpoints and telemetry. The binary (`src/main.rs`) is a thin CLI over
//! this library.

pub mod access_log;
pub mod admin;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod runtime;
pub mod server;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use arc_swap::ArcSwap;

use config::Diagnostics;
use runtime::Runtime;

/// State shared by every listener: the current runtime snapshot.
pub struct Gateway {
    /// The runtime requests use; a reload stores a new one.
    pub runtime: ArcSwap<Runtime>,
    /// The main config file.
    pub config_path: PathBuf,
    /// Whether access-log lines are written.
    pub access_log: bool,
    /// Every listener has accepted a probe connection (admin `/readyz`).
    pub ready: AtomicBool,
}

/// Loads, validates and compiles the config at `path`.
pub fn load_runtime(path: &Path) -> Result<Runtime, Diagnostics> {
    let loaded = config::load(path)?;
    runtime::compile(&loaded)
}

impl Gateway {
    /// Shared state around a first runtime.
    pub fn new(config_path: PathBuf, runtime: Runtime) -> Self {
        let access_log = runtime.config.telemetry.access_log.enabled;
        Gateway {
            runtime: ArcSwap::from_pointee(runtime),
            config_path,
            access_log,
            ready: AtomicBool::new(false),
        }
    }
}
