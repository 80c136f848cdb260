//! What a cloud (or this machine) must offer the reconciler: spot replicas that launch,
//! report their status and terminate, and serverless endpoints that deploy, report and
//! go away. Shaped for slow remote clouds: a launch only starts work (the address comes
//! in a later status), every resource has a name the reconciler chose and a reference
//! that another process can use, and every resource of a service can be listed, so a
//! restarted process adopts what still runs and nothing is left billing.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tandemn_config::api::BackendAuth;

/// A spot replica's name: the cloud resource's name and the idempotency key of its
/// launch. `<service>-<run>-<n>`, where `<run>` is the run's start time in base 36, so it
/// is unique across runs of a service, and valid as a SkyPilot cluster name (checked
/// client side: SkyPilot accepts a bad name and fails later).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReplicaId(String);

/// Longest replica name: short enough for every cloud's resource names.
pub const MAX_REPLICA_ID: usize = 60;

impl ReplicaId {
    /// The `n`-th replica of the run of `service` that started at `run_started_ms`.
    pub fn new(service: &str, run_started_ms: u64, n: u32) -> Result<Self, String> {
        Self::parse(&format!("{service}-{}-{n}", base36(run_started_ms / 1000)))
    }

    /// Checks SkyPilot's rule `[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?` and the length.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rule = "letters, digits, `-`, `_` and `.`, starting with a letter and ending with a letter or digit";
        let body_ok = text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        let ends_ok =
            text.starts_with(|c: char| c.is_ascii_alphabetic()) && text.ends_with(|c: char| c.is_ascii_alphanumeric());
        if text.len() > MAX_REPLICA_ID {
            Err(format!("replica name `{text}` is longer than {MAX_REPLICA_ID} characters"))
        } else if !body_ok || !ends_ok {
            Err(format!("replica name `{text}` is not valid: use {rule}"))
        } else {
            Ok(Self(text.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this replica belongs to `service` (names start with `<service>-`).
    pub fn of_service(&self, service: &str) -> bool {
        self.0.strip_prefix(service).is_some_and(|rest| rest.starts_with('-'))
    }
}

impl TryFrom<String> for ReplicaId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<ReplicaId> for String {
    fn from(id: ReplicaId) -> String {
        id.0
    }
}

impl std::fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// One spot replica to launch.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub service: String,
    pub id: ReplicaId,
    pub model: String,
    pub gpu: String,
    pub gpu_count: u32,
}

/// What the state store keeps of a replica so that any process can poll, terminate or
/// adopt it: its name, when billing started, and the provider's own data (opaque here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaRef {
    pub id: ReplicaId,
    /// Billing starts here (Unix milliseconds).
    pub launched_ms: u64,
    /// The provider's own fields (a cluster name and launch request, a pid and port).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Where the cloud placed a replica, as it reports it: what billing is priced from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub instance_type: String,
    pub region: String,
    pub spot: bool,
}

/// What the provider says about a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Launching: no address yet.
    Pending,
    /// Up at `url` (the engine may still be loading; readiness is probed separately).
    Running { url: String, placement: Option<Placement> },
    /// Taken back by the cloud at `at_ms` (billing stops there).
    Preempted { at_ms: u64 },
    /// Died or never came up.
    Failed { at_ms: u64, reason: String },
    /// The provider has no such resource (never launched, or gone and forgotten).
    NotFound,
}

/// A resource `list` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: ReplicaId,
    /// Enough to poll and terminate it, even when no record of it was kept.
    pub reference: ReplicaRef,
}

/// One serverless endpoint to deploy.
#[derive(Debug, Clone)]
pub struct ServerlessSpec {
    pub service: String,
    pub model: String,
    pub gpu: String,
    pub gpu_count: u32,
    pub concurrency: u32,
    pub workers_max: u32,
    pub scaledown_window_secs: u64,
}

/// A deployed serverless endpoint, with what the router needs to call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The provider's name for it (stable per service).
    pub id: String,
    pub url: String,
    /// Sent by the router on every request; never stored or logged in clear.
    #[serde(skip)]
    pub auth: BackendAuth,
    /// The provider's own fields.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A serverless endpoint's containers, as the provider bills them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStatus {
    pub running: u32,
    pub containers: Vec<ContainerBill>,
}

