//! The fake server's tables: requests (id, status, result) and clusters (every
//! instance ever made), behind one lock that is never held across an await, and the
//! decisions of each route: reuse or provision, refresh, tear down. Engines are
//! started and killed only from here (through `cluster`).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Child;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::cluster::{
    Cluster, Engine, Shown, check_cluster_name, kill_group, served_port, spawn_engine, status_record, terminate,
};
use super::task::{Placement, TaskSpec};
use super::{ApiError, ClusterRecord, FakeConfig, FakeError, InstanceStatus, PICKLED_NONE, now_ms, now_secs};

/// How long an engine may take to print its address before the launch fails.
const ENGINE_START_LIMIT: Duration = Duration::from_secs(60);
/// How long `/down` and the reclaim controls wait for a killed engine to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
        }
    }

    fn finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// One API request, as `/api/get` and `/api/status` show it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    /// `sky.launch`, `sky.status`, …
    pub name: &'static str,
    /// The body with the task YAML and env fields left out (they may hold secrets).
    pub body: Value,
    pub cluster_name: Option<String>,
    pub status: RequestStatus,
    pub created_at: f64,
    pub finished_at: Option<f64>,
    pub outcome: Option<Result<Value, ApiError>>,
    abort: Option<AbortHandle>,
}

/// `/status` refresh modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    None,
    Auto,
    Force,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    clusters: Vec<Cluster>,
    /// Launches still to fail, and how.
    failures: Option<(u32, ApiError)>,
    hang: Duration,
    /// Launches wait for a worker before they make their cluster (the real server runs
    /// launches on a few long-request workers; the others queue, with no cluster yet).
    queue_launches: bool,
    shut_down: bool,
}

impl State {
    /// The request with this id, else the first one the id is a prefix of.
    fn request(&self, id: &str) -> Option<&Request> {
        if id.is_empty() {
            return None;
        }
        self.requests.iter().find(|r| r.id == id).or_else(|| self.requests.iter().find(|r| r.id.starts_with(id)))
    }

    fn request_mut(&mut self, id: &str) -> Option<&mut Request> {
        self.requests.iter_mut().find(|r| r.id == id)
    }

    fn listed(&self, name: &str) -> Option<usize> {
        self.clusters.iter().rposition(|c| c.listed && c.name == name)
    }

    fn request_active(&self, id: Option<&str>) -> bool {
        id.and_then(|id| self.request(id)).is_some_and(|r| !r.status.finished())
    }
}

/// What a launch has to do once admitted.
enum Admitted {
    /// The cluster is up already: the job runs on it.
    Reused,
    /// This launch provisions the cluster.
    Provision,
    /// Another launch is provisioning it: wait for that.
    Wait,
}

