//! The SkyPilot spot provider: each replica is one SkyPilot cluster on AWS spot, named
//! by its [`ReplicaId`], running one vLLM server, driven through a SkyPilot API server's
//! REST routes ([`client::SkyClient`]).
//!
//! - `launch` only schedules `/launch` and keeps the request id in the reference, so a
//!   launch that takes ten minutes never holds the caller; a later `status` reads the
//!   cluster from `/status` (an `UP` one with refresh `AUTO`, which asks AWS about spot
//!   clusters) and the request's state from `/api/status`.
//! - Preemption: SkyPilot has no `PREEMPTED` cluster status. A terminated spot cluster
//!   vanishes from `/status` after a refresh, and a stopped one turns `STOPPED`.
//! - The address comes only from `/endpoints` (host:port, no scheme): `/status` has no IP.
//!
//! It decides nothing about replicas (how many, when to replace): that is the
//! reconciler's. Only `aws` is accepted, since the catalog prices only AWS spot.

pub mod client;
pub mod task;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tandemn_config::api::Secret;

use crate::local::now_ms;
use crate::provider::{
    Listed, Placement, ProviderError, ReplicaId, ReplicaRef, ReplicaSpec, ReplicaStatus, SpotProvider,
};
use client::{ClusterRecord, ClusterStatus, Refresh, RequestId, RequestInfo, RequestState, SkyClient};
use task::TaskSpec;

/// How long a teardown may take before `terminate` gives up for this attempt (the
/// reconciler retries it): an AWS spot teardown takes one to three minutes.
pub const DOWN_DEADLINE: Duration = Duration::from_secs(600);
/// The clouds this provider launches on.
pub const SUPPORTED_CLOUDS: [&str; 1] = ["aws"];

/// What every replica of a deployment is launched with.
#[derive(Debug, Clone)]
pub struct SkyPilotSettings {
    /// SkyPilot's cloud name; only `aws`.
    pub cloud: String,
    pub region: Option<String>,
    /// The catalog's GPU name (`L4`, `A100_80GB`).
    pub gpu: String,
    pub gpu_count: u32,
    pub model: String,
    pub tp_size: u32,
    pub max_model_len: u32,
    pub engine_port: u16,
    pub disk_size_gb: u32,
    /// A Docker image with vLLM; without one, setup installs [`task::VLLM_VERSION`].
    pub image: Option<String>,
    /// Required by every replica's vLLM; only the router holds it.
    pub replica_key: Secret,
}

/// The SkyPilot spot provider.
#[derive(Debug, Clone)]
pub struct SkyPilotSpot {
    client: SkyClient,
    settings: SkyPilotSettings,
    /// Launch requests seen to succeed: not asked about again.
    launched: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<RequestId>>>,
}

/// What the provider keeps in [`ReplicaRef::data`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct RefData {
    cluster: ReplicaId,
    launch_request: Option<RequestId>,
}

impl RefData {
    fn of(replica: &ReplicaRef) -> Result<Self, ProviderError> {
        let cluster = match replica.data.get("cluster") {
            Some(Value::String(name)) => ReplicaId::parse(name)
                .map_err(|e| ProviderError::Invalid(format!("replica {}: stored cluster name: {e}", replica.id)))?,
            _ => replica.id.clone(),
        };
        let launch_request =
            match replica.data.get("launch_request") {
                Some(Value::String(id)) => Some(RequestId::parse(id).map_err(|e| {
                    ProviderError::Invalid(format!("replica {}: stored launch request: {e}", replica.id))
                })?),
                _ => None,
            };
        Ok(Self { cluster, launch_request })
    }

    fn to_value(&self) -> Value {
        json!({ "cluster": self.cluster.as_str(), "launch_request": self.launch_request.as_ref().map(RequestId::as_str) })
    }
}

