//! The simulator's knobs: timing, capacity, boot delay, fault injection and the
//! serverless simulation. Loaded from a YAML profile and overridden by flags; only
//! checked here, never acted on.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MockConfig {
    /// The model name `/v1/models` reports and requests must use.
    pub served_model_name: String,
    /// Time to first token, after a request is admitted.
    pub ttft_ms: f64,
    /// Inter-token latency.
    pub itl_ms: f64,
    /// Spread added to every delay, drawn from `jitter`.
    pub jitter_ms: f64,
    pub jitter: Jitter,
    /// Output length when a request gives no `max_tokens`.
    pub default_max_tokens: u32,
    pub max_model_len: u32,
    /// Concurrent decode slots; requests beyond them wait, as in vLLM.
    pub max_num_seqs: u32,
    /// Seconds after start during which `/health` answers 503 and requests are refused.
    pub boot_secs: f64,
    /// Share of requests answered with `error_status` (0 to 1).
    pub error_rate: f64,
    pub error_status: u16,
    /// Share of requests whose response headers never come.
    pub hang_rate: f64,
    /// Streams die (the connection drops) after this many chunks...
    pub die_after_chunks: Option<u32>,
    /// ...for this share of streamed requests.
    pub die_rate: f64,
    /// The server stops abruptly after this many seconds, like a preempted spot instance.
    pub exit_after_secs: Option<f64>,
    /// Seed for every random choice (tokens, jitter, faults).
    pub seed: u64,
    /// Like vLLM's `--api-key`: `/v1/*` (and `/billing`) require `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    /// Serverless mode: requests run on virtual containers that cold-start, scale out
    /// and scale to zero, billed per second of life (`/billing`). `None`: one always-on vLLM.
    pub serverless: Option<ServerlessSim>,
}

/// A serverless GPU endpoint (Modal-like) to simulate. Its container slots replace
/// `max_num_seqs` as admission.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessSim {
    /// Containers that may run at once; requests beyond their slots wait in line.
    pub containers_max: u32,
    /// Requests one container serves at once.
    #[serde(default = "ServerlessSim::default_concurrency")]
    pub concurrency: u32,
    /// Seconds from a container's start until it serves; its first requests wait them out.
    #[serde(default = "ServerlessSim::default_cold_start_secs")]
    pub cold_start_secs: f64,
    /// Seconds a container idles (no request in flight) before it stops.
    #[serde(default = "ServerlessSim::default_scaledown_window_secs")]
    pub scaledown_window_secs: f64,
}

impl ServerlessSim {
    /// Up to `containers_max` containers with the default concurrency and timings.
    pub fn new(containers_max: u32) -> Self {
        Self {
            containers_max,
            concurrency: Self::default_concurrency(),
            cold_start_secs: Self::default_cold_start_secs(),
            scaledown_window_secs: Self::default_scaledown_window_secs(),
        }
    }

    fn default_concurrency() -> u32 {
        32
    }

    fn default_cold_start_secs() -> f64 {
        2.0
    }

    fn default_scaledown_window_secs() -> f64 {
        60.0
    }

    pub fn cold_start(&self) -> Duration {
        at_most_a_century(self.cold_start_secs)
    }

    pub fn scaledown_window(&self) -> Duration {
        at_most_a_century(self.scaledown_window_secs)
    }
}

/// Seconds as a `Duration`. Huge values mean "never" and are capped so that adding
/// them to an `Instant` cannot overflow; NaN (rejected by `validate`) becomes 0, not a panic.
fn at_most_a_century(secs: f64) -> Duration {
    const CENTURY_SECS: f64 = 100.0 * 365.25 * 24.0 * 3600.0;
    Duration::try_from_secs_f64(secs.clamp(0.0, CENTURY_SECS)).unwrap_or_default()
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            served_model_name: "mock-model".to_string(),
            ttft_ms: 50.0,
            itl_ms: 10.0,
            jitter_ms: 0.0,
            jitter: Jitter::Uniform,
            default_max_tokens: 64,
            max_model_len: 32_768,
            max_num_seqs: 256,
            boot_secs: 0.0,
            error_rate: 0.0,
            error_status: 500,
            hang_rate: 0.0,
            die_after_chunks: None,
            die_rate: 1.0,
            exit_after_secs: None,
            seed: 0,
            api_key: None,
            serverless: None,
        }
    }
}

