//! Turns a merged `RawDeployment` into a `DeploymentSpec`: defaults, ranges, cross-key
//! rules and catalog checks. Every violation is collected; none stops the others.

use std::fmt::Display;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use crate::api::{BackendUrl, Tier};
use crate::catalog::Catalog;
use crate::error::Violation;
use crate::load::Origins;
use crate::raw::{RawBackend, RawDeployment, RawLocal, RawRouter, RawSecret, RawServerlessPolicy, RawSpotPolicy};
use crate::spec::bounds;
use crate::spec::{
    BackendAuthRef, BackendConfig, Choice, ColdStartMode, DeploymentSpec, LocalSettings, RouterConfig, ScalingPolicy,
    SecretRef, ServerlessPolicy, ServerlessProvider, SpotCloud, SpotPolicy,
};

/// Longest service name: `<name>-serverless` and `<name>-spot-<n>` then fit every
/// provider's own limit (Cloud Run's 49 characters is the tightest).
pub const MAX_SERVICE_NAME: usize = 30;

/// Longest environment variable name taken for a secret; a longer "name" is likelier a
/// pasted secret than a variable.
const MAX_ENV_NAME: usize = 128;

/// A number for a message: plain where that is short, else in exponent form, so that
/// `1e-300` is not printed with 300 zeros.
fn number(value: f64) -> String {
    let magnitude = value.abs();
    if value == 0.0 || (1e-4..1e15).contains(&magnitude) || !value.is_finite() {
        value.to_string()
    } else {
        format!("{value:e}")
    }
}

/// Checks the naming rule every provider accepts; the error says what is wrong.
pub fn check_service_name(name: &str) -> Result<(), String> {
    let rule = "lower-case letters, digits and `-`, starting with a letter, not ending with `-`, \
                at most 30 characters";
    let valid_chars = name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() {
        Err(format!("must not be empty; use {rule}"))
    } else if name.len() > MAX_SERVICE_NAME {
        Err(format!("`{name}` is {} characters long; use {rule}", name.len()))
    } else if !valid_chars || !name.starts_with(|c: char| c.is_ascii_lowercase()) || name.ends_with('-') {
        Err(format!("`{name}` is not a valid name; use {rule}"))
    } else {
        Ok(())
    }
}

/// A fresh `tandemn-xxxxxxxx` name (8 random hex digits).
pub fn generate_service_name() -> String {
    // RandomState is seeded from the OS on each construction.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    format!("tandemn-{:08x}", random as u32)
}

