//! The `tandemn mock-vllm` and `tandemn bench` commands: flags, and the runtimes
//! they run on (one thread unless told otherwise, to show the tools are cheap).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::fakes::skypilot::{FakeConfig, FakeSkyPilot};
use crate::loadgen::request::{Api, Target};
use crate::loadgen::schedule::{Arrival, Profile, Trace};
use crate::loadgen::{self, Load};
use crate::mock_vllm::{Jitter, MockConfig, MockVllm, ServerlessSim};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The flags or files are wrong; exit code 2.
    #[error("{0}")]
    Usage(String),
    /// The run itself failed; exit code 1.
    #[error("{0}")]
    Failed(String),
}

/// Flags for `tandemn mock-vllm`; each overrides the same key of `--config`.
#[derive(Debug, Args)]
pub struct MockVllmArgs {
    /// YAML file with any of the settings below (keys in snake_case)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on; 0 lets the OS choose (the address is printed)
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Model name to serve and report [default: mock-model]
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Time to first token after admission, ms [default: 50]
    #[arg(long, value_name = "MS")]
    pub ttft_ms: Option<f64>,
    /// Inter-token latency, ms [default: 10]
    #[arg(long, value_name = "MS")]
    pub itl_ms: Option<f64>,
    /// Spread added to every delay, ms [default: 0]
    #[arg(long, value_name = "MS")]
    pub jitter_ms: Option<f64>,
    /// Distribution of the spread [default: uniform]
    #[arg(long, value_enum)]
    pub jitter: Option<Jitter>,
    /// Output tokens when a request sets no max_tokens [default: 64]
    #[arg(long, value_name = "N")]
    pub default_max_tokens: Option<u32>,
    /// Context window; longer requests get vLLM's 400 [default: 32768]
    #[arg(long, value_name = "TOKENS")]
    pub max_model_len: Option<u32>,
    /// Concurrent decode slots; more requests queue [default: 256]
    #[arg(long, value_name = "N")]
    pub max_num_seqs: Option<u32>,
    /// Seconds of booting (health 503, requests refused) [default: 0]
    #[arg(long, value_name = "SECS")]
    pub boot_secs: Option<f64>,
    /// Share of requests answered with --error-status, 0..1 [default: 0]
    #[arg(long, value_name = "RATE")]
    pub error_rate: Option<f64>,
    /// Status of injected errors [default: 500]
    #[arg(long, value_name = "STATUS")]
    pub error_status: Option<u16>,
    /// Share of requests that never get headers, 0..1 [default: 0]
    #[arg(long, value_name = "RATE")]
    pub hang_rate: Option<f64>,
    /// Streams drop their connection after this many chunks
    #[arg(long, value_name = "N")]
    pub die_after_chunks: Option<u32>,
    /// Share of streams that die when --die-after-chunks is set [default: 1]
    #[arg(long, value_name = "RATE")]
    pub die_rate: Option<f64>,
    /// Stop abruptly after this many seconds, like a preempted spot instance
    #[arg(long, value_name = "SECS")]
    pub exit_after_secs: Option<f64>,
    /// Seed for tokens, jitter and faults [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Require this key on /v1/* (as vLLM's --api-key does) and on /billing; like vLLM,
    /// read from VLLM_API_KEY when the flag is absent, so no key need be on a command line
    #[arg(long, value_name = "KEY", env = "VLLM_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Serverless mode: simulate an endpoint of up to N containers that cold-start,
    /// scale to zero and are billed per second (GET /billing)
    #[arg(long, value_name = "N")]
    pub serverless_containers_max: Option<u32>,
    /// Serverless: requests one container serves at once [default: 32]
    #[arg(long, value_name = "N")]
    pub serverless_concurrency: Option<u32>,
    /// Serverless: seconds a new container takes before it serves [default: 2]
    #[arg(long, value_name = "SECS")]
    pub cold_start_secs: Option<f64>,
    /// Serverless: seconds without requests after which a container stops [default: 60]
    #[arg(long, value_name = "SECS")]
    pub scaledown_window_secs: Option<f64>,
    /// Runtime worker threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Exit once PID is no longer this process's parent: when the process that started
    /// this one dies, even by SIGKILL (tandemn runs its local replicas so)
    #[arg(long, value_name = "PID")]
    pub parent_pid: Option<u32>,
}

