//! `loadtool`: the small helpers `load/run.sh` needs besides wrk and h2load.
//!
//! - `rate ADDR RATE CONNS SECS WARMUP [-H HEADER]... [--overload]`:
//!   constant-rate HTTP/1.1 load with latency percentiles (no coordinated
//!   omission), and throughput under overload.
//! - `hold ADDR N SECS READY_FILE [-H HEADER]...`: opens N keep-alive
//!   connections, sends one request on each, then keeps them open (at most
//!   SECS seconds).
//! - `report CSV META MD PNG MODE`: medians over rounds, ratios, target
//!   checks (Markdown) and the chart (PNG, plotters).

mod chart;
mod hold;
mod rate;
mod reload;
mod report;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  loadtool rate ADDR REQ_PER_SEC CONNS SECS WARMUP_SECS [-H 'Name: value']... [--overload]\n  loadtool hold ADDR CONNS MAX_SECS READY_FILE [-H 'Name: value']...\n  loadtool reload ADMIN_ADDR CONFIG_FILE EVERY_SECS N\n  loadtool report RESULTS_CSV META_MD OUT_MD OUT_PNG MODE"
    );
    ExitCode::from(2)
}

/// Raises the soft limit of open descriptors to the hard one (`hold` opens
/// 10,000 sockets).
fn raise_nofile() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `l` is a valid rlimit the kernel writes to / reads from.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

fn main() -> ExitCode {
    raise_nofile();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("rate") => match rate::Opts::parse(&args[1..]) {
            Some(o) => rate::run(&o),
            None => return usage(),
        },
        Some("hold") if args.len() >= 5 => {
            let (Ok(n), Ok(secs)) = (args[2].parse(), args[3].parse()) else {
                return usage();
            };
            let mut headers = Vec::new();
            let mut it = args[5..].iter();
            while let Some(a) = it.next() {
                match (a.as_str(), it.next()) {
                    ("-H" | "--header", Some(h)) if h.contains(':') => headers.push(h.clone()),
                    _ => return usage(),
                }
            }
            hold::run(&args[1], n, secs, &args[4], &headers)
        }
        Some("reload") if args.len() == 5 => {
            let (Ok(every), Ok(n)) = (args[3].parse(), args[4].parse()) else {
                return usage();
            };
            reload::run(&args[1], &args[2], every, n)
        }
        Some("report") if args.len() == 6 => {
            report::run(&args[1], &args[2], &args[3], &args[4], &args[5])
        }
        _ => return usage(),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadtool: {e}");
            ExitCode::FAILURE
        }
    }
}

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
