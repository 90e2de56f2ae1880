//! Config load and validate (`gateway::config::load`, then
//! `gateway::runtime::compile`, what `gateway validate` runs).
//!
//! The input is written as the main config file in a private temporary
//! directory. Properties:
//! - never panics;
//! - every error is a diagnostic in that file with a position inside it
//!   (line 1..=lines+1, column 1..=line length+1) and a non-empty message.
//!
//! Kept off the machine (the harness skips or rewrites, so nothing but the
//! temporary directory is touched): `include:` globs other than plain
//! relative file patterns; configs naming an existing file (certificate,
//! key, CA, JWKS, secret), since those could be `/dev/zero` or a FIFO; and
//! `hostname:port` endpoints, which compile resolves with DNS: they are
//! rewritten to `127.0.0.1:port` before compile.
#![no_main]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;

use gateway::config::{Config, Diagnostics};
use libfuzzer_sys::fuzz_target;

fn config_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("gateway-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        dir.join("gateway.yaml")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Only relative patterns without directories stay inside our directory.
    if let Ok(pre) = serde_yaml::from_str::<Config>(text) {
        let contained = |p: &String| {
            !p.is_empty()
                && !p.contains("..")
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-*?".contains(&b))
        };
        if !pre.include.iter().all(contained) {
            return;
        }
    }
    let path = config_path();
    std::fs::write(path, text).expect("write the config");
    let mut loaded = match gateway::config::load(path) {
        Ok(l) => l,
        Err(d) => return check_positions(text, &d),
    };
    if gateway::runtime::referenced_files(&loaded)
        .iter()
        .any(|f| f.exists())
    {
        return;
    }
    for cluster in &mut loaded.config.clusters {
        for e in &mut cluster.endpoints {
            if e.address.parse::<SocketAddr>().is_ok() {
                continue;
            }
            if let Some((_, port)) = e.address.rsplit_once(':') {
                if port.parse::<u16>().is_ok() {
                    e.address = format!("127.0.0.1:{port}");
                }
            }
        }
    }
    if let Err(d) = gateway::runtime::compile(&loaded, None) {
        check_positions(text, &d);
    }
});

fn check_positions(text: &str, diags: &Diagnostics) {
    assert!(!diags.0.is_empty(), "an error without a diagnostic");
    // YAML line breaks: `\r\n`, `\n` and a lone `\r`.
    let unified = text.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = unified.split('\n').collect();
    for d in &diags.0 {
        assert_eq!(&d.file, config_path(), "{d}");
        assert!(!d.message.trim().is_empty(), "{d}: empty message");
        assert!(
            d.line >= 1 && d.line <= lines.len() + 1,
            "{d}: line outside the file ({} lines)",
            lines.len()
        );
        assert!(d.column >= 1, "{d}: column 0");
        if let Some(line) = lines.get(d.line - 1) {
            let width = line.chars().count();
            assert!(
                d.column <= width + 1,
                "{d}: column past the end of a {width}-char line"
            );
        }
    }
}