impl SkyPilotSpot {
    /// Refuses a cloud other than `aws`, a GPU AWS does not offer, and impossible counts.
    /// The replica key is hidden in every message the client produces from now on.
    pub fn new(mut client: SkyClient, settings: SkyPilotSettings) -> Result<Self, ProviderError> {
        let cloud = settings.cloud.to_ascii_lowercase();
        if !SUPPORTED_CLOUDS.contains(&cloud.as_str()) {
            return Err(ProviderError::Invalid(format!(
                "spots_cloud `{}` is not supported by the SkyPilot provider: use {} (the catalog prices spot GPUs only there)",
                settings.cloud,
                SUPPORTED_CLOUDS.join(", ")
            )));
        }
        task::sky_accelerator(&settings.gpu).map_err(ProviderError::Invalid)?;
        if settings.gpu_count == 0 || settings.tp_size == 0 || settings.tp_size > settings.gpu_count {
            return Err(ProviderError::Invalid(format!(
                "tp_size {} needs 1 to gpu_count ({}) GPUs per replica",
                settings.tp_size, settings.gpu_count
            )));
        }
        if settings.engine_port == 0 || settings.max_model_len == 0 || settings.disk_size_gb == 0 {
            return Err(ProviderError::Invalid(
                "engine_port, max_model_len and disk_size_gb must be positive".to_string(),
            ));
        }
        client.hide(&settings.replica_key);
        Ok(Self { client, settings: SkyPilotSettings { cloud, ..settings }, launched: Default::default() })
    }

    pub fn client(&self) -> &SkyClient {
        &self.client
    }

    /// The task of `spec`: the replica's own model and GPU, the deployment's settings for
    /// the rest. Print it with `{}` (the key shows as `***`).
    pub fn task(&self, spec: &ReplicaSpec) -> Result<TaskSpec, ProviderError> {
        let accelerator = task::sky_accelerator(&spec.gpu).map_err(ProviderError::Invalid)?;
        let s = &self.settings;
        if spec.gpu_count == 0 || s.tp_size > spec.gpu_count {
            return Err(ProviderError::Invalid(format!(
                "replica {}: tp_size {} needs {} GPUs, the replica asks for {}",
                spec.id, s.tp_size, s.tp_size, spec.gpu_count
            )));
        }
        Ok(TaskSpec {
            name: spec.id.clone(),
            cloud: s.cloud.clone(),
            region: s.region.clone(),
            accelerator: accelerator.to_string(),
            gpu_count: spec.gpu_count,
            model: spec.model.clone(),
            tp_size: s.tp_size,
            max_model_len: s.max_model_len,
            engine_port: s.engine_port,
            disk_size_gb: s.disk_size_gb,
            image: s.image.clone(),
            replica_key: s.replica_key.clone(),
        })
    }

    /// The deployment's own replica spec for `id` (its model and GPU).
    pub fn replica_spec(&self, service: &str, id: ReplicaId) -> ReplicaSpec {
        let s = &self.settings;
        ReplicaSpec {
            service: service.to_string(),
            id,
            model: s.model.clone(),
            gpu: s.gpu.clone(),
            gpu_count: s.gpu_count,
        }
    }

    /// Runs the real optimizer on `spec`'s task without provisioning anything and returns
    /// the request's log (the table of considered resources and the chosen one).
    pub async fn dry_run(&self, spec: &ReplicaSpec) -> Result<String, ProviderError> {
        let yaml = task::render(&self.task(spec)?);
        let request = self.client.launch(&spec.id, &yaml, true).await?;
        self.client.get(&request, self.client.deadlines().wait).await?;
        self.client.logs(&request, self.client.deadlines().call).await
    }

    /// A launch already under way or done for `cluster`: an unfinished launch request
    /// for it, or the cluster itself.
    async fn existing(&self, cluster: &ReplicaId) -> Result<Option<ReplicaRef>, ProviderError> {
        let active = self.client.active_requests(Some(cluster.as_str())).await?;
        if let Some(launch) =
            active.iter().find(|r| r.is_launch() && r.cluster_name.as_deref() == Some(cluster.as_str()))
        {
            return Ok(Some(self.reference(cluster, Some(launch.request_id.clone()), seconds_ms(launch.created_at))));
        }
        let records = self.client.status(Some(std::slice::from_ref(cluster)), Refresh::None).await?;
        Ok(records
            .iter()
            .find(|r| r.name == cluster.as_str())
            .map(|r| self.reference(cluster, None, r.launched_at.map(|s| s.saturating_mul(1000)))))
    }

