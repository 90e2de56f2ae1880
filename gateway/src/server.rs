//! Assembling the Pingora server: one proxy service per listener, the admin
//! service, threads and shutdown settings.

use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::Opt;
use pingora::server::ExecutionPhase;
use tokio::sync::broadcast::error::RecvError;

use pingora::apps::http_app::HttpServer;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::client_address;
use crate::config::{ClientAuth, ListenerMode};
use crate::egress::EgressApp;
use crate::identity::client_auth::{PeerIdentityHook, SpiffeClientVerifier};
use crate::lean::LeanApp;
use crate::limits::{ConnectionGate, Gatekeeper, ProxyHttpFront};
use crate::metrics::METRICS;
use crate::proxy::GatewayProxy;
use crate::runtime::{ListenerSpec, ListenerTlsSpec};
use crate::Gateway;
use pingora::proxy::HttpProxy;

/// After a graceful shutdown started (SIGTERM, or SIGQUIT once the sockets
/// were handed to the new process), Pingora sleeps for the whole grace
/// period. Exit as soon as no request is in flight instead; the grace period
/// (`gateway.drain_timeout`) stays the upper bound.
///
/// From the first shutdown or upgrade signal on, responses also close their
/// connection (`gateway.draining`): during an upgrade the old process keeps
/// serving for a few seconds while the new one takes over, and clients that
/// were told to close move over without racing the final cut of idle
/// keep-alive connections.
fn exit_when_drained(
    gateway: Arc<Gateway>,
    mut phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
) {
    let spawned = std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || loop {
            match phases.blocking_recv() {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulTerminate,
                ) => {
                    gateway
                        .draining
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(ExecutionPhase::ShutdownGracePeriod) => {
                    let mut idle_polls = 0;
                    while idle_polls < 4 {
                        std::thread::sleep(Duration::from_millis(50));
                        idle_polls = if METRICS.active_requests.get() == 0 {
                            idle_polls + 1
                        } else {
                            0
                        };
                    }
                    tracing::info!("drained: no request in flight, exiting");
                    crate::access_log::flush(Duration::from_secs(1));
                    crate::telemetry::flush();
                    std::process::exit(0);
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot watch shutdown phases ({e}); shutdown waits the full drain_timeout");
    }
}

/// TLS settings of a listener: its rotating certificate, the identity hook,
/// and the SPIFFE client verifier with `client_auth`.
fn listener_tls(
    gateway: &Arc<Gateway>,
    l: &ListenerSpec,
    t: &ListenerTlsSpec,
) -> anyhow::Result<TlsSettings> {
    let Some(resolver) = gateway.listener_certs.get(&*l.name) else {
        anyhow::bail!("listener `{}`: certificate not loaded", l.name);
    };
    let verifier = t.client_auth.map(|mode| {
        Arc::new(SpiffeClientVerifier::new(
            gateway.clone(),
            l.name.clone(),
            mode == ClientAuth::Require,
            t.client_trust_domains.clone(),
        ))
    });
    let hook = PeerIdentityHook::new(verifier.clone());
    let mut tls = TlsSettings::with_callbacks(Box::new(hook))
        .map_err(|e| anyhow::anyhow!("listener `{}`: {e}", l.name))?;
    tls.set_cert_resolver(resolver.clone());
    if let Some(v) = verifier {
        tls.set_client_cert_verifier(v);
    }
    Ok(tls)
}

/// The listening endpoint of `l`: its address and per-connection buffer.
fn listener_config(l: &ListenerSpec) -> ListenerConfig {
    ListenerConfig::tcp(l.addr.to_string())
        .l4_buffer(L4BufferSettings::default().read(l.read_buffer_bytes))
}

/// Pingora's HTTP server options of a listener: h2c prior knowledge when
/// `h2c`, and the idle timeout of its HTTP/2 connections.
fn server_options(l: &ListenerSpec, h2c: bool) -> HttpServerOptions {
    let mut opts = HttpServerOptions::default();
    opts.h2c = h2c;
    opts.h2_idle_timeout = Some(l.limits.idle_timeout);
    opts
}

/// Pingora's `HttpProxy` on the gateway's hooks for a listener, with its
/// HTTP/2 settings (streams, header list, idle) from the listener's limits.
fn http_proxy(server: &Server, l: &ListenerSpec, hooks: GatewayProxy) -> HttpProxy<GatewayProxy> {
    let mut proxy = pingora::proxy::http_proxy(&server.configuration, hooks);
    proxy.server_options = Some(server_options(l, l.h2c && l.tls.is_none()));
    proxy.h2_options = Some(l.limits.h2_options());
    proxy
}

/// The app of a listener on the lean HTTP/1 path; its HTTP/2 connections
/// go to a Pingora `HttpProxy` on equal hooks.
fn lean_app(
    server: &Server,
    l: &ListenerSpec,
    hooks: impl Fn() -> GatewayProxy,
    gk: &Arc<Gatekeeper>,
) -> LeanApp {
    let h2 = http_proxy(server, l, hooks());
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    LeanApp::new(hooks(), h2, connector, l.h2c && l.tls.is_none(), gk.clone())
}

/// The listening endpoint of `l` with its TLS settings, if any.
fn endpoint(gateway: &Arc<Gateway>, l: &ListenerSpec, h2: bool) -> anyhow::Result<ListenerConfig> {
    let endpoint = listener_config(l);
    let Some(t) = &l.tls else {
        return Ok(endpoint);
    };
    let mut tls = listener_tls(gateway, l, t)?;
    if h2 && t.h2 {
        tls.enable_h2();
    }
    Ok(endpoint.tls(tls))
}

/// Adds the service of a listener: `app` on `endpoint`, behind the
/// listener's connection cap when it has one (no wrapper, and no cost,
/// without).
fn add_service<A: ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    name: String,
    app: A,
    endpoint: ListenerConfig,
    gk: &Arc<Gatekeeper>,
    l: &ListenerSpec,
) {
    // The PROXY protocol header, when the listener takes one, is read
    // first (outermost), so the gate and the app see the real client.
    let svc = match gk.limits.max_connections {
        Some(max) => {
            let gated = ConnectionGate::new(app, max, gk.clone());
            client_address::listener_service(name, gated, endpoint, l)
        }
        None => client_address::listener_service(name, app, endpoint, l),
    };
    server.add_boxed_service(svc);
}

/// Builds the server for `gateway` and runs it until shutdown. With
/// `upgrade`, the listening sockets are taken over from the running process
/// (Pingora's zero-downtime upgrade; send that process SIGQUIT).
pub fn run(gateway: Arc<Gateway>, upgrade: bool) -> anyhow::Result<()> {
    let runtime = gateway.runtime.load_full();
    let settings = &runtime.config.gateway;
    let conf = ServerConf {
        threads: settings
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // Pingora's default grace period is 300 s; ours is configurable and short.
        grace_period_seconds: Some(settings.drain_timeout.get().as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        work_stealing: settings.work_stealing,
        upstream_keepalive_pool_size: settings.upstream_keepalive_pool_size,
        upgrade_sock: settings
            .upgrade_sock
            .clone()
            .unwrap_or_else(|| format!("/tmp/gateway-{}-upgrade.sock", settings.name)),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    server.bootstrap();
    exit_when_drained(gateway.clone(), server.watch_execution_phase());

    if let Some(e) = &runtime.egress {
        crate::egress::init_observed(e.rules.observed_max_entries());
    }
    for (index, l) in runtime.listeners.iter().enumerate() {
        let gk = Arc::new(Gatekeeper::new(&l.name, l.limits.clone()));
        if l.mode == ListenerMode::Egress {
            let app = EgressApp::new(gateway.clone(), l.name.clone());
            let name = format!("egress listener {}", l.name);
            add_service(
                &mut server,
                name,
                app,
                endpoint(&gateway, l, false)?,
                &gk,
                l,
            );
            continue;
        }
        let hooks = || {
            let https = l.tls.is_some();
            GatewayProxy::new(l.name.clone(), index, https, gateway.clone(), gk.clone())
        };
        let name = format!("listener {}", l.name);
        let endpoint = endpoint(&gateway, l, true)?;
        if l.lean {
            let app = lean_app(&server, l, hooks, &gk);
            add_service(&mut server, name, app, endpoint, &gk, l);
        } else {
            let proxy = http_proxy(&server, l, hooks());
            let app = ProxyHttpFront::new(proxy, gk.clone(), l.h2c && l.tls.is_none());
            add_service(&mut server, name, app, endpoint, &gk, l);
        }
    }

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp::new(gateway.clone())),
    );
    admin.add_tcp(&runtime.admin_addr.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    crate::reload::spawn(gateway.clone())?;
    crate::identity::jwks_fetch::spawn(gateway.clone())?;
    crate::mirror::warm_up();
    tracing::info!(
        listeners = runtime.listeners.len(),
        lean = runtime.listeners.iter().filter(|l| l.lean).count(),
        admin = %runtime.admin_addr,
        "gateway `{}` starting",
        settings.name
    );
    server.run_forever()
}
