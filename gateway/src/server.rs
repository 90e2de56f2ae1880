//! Assembling the Pingora server: one proxy service per listener, the admin
//! service, threads and shutdown settings.

use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::admin::AdminApp;
use crate::proxy::GatewayProxy;
use crate::Gateway;

/// Builds the server for `gateway` and runs it until shutdown. Never returns.
pub fn run(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let runtime = gateway.runtime.load_full();
    let settings = &runtime.config.gateway;
    let conf = ServerConf {
        threads: settings
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        // Pingora's default grace period is 300 s; ours is configurable and short.
        grace_period_seconds: Some(settings.drain_timeout.get().as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    for l in &runtime.listeners {
        let app = GatewayProxy::new(l.name.clone(), l.tls.is_some(), gateway.clone());
        let mut svc = pingora::proxy::http_proxy_service_with_name(
            &server.configuration,
            app,
            &format!("listener {}", l.name),
        );
        let addr = l.addr.to_string();
        match &l.tls {
            Some(t) => {
                // Files were checked when the config was compiled; Pingora
                // would panic on a bad one.
                let mut tls =
                    TlsSettings::intermediate(&t.cert.to_string_lossy(), &t.key.to_string_lossy())
                        .map_err(|e| anyhow::anyhow!("listener `{}`: {e}", l.name))?;
                if t.h2 {
                    tls.enable_h2();
                }
                svc.add_tls_with_settings(&addr, None, tls);
            }
            None => {
                svc.add_tcp(&addr);
                if l.h2c {
                    let mut opts = HttpServerOptions::default();
                    opts.h2c = true;
                    if let Some(app) = svc.app_logic_mut() {
                        app.server_options = Some(opts);
                    }
                }
            }
        }
        server.add_service(svc);
    }

    let mut admin = Service::new(
        "admin".to_string(),
        HttpServer::new_app(AdminApp::new(gateway.clone())),
    );
    admin.add_tcp(&runtime.admin_addr.to_string());
    admin.threads = Some(1);
    server.add_service(admin);

    tracing::info!(
        listeners = runtime.listeners.len(),
        admin = %runtime.admin_addr,
        "gateway `{}` starting",
        settings.name
    );
    server.run_forever()
}