    fn reference(
        &self,
        cluster: &ReplicaId,
        launch_request: Option<RequestId>,
        launched_ms: Option<u64>,
    ) -> ReplicaRef {
        let data = RefData { cluster: cluster.clone(), launch_request };
        ReplicaRef { id: cluster.clone(), launched_ms: launched_ms.unwrap_or_else(now_ms), data: data.to_value() }
    }

    async fn record(&self, cluster: &ReplicaId, refresh: Refresh) -> Result<Option<ClusterRecord>, ProviderError> {
        let records = self.client.status(Some(std::slice::from_ref(cluster)), refresh).await?;
        Ok(records.into_iter().find(|r| r.name == cluster.as_str()))
    }

    /// The launch request's verdict, when it failed: `Failed` with its error message.
    async fn launch_failure(&self, info: &RequestInfo) -> Result<Option<ReplicaStatus>, ProviderError> {
        let at_ms = seconds_ms(info.finished_at).unwrap_or_else(now_ms);
        let reason = match info.status {
            RequestState::Failed => match self.client.get(&info.request_id, self.client.deadlines().call).await {
                Err(ProviderError::Transient { .. }) | Ok(_) => "the SkyPilot launch request failed".to_string(),
                Err(e) => format!("SkyPilot launch failed: {e}"),
            },
            RequestState::Cancelled => "the SkyPilot launch request was cancelled".to_string(),
            _ => return Ok(None),
        };
        Ok(Some(ReplicaStatus::Failed { at_ms, reason }))
    }

    fn succeeded(&self, request: &RequestId) -> bool {
        self.launched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(request)
    }

    async fn running(&self, record: &ClusterRecord, cluster: &ReplicaId) -> Result<ReplicaStatus, ProviderError> {
        match self.client.endpoint(cluster, self.settings.engine_port).await {
            Ok(Some(url)) => Ok(ReplicaStatus::Running { url, placement: placement(record) }),
            // UP but the port has no address yet: still coming up.
            Ok(None) | Err(ProviderError::NotFound(_)) => Ok(ReplicaStatus::Pending),
            Err(e) => Err(e),
        }
    }
}

/// Where SkyPilot placed the cluster, from its `/status` record.
fn placement(record: &ClusterRecord) -> Option<Placement> {
    let (instance_type, spot) = record.instance()?;
    Some(Placement { instance_type, region: record.region.clone()?, spot })
}

fn seconds_ms(seconds: Option<f64>) -> Option<u64> {
    seconds.filter(|s| s.is_finite() && *s > 0.0).map(|s| (s * 1000.0) as u64)
}

#[async_trait]
impl SpotProvider for SkyPilotSpot {
    /// Idempotent by the cluster name: when a launch of it is under way, or the cluster
    /// exists, nothing is launched (SkyPilot would run the task again on an existing
    /// cluster: a second vLLM on the same port). Only the reconciler that holds the
    /// service's lock launches, so the check and the launch do not race.
    async fn launch(&self, spec: &ReplicaSpec) -> Result<ReplicaRef, ProviderError> {
        let yaml = task::render(&self.task(spec)?);
        if let Some(existing) = self.existing(&spec.id).await? {
            tracing::info!(replica = %spec.id, "SkyPilot cluster already launching or up; not launched again");
            return Ok(existing);
        }
        let launched_ms = now_ms();
        let request = self.client.launch(&spec.id, &yaml, false).await?;
        tracing::info!(replica = %spec.id, request = %request, "SkyPilot launch scheduled");
        Ok(self.reference(&spec.id, Some(request), Some(launched_ms)))
    }

