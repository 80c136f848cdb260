//! A loopback fake of the SkyPilot API server (0.14.1, API version 62) whose clusters
//! are real `mock-vllm` processes, so Tandemn's SkyPilot spot provider can be tested
//! through launch, boot, preemption and teardown without a cloud. It speaks the real
//! server's REST shapes (provider-validation.md §1.2–1.3, §1.6): every POST answers
//! `200 null` with a server-made id in `X-Skypilot-Request-ID` and runs on its own;
//! `/api/get` blocks until the request is done; a failure is a 500 whose
//! `detail.error` is a JSON string `{"object", "type", "message"}`.
//!
//! Real routes: `GET /api/health`, `GET /api/get?request_id=`, `GET /api/status`,
//! `GET /enabled_clouds`, `POST /launch`, `/status`, `/endpoints`, `/down`,
//! `/validate`, `/api/cancel`. Control routes for tests (not in the real server):
//! `POST /fake/preempt`, `/fake/stop`, `/fake/fail_launches`, `/fake/hang`, and
//! `GET /fake/clusters`, the fake's own bill. The same controls are methods here.
//!
//! What a launch runs: the engine (`FakeConfig::engine`) with `--port 0
//! --served-model-name <model> --boot-secs <engine_boot> --parent-pid <this process>`
//! in its own process group, with only the task's `envs` and `secrets` (and `PATH`) as
//! its environment. The model is the first word after `vllm serve` in `run` (`$VAR`
//! taken from envs and secrets), else the `MODEL` env; a `--api-key` of `vllm serve`
//! reaches the engine as `VLLM_API_KEY`, never on its command line. A launch of a name
//! that exists reuses the cluster (and counts the launch), as `sky launch` does.
//!
//! Where the fake is simpler than the real server: `/status` never returns
//! `credentials`; `/endpoints` maps only the first opened port (the engine's); a
//! stopped cluster cannot be launched again (tear it down); the catalog holds only the
//! GPU instances Tandemn offers on AWS. It is no substitute for the conformance test
//! against the real server, which checks the shapes this fake copies.

mod cluster;
mod http;
mod state;
mod task;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use state::Shared;

/// How the fake behaves; `Default` gives a slow-ish cloud on 127.0.0.1:0.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    /// The engine program and its leading arguments, e.g. `[tandemn, mock-vllm]`.
    pub engine: Vec<OsString>,
    /// From a launch to the engine's start: the cluster's `INIT` phase.
    pub provision_delay: Duration,
    /// The engine's own boot (mock-vllm `--boot-secs`): `/health` 503 meanwhile.
    pub engine_boot: Duration,
    /// When set, every route but `/api/health` needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Each engine's stdout and stderr go to `<log_dir>/<cluster_name_on_cloud>.log`.
    pub log_dir: PathBuf,
    pub listen: SocketAddr,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            engine: vec!["tandemn".into(), "mock-vllm".into()],
            provision_delay: Duration::from_secs(3),
            engine_boot: Duration::from_secs(2),
            token: None,
            log_dir: std::env::temp_dir().join("tandemn-fake-skypilot"),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("the fake SkyPilot's engine is empty: give the program to run, e.g. [tandemn, mock-vllm]")]
    NoEngine,
    #[error("cannot create the engine log directory {}: {source}", path.display())]
    LogDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("no cluster '{0}' is in the fake SkyPilot's table")]
    NoSuchCluster(String),
    #[error("cluster '{cluster}' has no running instance (its instance is {status:?})")]
    NotRunning { cluster: String, status: InstanceStatus },
}

/// What the fake's cloud did with one instance: `GET /fake/clusters` and
/// [`FakeSkyPilot::clusters`]. A name relaunched after a preemption gets a new record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub name: String,
    pub cluster_name_on_cloud: String,
    /// `/launch` calls that reached this instance (a reused cluster counts each).
    pub launches: u32,
    pub status: InstanceStatus,
    /// Still in SkyPilot's cluster table: `false` after `/down`, or after a refreshing
    /// `/status` noticed the instance was gone.
    pub listed: bool,
    /// The engine's process (and process group) id, once started.
    pub pid: Option<u32>,
    /// The engine's loopback port, once it listens.
    pub port: Option<u16>,
    pub launched_at_ms: u64,
    pub stopped_at_ms: Option<u64>,
    pub terminated_at_ms: Option<u64>,
    /// Milliseconds of compute billed: from the launch to the stop, the termination, or now.
    pub billed_ms: u64,
    pub instance_type: String,
    pub region: String,
    pub zone: String,
    pub spot: bool,
    /// `L4:1`.
    pub accelerators: String,
}

