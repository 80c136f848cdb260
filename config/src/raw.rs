//! The YAML-facing shapes, unvalidated. Every field is optional so that files and
//! flags can be layered; `validate` turns a merged `RawDeployment` into a spec.

use serde::Deserialize;

/// A deployment file (`tandemn.yaml`). Mirrors the `deploy` flags one to one.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeployment {
    pub service_name: Option<String>,
    pub model: Option<String>,
    pub gpu: Option<String>,
    pub gpu_count: Option<i64>,
    pub serverless_provider: Option<String>,
    pub spots_cloud: Option<String>,
    pub region: Option<String>,
    pub tp_size: Option<i64>,
    pub max_model_len: Option<i64>,
    pub cold_start_mode: Option<String>,
    pub scale_to_zero: Option<bool>,
    pub public: Option<bool>,
    pub gcp_project: Option<String>,
    pub gcp_region: Option<String>,
    #[serde(default)]
    pub scaling: RawScaling,
    #[serde(default)]
    pub router: RawRouter,
    #[serde(default)]
    pub local: RawLocal,
}

/// How the `local` provider simulates both tiers on this machine.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    pub spot_boot_secs: Option<f64>,
    pub preemptions_per_hour: Option<f64>,
    pub cold_start_secs: Option<f64>,
    pub command: Option<String>,
}

/// The scaling policy, embedded as `scaling:` or given alone with `--scaling-policy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScaling {
    #[serde(default)]
    pub spot: RawSpotPolicy,
    #[serde(default)]
    pub serverless: RawServerlessPolicy,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpotPolicy {
    pub min_replicas: Option<i64>,
    pub max_replicas: Option<i64>,
    pub target_qps: Option<f64>,
    pub upscale_delay: Option<i64>,
    pub downscale_delay: Option<i64>,
    pub demand_window: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServerlessPolicy {
    pub concurrency: Option<i64>,
    pub scaledown_window: Option<i64>,
    pub timeout: Option<i64>,
    pub workers_min: Option<i64>,
    pub workers_max: Option<i64>,
    pub scaler_value: Option<i64>,
}

/// The router's own settings. Times are in seconds and may have fractions.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub listen: Option<String>,
    pub api_keys: Option<Vec<RawSecret>>,
    pub admin_key: Option<RawSecret>,
    pub health_public: Option<bool>,
    pub connect_timeout: Option<f64>,
    pub first_byte_timeout: Option<f64>,
    pub idle_timeout: Option<f64>,
    pub max_body_bytes: Option<i64>,
    pub max_concurrent_requests: Option<i64>,
    pub queue_timeout: Option<f64>,
    pub max_attempts: Option<i64>,
    pub spot_capacity: Option<i64>,
    pub keepalive_timeout: Option<f64>,
    pub header_timeout: Option<f64>,
    pub write_timeout: Option<f64>,
    pub max_connections: Option<i64>,
    pub backends: Option<Vec<RawBackend>>,
}

/// A fixed backend for the router (deployments get theirs from the provisioner).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub tier: Option<String>,
    pub url: Option<String>,
    pub capacity: Option<i64>,
    /// `Authorization: Bearer` token (RunPod, vLLM `--api-key`).
    pub bearer: Option<RawSecret>,
    /// Modal proxy auth: both or neither.
    pub modal_key: Option<RawSecret>,
    pub modal_secret: Option<RawSecret>,
    /// Google ID token for a private Cloud Run service.
    pub cloudrun_id_token: Option<RawSecret>,
}

/// A secret is never written inline: the file names where to read it from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSecret {
    pub env: Option<String>,
    pub file: Option<String>,
}