    async fn status(&self, replica: &ReplicaRef) -> Result<ReplicaStatus, ProviderError> {
        let data = RefData::of(replica)?;
        // The cached record first: a refresh is scheduled on the server's few long-request
        // workers, where launches queue too, and only an UP cluster needs the cloud's word
        // (a launching one is updated by its launch; a missing one stays missing).
        let mut record = self.record(&data.cluster, Refresh::None).await?;
        if record.as_ref().is_some_and(|r| r.status == ClusterStatus::Up) {
            record = self.record(&data.cluster, Refresh::Auto).await?;
        }
        // A launch request that succeeded is not asked about again (one that fails, even
        // after its cluster is UP, as a failed setup does, is seen at once).
        let launch = match &data.launch_request {
            Some(id) if !self.succeeded(id) => self.client.request_status(id).await?,
            _ => None,
        };
        if let Some(info) = &launch
            && info.status == RequestState::Succeeded
        {
            self.launched.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(info.request_id.clone());
        }
        if let Some(info) = &launch
            && let Some(failed) = self.launch_failure(info).await?
        {
            return Ok(failed);
        }
        Ok(match record {
            Some(record) => match record.status {
                ClusterStatus::Up => self.running(&record, &data.cluster).await?,
                ClusterStatus::Init | ClusterStatus::Pending => ReplicaStatus::Pending,
                // A spot cluster that stopped was interrupted; it serves nothing.
                ClusterStatus::Stopped | ClusterStatus::Autostopping => ReplicaStatus::Preempted {
                    at_ms: record.status_updated_at.map_or_else(now_ms, |s| s.saturating_mul(1000)),
                },
                ClusterStatus::Other(status) => {
                    tracing::warn!(replica = %replica.id, %status, "unknown SkyPilot cluster status; treated as pending");
                    ReplicaStatus::Pending
                }
            },
            None => match launch.map(|info| info.status) {
                Some(state) if !state.is_finished() => ReplicaStatus::Pending,
                // It came up, and the cloud has since taken it away.
                Some(RequestState::Succeeded) => ReplicaStatus::Preempted { at_ms: now_ms() },
                None if data.launch_request.as_ref().is_some_and(|id| self.succeeded(id)) => {
                    ReplicaStatus::Preempted { at_ms: now_ms() }
                }
                _ => ReplicaStatus::NotFound,
            },
        })
    }

    /// Cancels the cluster's launches still under way first: one queued on the server has
    /// no cluster yet, so `/down` would find nothing and the launch would make it after.
    async fn terminate(&self, replica: &ReplicaRef) -> Result<u64, ProviderError> {
        let data = RefData::of(replica)?;
        let launches: Vec<RequestId> = self
            .client
            .active_requests(Some(data.cluster.as_str()))
            .await?
            .into_iter()
            .filter(|r| r.is_launch() && r.cluster_name.as_deref() == Some(data.cluster.as_str()))
            .map(|r| r.request_id)
            .collect();
        if !launches.is_empty() {
            tracing::info!(replica = %replica.id, "cancelling its SkyPilot launch before the teardown");
            self.client.cancel(&launches).await?;
        }
        self.client.down(&data.cluster, DOWN_DEADLINE).await?;
        Ok(now_ms())
    }

    /// The service's clusters, and its launches not yet visible as clusters. From SkyPilot's
    /// cached table (no refresh): it may still hold a cluster the cloud took back, which
    /// `status` then reports, but never misses one that exists, so no leak hides.
    async fn list(&self, service: &str) -> Result<Vec<Listed>, ProviderError> {
        let mut listed: Vec<Listed> = Vec::new();
        for record in self.client.status(None, Refresh::None).await? {
            let Ok(id) = ReplicaId::parse(&record.name) else { continue };
            if id.of_service(service) {
                let reference = self.reference(&id, None, record.launched_at.map(|s| s.saturating_mul(1000)));
                listed.push(Listed { id, reference });
            }
        }
        for request in self.client.active_requests(None).await? {
            let Some(Ok(id)) =
                request.is_launch().then(|| request.cluster_name.as_deref().map(ReplicaId::parse)).flatten()
            else {
                continue;
            };
            if id.of_service(service) && !listed.iter().any(|l| l.id == id) {
                let reference = self.reference(&id, Some(request.request_id.clone()), seconds_ms(request.created_at));
                listed.push(Listed { id, reference });
            }
        }
        Ok(listed)
    }
}

