//! `tandemn deploy`: validates the configuration, then (for the `local` provider) runs
//! the router and the provisioner in the foreground until Ctrl-C or `tandemn destroy`.
//! One deploy per service (a lock held for the life of the process); SIGHUP is ignored;
//! the client and admin keys are never written to the state store.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pingora::server::ShutdownWatch;
use pingora::services::background::{BackgroundService, background_service};
use tandemn_config::api::Secret;
use tandemn_config::{Catalog, Choice, DeploymentSpec, ServerlessProvider, SpotCloud};
use tandemn_provisioner::local::now_ms;
use tandemn_provisioner::reconciler::{Clock, Reconciler};
use tandemn_provisioner::state_store::{Run, Usage};
use tandemn_provisioner::{DeploymentStatus, LockError, ServiceLock, StateStore};
use tandemn_proxy::server::{self, ManualShutdown, ServerSettings};
use tandemn_proxy::{Router, RoutingState};

use super::UsageError;
use super::deployment::{View, duration};
use super::keys::Keys;
use crate::cli::DeployArgs;
use crate::output::{print, println, usd_per_hour};

pub fn run(args: &DeployArgs) -> anyhow::Result<()> {
    let spec = args.sources().load(Catalog::embedded())?;
    let keys = Keys::from_args(&args.keys)?;
    print(&summary(&spec, keys.client.len()));
    if args.dry_run {
        if let Some(task) = super::providers::task_preview(&spec)? {
            print(&format!(
                "\nEach spot replica is a SkyPilot cluster launched with this task (the key hidden):\n{task}"
            ));
        }
        return Ok(());
    }
    super::providers::supported(&spec)?;
    if !spec.router.backends.is_empty() {
        return Err(UsageError(
            "router.backends is for `tandemn router`; a deployment's backends come from its providers".to_string(),
        )
        .into());
    }
    run_local(spec, keys)
}