pub(crate) fn validate(
    raw: RawDeployment,
    origins: &Origins,
    catalog: &Catalog,
    violations: &mut Vec<Violation>,
) -> DeploymentSpec {
    let mut check = Checker { origins, violations };

    let service_name_generated = raw.service_name.is_none();
    let service_name = raw.service_name.unwrap_or_else(generate_service_name);
    if let Err(problem) = check_service_name(&service_name) {
        check.fail("service_name", problem);
    }
    let model = match raw.model.map(|m| m.trim().to_string()) {
        None => check.missing("model", "--model", "a Hugging Face model id such as `Qwen/Qwen3-0.6B`"),
        Some(m) if m.is_empty() || m.chars().any(char::is_whitespace) => {
            check.fail("model", format!("`{m}` is not a model id; use one such as `Qwen/Qwen3-0.6B`"));
            m
        }
        Some(m) => m,
    };
    let gpu = match raw.gpu {
        None => check.missing("gpu", "--gpu", "a GPU type such as L4, L40S, A100 or H100"),
        Some(name) => match catalog.gpu(&name) {
            Some(spec) => spec.name.clone(),
            None => {
                let hint = match catalog.suggest_gpu(&name) {
                    Some(best) => format!("did you mean `{best}`?"),
                    None => "`tandemn show-gpus` lists the known GPUs".to_string(),
                };
                check.fail("gpu", format!("unknown GPU `{name}`; {hint}"));
                String::new()
            }
        },
    };
    let gpu_count = check.int("gpu_count", raw.gpu_count, 1, 1..=8);
    let tp_size = check.int("tp_size", raw.tp_size, 1, 1..=8);
    if tp_size > gpu_count {
        check.fail("tp_size", format!("must not exceed `gpu_count` ({gpu_count}), got {tp_size}"));
    }
    let max_model_len = check.int("max_model_len", raw.max_model_len, 4096, 16..=10_485_760);

    let (serverless_provider, serverless_provider_auto) =
        choose_serverless_provider(&mut check, raw.serverless_provider, &gpu, catalog);
    if serverless_provider == ServerlessProvider::Cloudrun && gpu_count > 1 {
        check.fail("gpu_count", format!("cloudrun gives exactly one GPU per instance, got {gpu_count}"));
    }
    let spots_cloud = check.choice("spots_cloud", raw.spots_cloud, SpotCloud::Aws);
    let cold_start_mode = check.choice("cold_start_mode", raw.cold_start_mode, ColdStartMode::FastBoot);
    let scale_to_zero = raw.scale_to_zero.unwrap_or(true);
    let public = raw.public.unwrap_or(false);

    let mut scaling = ScalingPolicy {
        spot: spot_policy(&mut check, raw.scaling.spot),
        serverless: serverless_policy(&mut check, raw.scaling.serverless),
    };
    if !scale_to_zero {
        scaling.spot.min_replicas = scaling.spot.min_replicas.max(1);
        scaling.spot.max_replicas = scaling.spot.max_replicas.max(1);
        scaling.serverless.scaledown_window = 300;
    }
    let router = router_config(&mut check, raw.router, &scaling.serverless);
    if public && !router.api_keys.is_empty() {
        check.fail("router.api_keys", "`public: true` turns client auth off; remove the keys or `public`");
    }

    DeploymentSpec {
        service_name,
        service_name_generated,
        model,
        gpu,
        gpu_count,
        serverless_provider,
        serverless_provider_auto,
        spots_cloud,
        region: check.text("region", raw.region),
        tp_size,
        max_model_len,
        cold_start_mode,
        scale_to_zero,
        public,
        gcp_project: check.text("gcp_project", raw.gcp_project),
        gcp_region: check.text("gcp_region", raw.gcp_region),
        scaling,
        router,
        local: local_settings(&mut check, raw.local),
    }
}

fn local_settings(check: &mut Checker, raw: RawLocal) -> LocalSettings {
    let default = LocalSettings::default();
    let preemptions_per_hour = match raw.preemptions_per_hour {
        None => default.preemptions_per_hour,
        Some(v) if (0.0..=3600.0).contains(&v) => v,
        Some(v) => {
            check.fail("local.preemptions_per_hour", format!("must be between 0 and 3600, got {v}"));
            default.preemptions_per_hour
        }
    };
    let command = check.text("local.command", raw.command);
    if let Some(command) = &command
        && !command.contains("{port}")
    {
        check.fail("local.command", "must contain `{port}`, where the replica's port is filled in");
    }
    LocalSettings {
        spot_boot: check.seconds("local.spot_boot_secs", raw.spot_boot_secs, default.spot_boot, bounds::SPOT_BOOT_SECS),
        preemptions_per_hour,
        cold_start: check.seconds(
            "local.cold_start_secs",
            raw.cold_start_secs,
            default.cold_start,
            bounds::COLD_START_SECS,
        ),
        command,
    }
}

/// An explicit provider must offer the GPU; otherwise the cheapest one that does is chosen.
fn choose_serverless_provider(
    check: &mut Checker,
    requested: Option<String>,
    gpu: &str,
    catalog: &Catalog,
) -> (ServerlessProvider, bool) {
    let offering = || catalog.serverless_offers(gpu).iter().map(|o| o.provider).collect::<Vec<_>>().join(", ");
    match requested.as_deref() {
        None | Some("auto") => {
            match catalog.cheapest_serverless(gpu).and_then(|o| ServerlessProvider::parse(o.provider)) {
                Some(provider) => (provider, true),
                None => {
                    if !gpu.is_empty() {
                        check.fail(
                        "gpu",
                        format!("no serverless provider offers {gpu}; choose another GPU or `serverless_provider: local`"),
                    );
                    }
                    (ServerlessProvider::Local, true)
                }
            }
        }
        Some(_) => {
            let provider = check.choice("serverless_provider", requested, ServerlessProvider::Local);
            let unpriced =
                provider != ServerlessProvider::Local && catalog.serverless_price(provider.as_str(), gpu).is_none();
            if unpriced && !gpu.is_empty() {
                let others = offering();
                let hint =
                    if others.is_empty() { "no provider does".to_string() } else { format!("offered by: {others}") };
                check.fail("serverless_provider", format!("{provider} has no {gpu} GPUs; {hint}"));
            }
            (provider, false)
        }
    }
}

