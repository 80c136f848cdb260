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
    /// How long a local spot replica takes to become ready (a real one boots for minutes);
    /// [`bounds::SPOT_BOOT_SECS`].
    #[serde(rename = "spot_boot_secs", with = "seconds")]
    pub spot_boot: Duration,
    /// Random preemptions per replica-hour; 0 preempts only on `tandemn preempt`.
    pub preemptions_per_hour: f64,
    /// How long a local serverless container takes to start; [`bounds::COLD_START_SECS`].
    #[serde(rename = "cold_start_secs", with = "seconds")]
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
    /// Seconds more replicas must be asked for before they are added; 0 adds them at
    /// once. [`bounds::UPSCALE_DELAY`].
    pub upscale_delay: u64,
    /// Seconds fewer replicas must suffice before some are removed; 0 removes them at
    /// once. [`bounds::DOWNSCALE_DELAY`].
    pub downscale_delay: u64,
    /// Seconds of traffic the request rate is measured over. [`bounds::DEMAND_WINDOW`].
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
    /// Idle seconds before a container stops; 0 stops it as soon as it is idle.
    /// [`bounds::SCALEDOWN_WINDOW`].
    pub scaledown_window: u64,
    /// Request timeout, seconds. [`bounds::SERVERLESS_TIMEOUT`].
    pub timeout: u64,
    /// Always-on containers (RunPod, Cloud Run); billed even when idle.
    pub workers_min: u32,
    /// Container cap (RunPod, Cloud Run).
    pub workers_max: u32,
    /// RunPod's queue-delay scaler threshold, in seconds. [`bounds::SCALER_VALUE`].
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

/// The most a secret file may hold: a key is a line.
const MAX_SECRET_FILE: u64 = 64 * 1024;

impl SecretRef {
    /// Reads the secret now; the error names the variable or file, never the value. An
    /// empty or whitespace-only value is refused (an empty key would match an empty token).
    pub fn resolve(&self) -> Result<crate::api::Secret, String> {
        self.resolve_with(|name| std::env::var_os(name))
    }

    /// [`SecretRef::resolve`] with the environment given, so tests need not change the process's.
    fn resolve_with(&self, env: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<crate::api::Secret, String> {
        let value = match self {
            SecretRef::Env(name) => env(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?
                .into_string()
                .map_err(|_| format!("environment variable {name} is not valid UTF-8"))?,
            SecretRef::File(path) => read_secret_file(path)?,
        };
        // Files end with a line break; a variable set from one often does too.
        crate::api::Secret::parse(value.trim())
            .map_err(|problem| format!("the secret in {self} is unusable: {problem}"))
    }
}

/// A secret file's text, read no further than 64 KiB (so `/dev/zero` cannot hang it); the
/// error names the path, never the content.
pub fn read_secret_file(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read secret file {}: {e}", path.display());
    let mut text = String::new();
    std::fs::File::open(path).map_err(cannot)?.take(MAX_SECRET_FILE + 1).read_to_string(&mut text).map_err(cannot)?;
    if text.len() as u64 > MAX_SECRET_FILE {
        return Err(format!("secret file {} is larger than {} KiB", path.display(), MAX_SECRET_FILE / 1024));
    }
    Ok(text)
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
            id: None,
            tier: self.tier,
            url: self.url.clone(),
            capacity: self.capacity,
            auth,
            draining: false,
        })
    }
}