fn run_local(spec: DeploymentSpec, keys: Keys) -> anyhow::Result<()> {
    let usage = |message: String| anyhow::Error::from(UsageError(message));
    // Before anything is written: a second deploy of this service stops here, and the
    // lock lasts as long as this process (the kernel frees it however the process ends).
    let _lock = match ServiceLock::acquire(&StateStore::default_dir()?, &spec.service_name) {
        Ok(lock) => lock,
        Err(held @ LockError::Held { .. }) => return Err(usage(held.to_string())),
        Err(other) => return Err(other.into()),
    };
    let store = StateStore::open_default()?;
    let previous = View::load(&store, &spec.service_name).ok();
    if let Some(view) = &previous
        && view.alive()
    {
        return Err(usage(format!(
            "`{}` is already running (pid {}); stop it with `tandemn destroy --service-name {}`",
            spec.service_name, view.run.pid, spec.service_name
        )));
    }
    // A run whose process died without ending it, or that ended with replicas it could not
    // terminate, is resumed: what it launched is adopted or its termination finished.
    let resuming = previous
        .is_some_and(|view| view.run.ended_at_ms.is_none() || view.replicas.iter().any(|r| !r.phase.is_final()));
    let mut api_keys: Vec<Secret> =
        spec.router.api_keys.iter().map(|s| s.resolve()).collect::<Result<_, _>>().map_err(usage)?;
    api_keys.extend(keys.client);
    if spec.public && !api_keys.is_empty() {
        return Err(usage(
            "`public` turns client auth off, but API keys were given (--api-key, --api-key-file or \
             TANDEMN_API_KEY); choose one"
                .to_string(),
        ));
    }
    let generated_key = (api_keys.is_empty() && !spec.public).then(|| random_key("tdn"));
    api_keys.extend(generated_key.clone());
    let configured_admin = spec.router.admin_key.as_ref().map(|s| s.resolve()).transpose().map_err(usage)?;
    let (admin_key, generated_admin) = match keys.admin.or(configured_admin) {
        Some(key) => (key, false),
        None => (random_key("tdn-admin"), true),
    };
    // What `status` reads the router's health with: the only credential stored.
    let health_token = random_key("tdn-health");
    // Port 0 asks for any free port: one is picked now so it can be printed and stored.
    let listen = std::net::TcpListener::bind(spec.router.listen).and_then(|l| l.local_addr()).map_err(|e| {
        usage(format!(
            "cannot listen on {}: {e}; set router.listen to a free address (127.0.0.1:0 picks any free port)",
            spec.router.listen
        ))
    })?;
    // Listening on every interface: this machine reaches it on loopback.
    let reachable =
        if listen.ip().is_unspecified() { std::net::SocketAddr::from(([127, 0, 0, 1], listen.port())) } else { listen };
    let endpoint = format!("http://{reachable}");

    let settings =
        super::router::settings(&spec.router, api_keys, admin_key.clone(), vec![health_token.clone()], spec.public);
    let router = Arc::new(Router::new(Arc::new(RoutingState::default()), settings));
    let providers = super::providers::for_deployment(&spec)?;
    if spec.spots_cloud != SpotCloud::Local {
        // Nothing starts against a SkyPilot API server that is missing, too old, not
        // SkyPilot, refuses the token or lacks AWS: every launch would fail.
        let report = super::check::skypilot_check().map_err(anyhow::Error::msg)?;
        if report.problem.is_some() {
            anyhow::bail!("{report}");
        }
    }

    store.save_deployment(&spec, DeploymentStatus::Deploying)?;
    let started = now_ms();
    let run = Run {
        service_name: spec.service_name.clone(),
        pid: std::process::id(),
        pid_started: tandemn_provisioner::process::start_ticks(std::process::id()),
        endpoint: endpoint.clone(),
        health_token: Some(health_token.expose().to_string()),
        started_at_ms: started,
        updated_at_ms: started,
        ended_at_ms: None,
        serverless_url: None,
        serverless: None,
        usage: Usage::default(),
        note: None,
    };
    if resuming {
        store.resume_run(&run)?;
    } else {
        store.start_run(&run)?;
    }
    let reconciler = Reconciler::new(
        spec.clone(),
        providers.spot,
        providers.serverless,
        router.clone(),
        router.clone(),
        StateStore::open_default()?,
        providers.timing,
        Clock::Wall,
    )
    .with_replica_auth(providers.replica_auth);

    let server_settings = ServerSettings { grace_period: Duration::from_secs(1), ..ServerSettings::new(listen) };
    let mut server = server::build(router, &server_settings);
    let shutdown = ManualShutdown::default();
    let provisioner = ProvisionerService { reconciler: Mutex::new(Some(reconciler)), done: shutdown.clone() };
    server.add_service(background_service("provisioner", provisioner));
    store.set_status(&spec.service_name, DeploymentStatus::Active)?;

    let mut banner = format!("\nendpoint     {endpoint}/v1  (OpenAI-compatible)\n");
    match &generated_key {
        Some(key) => banner += &format!("api key      {}\n", key.expose()),
        None if spec.public => banner += "api key      none: the endpoint is public\n",
        None => banner += "api key      the one(s) you gave\n",
    }
    // Printed once and kept nowhere: the operator's way to /router/config and /metrics.
    if generated_admin {
        banner += &format!("admin key    {}  (for /router/* and /metrics; not stored)\n", admin_key.expose());
    }
    banner += &format!(
        "try          curl {endpoint}/v1/chat/completions -H 'Authorization: Bearer <api key>' \
         -H 'Content-Type: application/json' -d '{{\"model\": \"{}\", \"messages\": [{{\"role\": \"user\", \"content\": \"hi\"}}]}}'\n",
        spec.model
    );
    banner += "stop         Ctrl-C here, or `tandemn destroy` from another terminal\n";
    let progress = Progress::start(spec.service_name.clone(), reachable, banner);
    server::run(server, Box::new(shutdown));
    progress.stop();

    let view = View::load(&store, &spec.service_name)?;
    // What would not stop is still billed: the deployment stays active for `destroy`.
    let left = view.replicas.iter().filter(|r| !r.phase.is_final()).count();
    if left == 0 {
        store.set_status(&spec.service_name, DeploymentStatus::Destroyed)?;
    }
    let cost = view.cost();
    println(&format!(
        "\n{} stopped after {}: {}; spent ${:.4} (all-serverless ${:.4}, on-demand ${:.4}). \
         `tandemn cost --service-name {}` has the details.",
        spec.service_name,
        duration(cost.uptime_secs),
        super::deployment::split(cost.spot_requests, cost.serverless_requests),
        cost.total_usd,
        cost.pure_serverless_usd,
        cost.on_demand_usd,
        spec.service_name
    ));
    if left > 0 {
        anyhow::bail!(
            "{left} replica(s) could not be terminated and may still be billed; `tandemn destroy --service-name {}` \
             tries again",
            spec.service_name
        );
    }
    Ok(())
}

