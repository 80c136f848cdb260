//! The `local` provider: both tiers as processes on this machine, so the whole product
//! (boot delays, preemption, scale to zero, cost) runs on a laptop.
//!
//! - Spot: each replica is a child process, by default the bundled `mock-vllm` with a
//!   boot delay, or any command template (`vllm serve {model} --port {port}`). Preemption
//!   is a kill: random at `preemptions_per_hour`, or on demand with `tandemn preempt`.
//! - Serverless: one `mock-vllm` in serverless mode, which cold-starts containers, runs
//!   `concurrency` requests in each, scales to zero after the scaledown window and keeps
//!   the billing record (`GET /billing`).
//!
//! Children run in their own process group, so a stop takes a whole engine with it, and
//! they stop when tandemn dies, even by SIGKILL: the bundled simulator watches its parent,
//! and a command-template engine runs under a shell watchdog that does the same.
//! Both tiers append what they billed to `billing.jsonl` in the service's folder: the
//! provider's own record, which the cost ledger is checked against.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tandemn_config::LocalSettings;
use tandemn_config::api::BackendAuth;

use crate::provider::{
    ContainerBill, Endpoint, EndpointStatus, Listed, ProviderError, ReplicaId, ReplicaRef, ReplicaSpec, ReplicaStatus,
    ServerlessProvider, ServerlessSpec, SpotProvider,
};

/// How long a stopped child gets to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Children and the billing record of one service.
struct Processes {
    /// Where logs and `billing.jsonl` go.
    dir: PathBuf,
    /// The `tandemn` executable that serves `mock-vllm`.
    exe: PathBuf,
    children: Mutex<HashMap<String, Child>>,
}

impl Processes {
    fn new(dir: &Path, exe: &Path) -> Result<Self, ProviderError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProviderError::Invalid(format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self { dir: dir.to_path_buf(), exe: exe.to_path_buf(), children: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn log_file(&self, name: &str) -> Result<File, ProviderError> {
        let path = self.dir.join(format!("{name}.log"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| ProviderError::transient(format!("cannot open {}: {e}", path.display())))
    }

    /// Starts `command` as `name`, in a process group of its own.
    fn spawn(&self, name: &str, mut command: Command) -> Result<u32, ProviderError> {
        let log = self.log_file(name)?;
        let err = log.try_clone().map_err(|e| ProviderError::transient(e.to_string()))?;
        command.stdin(Stdio::null()).stdout(log).stderr(err).process_group(0);
        // The router's keys are tandemn's, not the engine's: children do not inherit them.
        // Nor the operator's engine key: an inherited one would lock the router out.
        for secret in ["TANDEMN_API_KEY", "TANDEMN_ADMIN_KEY", "VLLM_API_KEY"] {
            command.env_remove(secret);
        }
        let child = command.spawn().map_err(|e| ProviderError::Invalid(format!("cannot start {name}: {e}")))?;
        let pid = child.id();
        self.lock().insert(name.to_string(), child);
        Ok(pid)
    }

    /// `Some(status)` once the child has exited (it is then forgotten, and whatever it
    /// left in its process group is killed).
    fn exited(&self, name: &str) -> Option<std::process::ExitStatus> {
        let mut children = self.lock();
        let child = children.get_mut(name)?;
        // Peek without reaping: while the leader is unreaped its group id cannot be reused.
        if !has_exited(child) {
            return None;
        }
        let _ = killpg(group_of(child), Signal::SIGKILL);
        let status = child.wait().ok();
        children.remove(name);
        status
    }

    /// Stops a child's whole process group: SIGTERM, then SIGKILL after the grace.
    async fn stop(&self, name: &str, signal: Signal) {
        let Some(mut child) = self.lock().remove(name) else { return };
        let group = group_of(&child);
        let _ = killpg(group, signal);
        let deadline = Instant::now() + STOP_GRACE;
        // Wait for the leader to exit without reaping it, so the group id stays ours
        // until the rest of the group (an engine's workers) is killed too.
        while Instant::now() < deadline && !has_exited(&child) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }

    /// Appends one billed interval to the provider's record.
    fn bill(&self, tier: &str, id: &str, started_ms: u64, stopped_ms: u64) {
        let line = serde_json::json!({
            "tier": tier, "id": id, "started_unix_ms": started_ms, "stopped_unix_ms": stopped_ms,
        });
        let path = self.dir.join("billing.jsonl");
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(error) = written {
            tracing::warn!(path = %path.display(), %error, "cannot write the local billing record");
        }
    }
}

/// A child leads its own process group (`process_group(0)`).
fn group_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// Whether a child has exited, without reaping it.
fn has_exited(child: &Child) -> bool {
    use nix::sys::wait::{Id, WaitPidFlag, waitid};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    matches!(waitid(Id::Pid(group_of(child)), flags), Ok(status) if status != nix::sys::wait::WaitStatus::StillAlive)
}

/// A port the OS picked, free at the time of asking.
fn free_port() -> Result<u16, ProviderError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ProviderError::transient(format!("no free port: {e}")))
}

/// Runs a command-template engine and stops it when tandemn dies (even by SIGKILL, which
/// leaves no chance to clean up), when told to stop, or passes on its exit status.
const ENGINE_WATCHDOG: &str = r#"trap 'kill -TERM "$engine" 2>/dev/null' TERM INT
sh -c "exec $TANDEMN_ENGINE" &
engine=$!
while [ "$(cut -d' ' -f4 /proc/$$/stat)" = "$TANDEMN_PARENT" ] && kill -0 "$engine" 2>/dev/null; do sleep 0.2; done
kill -TERM "$engine" 2>/dev/null
wait "$engine""#;

pub struct LocalSpot {
    settings: LocalSettings,
    processes: Processes,
    /// When each replica was last polled: the random preemption's time base.
    polled: Mutex<HashMap<String, Instant>>,
    /// Replicas launched and not yet ended.
    references: Mutex<HashMap<ReplicaId, ReplicaRef>>,
}

impl LocalSpot {
    /// `dir` holds the logs and billing record; `exe` is the `tandemn` binary.
    pub fn new(settings: LocalSettings, dir: &Path, exe: &Path) -> Result<Self, ProviderError> {
        Ok(Self {
            settings,
            processes: Processes::new(dir, exe)?,
            polled: Mutex::default(),
            references: Mutex::default(),
        })
    }

