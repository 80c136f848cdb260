//! The command line, as clap derives. Flags only; behaviour lives in `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tandemn_config::Override;

#[derive(Debug, Parser)]
#[command(
    name = "tandemn",
    version,
    about = "One OpenAI-compatible endpoint over spot and serverless GPUs",
    long_about = "Tandemn serves LLM traffic from serverless GPUs while spot instances boot, shifts it to \
                  spot once they are ready, spills over to serverless when spot is saturated and falls \
                  back to serverless when spot fails."
)]
pub struct Cli {
    /// Debug logging (on stderr)
    #[arg(short, long, global = true)]
    pub verbose: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a model across serverless + spot
    Deploy(DeployArgs),
    /// Tear down a deployment
    Destroy(DestroyArgs),
    /// Check deployment status
    Status(ServiceArgs),
    /// Show cost dashboard for a deployment
    Cost(ServiceArgs),
    /// List all deployments
    List(ListArgs),
    /// GPU pricing across providers
    ShowGpus(ShowGpusArgs),
    /// Validate a configuration and provider setup
    Check(DeployArgs),
    /// Kill a local spot replica, as a cloud would take a spot instance back
    Preempt(PreemptArgs),
    /// Run the router (the proxy and, for deployments, the provisioner) in the foreground
    Router(RouterArgs),
    /// Run the vLLM simulator: an OpenAI-compatible server with vLLM's timing and faults
    MockVllm(tandemn_bench::cli::MockVllmArgs),
    /// Load-test any OpenAI-compatible endpoint and report latency percentiles
    Bench(tandemn_bench::cli::BenchArgs),
    /// Run a loopback fake of the SkyPilot API server whose clusters are mock-vllm
    /// processes (to try the spot tier without a cloud)
    FakeSkypilot(tandemn_bench::cli::FakeSkypilotArgs),
}

/// Every deploy setting can come from `--config`; flags given here win over the file.
#[derive(Debug, Clone, Default, Args)]
pub struct DeployArgs {
    /// Deployment file (tandemn.yaml) holding any of the settings below
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HuggingFace model ID (e.g. Qwen/Qwen3-0.6B) [required, here or in --config]
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// GPU type (e.g. L4, L40S, A100, H100) [required, here or in --config]
    #[arg(long)]
    pub gpu: Option<String>,
    /// Number of GPUs [default: 1]
    #[arg(long, value_name = "N")]
    pub gpu_count: Option<u32>,
    /// modal, runpod, cloudrun or local [default: auto (cheapest for GPU)]
    #[arg(long, value_name = "PROVIDER")]
    pub serverless_provider: Option<String>,
    /// Cloud provider for spot GPUs: aws, gcp, azure or local [default: aws]
    #[arg(long, value_name = "CLOUD")]
    pub spots_cloud: Option<String>,
    /// Cloud region for spot instances
    #[arg(long)]
    pub region: Option<String>,
    /// Tensor parallelism degree [default: 1]
    #[arg(long, value_name = "N")]
    pub tp_size: Option<u32>,
    /// Maximum sequence length (context window) [default: 4096]
    #[arg(long, value_name = "TOKENS")]
    pub max_model_len: Option<u32>,
    /// Override serverless concurrency limit [default: 32]
    #[arg(long, value_name = "N")]
    pub concurrency: Option<u32>,
    /// Max serverless workers (RunPod, Cloud Run) [default: 1]
    #[arg(long, value_name = "N")]
    pub workers_max: Option<u32>,
    /// fast_boot or no_fast_boot [default: fast_boot]
    #[arg(long, value_name = "MODE")]
    pub cold_start_mode: Option<String>,
    /// Keep minimum 1 spot replica running (and a 300 s serverless scaledown window)
    #[arg(long)]
    pub no_scale_to_zero: bool,
    /// Path to scaling YAML (spot: and serverless: sections)
    #[arg(long, value_name = "FILE")]
    pub scaling_policy: Option<PathBuf>,
    /// Custom service name [default: auto, tandemn-xxxxxxxx]
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    /// Make service publicly accessible (no auth)
    #[arg(long)]
    pub public: bool,
    /// Google Cloud project ID
    #[arg(long, value_name = "PROJECT")]
    pub gcp_project: Option<String>,
    /// Google Cloud region (e.g. us-central1)
    #[arg(long, value_name = "REGION")]
    pub gcp_region: Option<String>,
    /// Validate and show what would be deployed, then stop
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// Client and admin keys; `commands::keys` reads and checks them.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// A client API key (repeatable, so keys can be rotated). A key given on the command line
    /// is visible to other users in the process list: prefer --api-key-file or TANDEMN_API_KEY
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// A file of client API keys, one per line; blank lines and # comments are ignored
    /// (repeatable). Without --api-key or --api-key-file, the key in TANDEMN_API_KEY is used
    #[arg(long = "api-key-file", value_name = "FILE")]
    pub api_key_files: Vec<PathBuf>,
    /// Key for /router/* and /metrics [default: TANDEMN_ADMIN_KEY, else router.admin_key, else
    /// generated and printed at start]. A key given on the command line is visible to other users
    /// in the process list: prefer --admin-key-file or TANDEMN_ADMIN_KEY
    #[arg(long, value_name = "KEY", conflicts_with = "admin_key_file")]
    pub admin_key: Option<String>,
    /// A file holding the admin key (one line; blank lines and # comments are ignored)
    #[arg(long, value_name = "FILE")]
    pub admin_key_file: Option<PathBuf>,
}