fn random_key(prefix: &str) -> Secret {
    Secret::new(format!("{prefix}-{:032x}", rand::random::<u128>()))
}

/// Runs the reconciler inside the router process. Ctrl-C or SIGTERM (what `tandemn
/// destroy` sends) stop it; it drains and removes everything, then stops the server.
struct ProvisionerService {
    reconciler: Mutex<Option<Reconciler>>,
    done: ManualShutdown,
}

#[async_trait::async_trait]
impl BackgroundService for ProvisionerService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let taken = self.reconciler.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let Some(reconciler) = taken else { return };
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut interrupt), Ok(mut terminate)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
        else {
            tracing::error!("cannot listen for Ctrl-C or SIGTERM; stopping");
            self.done.fire();
            return;
        };
        // SIGHUP's default is to die without draining (a closed terminal, a `kill -HUP`
        // meant to reload): listening for it keeps the deployment serving.
        let mut hangup = signal(SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP; it will stop the deployment"))
            .ok();
        // The first Ctrl-C or SIGTERM stops the deployment; a second one skips the drain.
        let (signals, _) = tokio::sync::watch::channel(0u32);
        let counter = signals.clone();
        tokio::spawn(async move {
            // Pingora's own shutdown counts once; its watch is not listened to after that.
            let mut watching = true;
            loop {
                let hup = async {
                    match hangup.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                    _ = shutdown.changed(), if watching => watching = false,
                    _ = hup => {
                        tracing::info!("SIGHUP ignored; deploy has no config to reload");
                        continue;
                    }
                }
                counter.send_modify(|n| *n += 1);
            }
        });
        let after = |count: u32| {
            let mut seen = signals.subscribe();
            async move {
                let _ = seen.wait_for(|&n| n >= count).await;
            }
        };
        let stop = after(1);
        let hurry = after(2);
        let announce = async {
            stop.await;
            crate::output::println(
                "\nstopping: draining streams, then removing replicas and serverless… (Ctrl-C again: do not wait for streams)",
            );
        };
        reconciler.run(announce, hurry).await;
        self.done.fire();
    }
}