/// What `tandemn check` says about the SkyPilot API server. Holds no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkyCheck {
    pub endpoint: String,
    pub reachable: bool,
    pub version: Option<String>,
    pub api_version: Option<u32>,
    /// `None` when it could not be asked.
    pub aws_enabled: Option<bool>,
    /// What is wrong, with the fix, when something is.
    pub problem: Option<String>,
}

/// Asks the server for its health, version and enabled clouds.
pub async fn check(client: &SkyClient) -> SkyCheck {
    let mut report = SkyCheck {
        endpoint: client.api_endpoint().to_string(),
        reachable: false,
        version: None,
        api_version: None,
        aws_enabled: None,
        problem: None,
    };
    match client.health().await {
        Ok(info) => {
            report.reachable = true;
            report.version = Some(info.version);
            report.api_version = Some(info.api_version);
        }
        Err(e) => {
            report.reachable = !matches!(e, ProviderError::Transient { .. });
            report.problem = Some(e.to_string());
            return report;
        }
    }
    match client.enabled_clouds().await {
        Ok(clouds) => {
            let aws = clouds.iter().any(|c| c == "aws");
            report.aws_enabled = Some(aws);
            if !aws {
                report.problem = Some(
                    "AWS is not enabled on the SkyPilot API server: give it AWS credentials and run `sky check aws`"
                        .to_string(),
                );
            }
        }
        Err(e) => report.problem = Some(format!("cannot read the enabled clouds: {e}")),
    }
    report
}

