//! The fake server's tables: requests (id, status, result) and clusters (every
//! instance ever made, with its engine process), behind one lock that is never held
//! across an await. The only place that starts and kills engine processes.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use super::task::{Placement, TaskSpec};
use super::{ApiError, ClusterRecord, FakeConfig, FakeError, InstanceStatus, base64};

/// base64 of a pickled `None`: what the real server sends for a handle it has not got.
pub const PICKLED_NONE: &str = "gAROLg==";
/// The one user of the fake server.
pub const USER_HASH: &str = "5ca1ab1e";
pub const USER_NAME: &str = "tandemn";
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

/// What `/status` reports for a cluster until the next refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Init,
    Up,
    Stopped,
}

impl Shown {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Up => "UP",
            Self::Stopped => "STOPPED",
        }
    }
}

/// `/status` refresh modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    None,
    Auto,
    Force,
}

#[derive(Debug)]
struct Engine {
    pid: u32,
    port: Option<u16>,
    running: bool,
}

/// One instance of the fake cloud under a cluster name.
#[derive(Debug)]
pub struct Cluster {
    pub name: String,
    pub name_on_cloud: String,
    pub hash: String,
    pub launches: u32,
    pub listed: bool,
    pub shown: Shown,
    pub ever_up: bool,
    pub instance: InstanceStatus,
    pub task: TaskSpec,
    pub placement: Placement,
    model: String,
    engine: Option<Engine>,
    /// The launch request that provisions it, while one does.
    provisioner: Option<String>,
    /// Why provisioning ended without the cluster coming up.
    failure: Option<ApiError>,
    pub launched_at_ms: u64,
    pub status_updated_at: u64,
    pub stopped_at_ms: Option<u64>,
    pub terminated_at_ms: Option<u64>,
    pub last_event: &'static str,
}

impl Cluster {
    /// The engine's loopback port, while it serves.
    pub fn engine_port(&self) -> Option<u16> {
        self.engine.as_ref().filter(|e| e.running).and_then(|e| e.port)
    }

    fn engine_running(&self) -> bool {
        self.engine.as_ref().is_some_and(|e| e.running)
    }

    pub fn handle(&self) -> String {
        let handle = json!({
            "cluster_name": self.name,
            "cluster_name_on_cloud": self.name_on_cloud,
            "head_ip": "127.0.0.1",
            "launched_nodes": 1,
            "launched_resources": resources_str(self, false),
        });
        base64(handle.to_string().as_bytes())
    }

    fn set_shown(&mut self, shown: Shown, event: &'static str) {
        self.shown = shown;
        self.status_updated_at = now_ms() / 1000;
        self.last_event = event;
    }

    /// What a refreshing `/status` learns from the cloud.
    fn refresh(&mut self) {
        match self.instance {
            InstanceStatus::Terminated => self.listed = false,
            InstanceStatus::Stopped if self.shown != Shown::Stopped => {
                self.set_shown(Shown::Stopped, "All nodes stopped, cleaning up the cluster.");
            }
            _ => {}
        }
    }

    fn record(&self, now: u64) -> ClusterRecord {
        let end = [self.stopped_at_ms, self.terminated_at_ms].into_iter().flatten().min().unwrap_or(now);
        let instance = &self.placement.instance;
        ClusterRecord {
            name: self.name.clone(),
            cluster_name_on_cloud: self.name_on_cloud.clone(),
            launches: self.launches,
            status: self.instance,
            listed: self.listed,
            pid: self.engine.as_ref().map(|e| e.pid),
            port: self.engine.as_ref().and_then(|e| e.port),
            launched_at_ms: self.launched_at_ms,
            stopped_at_ms: self.stopped_at_ms,
            terminated_at_ms: self.terminated_at_ms,
            billed_ms: end.saturating_sub(self.launched_at_ms),
            instance_type: instance.instance_type.to_string(),
            region: self.placement.region.clone(),
            zone: self.placement.zone.clone(),
            spot: self.placement.spot,
            accelerators: format!("{}:{}", instance.gpu, instance.gpus),
        }
    }

    /// Where a launch that waits on this cluster stands: `Some` once it is decided.
    fn launch_outcome(&self) -> Option<Result<(), ApiError>> {
        match self.instance {
            InstanceStatus::Up => Some(Ok(())),
            InstanceStatus::Init if self.listed => None,
            InstanceStatus::Init | InstanceStatus::Terminated => Some(Err(self.failure.clone().unwrap_or_else(|| {
                ApiError::new(
                    "ClusterDoesNotExist",
                    format!("Cluster '{}' was torn down or preempted while it was being launched.", self.name),
                )
            }))),
            InstanceStatus::Stopped => Some(Err(ApiError::new(
                "ClusterNotUpError",
                format!("Cluster '{}' was stopped while it was being launched.", self.name),
            ))),
        }
    }
}

