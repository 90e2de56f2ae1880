//! `gateway`: run, validate, or print the config schema.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use gateway::config::LogFormat;

#[derive(Parser)]
#[command(name = "gateway", version, about = "Ingress/egress gateway on Pingora")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file to run (shorthand for `gateway run -c FILE`).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running gateway (see `run --upgrade`).
    #[arg(short = 'u', long)]
    upgrade: bool,
    /// Format of the gateway's own log lines on stderr (default: the
    /// config's `telemetry.log_format`, else `text`).
    #[arg(long, value_enum, global = true, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The main config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
        /// Zero-downtime upgrade: take over the listening sockets of the
        /// running gateway through `gateway.upgrade_sock`, then send that
        /// process SIGQUIT; it drains and exits.
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Check a config file and print every problem as file:line:column.
    Validate {
        /// The main config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the config file.
    Schema,
}

/// The gateway's own log (not the access log, which is stdout): `RUST_LOG`
/// filters it (default `info`). Colour codes only when stderr is a terminal
/// and `NO_COLOR` is unset, so files, journald and `kubectl logs` get plain
/// text.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).init()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = cli.log_format;
    pingora::tls::install_default_crypto_provider();
    let mut upgrade = cli.upgrade;
    let (path, run) = match (cli.command, cli.config) {
        (Some(Command::Schema), _) => {
            print!("{}", gateway::config::json_schema());
            return ExitCode::SUCCESS;
        }
        (Some(Command::Validate { config }), _) => (config, false),
        (Some(Command::Run { config, upgrade: u }), _) => {
            upgrade |= u;
            (config, true)
        }
        (None, Some(config)) => (config, true),
        (None, None) => {
            eprintln!("usage: gateway run -c FILE | gateway validate -c FILE | gateway schema (see --help)");
            return ExitCode::from(2);
        }
    };
    let runtime = match gateway::load_runtime(&path) {
        Ok(rt) => rt,
        Err(diags) => {
            eprintln!("{diags}");
            let outcome = if run { "; not started" } else { "" };
            eprintln!("{}: {} problem(s){outcome}", path.display(), diags.0.len());
            return ExitCode::from(1);
        }
    };
    if !run {
        // `run` logs them (Gateway::new), as reloads do.
        for w in &runtime.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}: ok ({} listeners, {} clusters, {} routes)",
            path.display(),
            runtime.listeners.len(),
            runtime.clusters.len(),
            runtime.router.routes.len()
        );
        return ExitCode::SUCCESS;
    }
    init_logging(log_format.unwrap_or(runtime.config.telemetry.log_format));
    gateway::access_log::init();
    if let Err(e) = gateway::telemetry::init(
        runtime.config.telemetry.tracing.as_ref(),
        &runtime.config.gateway.name,
    ) {
        eprintln!("gateway: {e}");
        return ExitCode::from(1);
    }
    let gateway = match gateway::Gateway::new(path, runtime) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(1);
        }
    };
    match gateway::server::run(gateway, upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}