    fn command(&self, spec: &ReplicaSpec, port: u16) -> Command {
        match &self.settings.command {
            Some(template) => {
                // The model id comes from config: quoted, so it stays one word for the shell.
                let model = format!("'{}'", spec.model.replace('\'', "'\\''"));
                let line = template.replace("{model}", &model).replace("{port}", &port.to_string());
                let mut command = Command::new("sh");
                command.arg("-c").arg(ENGINE_WATCHDOG).env("TANDEMN_ENGINE", line);
                command.env("TANDEMN_PARENT", std::process::id().to_string());
                command
            }
            None => {
                let mut command = Command::new(&self.processes.exe);
                command.args(["mock-vllm", "--threads", "1", "--parent-pid"]).arg(std::process::id().to_string());
                command.arg("--served-model-name");
                command.arg(&spec.model).arg("--port").arg(port.to_string());
                command.arg("--boot-secs").arg(self.settings.spot_boot.as_secs_f64().to_string());
                command
            }
        }
    }

    /// Whether the random preemption strikes a replica in the `elapsed` since its last poll.
    fn preemption_due(&self, elapsed: Duration) -> bool {
        let rate = self.settings.preemptions_per_hour;
        rate > 0.0 && rand::random::<f64>() < 1.0 - (-rate * elapsed.as_secs_f64() / 3600.0).exp()
    }

    fn end(&self, replica: &str, started_ms: u64, ended_ms: u64) {
        self.polled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(replica);
        self.references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|id, _| id.as_str() != replica);
        self.processes.bill("spot", replica, started_ms, ended_ms);
    }
}

/// What a local replica's reference holds: its process and port.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct LocalReplica {
    pid: u32,
    /// Tells the process apart from a later one with the same pid.
    pid_started: Option<u64>,
    port: u16,
}

fn local_replica(replica: &ReplicaRef) -> Result<LocalReplica, ProviderError> {
    serde_json::from_value(replica.data.clone())
        .map_err(|e| ProviderError::Invalid(format!("{} has no local process recorded: {e}", replica.id)))
}

impl LocalSpot {
    /// Kills a replica's process group, as a cloud takes back a spot instance. Works from
    /// any process: the reference names the process and when it started.
    pub fn preempt(replica: &ReplicaRef) -> Result<(), ProviderError> {
        let local = local_replica(replica)?;
        if !crate::process::is_running(local.pid, local.pid_started) {
            return Err(ProviderError::NotFound(format!("{} (pid {}) is no longer running", replica.id, local.pid)));
        }
        let group = Pid::from_raw(i32::try_from(local.pid).unwrap_or(i32::MAX));
        killpg(group, Signal::SIGKILL).map_err(|e| ProviderError::transient(format!("cannot kill {}: {e}", replica.id)))
    }
}