impl MockVllmArgs {
    pub fn config(&self) -> Result<MockConfig, ToolError> {
        let mut config = match &self.config {
            Some(path) => MockConfig::from_yaml_file(path).map_err(ToolError::Usage)?,
            None => MockConfig::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $(if let Some(value) = self.$field.clone() { config.$field = value; })* };
        }
        set!(served_model_name, ttft_ms, itl_ms, jitter_ms, jitter, default_max_tokens, max_model_len, max_num_seqs);
        set!(boot_secs, error_rate, error_status, hang_rate, die_rate, seed);
        if self.die_after_chunks.is_some() {
            config.die_after_chunks = self.die_after_chunks;
        }
        if self.exit_after_secs.is_some() {
            config.exit_after_secs = self.exit_after_secs;
        }
        if self.api_key.is_some() {
            config.api_key = self.api_key.clone();
        }
        self.apply_serverless(&mut config)?;
        config.validate().map_err(ToolError::Usage)?;
        Ok(config)
    }

    /// `--serverless-containers-max` turns the mode on; the other serverless flags
    /// tune it and mean nothing without it (or a `serverless:` section in --config).
    fn apply_serverless(&self, config: &mut MockConfig) -> Result<(), ToolError> {
        if let Some(max) = self.serverless_containers_max {
            config.serverless.get_or_insert_with(|| ServerlessSim::new(max)).containers_max = max;
        }
        let Some(sim) = &mut config.serverless else {
            let tuned = self.serverless_concurrency.is_some()
                || self.cold_start_secs.is_some()
                || self.scaledown_window_secs.is_some();
            if tuned {
                return Err(ToolError::Usage(
                    "--serverless-concurrency, --cold-start-secs and --scaledown-window-secs need \
                     --serverless-containers-max (or `serverless:` in --config)"
                        .to_string(),
                ));
            }
            return Ok(());
        };
        if let Some(concurrency) = self.serverless_concurrency {
            sim.concurrency = concurrency;
        }
        if let Some(secs) = self.cold_start_secs {
            sim.cold_start_secs = secs;
        }
        if let Some(secs) = self.scaledown_window_secs {
            sim.scaledown_window_secs = secs;
        }
        Ok(())
    }
}

/// Runs the simulator in the foreground until it exits (`--exit-after-secs`) or is killed.
pub fn mock_vllm(args: &MockVllmArgs) -> Result<(), ToolError> {
    let config = args.config()?;
    raise_file_limit();
    if let Some(parent) = args.parent_pid {
        exit_with_parent(parent);
    }
    runtime(args.threads)?.block_on(async {
        let model = config.served_model_name.clone();
        let serverless = config.serverless.clone();
        let mut server = MockVllm::bind(config, SocketAddr::new(args.host, args.port))
            .await
            .map_err(|e| ToolError::Failed(format!("cannot listen on {}:{}: {e}", args.host, args.port)))?;
        say(&format!("mock-vllm serving {model} on {}", server.url()));
        if let Some(sim) = &serverless {
            say(&format!(
                "mock-vllm: serverless, up to {} containers of {} requests, {} s cold start, {} s scale-down window; \
                 billing at {}/billing",
                sim.containers_max,
                sim.concurrency,
                sim.cold_start_secs,
                sim.scaledown_window_secs,
                server.url()
            ));
        }
        server.stopped().await;
        say("mock-vllm: stopped after --exit-after-secs");
        Ok(())
    })
}