impl DeployArgs {
    /// The flags that were given, as overrides of the file's keys.
    pub fn overrides(&self) -> Vec<Override> {
        let mut overrides = Vec::new();
        let texts = [
            ("model", "--model", &self.model),
            ("gpu", "--gpu", &self.gpu),
            ("serverless_provider", "--serverless-provider", &self.serverless_provider),
            ("spots_cloud", "--spots-cloud", &self.spots_cloud),
            ("region", "--region", &self.region),
            ("cold_start_mode", "--cold-start-mode", &self.cold_start_mode),
            ("service_name", "--service-name", &self.service_name),
            ("gcp_project", "--gcp-project", &self.gcp_project),
            ("gcp_region", "--gcp-region", &self.gcp_region),
        ];
        for (path, flag, value) in texts {
            if let Some(value) = value {
                overrides.push(Override::text(path, flag, value));
            }
        }
        let ints = [
            ("gpu_count", "--gpu-count", self.gpu_count),
            ("tp_size", "--tp-size", self.tp_size),
            ("max_model_len", "--max-model-len", self.max_model_len),
            ("scaling.serverless.concurrency", "--concurrency", self.concurrency),
            ("scaling.serverless.workers_max", "--workers-max", self.workers_max),
        ];
        for (path, flag, value) in ints {
            if let Some(value) = value {
                overrides.push(Override::int(path, flag, i64::from(value)));
            }
        }
        if self.no_scale_to_zero {
            overrides.push(Override::boolean("scale_to_zero", "--no-scale-to-zero", false));
        }
        if self.public {
            overrides.push(Override::boolean("public", "--public", true));
        }
        overrides
    }

    pub fn sources(&self) -> tandemn_config::Sources {
        tandemn_config::Sources {
            deployment_file: self.config.clone(),
            scaling_policy_file: self.scaling_policy.clone(),
            overrides: self.overrides(),
        }
    }
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct DestroyArgs {
    /// The deployment to tear down
    #[arg(long, value_name = "NAME")]
    pub service_name: Option<String>,
    /// Tear down every active deployment
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The deployment's service name
    #[arg(long, value_name = "NAME")]
    pub service_name: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PreemptArgs {
    /// The deployment's service name
    pub service: String,
    /// The replica to kill (e.g. spot-2) [default: a ready one]
    #[arg(long, value_name = "ID")]
    pub replica: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only deployments with this status
    #[arg(long, value_enum)]
    pub status: Option<StatusFilter>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    Deploying,
    Active,
    Failed,
    Destroyed,
}

#[derive(Debug, Args)]
pub struct ShowGpusArgs {
    /// Show one GPU in detail (name or alias, e.g. A100)
    #[arg(long)]
    pub gpu: Option<String>,
    /// Only this provider's prices: modal, runpod, cloudrun or aws
    #[arg(long)]
    pub provider: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RouterArgs {
    /// Deployment file whose `router:` section (listener, keys, limits, backends) to use
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:8080, or router.listen]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// A spot replica's base URL (repeatable)
    #[arg(long = "spot", value_name = "URL")]
    pub spot: Vec<String>,
    /// A serverless endpoint's base URL (repeatable)
    #[arg(long = "serverless", value_name = "URL")]
    pub serverless: Vec<String>,
    /// Concurrent requests per spot replica before spilling over [default: 32]
    #[arg(long, value_name = "N")]
    pub spot_capacity: Option<u32>,
    /// Concurrent requests per serverless endpoint [default: 32]
    #[arg(long, value_name = "N")]
    pub serverless_capacity: Option<u32>,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Serve anyone: turn client auth off
    #[arg(long)]
    pub public: bool,
    /// Serve /router/health without the admin key
    #[arg(long)]
    pub health_public: bool,
    /// Proxy worker threads [default: the core count]
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}