#[async_trait]
impl SpotProvider for LocalSpot {
    async fn launch(&self, spec: &ReplicaSpec) -> Result<ReplicaRef, ProviderError> {
        let name = spec.id.as_str();
        if let Some(known) = self.references.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&spec.id) {
            return Ok(known.clone());
        }
        let port = free_port()?;
        // Billing starts as the process does.
        let launched_ms = now_ms();
        let pid = self.processes.spawn(name, self.command(spec, port))?;
        let local = LocalReplica { pid, pid_started: crate::process::start_ticks(pid), port };
        let data = serde_json::to_value(local).map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let reference = ReplicaRef { id: spec.id.clone(), launched_ms, data };
        self.references
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(spec.id.clone(), reference.clone());
        Ok(reference)
    }

    async fn status(&self, replica: &ReplicaRef) -> Result<ReplicaStatus, ProviderError> {
        if replica.data.is_null() {
            // Its launch never returned: no process was recorded, and any died with its parent.
            return Ok(ReplicaStatus::NotFound);
        }
        let local = local_replica(replica)?;
        let name = replica.id.as_str();
        if !self.processes.lock().contains_key(name) {
            // Another process's child (a tandemn that died): it stops with its parent.
            return Ok(if crate::process::is_running(local.pid, local.pid_started) {
                ReplicaStatus::Running { url: format!("http://127.0.0.1:{}", local.port), placement: None }
            } else {
                ReplicaStatus::NotFound
            });
        }
        let since = {
            let mut polled = self.polled.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let last = polled.insert(name.to_string(), Instant::now());
            last.map_or(Duration::ZERO, |t| t.elapsed())
        };
        match self.processes.exited(name) {
            None => {
                if self.preemption_due(since) {
                    self.processes.stop(name, Signal::SIGKILL).await;
                    let at_ms = now_ms();
                    self.end(name, replica.launched_ms, at_ms);
                    return Ok(ReplicaStatus::Preempted { at_ms });
                }
                Ok(ReplicaStatus::Running { url: format!("http://127.0.0.1:{}", local.port), placement: None })
            }
            Some(status) => {
                let at_ms = now_ms();
                self.end(name, replica.launched_ms, at_ms);
                // A kill from outside (`tandemn preempt`) is how a local preemption looks.
                if matches!(status.signal(), Some(9 | 15)) {
                    Ok(ReplicaStatus::Preempted { at_ms })
                } else {
                    Ok(ReplicaStatus::Failed { at_ms, reason: format!("the replica process exited ({status})") })
                }
            }
        }
    }

    async fn terminate(&self, replica: &ReplicaRef) -> Result<u64, ProviderError> {
        let name = replica.id.as_str();
        if self.processes.lock().contains_key(name) {
            self.processes.stop(name, Signal::SIGTERM).await;
            let at_ms = now_ms();
            self.end(name, replica.launched_ms, at_ms);
            return Ok(at_ms);
        }
        if replica.data.is_null() {
            return Ok(now_ms());
        }
        // Not ours (left by a tandemn that died) or already gone: gone is done.
        match Self::preempt(replica) {
            Ok(()) | Err(ProviderError::NotFound(_)) => Ok(now_ms()),
            Err(other) => Err(other),
        }
    }

    async fn list(&self, service: &str) -> Result<Vec<Listed>, ProviderError> {
        // Replicas die with the process that started them, so this process's are all there are.
        let references = self.references.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(references
            .values()
            .filter(|r| r.id.of_service(service))
            .map(|reference| Listed { id: reference.id.clone(), reference: reference.clone() })
            .collect())
    }
}

pub struct LocalServerless {
    settings: LocalSettings,
    processes: Processes,
    http: reqwest::Client,
    /// The endpoint's last billing answer (by URL): an endpoint that dies (or hangs)
    /// cannot give its final one, and its containers must still reach the record.
    last_billing: std::sync::Mutex<Option<(String, Vec<ContainerBill>)>>,
    /// The endpoint this process deployed, until it is destroyed.
    current: Mutex<Option<Endpoint>>,
}

const ENDPOINT: &str = "serverless";