pub struct Shared {
    pub config: FakeConfig,
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    pub fn new(config: FakeConfig) -> Self {
        Self { config, state: Mutex::new(State::default()), changed: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the state and wakes everyone waiting on it.
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let result = change(&mut self.lock());
        self.changed.notify_waiters();
        result
    }

    /// Waits until `check` returns `Some`, re-checking after every change.
    async fn wait_for<T>(&self, mut check: impl FnMut(&State) -> Option<T>) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = check(&self.lock()) {
                return value;
            }
            notified.await;
        }
    }

    // ---- requests ----

    /// Records a request and runs `work` on its own task; returns the new id at once.
    pub fn submit<W, F>(self: &Arc<Self>, name: &'static str, body: &Value, cluster: Option<String>, work: W) -> String
    where
        W: FnOnce(String) -> F,
        F: Future<Output = Result<Value, ApiError>> + Send + 'static,
    {
        let id = request_id();
        let mut shown_body = body.clone();
        if let Some(fields) = shown_body.as_object_mut() {
            for secret_bearing in ["task", "dag", "env_vars", "override_skypilot_config"] {
                fields.remove(secret_bearing);
            }
        }
        self.update(|state| {
            state.requests.push(Request {
                id: id.clone(),
                name,
                body: shown_body,
                cluster_name: cluster,
                status: RequestStatus::Pending,
                created_at: now_secs(),
                finished_at: None,
                outcome: None,
                abort: None,
            });
        });
        let work = work(id.clone());
        let shared = self.clone();
        let task_id = id.clone();
        let task = tokio::spawn(async move {
            shared.update(|state| {
                if let Some(request) = state.request_mut(&task_id) {
                    request.status = RequestStatus::Running;
                }
            });
            let outcome = work.await;
            shared.finish(&task_id, outcome);
        });
        self.update(|state| {
            if let Some(request) = state.request_mut(&id) {
                request.abort = Some(task.abort_handle());
            }
        });
        id
    }

    fn finish(&self, id: &str, outcome: Result<Value, ApiError>) {
        self.update(|state| {
            if let Some(request) = state.request_mut(id).filter(|r| !r.status.finished()) {
                request.status = if outcome.is_ok() { RequestStatus::Succeeded } else { RequestStatus::Failed };
                request.finished_at = Some(now_secs());
                request.outcome = Some(outcome);
            }
        });
    }

    /// Blocks until the request is finished (after the injected hang, if any).
    pub async fn finished_request(&self, id: &str) -> Option<Request> {
        let hang = self.lock().hang;
        tokio::time::sleep(hang).await;
        self.wait_for(|state| match state.request(id) {
            None => Some(None),
            Some(request) if request.status.finished() => Some(Some(request.clone())),
            Some(_) => None,
        })
        .await
    }

    /// Cancels the given unfinished requests (all of them for `None`); returns their ids.
    pub fn cancel(&self, ids: Option<&[String]>) -> Vec<String> {
        self.update(|state| {
            let wanted: Option<Vec<String>> =
                ids.map(|ids| ids.iter().filter_map(|id| state.request(id).map(|r| r.id.clone())).collect());
            let mut cancelled = Vec::new();
            for request in &mut state.requests {
                let chosen = wanted.as_ref().is_none_or(|w| w.contains(&request.id));
                if chosen && !request.status.finished() && request.name != "sky.api_cancel" {
                    if let Some(abort) = &request.abort {
                        abort.abort();
                    }
                    request.status = RequestStatus::Cancelled;
                    request.finished_at = Some(now_secs());
                    cancelled.push(request.id.clone());
                }
            }
            cancelled
        })
    }

    pub fn requests(&self, ids: Option<&[String]>, all_status: bool) -> Vec<Request> {
        let state = self.lock();
        match ids {
            Some(ids) => ids.iter().filter_map(|id| state.request(id).cloned()).collect(),
            None => state.requests.iter().filter(|r| all_status || !r.status.finished()).cloned().collect(),
        }
    }

    // ---- clusters ----

    /// `/launch`: validates, then reuses, waits for or provisions the named cluster.
    pub async fn launch(
        self: Arc<Self>,
        request_id: String,
        cluster_name: String,
        yaml: String,
        dryrun: bool,
    ) -> Result<Value, ApiError> {
        check_cluster_name(&cluster_name)?;
        let task = TaskSpec::from_yaml(&yaml)?;
        let placement = task.resources.place()?;
        let model = task.model().ok_or_else(|| {
            ApiError::new(
                "NotSupportedError",
                "the fake SkyPilot runs only `vllm serve <model>` tasks: `run` has no `vllm serve` and envs no MODEL"
                    .to_string(),
            )
        })?;
        if dryrun {
            return Ok(json!({"job_id": null, "handle": PICKLED_NONE}));
        }
        self.wait_for(|state| (!state.queue_launches).then_some(())).await;
        let (index, admitted, job_id) =
            self.update(|state| admit(state, &request_id, &cluster_name, task, placement, model))?;
        if let Admitted::Provision = admitted {
            tokio::time::sleep(self.config.provision_delay).await;
            self.start_engine(index)?;
        }
        if !matches!(admitted, Admitted::Reused) {
            let decided = self.wait_for(|state| state.clusters[index].launch_outcome());
            let limit = self.config.provision_delay + ENGINE_START_LIMIT;
            tokio::time::timeout(limit, decided).await.map_err(|_| {
                ApiError::new(
                    "RuntimeError",
                    format!(
                        "the engine of cluster '{cluster_name}' printed no address within {} s; see {}",
                        ENGINE_START_LIMIT.as_secs(),
                        self.log_path(&self.lock().clusters[index].name_on_cloud).display()
                    ),
                )
            })??;
        }
        let handle = self.lock().clusters[index].handle();
        Ok(json!({"job_id": job_id, "handle": handle}))
    }

    fn log_path(&self, name_on_cloud: &str) -> PathBuf {
        self.config.log_dir.join(format!("{name_on_cloud}.log"))
    }

    /// Starts the engine of a cluster still provisioning (unless one runs already).
    fn start_engine(self: &Arc<Self>, index: usize) -> Result<(), ApiError> {
        let child = self.update(|state| {
            if state.shut_down {
                return Err(ApiError::new("RuntimeError", "the fake SkyPilot is shutting down".to_string()));
            }
            let cluster = &mut state.clusters[index];
            if !cluster.listed || cluster.instance != InstanceStatus::Init || cluster.engine.is_some() {
                return Ok(None);
            }
            let log = self.log_path(&cluster.name_on_cloud);
            match spawn_engine(&self.config, cluster, &log) {
                Ok(child) => {
                    let pid = child.id().unwrap_or_default();
                    cluster.engine = Some(Engine { pid, port: None, running: true });
                    cluster.last_event = "Cluster provisioned; starting the SkyPilot runtime and the task.";
                    Ok(Some((child, log)))
                }
                Err(error) => {
                    let failure = ApiError::new(
                        "RuntimeError",
                        format!("cannot start the engine {:?}: {error}", self.config.engine),
                    );
                    cluster.failure = Some(failure.clone());
                    cluster.listed = false;
                    cluster.instance = InstanceStatus::Terminated;
                    cluster.terminated_at_ms = Some(now_ms());
                    Err(failure)
                }
            }
        })?;
        if let Some((child, log)) = child {
            tokio::spawn(self.clone().watch_engine(index, child, log));
        }
        Ok(())
    }

    /// Follows one engine: its address line brings the cluster `UP`, the rest of its
    /// output goes to the log, and its exit is recorded (and reaped).
    async fn watch_engine(self: Arc<Self>, index: usize, mut child: Child, log: PathBuf) {
        if let Some(stdout) = child.stdout.take() {
            let mut lines = BufReader::new(stdout).lines();
            let mut file = tokio::fs::OpenOptions::new().append(true).open(&log).await.ok();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(port) = served_port(&line) {
                    self.engine_listening(index, port);
                }
                if let Some(file) = &mut file {
                    let _ = file.write_all(format!("{line}\n").as_bytes()).await;
                }
            }
        }
        let status = child.wait().await;
        self.update(|state| {
            let cluster = &mut state.clusters[index];
            if let Some(engine) = &mut cluster.engine {
                engine.running = false;
            }
            if cluster.instance == InstanceStatus::Init && cluster.listed {
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                cluster.failure = Some(ApiError::new(
                    "RuntimeError",
                    format!(
                        "the engine of cluster '{}' exited ({status}) before it served; see {}",
                        cluster.name,
                        log.display()
                    ),
                ));
                cluster.listed = false;
                cluster.instance = InstanceStatus::Terminated;
                cluster.terminated_at_ms = Some(now_ms());
            }
        });
    }

    fn engine_listening(&self, index: usize, port: u16) {
        self.update(|state| {
            let cluster = &mut state.clusters[index];
            if let Some(engine) = &mut cluster.engine {
                engine.port = Some(port);
            }
            if cluster.instance == InstanceStatus::Init && cluster.listed {
                cluster.instance = InstanceStatus::Up;
                cluster.ever_up = true;
                cluster.provisioner = None;
                cluster.set_shown(Shown::Up, "All nodes up; SkyPilot runtime healthy.");
            }
        });
    }

    /// `/status`: the listed clusters (all, or those named), refreshed as asked.
    pub fn status(&self, names: Option<&[String]>, refresh: Refresh, include_handle: bool) -> Vec<Value> {
        self.update(|state| {
            let wanted = |c: &Cluster| c.listed && names.is_none_or(|n| n.contains(&c.name));
            for cluster in state.clusters.iter_mut().filter(|c| wanted(c)) {
                let refreshes = match refresh {
                    Refresh::None => false,
                    // As the real AUTO: only spot and autostop clusters are checked with the cloud.
                    Refresh::Auto => cluster.placement.spot || cluster.task.resources.autostop_minutes >= 0,
                    Refresh::Force => true,
                };
                if refreshes {
                    cluster.refresh();
                }
            }
            state.clusters.iter().filter(|c| wanted(c)).map(|c| status_record(c, include_handle)).collect()
        })
    }

    /// `/endpoints`: `{"<port>": "127.0.0.1:<engine port>"}` of an `UP` cluster.
    pub fn endpoints(&self, name: &str, port: Option<u16>) -> Result<Value, ApiError> {
        self.update(|state| {
            let not_up = |message: String| ApiError::new("ClusterNotUpError", message);
            let index = state.listed(name).ok_or_else(|| not_up(format!("Cluster '{name}' not found.")))?;
            let cluster = &mut state.clusters[index];
            cluster.refresh();
            if !cluster.listed {
                return Err(not_up(format!(
                    "Cluster \u{1b}[1m'{name}'\u{1b}[0m not found on the cloud provider. It was likely either \
                     preempted, autodowned, or manually terminated in console."
                )));
            }
            if cluster.shown != Shown::Up {
                return Err(not_up(format!(
                    "Cluster \u{1b}[1m'{name}'\u{1b}[0m is not up (status: {}).",
                    cluster.shown.as_str()
                )));
            }
            let engine_port = cluster.engine_port().ok_or_else(|| {
                not_up(format!("Cluster '{name}' is UP but its SkyPilot runtime is unhealthy: the task exited."))
            })?;
            let Some(&(exposed, _)) = cluster.task.resources.ports.first() else {
                return Ok(json!({}));
            };
            match port {
                Some(port) if !cluster.task.resources.exposes(port) => Err(ApiError::new(
                    "ValueError",
                    format!("Port {port} is not exposed on cluster '{name}'. Exposed ports: {exposed}."),
                )),
                Some(port) if port != exposed => Err(ApiError::new(
                    "NotSupportedError",
                    format!("the fake SkyPilot maps only the engine's port {exposed} of cluster '{name}', not {port}"),
                )),
                _ => Ok(json!({exposed.to_string(): format!("127.0.0.1:{engine_port}")})),
            }
        })
    }

    /// `/down`: kills the engine, removes the cluster, waits until the process is gone.
    pub async fn down(&self, name: &str) -> Result<Value, ApiError> {
        let index = self.update(|state| {
            let index = state
                .listed(name)
                .ok_or_else(|| ApiError::new("ClusterDoesNotExist", format!("Cluster '{name}' does not exist.")))?;
            let cluster = &mut state.clusters[index];
            cluster.listed = false;
            terminate(cluster, InstanceStatus::Terminated);
            Ok(index)
        })?;
        self.engine_gone(index).await;
        Ok(Value::Null)
    }

    /// The `/fake/preempt` and `/fake/stop` controls.
    pub async fn reclaim(&self, name: &str, to: InstanceStatus) -> Result<ClusterRecord, FakeError> {
        let index = self.update(|state| {
            let index = state.listed(name).ok_or_else(|| FakeError::NoSuchCluster(name.to_string()))?;
            let cluster = &mut state.clusters[index];
            if !matches!(cluster.instance, InstanceStatus::Init | InstanceStatus::Up) {
                return Err(FakeError::NotRunning { cluster: name.to_string(), status: cluster.instance });
            }
            if cluster.instance == InstanceStatus::Init {
                // What the waiting launch reports, as a real launch does when its spot VM goes away.
                cluster.failure = Some(ApiError::new(
                    "ResourcesUnavailableError",
                    format!("Failed to provision cluster '{name}': its instance was reclaimed while it was launching."),
                ));
            }
            terminate(cluster, to);
            Ok(index)
        })?;
        self.engine_gone(index).await;
        Ok(self.lock().clusters[index].record(now_ms()))
    }

    async fn engine_gone(&self, index: usize) {
        let gone = self.wait_for(|state| (!state.clusters[index].engine_running()).then_some(()));
        let _ = tokio::time::timeout(KILL_WAIT, gone).await;
    }

    /// Waits (at most `limit`) until no engine runs.
    pub async fn engines_gone(&self, limit: Duration) {
        let gone = self.wait_for(|state| (!state.clusters.iter().any(Cluster::engine_running)).then_some(()));
        let _ = tokio::time::timeout(limit, gone).await;
    }

    pub fn records(&self) -> Vec<ClusterRecord> {
        let now = now_ms();
        self.lock().clusters.iter().map(|c| c.record(now)).collect()
    }

    pub fn fail_launches(&self, count: u32, error: ApiError) {
        self.update(|state| state.failures = (count > 0).then_some((count, error)));
    }

    pub fn hang(&self, extra: Duration) {
        self.update(|state| state.hang = extra);
    }

    pub fn queue_launches(&self, queued: bool) {
        self.update(|state| state.queue_launches = queued);
    }

    /// Refuses new engines, kills every running one and cancels the running requests.
    pub fn shut_down(&self) {
        self.update(|state| {
            state.shut_down = true;
            for cluster in &state.clusters {
                if let Some(engine) = cluster.engine.as_ref().filter(|e| e.running) {
                    kill_group(engine.pid);
                }
            }
            for request in &state.requests {
                if let Some(abort) = &request.abort {
                    abort.abort();
                }
            }
        });
    }
}

