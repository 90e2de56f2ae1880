//! `reload ADMIN_ADDR CONFIG_FILE EVERY_SECS N`: the reload cell's driver.
//! Every EVERY_SECS, at most N times, rewrites CONFIG_FILE with a new value
//! of its `x-generation: "<n>"` header (a real change, never `unchanged`)
//! and sends `POST /reload` to the gateway's admin address. One process
//! without forks: a shell loop (`mv`, `sleep`, `curl` each time) costs the
//! generator's CPU several milliseconds per reload and showed up as a loss
//! of the gateway's throughput that had nothing to do with reloading.
//! Prints `reloads=N failed=M`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::Result;

pub fn run(admin: &str, file: &str, every: f64, n: u64) -> Result<()> {
    let admin: SocketAddr = admin.parse()?;
    if !admin.ip().is_loopback() {
        return Err(format!("{admin} is not a loopback address").into());
    }
    let template = std::fs::read_to_string(file)?;
    let marker = "x-generation: \"";
    let at = template
        .find(marker)
        .ok_or("the config has no `x-generation: \"<n>\"` to change")?
        + marker.len();
    let end = at
        + template[at..]
            .find('"')
            .ok_or("unterminated x-generation value")?;
    let tmp = format!("{file}.tmp");
    let (mut ok, mut failed) = (0u64, 0u64);
    let start = Instant::now();
    for i in 1..=n {
        let next = start + Duration::from_secs_f64(every * i as f64);
        let text = format!("{}{}{}", &template[..at], i, &template[end..]);
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, file)?;
        match post_reload(&admin) {
            Ok(true) => ok += 1,
            _ => failed += 1,
        }
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    println!("reloads={ok} failed={failed}");
    Ok(())
}

/// `POST /reload`; `Ok(true)` on a 200.
fn post_reload(admin: &SocketAddr) -> std::io::Result<bool> {
    let mut s = TcpStream::connect_timeout(admin, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(
        b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    Ok(&head[9..12] == b"200")
}
