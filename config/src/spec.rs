//! The validated configuration model. Values here are in range and consistent;
//! they serialize back to the same keys the YAML uses, so a stored spec reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

/// Everything needed to run one deployment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeploymentSpec {
    pub service_name: String,
    /// True when no name was given and `tandemn-xxxxxxxx` was generated.
    #[serde(skip)]
    pub service_name_generated: bool,
    pub model: String,
    /// Canonical catalog name (aliases resolved): `A100` becomes `A100_80GB`.
    pub gpu: String,
    pub gpu_count: u32,
    pub serverless_provider: ServerlessProvider,
    /// True when the provider was not given and the cheapest one was chosen.
    #[serde(skip)]
    pub serverless_provider_auto: bool,
    pub spots_cloud: SpotCloud,
    pub region: Option<String>,
    pub tp_size: u32,
    pub max_model_len: u32,
    pub cold_start_mode: ColdStartMode,
    pub scale_to_zero: bool,
    pub public: bool,
    pub gcp_project: Option<String>,
    pub gcp_region: Option<String>,
    pub scaling: ScalingPolicy,
    pub router: RouterConfig,
    pub local: LocalSettings,
}

/// The `local` provider: replicas are processes on this machine.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalSettings {
    /// How long a local spot replica takes to become ready (a real one boots for minutes).
    #[serde(with = "seconds")]
    pub spot_boot: Duration,
    /// Random preemptions per replica-hour; 0 preempts only on `tandemn preempt`.
    pub preemptions_per_hour: f64,
    /// How long a local serverless container takes to start.
    #[serde(with = "seconds")]
    pub cold_start: Duration,
    /// Runs a real engine instead of the bundled simulator, e.g.
    /// `vllm serve {model} --port {port}`; `{model}` and `{port}` are filled in.
    pub command: Option<String>,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            spot_boot: Duration::from_secs(20),
            preemptions_per_hour: 0.0,
            cold_start: Duration::from_secs(2),
            command: None,
        }
    }
}

/// A closed set of names, parsed from YAML or flags.
pub trait Choice: Sized + Copy + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn as_str(self) -> &'static str;

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)).map(|&(_, v)| v)
    }

    fn names() -> String {
        Self::ALL.iter().map(|(name, _)| format!("`{name}`")).collect::<Vec<_>>().join(", ")
    }
}

macro_rules! choice {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl Choice for $name {
            const ALL: &'static [(&'static str, Self)] = &[$(($text, Self::$variant)),+];
            fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

choice!(
    /// Where the always-ready tier runs. `local` runs it on this machine.
    ServerlessProvider { Modal = "modal", Runpod = "runpod", Cloudrun = "cloudrun", Local = "local" }
);
choice!(
    /// Where spot replicas run (through SkyPilot), or `local` for this machine.
    SpotCloud { Aws = "aws", Gcp = "gcp", Azure = "azure", Local = "local" }
);
choice!(
    /// `fast_boot` trades steady-state speed (eager mode) for quicker cold starts.
    ColdStartMode { FastBoot = "fast_boot", NoFastBoot = "no_fast_boot" }
);

/// Autoscaling for both tiers, with the seed README's keys and defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ScalingPolicy {
    pub spot: SpotPolicy,
    pub serverless: ServerlessPolicy,
}

/// Spot replica autoscaling. Delays are whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpotPolicy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Requests per second one replica should carry.
    pub target_qps: f64,
    pub upscale_delay: u64,
    pub downscale_delay: u64,
    /// Seconds of traffic the request rate is measured over.
    pub demand_window: u64,
}

impl Default for SpotPolicy {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: 8,
            target_qps: 10.0,
            upscale_delay: 5,
            downscale_delay: 300,
            demand_window: 60,
        }
    }
}

/// Serverless container limits. Times are whole seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerlessPolicy {
    /// Concurrent requests per container.
    pub concurrency: u32,
    /// Idle seconds before a container stops.
    pub scaledown_window: u64,
    /// Request timeout.
    pub timeout: u64,
    /// Always-on containers (RunPod, Cloud Run); billed even when idle.
    pub workers_min: u32,
    /// Container cap (RunPod, Cloud Run).
    pub workers_max: u32,
    /// RunPod's queue-delay scaler threshold, in seconds.
    pub scaler_value: u32,
}

impl Default for ServerlessPolicy {
    fn default() -> Self {
        Self { concurrency: 32, scaledown_window: 60, timeout: 600, workers_min: 0, workers_max: 1, scaler_value: 4 }
    }
}

/// Where to read a secret from. Secrets are never written into config files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env {name}"),
            SecretRef::File(path) => write!(f, "file {}", path.display()),
        }
    }
}

impl SecretRef {
    /// Reads the secret now; the error names the variable or file, never the value.
    pub fn resolve(&self) -> Result<crate::api::Secret, String> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
            }
            SecretRef::File(path) => {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?
            }
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("the secret in {self} is empty"));
        }
        Ok(crate::api::Secret::new(value))
    }
}

/// How the router authenticates to a fixed backend; secrets still unresolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendAuthRef {
    None,
    Bearer(SecretRef),
    Modal { key: SecretRef, secret: SecretRef },
    CloudRun(SecretRef),
}

/// A fixed backend from the config file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendConfig {
    pub tier: crate::api::Tier,
    pub url: String,
    pub capacity: u32,
    pub auth: BackendAuthRef,
}

impl BackendConfig {
    /// The backend with its secrets read, ready to publish.
    pub fn resolve(&self) -> Result<crate::api::BackendSpec, String> {
        use crate::api::BackendAuth;
        let auth = match &self.auth {
            BackendAuthRef::None => BackendAuth::None,
            BackendAuthRef::Bearer(token) => BackendAuth::Bearer { token: token.resolve()? },
            BackendAuthRef::Modal { key, secret } => {
                BackendAuth::Modal { key: key.resolve()?, secret: secret.resolve()? }
            }
            BackendAuthRef::CloudRun(token) => BackendAuth::CloudRun { id_token: token.resolve()? },
        };
        Ok(crate::api::BackendSpec {
            tier: self.tier,
            url: self.url.clone(),
            capacity: self.capacity,
            auth,
            draining: false,
        })
    }
}

/// The router's listener, client auth, timeouts and limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub api_keys: Vec<SecretRef>,
    pub admin_key: Option<SecretRef>,
    /// Serve `/router/health` without the admin key.
    pub health_public: bool,
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Default: `scaling.serverless.timeout`.
    #[serde(with = "seconds")]
    pub first_byte_timeout: Duration,
    #[serde(with = "seconds")]
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_concurrent_requests: u32,
    #[serde(with = "seconds")]
    pub queue_timeout: Duration,
    pub max_attempts: u32,
    /// Concurrent requests one spot replica takes before traffic spills to serverless.
    pub spot_capacity: u32,
    /// Fixed backends; deployments add theirs through the provisioner.
    pub backends: Vec<BackendConfig>,
}

impl RouterConfig {
    /// Defaults that depend on the serverless policy (the first-byte timeout).
    pub fn defaults(serverless: &ServerlessPolicy) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            api_keys: Vec::new(),
            admin_key: None,
            health_public: false,
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(serverless.timeout),
            idle_timeout: Duration::from_secs(120),
            max_body_bytes: 16 * 1024 * 1024,
            max_concurrent_requests: 4096,
            queue_timeout: Duration::from_secs(5),
            max_attempts: 3,
            spot_capacity: 32,
            backends: Vec::new(),
        }
    }
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }
}