/// A watcher thread: when the parent dies the process is re-parented (to init or a
/// subreaper), and another parent id is the sign to exit. The parent's pid is given, not
/// read at start, so a parent that died before this process looked is noticed too.
fn exit_with_parent(parent: u32) {
    std::thread::spawn(move || {
        loop {
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
}

/// Flags for a foreground fake SkyPilot API server (`tandemn_bench::fakes::skypilot`),
/// whose clusters are mock-vllm processes.
#[derive(Debug, Args)]
pub struct FakeSkypilotArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// Port to listen on (the real server's default); 0 lets the OS choose
    #[arg(long, default_value_t = 46580)]
    pub port: u16,
    /// The engine program of every cluster [default: this executable, run as `<it> mock-vllm`]
    #[arg(long, value_name = "PROGRAM")]
    pub engine: Option<PathBuf>,
    /// Time a cluster spends in INIT before its engine starts, e.g. 5s
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    pub provision_delay: Duration,
    /// The engine's own boot (mock-vllm --boot-secs), e.g. 2s
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub engine_boot: Duration,
    /// Require `Authorization: Bearer $SKYPILOT_SERVICE_ACCOUNT_TOKEN` (read from the
    /// environment, never from a flag) on every route but /api/health
    #[arg(long)]
    pub require_token: bool,
    /// Directory for the engines' logs [default: a tandemn-fake-skypilot folder in the temp dir]
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
}

impl FakeSkypilotArgs {
    pub fn config(&self) -> Result<FakeConfig, ToolError> {
        let mut config = FakeConfig {
            provision_delay: self.provision_delay,
            engine_boot: self.engine_boot,
            listen: SocketAddr::new(self.host, self.port),
            ..FakeConfig::default()
        };
        config.engine = match &self.engine {
            Some(program) => vec![program.into()],
            None => {
                let this = std::env::current_exe()
                    .map_err(|e| ToolError::Failed(format!("cannot find this executable to run as mock-vllm: {e}")))?;
                vec![this.into(), "mock-vllm".into()]
            }
        };
        if let Some(dir) = &self.log_dir {
            config.log_dir = dir.clone();
        }
        if self.require_token {
            let token = std::env::var("SKYPILOT_SERVICE_ACCOUNT_TOKEN").ok().filter(|t| !t.is_empty());
            config.token = Some(token.ok_or_else(|| {
                ToolError::Usage("--require-token needs SKYPILOT_SERVICE_ACCOUNT_TOKEN in the environment".to_string())
            })?);
        }
        Ok(config)
    }
}

/// Serves the fake SkyPilot API server in the foreground until Ctrl-C, then kills
/// every cluster's engine.
pub fn fake_skypilot(args: &FakeSkypilotArgs) -> Result<(), ToolError> {
    let config = args.config()?;
    runtime(1)?.block_on(async {
        let log_dir = config.log_dir.clone();
        let fake = FakeSkyPilot::start(config).await.map_err(|e| ToolError::Failed(e.to_string()))?;
        say(&format!("fake SkyPilot API server on {} (engine logs in {})", fake.endpoint(), log_dir.display()));
        tokio::signal::ctrl_c().await.map_err(|e| ToolError::Failed(format!("cannot wait for Ctrl-C: {e}")))?;
        fake.shutdown().await;
        Ok(())
    })
}

/// Flags for `tandemn bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Base URL of an OpenAI-compatible server, e.g. http://127.0.0.1:8080
    #[arg(long)]
    pub url: String,
    /// Sent as `Authorization: Bearer`
    #[arg(long, env = "TANDEMN_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Model to request [default: the first one /v1/models lists]
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, value_enum, default_value = "chat")]
    pub api: Api,
    /// Closed loop: this many users, each sending its next request when the last ends
    #[arg(long, value_name = "N", conflicts_with_all = ["rate", "trace"])]
    pub concurrency: Option<u32>,
    /// Open loop: requests per second (with --profile, the rate of its busiest phase)
    #[arg(long, value_name = "RPS", conflicts_with = "trace")]
    pub rate: Option<f64>,
    /// Spacing of open-loop arrivals
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrival: Arrival,
    /// Traffic shape over --duration: users for a closed loop, rates for an open one
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Replay a JSONL trace ({"timestamp": ms, "input_length": n, "output_length": n})
    #[arg(long, value_name = "FILE", conflicts_with = "profile")]
    pub trace: Option<PathBuf>,
    /// Replay traces and profiles this many times faster
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub time_scale: f64,
    /// How long to run, e.g. 30s, 5m, 1h [default: 30s unless --requests]
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests
    #[arg(long, value_name = "N")]
    pub requests: Option<u64>,
    /// Send but do not measure requests started in this first stretch, e.g. 2s
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,
    /// Prompt length in tokens (traces carry their own)
    #[arg(long, default_value_t = 550, value_name = "TOKENS")]
    pub isl: u32,
    /// max_tokens per request (traces carry their own)
    #[arg(long, default_value_t = 150, value_name = "TOKENS")]
    pub osl: u32,
    /// Ask for whole answers instead of SSE streams
    #[arg(long)]
    pub no_stream: bool,
    /// Per-request timeout, e.g. 600s
    #[arg(long, value_parser = parse_duration, default_value = "600s")]
    pub timeout: Duration,
    /// Runtime worker threads
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Seed for arrivals and lengths
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