/// `1x[spot](gpus=L4:1, g6.xlarge, cpus=4, mem=16, disk=256)`, as `sky status` prints it.
pub fn resources_str(cluster: &Cluster, full: bool) -> String {
    let placement = &cluster.placement;
    let instance = &placement.instance;
    let spot = if placement.spot { "[spot]" } else { "" };
    let disk = cluster.task.resources.disk_size.as_deref().unwrap_or("256");
    let mut fields = format!(
        "gpus={}:{}, {}, cpus={}, mem={}, disk={disk}",
        instance.gpu, instance.gpus, instance.instance_type, instance.vcpus, instance.memory_gb
    );
    if full && !cluster.task.resources.ports.is_empty() {
        let ports: Vec<String> = cluster
            .task
            .resources
            .ports
            .iter()
            .map(|(low, high)| if low == high { format!("'{low}'") } else { format!("'{low}-{high}'") })
            .collect();
        fields.push_str(&format!(", ports=[{}]", ports.join(", ")));
    }
    format!("1x{spot}({fields})")
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    clusters: Vec<Cluster>,
    /// Launches still to fail, and how.
    failures: Option<(u32, ApiError)>,
    hang: Duration,
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

/// Kills the cluster's engine and moves its instance to `to` (stopped or terminated).
fn terminate(cluster: &mut Cluster, to: InstanceStatus) {
    if let Some(engine) = cluster.engine.as_ref().filter(|e| e.running) {
        kill_group(engine.pid);
    }
    let now = now_ms();
    match to {
        InstanceStatus::Stopped => cluster.stopped_at_ms = Some(now),
        _ => {
            cluster.terminated_at_ms.get_or_insert(now);
        }
    }
    cluster.instance = to;
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH: the group is gone already, which is what was wanted.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Starts the engine in its own process group with only the task's environment.
fn spawn_engine(config: &FakeConfig, cluster: &Cluster, log: &PathBuf) -> std::io::Result<Child> {
    let file = OpenOptions::new().create(true).append(true).open(log)?;
    let stderr = File::try_clone(&file)?;
    let mut command = Command::new(&config.engine[0]);
    command
        .args(&config.engine[1..])
        .args(["--host", "127.0.0.1", "--port", "0", "--served-model-name", &cluster.model])
        .args(["--boot-secs", &config.engine_boot.as_secs_f64().to_string()])
        .args(["--parent-pid", &std::process::id().to_string()]);
    if let Some(max_model_len) = cluster.task.max_model_len() {
        command.args(["--max-model-len", &max_model_len]);
    }
    command.env_clear().envs(cluster.task.env.iter().map(|(k, v)| (k, v)));
    if let Some(key) = cluster.task.api_key() {
        command.env("VLLM_API_KEY", key);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
}

/// The port in mock-vllm's `mock-vllm serving <model> on http://127.0.0.1:PORT`.
fn served_port(line: &str) -> Option<u16> {
    let url = line.strip_prefix("mock-vllm serving ")?.rsplit_once(" on http://")?.1;
    url.rsplit_once(':')?.1.trim().parse().ok()
}

/// `[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`, the real server's cluster name rule.
fn check_cluster_name(name: &str) -> Result<(), ApiError> {
    let bytes = name.as_bytes();
    let valid = bytes.first().is_some_and(u8::is_ascii_alphabetic)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        return Ok(());
    }
    Err(ApiError::new(
        "InvalidClusterNameError",
        format!(
            "Cluster name {name:?} is invalid; ensure it is fully matched by regex (e.g., only contains letters, \
             numbers and dash): \u{1b}[1m[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?\u{1b}[0m"
        ),
    ))
}

/// One `/status` entry with the real `StatusResponse` field names (None fields left
/// out, as the real encoder does).
fn status_record(cluster: &Cluster, include_handle: bool) -> Value {
    let instance = &cluster.placement.instance;
    let resources = &cluster.task.resources;
    json!({
        "name": cluster.name,
        "launched_at": cluster.launched_at_ms / 1000,
        "handle": if include_handle { cluster.handle() } else { PICKLED_NONE.to_string() },
        "last_use": format!("sky launch -c {}", cluster.name),
        "status": cluster.shown.as_str(),
        "autostop": resources.autostop_minutes,
        "to_down": resources.autostop_down,
        "metadata": {},
        "cluster_hash": cluster.hash,
        "storage_mounts_metadata": PICKLED_NONE,
        "cluster_ever_up": cluster.ever_up,
        "status_updated_at": cluster.status_updated_at,
        "user_hash": USER_HASH,
        "user_name": USER_NAME,
        "workspace": "default",
        "last_creation_command": format!("sky launch -c {}", cluster.name),
        "is_managed": false,
        "last_event": cluster.last_event,
        "resources_str": resources_str(cluster, false),
        "resources_str_full": resources_str(cluster, true),
        "nodes": 1,
        "cloud": "AWS",
        "region": cluster.placement.region,
        "cpus": instance.vcpus.to_string(),
        "memory": instance.memory_gb.to_string(),
        "accelerators": format!("{{'{}': {}}}", instance.gpu, instance.gpus),
        "cluster_name_on_cloud": cluster.name_on_cloud,
    })
}

/// A random UUID (version 4), as the real server makes for each request.
fn request_id() -> String {
    let bits: u128 = rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_follow_the_real_rule() {
        for good in ["a", "tandemn-r1", "Svc_1.a-2", "x9"] {
            assert!(check_cluster_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1abc", "Tandemn_R1!", "ends-", "-x", "a b", "ünï"] {
            assert_eq!(check_cluster_name(bad).unwrap_err().kind, "InvalidClusterNameError", "{bad}");
        }
    }

    #[test]
    fn the_engine_address_is_read_from_mock_vllms_first_line() {
        assert_eq!(served_port("mock-vllm serving org/m on http://127.0.0.1:40123"), Some(40123));
        assert_eq!(served_port("mock-vllm serving a on b on http://127.0.0.1:7"), Some(7));
        assert_eq!(served_port("something else"), None);
    }

    #[test]
    fn request_ids_are_version_4_uuids() {
        let id = request_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12], "{id}");
        assert!(parts[2].starts_with('4') && matches!(&parts[3][..1], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(request_id(), id);
    }
}
