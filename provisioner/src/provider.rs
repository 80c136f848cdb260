//! What a cloud (or this machine) must offer the reconciler: spot replicas that launch,
//! report their status and terminate, and serverless endpoints that deploy, report and
//! go away. Calls return quickly; slow work (a VM booting) shows up in later polls.

use async_trait::async_trait;

/// One spot replica to launch.
#[derive(Debug, Clone)]
pub struct ReplicaSpec {
    pub service: String,
    /// Unique within the service: `spot-1`, `spot-2`, …
    pub replica: String,
    pub model: String,
    pub gpu: String,
    pub gpu_count: u32,
}

/// A launched replica, as its provider knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaHandle {
    pub replica: String,
    /// Where the engine will listen (it may still be booting).
    pub url: String,
    /// The local process, when the replica is one.
    pub pid: Option<u32>,
    /// Billing starts here (Unix milliseconds).
    pub launched_ms: u64,
}

/// What the provider says about a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaStatus {
    /// Up (the engine may still be loading; readiness is probed separately).
    Running,
    /// Taken back by the cloud at `at_ms` (billing stops there).
    Preempted { at_ms: u64 },
    /// Died or never came up.
    Failed { at_ms: u64, reason: String },
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub pid: Option<u32>,
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

/// Why a provider call failed, classified so the reconciler knows whether to retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying soon (network, rate limit, a process that did not start).
    Transient,
    /// The cloud has no capacity for this GPU now; retry with a longer backoff.
    NoCapacity,
    /// Credentials are missing or refused; retrying will not help until they are fixed.
    Auth,
    /// The request itself is wrong (bad model, GPU or command).
    Invalid,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Transient => "transient",
            Self::NoCapacity => "no capacity",
            Self::Auth => "auth",
            Self::Invalid => "invalid",
        })
    }
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

#[async_trait]
pub trait SpotProvider: Send + Sync {
    /// Starts a replica; returns once the launch is under way.
    async fn launch(&self, spec: &ReplicaSpec) -> Result<ReplicaHandle, ProviderError>;
    async fn poll(&self, handle: &ReplicaHandle) -> Result<ReplicaStatus, ProviderError>;
    /// Stops the replica; returns when billing stopped (Unix milliseconds).
    async fn terminate(&self, handle: &ReplicaHandle) -> Result<u64, ProviderError>;
}

#[async_trait]
pub trait ServerlessProvider: Send + Sync {
    async fn deploy(&self, spec: &ServerlessSpec) -> Result<Endpoint, ProviderError>;
    async fn status(&self, endpoint: &Endpoint) -> Result<EndpointStatus, ProviderError>;
    /// Removes the endpoint; returns its containers as finally billed.
    async fn destroy(&self, endpoint: &Endpoint) -> Result<Vec<ContainerBill>, ProviderError>;
}