impl std::fmt::Display for SkyCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SkyPilot API server {}: ", self.endpoint)?;
        match (&self.version, self.api_version) {
            (Some(version), Some(api)) => write!(f, "reachable, version {version} (API {api})")?,
            _ if self.reachable => f.write_str("reachable")?,
            _ => f.write_str("not reachable")?,
        }
        match self.aws_enabled {
            Some(true) => f.write_str(", AWS enabled")?,
            Some(false) => f.write_str(", AWS not enabled")?,
            None => {}
        }
        if let Some(problem) = &self.problem {
            write!(f, "; {problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn settings() -> SkyPilotSettings {
        SkyPilotSettings {
            cloud: "aws".into(),
            region: None,
            gpu: "L4".into(),
            gpu_count: 1,
            model: "Qwen/Qwen3-0.6B".into(),
            tp_size: 1,
            max_model_len: 8192,
            engine_port: 8000,
            disk_size_gb: 100,
            image: None,
            replica_key: Secret::new("TEST-REPLICA-KEY-not-a-secret"),
        }
    }

    fn client() -> SkyClient {
        SkyClient::new("http://127.0.0.1:9", None).unwrap()
    }

    #[test]
    fn only_aws_and_its_gpus_are_accepted() {
        assert!(SkyPilotSpot::new(client(), SkyPilotSettings { cloud: "AWS".into(), ..settings() }).is_ok());
        let gcp = SkyPilotSpot::new(client(), SkyPilotSettings { cloud: "gcp".into(), ..settings() }).unwrap_err();
        assert!(matches!(&gcp, ProviderError::Invalid(m) if m.contains("`gcp`") && m.contains("use aws")), "{gcp:?}");
        let gpu = SkyPilotSpot::new(client(), SkyPilotSettings { gpu: "RTX4090".into(), ..settings() }).unwrap_err();
        assert!(matches!(&gpu, ProviderError::Invalid(m) if m.contains("RTX4090")), "{gpu:?}");
        let tp = SkyPilotSpot::new(client(), SkyPilotSettings { tp_size: 2, ..settings() }).unwrap_err();
        assert!(matches!(&tp, ProviderError::Invalid(m) if m.contains("tp_size 2")), "{tp:?}");
    }

    #[test]
    fn references_round_trip_and_old_ones_fall_back_to_the_id() {
        let spot = SkyPilotSpot::new(client(), settings()).unwrap();
        let id = ReplicaId::parse("svc-abc-1").unwrap();
        let request = RequestId::parse("req-1").unwrap();
        let reference = spot.reference(&id, Some(request.clone()), Some(5_000));
        assert_eq!(reference.data, json!({"cluster": "svc-abc-1", "launch_request": "req-1"}));
        assert_eq!(RefData::of(&reference).unwrap(), RefData { cluster: id.clone(), launch_request: Some(request) });
        let bare = ReplicaRef { id: id.clone(), launched_ms: 1, data: Value::Null };
        assert_eq!(RefData::of(&bare).unwrap(), RefData { cluster: id.clone(), launch_request: None });
        let bad = ReplicaRef { id, launched_ms: 1, data: json!({"cluster": "Bad_Name!"}) };
        assert!(matches!(RefData::of(&bad), Err(ProviderError::Invalid(_))));
    }

    #[test]
    fn the_task_takes_the_replica_s_model_and_gpu() {
        let spot =
            SkyPilotSpot::new(client(), SkyPilotSettings { region: Some("us-east-2".into()), ..settings() }).unwrap();
        let mut spec = spot.replica_spec("svc", ReplicaId::parse("svc-abc-1").unwrap());
        spec.gpu = "A100_80GB".into();
        let task = spot.task(&spec).unwrap();
        assert_eq!((task.accelerator.as_str(), task.region.as_deref()), ("A100-80GB", Some("us-east-2")));
        assert!(!task.to_string().contains("TEST-REPLICA-KEY"));
        spec.gpu = "A4000".into();
        assert!(matches!(spot.task(&spec), Err(ProviderError::Invalid(_))));
        spec.gpu = "L4".into();
        spec.gpu_count = 0;
        let error = spot.task(&spec).unwrap_err();
        assert!(matches!(&error, ProviderError::Invalid(m) if m.contains("svc-abc-1")), "{error:?}");
    }

    #[test]
    fn placement_comes_from_the_status_record() {
        let record: ClusterRecord = serde_json::from_value(json!({
            "name": "svc-abc-1", "status": "UP", "region": "us-east-2",
            "resources_str": "1x[spot](gpus=L4:1, g6.xlarge, ...)"
        }))
        .unwrap();
        assert_eq!(
            placement(&record),
            Some(Placement { instance_type: "g6.xlarge".into(), region: "us-east-2".into(), spot: true })
        );
        let unplaced: ClusterRecord = serde_json::from_value(json!({"name": "x", "status": "INIT"})).unwrap();
        assert_eq!(placement(&unplaced), None);
    }

    #[test]
    fn check_reports_print_no_secret_and_name_the_problem() {
        let report = SkyCheck {
            endpoint: "http://127.0.0.1:46580".into(),
            reachable: true,
            version: Some("0.14.1".into()),
            api_version: Some(62),
            aws_enabled: Some(false),
            problem: Some("AWS is not enabled".into()),
        };
        assert_eq!(
            report.to_string(),
            "SkyPilot API server http://127.0.0.1:46580: reachable, version 0.14.1 (API 62), AWS not enabled; AWS is not enabled"
        );
    }

    #[tokio::test]
    async fn check_of_a_missing_server_says_how_to_start_one() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = SkyClient::new(&format!("http://127.0.0.1:{port}"), Some(Secret::new("sky_tok"))).unwrap();
        let report = check(&client).await;
        assert!(!report.reachable && report.version.is_none() && report.aws_enabled.is_none());
        let shown = report.to_string();
        assert!(shown.contains("sky api start") && !shown.contains("sky_tok"), "{shown}");
    }
}