fn spot_policy(check: &mut Checker, raw: RawSpotPolicy) -> SpotPolicy {
    let default = SpotPolicy::default();
    let policy = SpotPolicy {
        min_replicas: check.int("scaling.spot.min_replicas", raw.min_replicas, default.min_replicas, 0..=100),
        max_replicas: check.int("scaling.spot.max_replicas", raw.max_replicas, default.max_replicas, 1..=100),
        target_qps: check.positive("scaling.spot.target_qps", raw.target_qps, default.target_qps, 100_000.0),
        upscale_delay: check.int(
            "scaling.spot.upscale_delay",
            raw.upscale_delay,
            default.upscale_delay,
            bounds::UPSCALE_DELAY,
        ),
        downscale_delay: check.int(
            "scaling.spot.downscale_delay",
            raw.downscale_delay,
            default.downscale_delay,
            bounds::DOWNSCALE_DELAY,
        ),
        demand_window: check.int(
            "scaling.spot.demand_window",
            raw.demand_window,
            default.demand_window,
            bounds::DEMAND_WINDOW,
        ),
    };
    if policy.min_replicas > policy.max_replicas {
        check.fail(
            "scaling.spot.min_replicas",
            format!("must not exceed `spot.max_replicas` ({}), got {}", policy.max_replicas, policy.min_replicas),
        );
    }
    policy
}

fn serverless_policy(check: &mut Checker, raw: RawServerlessPolicy) -> ServerlessPolicy {
    let default = ServerlessPolicy::default();
    let path = |key: &str| format!("scaling.serverless.{key}");
    let policy = ServerlessPolicy {
        concurrency: check.int(&path("concurrency"), raw.concurrency, default.concurrency, 1..=1024),
        scaledown_window: check.int(
            &path("scaledown_window"),
            raw.scaledown_window,
            default.scaledown_window,
            bounds::SCALEDOWN_WINDOW,
        ),
        timeout: check.int(&path("timeout"), raw.timeout, default.timeout, bounds::SERVERLESS_TIMEOUT),
        workers_min: check.int(&path("workers_min"), raw.workers_min, default.workers_min, 0..=100),
        workers_max: check.int(&path("workers_max"), raw.workers_max, default.workers_max, 1..=100),
        scaler_value: check.int(&path("scaler_value"), raw.scaler_value, default.scaler_value, bounds::SCALER_VALUE),
    };
    if policy.workers_min > policy.workers_max {
        check.fail(
            &path("workers_min"),
            format!("must not exceed `serverless.workers_max` ({}), got {}", policy.workers_max, policy.workers_min),
        );
    }
    policy
}

