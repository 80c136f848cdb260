//! One instance of the fake cloud: what `/status` shows of it, what it bills, and its
//! engine process, which is started in its own process group and killed with the
//! group. `state` decides when; this module only does it.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use super::task::{Placement, TaskSpec};
use super::{ApiError, ClusterRecord, FakeConfig, InstanceStatus, PICKLED_NONE, USER_HASH, USER_NAME, base64, now_ms};

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

#[derive(Debug)]
/// A cluster's engine process (its process group has the same id).
pub struct Engine {
    pub pid: u32,
    pub port: Option<u16>,
    pub running: bool,
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
    pub model: String,
    pub engine: Option<Engine>,
    /// The launch request that provisions it, while one does.
    pub provisioner: Option<String>,
    /// Why provisioning ended without the cluster coming up.
    pub failure: Option<ApiError>,
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

    pub fn engine_running(&self) -> bool {
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

    pub fn set_shown(&mut self, shown: Shown, event: &'static str) {
        self.shown = shown;
        self.status_updated_at = now_ms() / 1000;
        self.last_event = event;
    }

    /// What a refreshing `/status` learns from the cloud.
    pub fn refresh(&mut self) {
        match self.instance {
            InstanceStatus::Terminated => self.listed = false,
            InstanceStatus::Stopped if self.shown != Shown::Stopped => {
                self.set_shown(Shown::Stopped, "All nodes stopped, cleaning up the cluster.");
            }
            _ => {}
        }
    }

    pub fn record(&self, now: u64) -> ClusterRecord {
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
    pub fn launch_outcome(&self) -> Option<Result<(), ApiError>> {
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

/// Kills the cluster's engine and moves its instance to `to` (stopped or terminated).
pub fn terminate(cluster: &mut Cluster, to: InstanceStatus) {
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

pub fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH: the group is gone already, which is what was wanted.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Starts the engine in its own process group with only the task's environment.
pub fn spawn_engine(config: &FakeConfig, cluster: &Cluster, log: &Path) -> std::io::Result<Child> {
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
    // Nothing of this process's environment leaks to the "VM" but PATH, to find programs.
    command.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(cluster.task.env.iter().map(|(k, v)| (k, v)));
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
pub fn served_port(line: &str) -> Option<u16> {
    let url = line.strip_prefix("mock-vllm serving ")?.rsplit_once(" on http://")?.1;
    url.rsplit_once(':')?.1.trim().parse().ok()
}

/// `[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?`, the real server's cluster name rule.
pub fn check_cluster_name(name: &str) -> Result<(), ApiError> {
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
pub fn status_record(cluster: &Cluster, include_handle: bool) -> Value {
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
}