/// Decides what a (non-dry-run) launch does, under the lock.
fn admit(
    state: &mut State,
    request_id: &str,
    name: &str,
    task: TaskSpec,
    placement: Placement,
    model: String,
) -> Result<(usize, Admitted, u32), ApiError> {
    if let Some((count, error)) = &mut state.failures {
        let error = error.clone();
        *count -= 1;
        if *count == 0 {
            state.failures = None;
        }
        return Err(error);
    }
    // A launch first refreshes the cluster: a preempted one is gone, and a new one is made.
    if let Some(index) = state.listed(name) {
        state.clusters[index].refresh();
    }
    let Some(index) = state.listed(name) else {
        let now = now_ms();
        let suffix = &request_id[..4];
        state.clusters.push(Cluster {
            name: name.to_string(),
            name_on_cloud: format!("{name}-{suffix}"),
            hash: request_id.replace('-', "")[..16].to_string(),
            launches: 1,
            listed: true,
            shown: Shown::Init,
            ever_up: false,
            instance: InstanceStatus::Init,
            task,
            placement,
            model,
            engine: None,
            provisioner: Some(request_id.to_string()),
            failure: None,
            launched_at_ms: now,
            status_updated_at: now / 1000,
            stopped_at_ms: None,
            terminated_at_ms: None,
            last_event: "Launching the cluster.",
        });
        return Ok((state.clusters.len() - 1, Admitted::Provision, 1));
    };
    let provisioning = state.request_active(state.clusters[index].provisioner.as_deref());
    let cluster = &mut state.clusters[index];
    if cluster.instance == InstanceStatus::Stopped {
        return Err(ApiError::new(
            "NotSupportedError",
            format!("the fake SkyPilot cannot restart the stopped cluster '{name}'; tear it down with /down"),
        ));
    }
    cluster.launches += 1;
    let admitted = match cluster.instance {
        InstanceStatus::Init if cluster.engine.is_none() && !provisioning => {
            // The launch that was provisioning it was cancelled: this one takes over.
            cluster.provisioner = Some(request_id.to_string());
            Admitted::Provision
        }
        InstanceStatus::Init => Admitted::Wait,
        // Terminated clusters are no longer listed after the refresh above.
        InstanceStatus::Up | InstanceStatus::Stopped | InstanceStatus::Terminated => Admitted::Reused,
    };
    Ok((index, admitted, cluster.launches))
}

/// A random UUID (version 4), as the real server makes for each request.
fn request_id() -> String {
    let bits: u128 = rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = request_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(parts[2].starts_with('4') && matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(request_id(), id);
    }
}