fn router_config(check: &mut Checker, raw: RawRouter, serverless: &ServerlessPolicy) -> RouterConfig {
    let default = RouterConfig::defaults(serverless);
    let spot_capacity = check.int("router.spot_capacity", raw.spot_capacity, default.spot_capacity, 1..=4096);
    let listen = match raw.listen {
        None => default.listen,
        Some(text) => text.parse::<SocketAddr>().unwrap_or_else(|_| {
            // Echoed only when it looks like an address: anything else may be a pasted token.
            let addressy = text.len() <= 64
                && (text.contains([':', '.']) || text.chars().all(|c| c.is_ascii_alphabetic()))
                && text.chars().all(|c| c.is_ascii_alphanumeric() || ".:[]-".contains(c));
            let shown = if addressy { format!("`{text}`") } else { "the value (not shown)".to_string() };
            check.fail("router.listen", format!("{shown} is not an address such as `0.0.0.0:8080`"));
            default.listen
        }),
    };
    let api_keys = raw
        .api_keys
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .filter_map(|(i, secret)| check.secret(&format!("router.api_keys[{i}]"), secret))
        .collect();
    RouterConfig {
        listen,
        api_keys,
        admin_key: raw.admin_key.and_then(|s| check.secret("router.admin_key", s)),
        health_public: raw.health_public.unwrap_or(default.health_public),
        connect_timeout: check.seconds(
            "router.connect_timeout",
            raw.connect_timeout,
            default.connect_timeout,
            bounds::CONNECT_TIMEOUT,
        ),
        first_byte_timeout: check.seconds(
            "router.first_byte_timeout",
            raw.first_byte_timeout,
            default.first_byte_timeout,
            bounds::FIRST_BYTE_TIMEOUT,
        ),
        idle_timeout: check.seconds(
            "router.idle_timeout",
            raw.idle_timeout,
            default.idle_timeout,
            bounds::IDLE_TIMEOUT,
        ),
        max_body_bytes: check.int("router.max_body_bytes", raw.max_body_bytes, default.max_body_bytes, 1..=1 << 30),
        max_concurrent_requests: check.int(
            "router.max_concurrent_requests",
            raw.max_concurrent_requests,
            default.max_concurrent_requests,
            1..=1_000_000,
        ),
        queue_timeout: check.seconds_or_zero(
            "router.queue_timeout",
            raw.queue_timeout,
            default.queue_timeout,
            bounds::QUEUE_TIMEOUT,
            "do not queue",
        ),
        max_attempts: check.int("router.max_attempts", raw.max_attempts, default.max_attempts, 1..=10),
        spot_capacity,
        keepalive_timeout: check.seconds(
            "router.keepalive_timeout",
            raw.keepalive_timeout,
            default.keepalive_timeout,
            bounds::KEEPALIVE_TIMEOUT,
        ),
        header_timeout: check.seconds(
            "router.header_timeout",
            raw.header_timeout,
            default.header_timeout,
            bounds::HEADER_TIMEOUT,
        ),
        write_timeout: check.seconds(
            "router.write_timeout",
            raw.write_timeout,
            default.write_timeout,
            bounds::WRITE_TIMEOUT,
        ),
        max_connections: check.int(
            "router.max_connections",
            raw.max_connections,
            default.max_connections,
            bounds::MAX_CONNECTIONS,
        ),
        backends: raw
            .backends
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .filter_map(|(i, b)| backend(check, &format!("router.backends[{i}]"), b, spot_capacity, serverless))
            .collect(),
    }
}

fn backend(
    check: &mut Checker,
    path: &str,
    raw: RawBackend,
    spot_capacity: u32,
    serverless: &ServerlessPolicy,
) -> Option<BackendConfig> {
    let tier = match raw.tier.as_deref() {
        Some("spot") => Tier::Spot,
        Some("serverless") => Tier::Serverless,
        Some(other) => {
            check.fail(&format!("{path}.tier"), format!("`{other}` is not one of `spot`, `serverless`"));
            return None;
        }
        None => {
            check.fail(path, "needs `tier: spot` or `tier: serverless`");
            return None;
        }
    };
    let Some(url) = raw.url else {
        check.fail(path, "needs a `url`");
        return None;
    };
    if let Err(problem) = BackendUrl::parse(&url) {
        check.fail(&format!("{path}.url"), problem);
        return None;
    }
    // A serverless endpoint takes `concurrency` per container, for up to `workers_max` containers.
    let default_capacity = match tier {
        Tier::Spot => spot_capacity,
        Tier::Serverless => serverless.concurrency.saturating_mul(serverless.workers_max),
    };
    let capacity = check.int(&format!("{path}.capacity"), raw.capacity, default_capacity, 1..=100_000);
    let mut secret = |key: &str, raw: Option<RawSecret>| raw.and_then(|s| check.secret(&format!("{path}.{key}"), s));
    let bearer = secret("bearer", raw.bearer);
    let modal_key = secret("modal_key", raw.modal_key);
    let modal_secret = secret("modal_secret", raw.modal_secret);
    let cloudrun = secret("cloudrun_id_token", raw.cloudrun_id_token);
    let auth = match (bearer, modal_key, modal_secret, cloudrun) {
        (None, None, None, None) => BackendAuthRef::None,
        (Some(token), None, None, None) => BackendAuthRef::Bearer(token),
        (None, Some(key), Some(secret), None) => BackendAuthRef::Modal { key, secret },
        (None, None, None, Some(token)) => BackendAuthRef::CloudRun(token),
        _ => {
            check.fail(
                path,
                "give one kind of backend auth: `bearer`, `modal_key` with `modal_secret`, or `cloudrun_id_token`",
            );
            return None;
        }
    };
    Some(BackendConfig { tier, url, capacity, auth })
}

struct Checker<'a> {
    origins: &'a Origins,
    violations: &'a mut Vec<Violation>,
}