impl LocalServerless {
    pub fn new(settings: LocalSettings, dir: &Path, exe: &Path) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        Ok(Self {
            settings,
            processes: Processes::new(dir, exe)?,
            http,
            last_billing: Mutex::default(),
            current: Mutex::default(),
        })
    }

    fn remember(&self, endpoint: &Endpoint, containers: &[ContainerBill]) {
        let mut last = self.last_billing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *last = Some((endpoint.url.clone(), containers.to_vec()));
    }

    fn remembered(&self, endpoint: &Endpoint) -> Vec<ContainerBill> {
        let last = self.last_billing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|(url, _)| *url == endpoint.url)
            .map(|(_, containers)| containers.clone())
            .unwrap_or_default()
    }

    async fn billing(&self, endpoint: &Endpoint) -> Result<EndpointStatus, ProviderError> {
        #[derive(serde::Deserialize)]
        struct Billing {
            running: u32,
            containers: Vec<ContainerBill>,
        }
        let transient = |e: reqwest::Error| ProviderError::transient(format!("{}/billing: {e}", endpoint.url));
        let billing: Billing = self
            .http
            .get(format!("{}/billing", endpoint.url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(transient)?
            .json()
            .await
            .map_err(transient)?;
        self.remember(endpoint, &billing.containers);
        Ok(EndpointStatus { running: billing.running, containers: billing.containers })
    }
}

#[async_trait]
impl ServerlessProvider for LocalServerless {
    async fn deploy(&self, spec: &ServerlessSpec) -> Result<Endpoint, ProviderError> {
        let port = free_port()?;
        let mut command = Command::new(&self.processes.exe);
        command.args(["mock-vllm", "--threads", "1", "--parent-pid"]).arg(std::process::id().to_string());
        command.arg("--served-model-name");
        command.arg(&spec.model).arg("--port").arg(port.to_string());
        command.arg("--serverless-containers-max").arg(spec.workers_max.to_string());
        command.arg("--serverless-concurrency").arg(spec.concurrency.to_string());
        command.arg("--cold-start-secs").arg(self.settings.cold_start.as_secs_f64().to_string());
        command.arg("--scaledown-window-secs").arg(spec.scaledown_window_secs.to_string());
        let pid = self.processes.spawn(ENDPOINT, command)?;
        let endpoint = Endpoint {
            id: format!("{}-serverless", spec.service),
            url: format!("http://127.0.0.1:{port}"),
            auth: BackendAuth::None,
            data: serde_json::json!({ "pid": pid, "pid_started": crate::process::start_ticks(pid) }),
        };
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(endpoint.clone());
        // Deployed means reachable: wait (bounded) for the endpoint to answer.
        for _ in 0..500 {
            if self.billing(&endpoint).await.is_ok() {
                return Ok(endpoint);
            }
            if self.processes.exited(ENDPOINT).is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.processes.stop(ENDPOINT, Signal::SIGKILL).await;
        Err(ProviderError::transient("the local serverless endpoint did not come up"))
    }

    async fn status(&self, endpoint: &Endpoint) -> Result<EndpointStatus, ProviderError> {
        if let Some(status) = self.processes.exited(ENDPOINT) {
            return Err(ProviderError::transient(format!("the endpoint process exited ({status})")));
        }
        self.billing(endpoint).await
    }

    async fn destroy(&self, endpoint: &Endpoint) -> Result<Vec<ContainerBill>, ProviderError> {
        // The last record: containers still running are billed up to now. An endpoint that
        // no longer answers (killed, hung) is billed as it last reported, its open
        // containers up to now, as a provider bills a crashed worker.
        let last = self.billing(endpoint).await;
        self.processes.stop(ENDPOINT, Signal::SIGTERM).await;
        let stopped = now_ms();
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        let mut containers = last.map_or_else(|_| self.remembered(endpoint), |s| s.containers);
        for c in &mut containers {
            let stopped_ms = *c.stopped_ms.get_or_insert(stopped);
            self.processes.bill("serverless", &c.id.to_string(), c.started_ms, stopped_ms);
        }
        Ok(containers)
    }

    async fn list(&self, service: &str) -> Result<Vec<Endpoint>, ProviderError> {
        // The endpoint dies with the process that started it: only this process's counts.
        let current = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(current.iter().filter(|e| e.id == format!("{service}-serverless")).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spot(dir: &Path, command: &str) -> LocalSpot {
        let settings = LocalSettings { command: Some(command.into()), ..LocalSettings::default() };
        LocalSpot::new(settings, dir, Path::new("/nonexistent/tandemn")).unwrap()
    }

    fn spec(replica: &str) -> ReplicaSpec {
        ReplicaSpec {
            service: "svc".into(),
            id: ReplicaId::parse(replica).unwrap(),
            model: "m".into(),
            gpu: "L4".into(),
            gpu_count: 1,
        }
    }

    async fn listening(url: &str) -> bool {
        let address = url.trim_start_matches("http://").to_string();
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(&address).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_replica_whose_launch_never_returned_is_not_found_and_terminates_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let provider = spot(dir.path(), "sleep 30 {port}");
        let unborn =
            ReplicaRef { id: ReplicaId::parse("svc-a-9").unwrap(), launched_ms: 1, data: serde_json::Value::Null };
        assert_eq!(provider.status(&unborn).await.unwrap(), ReplicaStatus::NotFound);
        assert!(provider.terminate(&unborn).await.is_ok());
    }

    #[tokio::test]
    async fn a_command_template_replica_runs_on_its_port_and_is_billed_until_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let provider = spot(dir.path(), "python3 -m http.server {port} --bind 127.0.0.1");
        let handle = provider.launch(&spec("svc-a-1")).await.unwrap();
        assert_eq!(provider.launch(&spec("svc-a-1")).await.unwrap(), handle, "the same id launches once");
        let ReplicaStatus::Running { url, .. } = provider.status(&handle).await.unwrap() else { panic!() };
        assert!(listening(&url).await, "the engine listens on the port it was given");
        assert_eq!(provider.list("svc").await.unwrap().len(), 1);
        let ended = provider.terminate(&handle).await.unwrap();
        assert!(ended >= handle.launched_ms);
        assert!(provider.list("svc").await.unwrap().is_empty());
        assert!(provider.terminate(&handle).await.is_ok(), "terminating twice is fine");
        let pid = local_replica(&handle).unwrap().pid;
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the whole group is gone");
        let record = std::fs::read_to_string(dir.path().join("billing.jsonl")).unwrap();
        let bill: serde_json::Value = serde_json::from_str(record.trim()).unwrap();
        assert_eq!((bill["id"].as_str(), bill["stopped_unix_ms"].as_u64()), (Some("svc-a-1"), Some(ended)));
    }

    #[tokio::test]
    async fn a_killed_replica_is_reported_preempted_and_a_crashed_one_failed() {
        let dir = tempfile::tempdir().unwrap();
        let provider = spot(dir.path(), "python3 -m http.server {port} --bind 127.0.0.1");
        let handle = provider.launch(&spec("svc-a-1")).await.unwrap();
        let ReplicaStatus::Running { url, .. } = provider.status(&handle).await.unwrap() else { panic!() };
        assert!(listening(&url).await);
        LocalSpot::preempt(&handle).unwrap();
        let mut status = ReplicaStatus::Pending;
        for _ in 0..500 {
            status = provider.status(&handle).await.unwrap();
            if !matches!(status, ReplicaStatus::Running { .. }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(status, ReplicaStatus::Preempted { .. }), "{status:?}");

        let crashing = spot(dir.path(), "sh -c 'exit 3' {port}");
        let handle = crashing.launch(&spec("svc-a-2")).await.unwrap();
        for _ in 0..500 {
            status = crashing.status(&handle).await.unwrap();
            if !matches!(status, ReplicaStatus::Running { .. }) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(&status, ReplicaStatus::Failed { reason, .. } if reason.contains("3")), "{status:?}");
    }

    #[tokio::test]
    async fn the_watchdog_stops_a_template_engine_when_tandemn_dies() {
        // A stand-in for tandemn: starts the watchdog, prints its pid and dies.
        let stand_in = "sh -c \"$WATCHDOG\" & echo $!; sleep 0.3";
        let began = Instant::now();
        // The engine (`sleep 30`) shares stdout, so this returns once it is gone too.
        let output = Command::new("sh")
            .arg("-c")
            .arg(format!("TANDEMN_PARENT=$$ exec sh -c '{}'", stand_in.replace('\'', "'\\''")))
            .env("WATCHDOG", ENGINE_WATCHDOG)
            .env("TANDEMN_ENGINE", "sleep 30")
            .output()
            .unwrap();
        assert!(began.elapsed() < Duration::from_secs(10), "the engine outlived its tandemn");
        let watchdog: u32 = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap();
        let mut running = true;
        for _ in 0..500 {
            running = crate::process::start_ticks(watchdog).is_some();
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!running, "the watchdog stopped its engine and exited with its parent");
    }
}
