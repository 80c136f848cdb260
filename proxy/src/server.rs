//! Builds the Pingora server that `tandemn router` runs and tests run on a thread: the
//! proxy service plus the health background service, with the shutdown signal injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;

use crate::health::HealthService;
use crate::service::{Router, RouterService};

/// Process-level settings of the router's server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Worker threads for the proxy; the core count by default.
    pub threads: usize,
    /// How long shutdown waits for in-flight streams.
    pub grace_period: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
}

impl ServerSettings {
    pub fn new(listen: SocketAddr) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            listen,
            threads,
            grace_period: Duration::from_secs(30),
            probe_interval: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

pub fn build(router: Arc<Router>, settings: &ServerSettings) -> Server {
    let conf = ServerConf {
        threads: settings.threads,
        // Pingora waits 300 s by default; streams get the configured grace instead.
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.grace_period.as_secs().max(1)),
        upstream_keepalive_pool_size: 4096,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, RouterService(router.clone()));
    proxy.add_tcp(&settings.listen.to_string());
    server.add_service(proxy);
    let health = HealthService { router, interval: settings.probe_interval, timeout: settings.probe_timeout };
    server.add_service(background_service("spot health", health));
    server
}

/// Runs until `shutdown` fires, then drains in-flight requests for the grace period.
pub fn run(server: Server, shutdown: Box<dyn ShutdownSignalWatch>) {
    server.run(RunArgs { shutdown_signal: shutdown });
}

/// A shutdown signal a program (or a test) fires by hand.
#[derive(Clone, Default)]
pub struct ManualShutdown(Arc<tokio::sync::Notify>);

impl ManualShutdown {
    pub fn fire(&self) {
        self.0.notify_one();
    }
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for ManualShutdown {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}
