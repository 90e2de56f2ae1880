//! `bare-pingora`: the benchmark's reference cell. A `ProxyHttp` that only
//! returns one prebuilt peer: no routing, no headers, no metrics, no log.
//! Its allocator and listener buffers are the gateway's (see `Cargo.toml`
//! and `--l4-read-buffer`), so `gateway / bare-pingora` in the load report
//! is the cost of the gateway's own work.
//!
//! ```text
//! bare-pingora --upstream 127.0.0.1:9000 --listen 127.0.0.1:8080 \
//!     [--tls-listen 127.0.0.1:8443 --cert C --key K] [--threads 1] \
//!     [--l4-read-buffer BYTES] [--tls-l4-read-buffer BYTES] \
//!     [--work-stealing true|false] [--pool-size N]
//! ```
//!
//! Without the buffer and runtime flags it runs with Pingora's defaults;
//! `load/run.sh` passes the gateway's defaults (`BARE_ARGS`).

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;

// The gateway's global allocator (and its settings), linked in from its library.
use gateway as _;

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    // No downstream modules (Pingora's default adds a disabled compression
    // module to every request), as in the gateway when no route compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

struct Args {
    upstream: String,
    listen: Option<String>,
    tls_listen: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    threads: usize,
    l4_read_buffer: Option<usize>,
    tls_l4_read_buffer: Option<usize>,
    work_stealing: bool,
    pool_size: usize,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut a = Args {
        upstream: String::new(),
        listen: None,
        tls_listen: None,
        cert: None,
        key: None,
        threads: 1,
        l4_read_buffer: None,
        tls_l4_read_buffer: None,
        work_stealing: ServerConf::default().work_stealing,
        pool_size: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => a.upstream = value()?,
            "--listen" => a.listen = Some(value()?),
            "--tls-listen" => a.tls_listen = Some(value()?),
            "--cert" => a.cert = Some(value()?),
            "--key" => a.key = Some(value()?),
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--l4-read-buffer" => {
                a.l4_read_buffer = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--l4-read-buffer: {e}"))?,
                )
            }
            "--tls-l4-read-buffer" => {
                a.tls_l4_read_buffer = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--tls-l4-read-buffer: {e}"))?,
                )
            }
            "--work-stealing" => {
                a.work_stealing = value()?
                    .parse()
                    .map_err(|e| format!("--work-stealing: {e}"))?
            }
            "--pool-size" => {
                a.pool_size = value()?.parse().map_err(|e| format!("--pool-size: {e}"))?
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.upstream.is_empty() {
        return Err("--upstream HOST:PORT is required".into());
    }
    if a.listen.is_none() && a.tls_listen.is_none() {
        return Err("give --listen and/or --tls-listen".into());
    }
    if a.tls_listen.is_some() && (a.cert.is_none() || a.key.is_none()) {
        return Err("--tls-listen needs --cert and --key".into());
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bare-pingora: {e}");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: args.threads,
        upstream_keepalive_pool_size: args.pool_size,
        work_stealing: args.work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let peer = HttpPeer::new(args.upstream.as_str(), false, String::new());
    let mut svc = http_proxy_service(&server.configuration, Bare { peer });
    let buffers = |size: Option<usize>| match size {
        Some(n) => L4BufferSettings::default().read(n),
        None => L4BufferSettings::default(),
    };
    if let Some(addr) = &args.listen {
        svc.add_listener(
            ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers(args.l4_read_buffer)),
        );
    }
    if let (Some(addr), Some(cert), Some(key)) = (&args.tls_listen, &args.cert, &args.key) {
        let mut tls = match TlsSettings::intermediate(cert, key) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("bare-pingora: {e}");
                std::process::exit(2);
            }
        };
        tls.enable_h2();
        let tls_buffer = buffers(args.tls_l4_read_buffer.or(args.l4_read_buffer));
        svc.add_listener(
            ListenerConfig::tcp(addr.as_str())
                .tls(tls)
                .l4_buffer(tls_buffer),
        );
    }
    server.add_service(svc);
    server.run_forever()
}