impl BenchArgs {
    fn load(&self) -> Result<Load, ToolError> {
        let usage = |m: &str| Err(ToolError::Usage(m.to_string()));
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return usage("--time-scale must be greater than 0");
        }
        if self.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return usage("--rate must be greater than 0");
        }
        if self.concurrency == Some(0) {
            return usage("--concurrency must be at least 1");
        }
        let duration = match (self.duration, self.requests) {
            (None, None) => Some(Duration::from_secs(30)),
            (duration, _) => duration,
        };
        if let Some(path) = &self.trace {
            let trace = Trace::read(path).map_err(ToolError::Usage)?;
            return Ok(Load::Open { trace: limit(trace.time_scaled(self.time_scale), self.requests) });
        }
        match (self.concurrency, self.rate, self.profile) {
            (Some(users), None, profile) => {
                if profile.is_some() && self.duration.is_none() && self.requests.is_some() {
                    return usage("--profile spreads over --duration; give --duration too");
                }
                let duration = duration.map(|d| d.div_f64(self.time_scale));
                Ok(Load::Closed { users, profile, duration, requests: self.requests, isl: self.isl, osl: self.osl })
            }
            (None, rate, Some(profile)) => {
                let Some(duration) = duration.filter(|_| self.duration.is_some()) else {
                    return usage("--profile spreads over --duration; give --duration");
                };
                let trace = Trace::from_profile(profile, duration, rate, self.isl, self.osl, self.seed);
                Ok(Load::Open { trace: limit(trace.time_scaled(self.time_scale), self.requests) })
            }
            (None, Some(rate), None) => {
                let trace = Trace::at_rate(rate, self.arrival, duration, self.requests, self.isl, self.osl, self.seed);
                Ok(Load::Open { trace })
            }
            _ => usage(
                "choose a load: --concurrency N (closed loop), --rate RPS (open loop), --profile P or --trace FILE",
            ),
        }
    }
}

fn limit(mut trace: Trace, requests: Option<u64>) -> Trace {
    if let Some(n) = requests {
        trace.entries.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    trace
}

/// Runs the load and returns the report as text (a table, or JSON with `--json`);
/// fails if every request failed.
pub fn bench(args: &BenchArgs) -> Result<String, ToolError> {
    let load = args.load()?;
    let url = args.url.trim_end_matches('/').to_string();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ToolError::Usage(format!("--url must start with http:// or https://, got `{url}`")));
    }
    raise_file_limit();
    runtime(args.threads)?.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(args.timeout)
            .tcp_nodelay(true)
            .http1_only()
            .build()
            .map_err(|e| ToolError::Failed(format!("cannot build the HTTP client: {e}")))?;
        let model = match &args.model {
            Some(model) => model.clone(),
            None => first_model(&client, &url, args.api_key.as_deref()).await?,
        };
        let stream = !args.no_stream;
        let target = Target { client, url, api_key: args.api_key.clone(), model, api: args.api, stream };
        let report = loadgen::run(target, load, !args.json, args.warmup).await;
        let json = serde_json::to_string_pretty(&report).expect("a report always serializes");
        if let Some(path) = &args.out {
            std::fs::write(path, &json).map_err(|e| ToolError::Failed(format!("{}: {e}", path.display())))?;
        }
        if report.requests > 0 && report.succeeded == 0 {
            return Err(ToolError::Failed(format!("all {} requests failed:\n{}", report.requests, report.table())));
        }
        Ok(if args.json { json + "\n" } else { report.table() })
    })
}