/// The instance's real state, which `/status` shows only after a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Provisioning, or the engine has not yet printed its address.
    Init,
    Up,
    Stopped,
    Terminated,
}

/// A SkyPilot error as `/api/get` reports it: the exception's type and message.
#[derive(Debug, Clone, PartialEq)]
struct ApiError {
    kind: String,
    message: String,
}

impl ApiError {
    fn new(kind: &str, message: String) -> Self {
        Self { kind: kind.to_string(), message }
    }
}

/// A running fake. Dropping it stops the server and kills every engine it started.
pub struct FakeSkyPilot {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl FakeSkyPilot {
    pub async fn start(config: FakeConfig) -> Result<Self, FakeError> {
        if config.engine.is_empty() {
            return Err(FakeError::NoEngine);
        }
        std::fs::create_dir_all(&config.log_dir)
            .map_err(|source| FakeError::LogDir { path: config.log_dir.clone(), source })?;
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| FakeError::Bind { addr: config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| FakeError::Bind { addr: config.listen, source })?;
        let shared = Arc::new(Shared::new(config));
        let server = tokio::spawn(http::serve(listener, shared.clone()));
        Ok(Self { addr, shared, server })
    }

    /// `http://127.0.0.1:PORT`, what `SKYPILOT_API_SERVER_ENDPOINT` is set to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every instance ever created, oldest first.
    pub fn clusters(&self) -> Vec<ClusterRecord> {
        self.shared.records()
    }

    /// `/launch` calls for `name` over all its instances (dry runs and refused launches excluded).
    pub fn launches(&self, name: &str) -> u32 {
        self.clusters().iter().filter(|c| c.name == name).map(|c| c.launches).sum()
    }

    /// Kills the engine's process group with SIGKILL and terminates the instance, as a
    /// spot reclaim does; `/status` keeps showing it `UP` until a refresh.
    pub async fn preempt(&self, name: &str) -> Result<ClusterRecord, FakeError> {
        self.shared.reclaim(name, InstanceStatus::Terminated).await
    }

    /// Stops the instance (its engine is killed); a refresh then shows `STOPPED`.
    pub async fn stop(&self, name: &str) -> Result<ClusterRecord, FakeError> {
        self.shared.reclaim(name, InstanceStatus::Stopped).await
    }

    /// The next `count` non-dry-run launches fail with this SkyPilot error type and message.
    pub fn fail_launches(&self, count: u32, kind: &str, message: &str) {
        self.shared.fail_launches(count, ApiError::new(kind, message.to_string()));
    }

    /// Every `/api/get` from now on waits `extra` before it answers: an unresponsive
    /// cloud. `Duration::ZERO` ends it.
    pub fn hang(&self, extra: Duration) {
        self.shared.hang(extra);
    }

    /// While `true`, launches queue (no cluster yet) as on a real server whose
    /// long-request workers are busy; `false` lets them run.
    pub fn queue_launches(&self, queued: bool) {
        self.shared.queue_launches(queued);
    }

    /// Stops serving, kills every engine and waits (a few seconds at most) until they are gone.
    pub async fn shutdown(self) {
        self.server.abort();
        self.shared.shut_down();
        self.shared.engines_gone(Duration::from_secs(10)).await;
    }
}

impl Drop for FakeSkyPilot {
    fn drop(&mut self) {
        self.server.abort();
        self.shared.shut_down();
    }
}

/// base64 of a pickled `None`: what the real server sends for a handle it has not got.
const PICKLED_NONE: &str = "gAROLg==";
/// The one user of the fake server.
const USER_HASH: &str = "5ca1ab1e";
const USER_NAME: &str = "tandemn";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Standard base64 with padding: the real server's opaque `handle` and `object`
/// fields are base64 too (of pickles there, of JSON here).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        let cases: [(&[u8], &str); 5] =
            [(b"", ""), (b"f", "Zg=="), (b"fo", "Zm8="), (b"foo", "Zm9v"), (&[0x80, 0x04, 0x4e, 0x2e], "gAROLg==")];
        for (bytes, encoded) in cases {
            assert_eq!(base64(bytes), encoded);
        }
    }
}
