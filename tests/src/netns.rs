//! Network namespaces for multi-host tests: a test makes one namespace per
//! host (gateway, zone of upstreams, client), each with one address on a
//! shared bridge, and breaks the network between them (a link set down)
//! instead of killing processes. Everything is removed when the
//! [`Fabric`] drops; traffic only flows between the namespaces it made.
//!
//! Code runs "on a host" with [`Fabric::on`]: a thread that entered the
//! host's namespace (`setns`), so every socket it opens, every thread it
//! starts (test upstreams) and every process it spawns (the gateway) lives
//! there.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// The namespaces of one test, joined by a bridge in a namespace of its own.
pub struct Fabric {
    prefix: String,
    hosts: Vec<String>,
}

static FABRICS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Fabric {
    /// A fabric, or `None` (the caller skips, with the reason printed) when
    /// namespaces cannot be made here: not root, or no `ip`. Under CI (the
    /// `CI` variable set) that is a failure instead of a skip.
    pub fn new() -> Option<Fabric> {
        let n = FABRICS.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("gwt{}x{n}", std::process::id());
        let fabric = Fabric {
            prefix,
            hosts: Vec::new(),
        };
        let bridge = fabric.ns("fab");
        let made = ip(&["netns", "add", &bridge])
            .and_then(|()| ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]))
            .and_then(|()| ip(&["-n", &bridge, "link", "set", "br0", "up"]));
        match made {
            Ok(()) => Some(fabric),
            Err(e) if std::env::var_os("CI").is_some() => {
                panic!("network namespace tests need root and iproute2 (CI): {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: network namespace tests need root and iproute2: {e}");
                None
            }
        }
    }

    /// The full namespace name of host `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Adds host `name` with address `addr` (a `/24` on the bridge).
    pub fn host(&mut self, name: &str, addr: &str) {
        let ns = self.ns(name);
        let port = format!("p-{name}");
        let bridge = self.ns("fab");
        let steps: [&[&str]; 7] = [
            &["netns", "add", &ns],
            &["-n", &ns, "link", "set", "lo", "up"],
            &[
                "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &bridge,
            ],
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ],
            &["-n", &ns, "link", "set", "eth0", "up"],
            &["-n", &bridge, "link", "set", &port, "master", "br0"],
            &["-n", &bridge, "link", "set", &port, "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("host {name}: {e}"));
        }
        self.hosts.push(ns);
    }

    /// Sets host `name`'s link to the bridge up or down (a cable pulled:
    /// no reset, packets just stop).
    pub fn link(&self, name: &str, up: bool) {
        let state = if up { "up" } else { "down" };
        let port = format!("p-{name}");
        ip(&["-n", &self.ns("fab"), "link", "set", &port, state])
            .unwrap_or_else(|e| panic!("link {name} {state}: {e}"));
    }

    /// Runs `f` on a thread inside host `name`'s namespace and returns its
    /// result.
    pub fn on<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(name));
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path);
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Runs the future `make()` builds on a fresh runtime inside host
    /// `name`'s namespace.
    pub fn block_on<T: Send, F: std::future::Future<Output = T>>(
        &self,
        name: &str,
        make: impl FnOnce() -> F + Send,
    ) -> T {
        self.on(name, || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(make())
        })
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace descriptor changes only this
    // thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for Fabric {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns("fab"))) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