/// The router's listener, client auth, timeouts and limits. Each duration's range, and
/// why, is in [`bounds`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouterConfig {
    pub listen: SocketAddr,
    pub api_keys: Vec<SecretRef>,
    pub admin_key: Option<SecretRef>,
    /// Serve `/router/health` without the admin key.
    pub health_public: bool,
    /// Longest wait to connect to a backend. [`bounds::CONNECT_TIMEOUT`].
    #[serde(with = "seconds")]
    pub connect_timeout: Duration,
    /// Longest wait for a backend's first response byte. Default:
    /// `scaling.serverless.timeout`. [`bounds::FIRST_BYTE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub first_byte_timeout: Duration,
    /// Longest silence from a backend between streamed chunks. [`bounds::IDLE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub idle_timeout: Duration,
    pub max_body_bytes: u64,
    pub max_concurrent_requests: u32,
    /// Longest a request waits for a backend with room; zero means it does not wait.
    /// [`bounds::QUEUE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub queue_timeout: Duration,
    pub max_attempts: u32,
    /// Concurrent requests one spot replica takes before traffic spills to serverless.
    pub spot_capacity: u32,
    /// How long an idle keep-alive client connection is kept open between requests.
    /// [`bounds::KEEPALIVE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub keepalive_timeout: Duration,
    /// The total deadline for a request head (request line and headers) to arrive, however
    /// it trickles in. [`bounds::HEADER_TIMEOUT`].
    #[serde(with = "seconds")]
    pub header_timeout: Duration,
    /// The longest a write to a client may stall (a client that stops reading) before the
    /// client is dropped and its upstream request cancelled. [`bounds::WRITE_TIMEOUT`].
    #[serde(with = "seconds")]
    pub write_timeout: Duration,
    /// Open client connections, idle ones included; more are refused.
    /// [`bounds::MAX_CONNECTIONS`].
    pub max_connections: u32,
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
            keepalive_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            backends: Vec::new(),
        }
    }
}

/// The allowed range of every duration key (seconds) and of `router.max_connections`,
/// with the reason for each end. A value outside is refused with the range in the
/// message: a timeout that rounds to zero (`1e-300`) fails every request at once, and
/// one of years never fires.
pub mod bounds {
    use std::ops::RangeInclusive;

    /// `router.connect_timeout`: a TCP (and TLS) handshake takes well under 10 ms on a LAN
    /// and tens of ms across a region, so below 10 ms healthy backends fail; 300 s is past
    /// the kernel's own SYN retries (about 127 s on Linux).
    pub const CONNECT_TIMEOUT: RangeInclusive<f64> = 0.01..=300.0;
    /// `router.first_byte_timeout`: the first byte waits for queueing and prefill, tens of
    /// ms at best on a warm GPU, so 100 ms is the least that can work; a day is the
    /// longest serverless request timeout (`scaling.serverless.timeout`).
    pub const FIRST_BYTE_TIMEOUT: RangeInclusive<f64> = 0.1..=86_400.0;
    /// `router.idle_timeout`: one decode step takes 10 to 100 ms, so below 100 ms a healthy
    /// stream is cut between tokens; a day at most, as for the first byte.
    pub const IDLE_TIMEOUT: RangeInclusive<f64> = 0.1..=86_400.0;
    /// `router.queue_timeout` when not 0 (0 means "do not queue"): a freed slot wakes a
    /// waiting request within a millisecond or so, so a wait under 10 ms only adds a
    /// timer to an answer of 503; an hour at most, as no client waits longer.
    pub const QUEUE_TIMEOUT: RangeInclusive<f64> = 0.01..=3600.0;
    /// `router.keepalive_timeout`: under a second a client reconnects for every request;
    /// over an hour idle sockets pile up.
    pub const KEEPALIVE_TIMEOUT: RangeInclusive<f64> = 1.0..=3600.0;
    /// `router.header_timeout`: a request head is a few KiB, which arrives in well under a
    /// second even on a slow link; 5 minutes at most, so trickled heads cannot hold sockets.
    pub const HEADER_TIMEOUT: RangeInclusive<f64> = 1.0..=300.0;
    /// `router.write_timeout`: a reading client drains a chunk in milliseconds, and a
    /// second covers a congested link; an hour at most, as a stalled client pins a
    /// backend slot meanwhile.
    pub const WRITE_TIMEOUT: RangeInclusive<f64> = 1.0..=3600.0;
    /// `router.max_connections`: below 16 a handful of idle keep-alive clients lock
    /// everyone out; a million is past any file-descriptor limit in practice.
    pub const MAX_CONNECTIONS: RangeInclusive<u32> = 16..=1_000_000;
    /// `local.spot_boot_secs`: a simulated boot shorter than 100 ms is shorter than
    /// starting the process, so it simulates nothing; at most 20 minutes, which keeps it
    /// under the reconciler's 30-minute boot timeout (a longer boot would be replaced
    /// before it ever became ready).
    pub const SPOT_BOOT_SECS: RangeInclusive<f64> = 0.1..=1200.0;
    /// `local.cold_start_secs`: as for the spot boot, 100 ms at least; 10 minutes at most,
    /// longer than a real serverless cold start with weights to load.
    pub const COLD_START_SECS: RangeInclusive<f64> = 0.1..=600.0;
    /// `scaling.spot.upscale_delay`: 0 adds replicas as soon as they are asked for (the
    /// default is 5); an hour at most, or bursts stay on serverless for good.
    pub const UPSCALE_DELAY: RangeInclusive<u64> = 0..=3600;
    /// `scaling.spot.downscale_delay`: 0 removes replicas as soon as fewer suffice; a day
    /// at most.
    pub const DOWNSCALE_DELAY: RangeInclusive<u64> = 0..=86_400;
    /// `scaling.spot.demand_window`: a rate needs at least a second of traffic; an hour
    /// at most, or the autoscaler reacts to the past.
    pub const DEMAND_WINDOW: RangeInclusive<u64> = 1..=3600;
    /// `scaling.serverless.scaledown_window`: 0 stops a container as soon as it is idle;
    /// a day at most.
    pub const SCALEDOWN_WINDOW: RangeInclusive<u64> = 0..=86_400;
    /// `scaling.serverless.timeout`: a request needs at least a second; a day is the
    /// longest any provider runs one.
    pub const SERVERLESS_TIMEOUT: RangeInclusive<u64> = 1..=86_400;
    /// `scaling.serverless.scaler_value`: RunPod's queue-delay threshold, 1 s to an hour.
    pub const SCALER_VALUE: RangeInclusive<u32> = 1..=3600;
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env_with(value: &str) -> impl Fn(&str) -> Option<OsString> {
        let value = OsString::from(value);
        move |name| (name == "TANDEMN_TEST_SECRET").then(|| value.clone())
    }

