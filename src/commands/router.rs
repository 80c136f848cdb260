//! `tandemn router`: the proxy in the foreground, with backends from a config file or
//! flags. Refuses to start without client auth unless told `--public`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tandemn_config::api::{BackendAuth, BackendSpec, BackendUrl, Secret, Tier};
use tandemn_config::{Catalog, RouterConfig, ServerlessPolicy, Sources};
use tandemn_proxy::server::{self, ServerSettings};
use tandemn_proxy::{Router, RouterSettings, RoutingState};

use super::UsageError;
use super::keys::Keys;
use crate::cli::RouterArgs;
use crate::output::println;

pub fn run(args: &RouterArgs) -> anyhow::Result<()> {
    let (config, file_public) = match &args.config {
        Some(path) => {
            let sources = Sources { deployment_file: Some(path.clone()), ..Sources::default() };
            let spec = sources.load(Catalog::embedded())?;
            (spec.router, spec.public)
        }
        None => (RouterConfig::defaults(&ServerlessPolicy::default()), false),
    };
    let usage = |message: String| anyhow::Error::from(UsageError(message));
    let public = args.public || file_public;

    // Checked before anything else can fail or listen: an empty key must stop the start.
    let keys = Keys::from_args(&args.keys)?;
    let mut api_keys: Vec<Secret> =
        config.api_keys.iter().map(|s| s.resolve()).collect::<Result<_, _>>().map_err(usage)?;
    api_keys.extend(keys.client);
    if api_keys.is_empty() && !public {
        return Err(usage(
            "refusing to serve without client auth: pass --api-key-file FILE or --api-key KEY (repeatable), \
             set TANDEMN_API_KEY or router.api_keys, or pass --public to let anyone use this endpoint"
                .to_string(),
        ));
    }
    if !api_keys.is_empty() && public {
        return Err(usage("--public turns client auth off, but API keys were given; choose one".to_string()));
    }
    let configured_admin = config.admin_key.as_ref().map(|s| s.resolve()).transpose().map_err(usage)?;
    let (admin_key, generated_admin) = match (keys.admin, configured_admin) {
        (Some(key), _) => (key, false),
        (None, Some(key)) => (key, false),
        (None, None) => (Secret::new(format!("{:032x}", rand::random::<u128>())), true),
    };

    let mut backends: Vec<BackendSpec> =
        config.backends.iter().map(|b| b.resolve()).collect::<Result<_, _>>().map_err(usage)?;
    let flag_backends = [
        (Tier::Spot, &args.spot, args.spot_capacity.unwrap_or(config.spot_capacity)),
        (
            Tier::Serverless,
            &args.serverless,
            args.serverless_capacity.unwrap_or(ServerlessPolicy::default().concurrency),
        ),
    ];
    for (tier, urls, capacity) in flag_backends {
        for url in urls {
            BackendUrl::parse(url).map_err(|problem| usage(format!("--{tier}: {problem}")))?;
            if capacity == 0 {
                return Err(usage(format!("--{tier}-capacity must be at least 1")));
            }
            backends.push(BackendSpec {
                id: None,
                tier,
                url: url.clone(),
                capacity,
                auth: BackendAuth::None,
                draining: false,
            });
        }
    }

    let mut settings = settings(&config, api_keys, admin_key.clone(), Vec::new(), public);
    settings.health_public |= args.health_public;
    let state = Arc::new(RoutingState::default());
    state.publish(&backends).map_err(|problem| usage(format!("backends: {problem}")))?;
    let router = Arc::new(Router::new(state, settings));
    let mut server_settings = ServerSettings::new(args.listen.unwrap_or(config.listen));
    if let Some(threads) = args.threads {
        server_settings.threads = threads.max(1);
    }
    let spot = backends.iter().filter(|b| b.tier == Tier::Spot).count();
    println(&format!(
        "tandemn router on http://{} ({spot} spot, {} serverless backends; {})",
        server_settings.listen,
        backends.len() - spot,
        if public { "public, no client auth" } else { "client API keys required" }
    ));
    if generated_admin {
        println(&format!("admin key (for /router/* and /metrics): {}", admin_key.expose()));
    }
    let mut server = server::build(router.clone(), &server_settings);
    if let Some(path) = &args.config {
        let fixed: Vec<BackendSpec> = backends.into_iter().skip(config.backends.len()).collect();
        let reloader = ConfigReloader { path: path.clone(), state: router.state.clone(), flag_backends: fixed };
        server.add_service(pingora::services::background::background_service("config reload", reloader));
    }
    // SIGTERM drains (at most the grace period) and exits as soon as nothing is in flight.
    let signals = server::SignalShutdown {
        router: router.clone(),
        grace: server_settings.grace_period,
        reloads_on_hangup: args.config.is_some(),
    };
    server::run(server, Box::new(signals));
    Ok(())
}

/// The proxy's settings from the validated router config and the resolved keys;
/// `health_keys` open `GET /router/health` and nothing else.
pub fn settings(
    config: &RouterConfig,
    api_keys: Vec<Secret>,
    admin_key: Secret,
    health_keys: Vec<Secret>,
    public: bool,
) -> RouterSettings {
    RouterSettings {
        api_keys,
        admin_key: Some(admin_key),
        health_keys,
        public,
        health_public: config.health_public,
        connect_timeout: config.connect_timeout,
        first_byte_timeout: config.first_byte_timeout,
        idle_timeout: config.idle_timeout,
        max_body_bytes: config.max_body_bytes,
        max_concurrent_requests: u64::from(config.max_concurrent_requests),
        queue_timeout: config.queue_timeout,
        max_attempts: config.max_attempts,
        keepalive_timeout: config.keepalive_timeout,
        header_timeout: config.header_timeout,
        write_timeout: config.write_timeout,
        max_connections: u64::from(config.max_connections),
    }
}

/// Re-reads the config file on SIGHUP or when it changes, and swaps in its backends
/// (plus those from flags). In-flight requests keep the table they started with; a file
/// with problems changes nothing and the problems are logged.
struct ConfigReloader {
    path: PathBuf,
    state: Arc<RoutingState>,
    flag_backends: Vec<BackendSpec>,
}

impl ConfigReloader {
    const POLL: Duration = Duration::from_secs(2);

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    fn reload(&self, why: &str) {
        let sources = Sources { deployment_file: Some(self.path.clone()), ..Sources::default() };
        // One log line: each problem after the count.
        let result =
            sources.load(Catalog::embedded()).map_err(|e| e.to_string().replace("\n  ", " ")).and_then(|spec| {
                let mut backends: Vec<BackendSpec> =
                    spec.router.backends.iter().map(|b| b.resolve()).collect::<Result<_, _>>()?;
                backends.extend(self.flag_backends.iter().cloned());
                self.state.publish(&backends).map(|version| (version, backends.len()))
            });
        match result {
            Ok((version, count)) => tracing::info!(%why, version, backends = count, "configuration reloaded"),
            Err(problem) => tracing::warn!(%why, %problem, "configuration not reloaded; keeping the current backends"),
        }
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ConfigReloader {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut seen = self.modified();
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = hup => self.reload("SIGHUP"),
                () = tokio::time::sleep(Self::POLL) => {
                    let now = self.modified();
                    if now != seen {
                        seen = now;
                        self.reload("the file changed");
                    }
                }
            }
        }
    }
}