/// Live progress: on a terminal one line rewritten every second; otherwise a line
/// whenever the state changes.
struct Progress {
    running: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Prints `banner` once the deployment can serve, then the progress.
    fn start(service: String, listen: std::net::SocketAddr, banner: String) -> Progress {
        let running = Arc::new(AtomicBool::new(true));
        let flag = running.clone();
        let thread = std::thread::spawn(move || {
            let Ok(store) = StateStore::open_default() else { return };
            // Ready to announce: the router accepts connections and serverless is deployed,
            // so the first request has somewhere to go.
            let serving = || {
                std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
                    && store.run(&service).ok().flatten().is_some_and(|run| run.serverless_url.is_some())
            };
            let waiting_since = std::time::Instant::now();
            let mut told = None;
            while !serving() {
                if !flag.load(Ordering::Relaxed) {
                    return;
                }
                // A slow start says why (the provisioner notes its failures).
                if waiting_since.elapsed() > Duration::from_secs(5) {
                    let note = store.run(&service).ok().flatten().and_then(|run| run.note);
                    if told.as_ref() != Some(&note) {
                        println(&format!("waiting for the serverless endpoint… {}", note.as_deref().unwrap_or("")));
                        told = Some(note);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println(&banner);
            let tty = std::io::stdout().is_terminal();
            let mut last = String::new();
            while flag.load(Ordering::Relaxed) {
                if let Ok(view) = View::load(&store, &service) {
                    let elapsed = now_ms().saturating_sub(view.run.started_at_ms) / 1000;
                    let line = view.progress_line();
                    let note = view.run.note.as_deref().map(|n| format!(" | {n}")).unwrap_or_default();
                    if tty {
                        print(&format!("\r\x1b[2K[{}] {line}{note}", duration(elapsed)));
                    } else {
                        // Changes of the tiers only: traffic and spend move every second.
                        let state = line.split(" | ").take(2).collect::<Vec<_>>().join(" | ") + &note;
                        if state != last {
                            println(&format!("[{}] {line}{note}", duration(elapsed)));
                            last = state;
                        }
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            if tty {
                println("");
            }
        });
        Progress { running, thread: Some(thread) }
    }

    fn stop(mut self) {
        self.running.store(false, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
/// A few lines that say what a spec will deploy, with prices from the catalog;
/// `flag_keys` counts the client keys given outside the file.
pub fn summary(spec: &DeploymentSpec, flag_keys: usize) -> String {
    let catalog = Catalog::embedded();
    let name_note = if spec.service_name_generated { " (generated; fix it with --service-name)" } else { "" };
    let serverless_price = catalog
        .serverless_price(spec.serverless_provider.as_str(), &spec.gpu)
        .map_or(String::new(), |p| format!(" at {}", usd_per_hour(p.usd_per_hour)));
    let why = if spec.serverless_provider_auto { " (cheapest for this GPU)" } else { "" };
    let spot_price = match spec.spots_cloud {
        SpotCloud::Local => String::new(),
        cloud => catalog
            .spot_price(cloud.as_str(), &spec.gpu)
            .and_then(|p| p.spot_usd_per_hour)
            .map_or(" (no catalog spot price for this GPU)".to_string(), |p| format!(" at {} spot", usd_per_hour(p))),
    };
    let spot = &spec.scaling.spot;
    let serverless = &spec.scaling.serverless;
    let auth = if spec.public {
        "public (no client auth)".to_string()
    } else if spec.router.api_keys.len() + flag_keys == 0 {
        "an API key is generated at deploy".to_string()
    } else {
        format!("{} API key(s)", spec.router.api_keys.len() + flag_keys)
    };
    let mut text = format!(
        "service      {}{name_note}\n\
         model        {}\n\
         gpu          {} x{} (tp {}, max_model_len {})\n\
         serverless   {}{serverless_price}{why}\n\
         spot         {}{spot_price}\n\
         scaling      spot {}..{} replicas at {} req/s each (up after {} s, down after {} s)\n\
         \x20            serverless {} requests per container, {}..{} containers, idle {} s, timeout {} s\n\
         router       {}, {auth}\n",
        spec.service_name,
        spec.model,
        spec.gpu,
        spec.gpu_count,
        spec.tp_size,
        spec.max_model_len,
        spec.serverless_provider,
        spec.spots_cloud,
        spot.min_replicas,
        spot.max_replicas,
        spot.target_qps,
        spot.upscale_delay,
        spot.downscale_delay,
        serverless.concurrency,
        serverless.workers_min,
        serverless.workers_max,
        serverless.scaledown_window,
        serverless.timeout,
        spec.router.listen,
    );
    let local = &spec.local;
    let mut local_parts = Vec::new();
    if spec.spots_cloud == SpotCloud::Local {
        local_parts
            .push(format!("spot boots in {:?}, {} preemptions/hour", local.spot_boot, local.preemptions_per_hour));
    }
    if spec.serverless_provider == ServerlessProvider::Local {
        local_parts.push(format!("serverless cold start {:?}", local.cold_start));
    }
    if spec.spots_cloud == SpotCloud::Local {
        // Only the program: the rest of the template may carry a token.
        local_parts.push(format!(
            "replicas run {}",
            local.command.as_deref().and_then(|c| c.split_whitespace().next()).map_or_else(
                || "the bundled vLLM simulator".to_string(),
                |program| format!("`{program} …` (local.command)")
            )
        ));
    }
    if !local_parts.is_empty() {
        text += &format!("local        {}\n", local_parts.join("; "));
    }
    if spec.spots_cloud != SpotCloud::Local {
        let server = std::env::var("SKYPILOT_API_SERVER_ENDPOINT")
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| tandemn_provisioner::skypilot::client::DEFAULT_ENDPOINT.to_string());
        let server = tandemn_provisioner::skypilot::client::shown_endpoint(&server);
        text += &format!(
            "skypilot     one spot cluster per replica through the API server at {server}; vLLM {} on port {}, \
             behind a key only the router holds\n",
            tandemn_provisioner::skypilot::task::VLLM_VERSION,
            tandemn_provisioner::skypilot::task::DEFAULT_ENGINE_PORT,
        );
    }
    text
}