/// How `jitter_ms` spreads a delay: uniform in ±jitter, or normal with that deviation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    Uniform,
    Normal,
}

impl MockConfig {
    pub fn from_yaml_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every problem with the values, or nothing.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut non_negative = |name: &str, value: f64| {
            if !(value.is_finite() && value >= 0.0) {
                problems.push(format!("{name} must be a number of at least 0, got {value}"));
            }
        };
        non_negative("ttft_ms", self.ttft_ms);
        non_negative("itl_ms", self.itl_ms);
        non_negative("jitter_ms", self.jitter_ms);
        non_negative("boot_secs", self.boot_secs);
        if let Some(secs) = self.exit_after_secs {
            non_negative("exit_after_secs", secs);
        }
        if let Some(sim) = &self.serverless {
            non_negative("serverless.cold_start_secs", sim.cold_start_secs);
            non_negative("serverless.scaledown_window_secs", sim.scaledown_window_secs);
            if sim.containers_max == 0 {
                problems.push("serverless.containers_max must be at least 1".to_string());
            }
            if sim.concurrency == 0 {
                problems.push("serverless.concurrency must be at least 1".to_string());
            }
        }
        for (name, rate) in
            [("error_rate", self.error_rate), ("hang_rate", self.hang_rate), ("die_rate", self.die_rate)]
        {
            if !(0.0..=1.0).contains(&rate) {
                problems.push(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        if !(500..=599).contains(&self.error_status) {
            problems.push(format!("error_status must be a 5xx status, got {}", self.error_status));
        }
        if self.max_num_seqs == 0 {
            problems.push("max_num_seqs must be at least 1".to_string());
        }
        if self.default_max_tokens == 0 {
            problems.push("default_max_tokens must be at least 1".to_string());
        }
        if self.served_model_name.trim().is_empty() {
            problems.push("served_model_name must not be empty".to_string());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    pub fn boot(&self) -> Duration {
        Duration::from_secs_f64(self.boot_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_fill_in_defaults_and_reject_unknown_keys() {
        let config: MockConfig = serde_yaml::from_str("ttft_ms: 5\nerror_rate: 0.5\n").unwrap();
        assert_eq!((config.ttft_ms, config.error_rate, config.itl_ms), (5.0, 0.5, 10.0));
        let err = serde_yaml::from_str::<MockConfig>("seed: 1\nttft: 5\n").unwrap_err().to_string();
        assert!(err.contains("unknown field `ttft`") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem() {
        let config = MockConfig { ttft_ms: -1.0, error_rate: 2.0, error_status: 404, ..MockConfig::default() };
        let err = config.validate().unwrap_err();
        assert!(err.contains("ttft_ms") && err.contains("error_rate") && err.contains("error_status"), "{err}");
        assert!(MockConfig::default().validate().is_ok());
    }

    #[test]
    fn serverless_profiles_need_only_containers_max_and_are_validated() {
        let config: MockConfig = serde_yaml::from_str("serverless:\n  containers_max: 3\n").unwrap();
        assert_eq!(config.serverless, Some(ServerlessSim::new(3)));
        let sim = config.serverless.unwrap();
        assert_eq!((sim.concurrency, sim.cold_start_secs, sim.scaledown_window_secs), (32, 2.0, 60.0));
        assert!(serde_yaml::from_str::<MockConfig>("serverless:\n  concurrency: 3\n").is_err());
        let err = serde_yaml::from_str::<MockConfig>("serverless:\n  containers_max: 1\n  window: 3\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `window`"), "{err}");

        let bad =
            ServerlessSim { containers_max: 0, concurrency: 0, cold_start_secs: f64::NAN, scaledown_window_secs: -1.0 };
        let err = MockConfig { serverless: Some(bad), ..MockConfig::default() }.validate().unwrap_err();
        for name in ["containers_max", "concurrency", "cold_start_secs", "scaledown_window_secs"] {
            assert!(err.contains(&format!("serverless.{name}")), "{name} missing from {err}");
        }
        assert_eq!(
            ServerlessSim { cold_start_secs: 1e300, ..ServerlessSim::new(1) }.cold_start().as_secs() / 86_400 / 365,
            100
        );
    }
}