impl Checker<'_> {
    fn fail(&mut self, path: &str, message: impl Into<String>) {
        self.violations.push(self.origins.violation(path, message));
    }

    fn missing(&mut self, key: &str, flag: &str, example: &str) -> String {
        self.fail(key, format!("is required: set `{key}:` in the file or pass {flag} ({example})"));
        String::new()
    }

    fn int<T>(&mut self, path: &str, raw: Option<i64>, default: T, range: RangeInclusive<T>) -> T
    where
        T: TryFrom<i64> + PartialOrd + Display + Copy,
    {
        let Some(value) = raw else { return default };
        match T::try_from(value) {
            Ok(v) if range.contains(&v) => v,
            _ => {
                self.fail(path, format!("must be between {} and {}, got {value}", range.start(), range.end()));
                default
            }
        }
    }

    /// A number in `(0, max]`.
    fn positive(&mut self, path: &str, raw: Option<f64>, default: f64, max: f64) -> f64 {
        match raw {
            None => default,
            Some(v) if v > 0.0 && v <= max => v,
            Some(v) => {
                self.fail(path, format!("must be greater than 0 and at most {max}, got {}", number(v)));
                default
            }
        }
    }

    /// A duration in seconds, within `range`.
    fn seconds(&mut self, path: &str, raw: Option<f64>, default: Duration, range: RangeInclusive<f64>) -> Duration {
        let Some(value) = raw else { return default };
        match Duration::try_from_secs_f64(value) {
            Ok(duration) if range.contains(&value) => duration,
            _ => {
                let (min, max) = (number(*range.start()), number(*range.end()));
                self.fail(path, format!("must be between {min} and {max} seconds, got {}", number(value)));
                default
            }
        }
    }

    /// Like [`Checker::seconds`], but exactly 0 is also allowed and means `zero_means`.
    fn seconds_or_zero(
        &mut self,
        path: &str,
        raw: Option<f64>,
        default: Duration,
        range: RangeInclusive<f64>,
        zero_means: &str,
    ) -> Duration {
        match raw {
            // `-0.0` matches too.
            Some(0.0) => Duration::ZERO,
            Some(value) if !range.contains(&value) => {
                let (min, max) = (number(*range.start()), number(*range.end()));
                self.fail(
                    path,
                    format!("must be 0 ({zero_means}) or between {min} and {max} seconds, got {}", number(value)),
                );
                default
            }
            other => self.seconds(path, other, default, range),
        }
    }

    fn choice<C: Choice>(&mut self, path: &str, raw: Option<String>, default: C) -> C {
        let Some(text) = raw else { return default };
        C::parse(&text).unwrap_or_else(|| {
            self.fail(path, format!("`{text}` is not one of {}", C::names()));
            default
        })
    }

    fn text(&mut self, path: &str, raw: Option<String>) -> Option<String> {
        let text = raw?.trim().to_string();
        if text.is_empty() {
            self.fail(path, "must not be empty; leave the key out instead");
            return None;
        }
        Some(text)
    }

    /// Never repeats an invalid value: a pasted secret is the likeliest invalid name.
    fn secret(&mut self, path: &str, raw: RawSecret) -> Option<SecretRef> {
        match (raw.env, raw.file) {
            (Some(name), None) => {
                let valid = (1..=MAX_ENV_NAME).contains(&name.len())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if valid {
                    Some(SecretRef::Env(name))
                } else {
                    self.fail(
                        &format!("{path}.env"),
                        format!(
                            "is not an environment variable name (the value is not shown, as it may be the secret \
                             itself); a name is letters, digits and `_`, not starting with a digit, at most \
                             {MAX_ENV_NAME} characters, such as `RUNPOD_API_KEY`"
                        ),
                    );
                    None
                }
            }
            (None, Some(file)) if file.chars().any(char::is_control) => {
                self.fail(
                    &format!("{path}.file"),
                    "is not a file name: it has a control character such as a line break (the value is not shown)",
                );
                None
            }
            (None, Some(file)) if !file.trim().is_empty() => Some(SecretRef::File(PathBuf::from(file))),
            (None, Some(_)) => {
                self.fail(&format!("{path}.file"), "must name a file");
                None
            }
            _ => {
                self.fail(path, "give exactly one of `env: VARIABLE` or `file: PATH`");
                None
            }
        }
    }
}