    #[test]
    fn blank_secrets_from_the_environment_are_refused() {
        let secret = SecretRef::Env("TANDEMN_TEST_SECRET".to_string());
        for blank in ["", "   ", "\n", " \t \n"] {
            let problem = secret.resolve_with(env_with(blank)).unwrap_err();
            assert_eq!(
                problem,
                "the secret in env TANDEMN_TEST_SECRET is unusable: a secret must not be empty or only whitespace",
                "{blank:?}"
            );
        }
        let unset = SecretRef::Env("TANDEMN_UNSET".to_string()).resolve_with(env_with("x")).unwrap_err();
        assert_eq!(unset, "environment variable TANDEMN_UNSET is not set");
        let two_lines = secret.resolve_with(env_with("sk-live-1\nsk-live-2")).unwrap_err();
        assert!(two_lines.contains("one line") && !two_lines.contains("sk-live"), "{two_lines}");
        assert_eq!(secret.resolve_with(env_with("  sk-live-1\n")).unwrap().expose(), "sk-live-1");
    }

    #[test]
    fn blank_secret_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            SecretRef::File(path)
        };
        for (name, text) in [("empty", &b""[..]), ("blank", b"  \n\t\n"), ("newline", b"\n")] {
            let problem = file(name, text).resolve().unwrap_err();
            assert!(problem.ends_with("is unusable: a secret must not be empty or only whitespace"), "{problem}");
            assert!(problem.contains(&format!("file {}", dir.path().join(name).display())), "{problem}");
        }
        assert_eq!(file("key", b"sk-live-1\n").resolve().unwrap().expose(), "sk-live-1");
        let problem = file("two", b"sk-live-1\nsk-live-2\n").resolve().unwrap_err();
        assert!(problem.contains("one line") && !problem.contains("sk-live"), "{problem}");
        let big = file("big", &vec![b'k'; 64 * 1024 + 1]).resolve().unwrap_err();
        assert!(big.contains("larger than 64 KiB"), "{big}");
        let missing = SecretRef::File(dir.path().join("missing")).resolve().unwrap_err();
        assert!(missing.starts_with("cannot read secret file"), "{missing}");
    }
}
