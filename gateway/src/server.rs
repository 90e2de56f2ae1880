//! Assembling the Pingora server: one proxy service per listener, the admin
//! service, threads and shutdown settings.

use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::Opt;
use pingora::server::ExecutionPhase;
use tokio::sync::broadcast::error::RecvError;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;
use pingora::services::ServiceWithDependents;

use crate::admin::AdminApp;
use crate::client_address;
use crate::config::{ClientAuth, ListenerMode};
use crate::egress::EgressApp;
use crate::identity::client_auth::{PeerIdentityHook, SpiffeClientVerifier};
use crate::lean::LeanApp;
use crate::metrics::METRICS;
use crate::proxy::GatewayProxy;
use crate::runtime::{ListenerSpec, ListenerTlsSpec};
use crate::Gateway;

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

/// The service of a listener on the lean HTTP/1 path; its HTTP/2
/// connections go to a Pingora `HttpProxy` on equal hooks.
fn lean_service(
    server: &Server,
    gateway: &Arc<Gateway>,
    index: usize,
    l: &ListenerSpec,
) -> anyhow::Result<Box<dyn ServiceWithDependents>> {
    let hooks = || GatewayProxy::new(l.name.clone(), index, l.tls.is_some(), gateway.clone());
    let mut h2 = pingora::proxy::http_proxy(&server.configuration, hooks());
    let h2c = l.h2c && l.tls.is_none();
    if h2c {
        let mut opts = HttpServerOptions::default();
        opts.h2c = true;
        h2.server_options = Some(opts);
    }
    let connector = Connector::new(Some(ConnectorOptions::from_server_conf(
        &server.configuration,
    )));
    let app = LeanApp::new(hooks(), h2, connector, h2c);
    let mut endpoint = listener_config(l);
    if let Some(t) = &l.tls {
        let mut tls = listener_tls(gateway, l, t)?;
        if t.h2 {
            tls.enable_h2();
        }
        endpoint = endpoint.tls(tls);
    }
    let name = format!("listener {}", l.name);
    Ok(client_address::listener_service(name, app, endpoint, l))
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
        if l.mode == ListenerMode::Egress {
            let app = EgressApp::new(gateway.clone(), l.name.clone());
            let mut endpoint = listener_config(l);
            if let Some(t) = &l.tls {
                endpoint = endpoint.tls(listener_tls(&gateway, l, t)?);
            }
            let name = format!("egress listener {}", l.name);
            server.add_boxed_service(client_address::listener_service(name, app, endpoint, l));
            continue;
        }
        if l.lean {
            server.add_boxed_service(lean_service(&server, &gateway, index, l)?);
            continue;
        }
        let app = GatewayProxy::new(l.name.clone(), index, l.tls.is_some(), gateway.clone());
        let mut proxy = pingora::proxy::http_proxy(&server.configuration, app);
        let mut endpoint = listener_config(l);
        match &l.tls {
            Some(t) => {
                let mut tls = listener_tls(&gateway, l, t)?;
                if t.h2 {
                    tls.enable_h2();
                }
                endpoint = endpoint.tls(tls);
            }
            None => {
                if l.h2c {
                    let mut opts = HttpServerOptions::default();
                    opts.h2c = true;
                    proxy.server_options = Some(opts);
                }
            }
        }
        let name = format!("listener {}", l.name);
        server.add_boxed_service(client_address::listener_service(name, proxy, endpoint, l));
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
