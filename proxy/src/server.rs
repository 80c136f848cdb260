//! Builds the Pingora server that `tandemn router` runs and tests run on a thread: the
//! proxy service plus the health background service, with the shutdown signal injected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;

use pingora::services::listening::Service;

use crate::connection::{self, RouterApp};
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

/// The server: the router behind the connection guard, plus the health prober. Raises
/// the open-file limit first, and lowers `max_connections` to what the limit can hold.
pub fn build(router: Arc<Router>, settings: &ServerSettings) -> Server {
    if let Some(fd_limit) = connection::raise_fd_limit() {
        let fits = connection::connections_for(fd_limit).max(1);
        if fits < router.connections.limit() {
            tracing::warn!(
                fd_limit,
                max_connections = fits,
                "the open-file limit holds fewer connections than router.max_connections; using fewer"
            );
            router.connections.set_limit(fits);
        }
    }
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
    let mut proxy = pingora_proxy::http_proxy(&server.configuration, RouterService(router.clone()));
    proxy.handle_init_modules();
    let app = RouterApp { proxy: Arc::new(proxy), router: router.clone() };
    let mut service = Service::new("router".to_string(), app);
    service.add_tcp(&settings.listen.to_string());
    server.add_service(service);
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

/// Signals for a router that runs alone: SIGTERM (and SIGQUIT) refuse new requests,
/// wait for the ones in flight (at most `grace`), then exit at once; SIGINT exits at once;
/// SIGHUP is only logged (a router with a config file reloads on it elsewhere).
pub struct SignalShutdown {
    pub router: Arc<Router>,
    pub grace: Duration,
    /// A config reloader answers SIGHUP; otherwise it is logged here.
    pub reloads_on_hangup: bool,
}

#[async_trait::async_trait]
impl ShutdownSignalWatch for SignalShutdown {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::quit()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        let (Ok(mut terminate), Ok(mut quit), Ok(mut interrupt), Ok(mut hangup)) = signals else {
            tracing::error!("cannot listen for signals; stopping");
            return ShutdownSignal::FastShutdown;
        };
        loop {
            tokio::select! {
                _ = interrupt.recv() => return ShutdownSignal::FastShutdown,
                _ = terminate.recv() => break,
                _ = quit.recv() => break,
                _ = hangup.recv() => if !self.reloads_on_hangup {
                    tracing::info!("SIGHUP: nothing to reload without --config; still serving");
                },
            }
        }
        drain(&self.router, self.grace, async {
            let _ = interrupt.recv().await;
        })
        .await;
        ShutdownSignal::FastShutdown
    }
}

/// Refuses new requests and waits until none is in flight, `grace` has passed, or
/// `hurry` resolves (a second signal).
pub async fn drain(router: &Router, grace: Duration, hurry: impl std::future::Future<Output = ()>) {
    use std::sync::atomic::Ordering::Relaxed;
    router.draining.store(true, Relaxed);
    let inflight = router.metrics.inflight.load(Relaxed);
    tracing::info!(inflight, "stopping: new requests are refused; waiting for the ones in flight");
    let settled = async {
        while router.metrics.inflight.load(Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        () = settled => tracing::info!("no request in flight; exiting"),
        () = tokio::time::sleep(grace) => tracing::warn!(
            inflight = router.metrics.inflight.load(Relaxed), ?grace, "grace period over; cutting what is still in flight"),
        () = hurry => tracing::warn!("second signal; not waiting for requests in flight"),
    }
}