/// One container's billed life, in Unix milliseconds; `stopped_ms` is `None` while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub struct ContainerBill {
    pub id: u64,
    #[serde(rename = "started_unix_ms")]
    pub started_ms: u64,
    #[serde(rename = "stopped_unix_ms")]
    pub stopped_ms: Option<u64>,
}

/// Why a provider call failed, classified so the reconciler knows whether and when to
/// retry. Each carries the provider's own message, with secrets removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Credentials are missing or refused; retrying will not help until they are fixed.
    #[error("not authorized: {0}")]
    Auth(String),
    /// An account limit (service quota, spending cap) refuses more.
    #[error("quota: {0}")]
    Quota(String),
    /// The cloud has no capacity for this GPU now.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// No such resource.
    #[error("not found: {0}")]
    NotFound(String),
    /// Worth retrying (network, timeout, rate limit, a busy server).
    #[error("{message}")]
    Transient { message: String, retry_after: Option<Duration> },
    /// The request itself is wrong (bad model, GPU, name or command).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Anything else the API answered, with its status and an excerpt of its answer.
    #[error("HTTP {status}: {excerpt}")]
    Api { status: u16, excerpt: String },
}

impl ProviderError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), retry_after: None }
    }

    /// How long to wait before asking again, for a launch that failed this way.
    pub fn backoff(&self, base: Duration, max: Duration) -> Duration {
        match self {
            Self::Transient { retry_after, .. } => retry_after.unwrap_or(base).min(max),
            Self::NoCapacity(_) | Self::Quota(_) | Self::Api { .. } => base.saturating_mul(2).min(max),
            Self::Auth(_) | Self::Invalid(_) | Self::NotFound(_) => max,
        }
    }
}

#[async_trait]
pub trait SpotProvider: Send + Sync {
    /// Starts launching `spec.id` and returns once the launch is under way, without
    /// waiting for the replica to come up. Launching an id that already exists does not
    /// create a second resource.
    async fn launch(&self, spec: &ReplicaSpec) -> Result<ReplicaRef, ProviderError>;
    async fn status(&self, replica: &ReplicaRef) -> Result<ReplicaStatus, ProviderError>;
    /// Stops the replica and returns when billing stopped (Unix milliseconds). Idempotent:
    /// a replica that is already gone counts as done.
    async fn terminate(&self, replica: &ReplicaRef) -> Result<u64, ProviderError>;
    /// Every replica of `service` the provider can see.
    async fn list(&self, service: &str) -> Result<Vec<Listed>, ProviderError>;
}

#[async_trait]
pub trait ServerlessProvider: Send + Sync {
    /// Deploys (or finds, by its name) the service's endpoint.
    async fn deploy(&self, spec: &ServerlessSpec) -> Result<Endpoint, ProviderError>;
    async fn status(&self, endpoint: &Endpoint) -> Result<EndpointStatus, ProviderError>;
    /// Removes the endpoint and returns its containers as finally billed. Idempotent.
    async fn destroy(&self, endpoint: &Endpoint) -> Result<Vec<ContainerBill>, ProviderError>;
    /// Every endpoint of `service` the provider can see.
    async fn list(&self, service: &str) -> Result<Vec<Endpoint>, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_are_unique_per_run_and_valid_cluster_names() {
        let first = ReplicaId::new("svc", 1_764_000_000_000, 1).unwrap();
        let next_run = ReplicaId::new("svc", 1_764_000_060_000, 1).unwrap();
        assert_ne!(first, next_run);
        assert!(first.of_service("svc") && !first.of_service("sv"));
        assert_eq!(first.as_str(), "svc-t68n40-1");
    }

    #[test]
    fn bad_replica_names_are_refused_before_any_cloud_sees_them() {
        for bad in ["Tandemn_R1!", "1abc", "abc-", "", &"a".repeat(61)] {
            assert!(ReplicaId::parse(bad).is_err(), "{bad}");
        }
        for good in ["a", "tandemn-r1", "a.b_c-1"] {
            assert!(ReplicaId::parse(good).is_ok(), "{good}");
        }
        assert!(serde_json::from_str::<ReplicaId>("\"bad!\"").is_err());
    }
}