async fn first_model(client: &reqwest::Client, url: &str, api_key: Option<&str>) -> Result<String, ToolError> {
    let mut request = client.get(format!("{url}/v1/models"));
    if let Some(key) = api_key {
        request = request.bearer_auth(key);
    }
    let failed = |e: String| ToolError::Failed(format!("cannot list models at {url}/v1/models ({e}); pass --model"));
    let response = request.send().await.map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("status {}", response.status())));
    }
    let models: serde_json::Value = response.json().await.map_err(|e| failed(e.to_string()))?;
    models["data"][0]["id"].as_str().map(str::to_string).ok_or_else(|| failed("no models listed".to_string()))
}

/// A status line on stdout, flushed at once so a parent process can read the address.
/// A closed stdout is no reason to stop serving.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, ToolError> {
    let built = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    built.map_err(|e| ToolError::Failed(format!("cannot start the runtime: {e}")))
}

/// Thousands of concurrent streams need more file descriptors than the usual 1024.
fn raise_file_limit() {
    if let Err(error) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%error, "could not raise the open-file limit");
    }
}

/// `250ms`, `30s`, `5m`, `2h` or bare seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}` is not a duration such as 30s, 5m or 1h"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}` has an unknown unit; use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct MockVllmCli {
        #[command(flatten)]
        args: MockVllmArgs,
    }

    fn mock_config(flags: &[&str]) -> Result<MockConfig, ToolError> {
        MockVllmCli::try_parse_from([&["mock-vllm"], flags].concat()).unwrap().args.config()
    }

    #[test]
    fn serverless_flags_turn_the_mode_on_and_tune_it() {
        assert_eq!(mock_config(&[]).unwrap().serverless, None);
        let sim = mock_config(&["--serverless-containers-max", "4"]).unwrap().serverless.unwrap();
        assert_eq!(sim, ServerlessSim::new(4));
        let flags = [
            "--serverless-containers-max",
            "2",
            "--serverless-concurrency",
            "8",
            "--cold-start-secs",
            "0.5",
            "--scaledown-window-secs",
            "10",
        ];
        let sim = mock_config(&flags).unwrap().serverless.unwrap();
        assert_eq!(
            sim,
            ServerlessSim { containers_max: 2, concurrency: 8, cold_start_secs: 0.5, scaledown_window_secs: 10.0 }
        );

        let err = mock_config(&["--cold-start-secs", "1"]).unwrap_err().to_string();
        assert!(err.contains("--serverless-containers-max"), "{err}");
        let err = mock_config(&["--serverless-containers-max", "0", "--scaledown-window-secs=-1"]).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("containers_max") && err.contains("scaledown_window_secs"), "{err}");
    }

    #[test]
    fn serverless_flags_override_the_profile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mock.yaml");
        std::fs::write(&path, "serverless:\n  containers_max: 3\n  cold_start_secs: 7\n").unwrap();
        let path = path.to_str().unwrap();
        let sim = mock_config(&["--config", path, "--serverless-concurrency", "1"]).unwrap().serverless.unwrap();
        assert_eq!((sim.containers_max, sim.concurrency, sim.cold_start_secs), (3, 1, 7.0));
        let sim = mock_config(&["--config", path, "--serverless-containers-max", "5"]).unwrap().serverless.unwrap();
        assert_eq!((sim.containers_max, sim.cold_start_secs), (5, 7.0));
    }

    #[derive(Parser)]
    struct FakeCli {
        #[command(flatten)]
        args: FakeSkypilotArgs,
    }

    #[test]
    fn fake_skypilot_flags_build_its_config() {
        let config = FakeCli::try_parse_from(["fake"]).unwrap().args.config().unwrap();
        assert_eq!(config.listen, "127.0.0.1:46580".parse().unwrap());
        assert_eq!(config.engine, [std::env::current_exe().unwrap().into_os_string(), "mock-vllm".into()]);
        assert_eq!((config.provision_delay, config.engine_boot), (Duration::from_secs(5), Duration::from_secs(2)));
        assert_eq!(config.token, None);
        let flags =
            ["fake", "--port", "0", "--engine", "/bin/mock", "--provision-delay", "250ms", "--log-dir", "/tmp/l"];
        let config = FakeCli::try_parse_from(flags).unwrap().args.config().unwrap();
        assert_eq!((config.listen.port(), config.engine.len()), (0, 1));
        assert_eq!((config.provision_delay, config.log_dir), (Duration::from_millis(250), PathBuf::from("/tmp/l")));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
