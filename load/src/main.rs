//! `loadtool`: the small helpers `load/run.sh` needs besides wrk and h2load.
//!
//! - `rate ADDR RATE CONNS SECS WARMUP`: constant-rate HTTP/1.1 load with
//!   latency percentiles (no coordinated omission).
//! - `hold ADDR N SECS READY_FILE`: opens N keep-alive connections, sends one
//!   request on each, then keeps them open (at most SECS seconds).
//! - `report CSV META MD PNG MODE`: medians over rounds, ratios, target
//!   checks (Markdown) and the chart (PNG, plotters).

mod chart;
mod hold;
mod rate;
mod report;

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage:\n  loadtool rate ADDR REQ_PER_SEC CONNS SECS WARMUP_SECS\n  loadtool hold ADDR CONNS MAX_SECS READY_FILE\n  loadtool report RESULTS_CSV META_MD OUT_MD OUT_PNG MODE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("rate") if args.len() == 6 => {
            let (Ok(rate), Ok(conns), Ok(secs), Ok(warm)) = (
                args[2].parse(),
                args[3].parse(),
                args[4].parse(),
                args[5].parse(),
            ) else {
                return usage();
            };
            rate::run(&args[1], rate, conns, secs, warm)
        }
        Some("hold") if args.len() == 5 => {
            let (Ok(n), Ok(secs)) = (args[2].parse(), args[3].parse()) else {
                return usage();
            };
            hold::run(&args[1], n, secs, &args[4])
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
