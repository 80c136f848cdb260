//! `SkyPilotSpot` through a replica's whole life against the loopback fake SkyPilot API
//! server (`tandemn-bench`), whose clusters are real mock-vllm processes: launch returns
//! at once, Pending while the cluster provisions and boots, Running at the address
//! `/endpoints` gives (and the engine takes only the replica key), a second launch of the
//! same id launches nothing, preemption (terminated or stopped) seen through a refreshing
//! `/status`, a failed launch, adoption of a reference that carries no data, `list`, and
//! terminate leaving no cluster, the service-account token, and deadlines. The protocol
//! itself, and the status story on a seeded cluster, are checked against the real server
//! in `skypilot_conformance`; a real boot (setup, vLLM) only ever runs here, on the fake.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tandemn_bench::fakes::skypilot::{FakeConfig, FakeSkyPilot, InstanceStatus};
use tandemn_config::api::Secret;
use tandemn_provisioner::provider::{Placement, ProviderError, ReplicaId, ReplicaRef, ReplicaStatus, SpotProvider};
use tandemn_provisioner::skypilot::client::{Deadlines, Refresh, SkyClient};
use tandemn_provisioner::skypilot::{SkyPilotSettings, SkyPilotSpot};
use tempfile::TempDir;

const KEY: &str = "TEST-REPLICA-KEY-not-a-secret";
/// Bound of every wait for a replica to change state (the fake boots in well under 1 s).
const WAIT: Duration = Duration::from_secs(30);

/// The bench crate's `mock-vllm`, built next to this test (a workspace build makes it;
/// otherwise it is built here once).
fn mock_vllm() -> PathBuf {
    // The tests of this file run at once: one of them builds.
    static BUILT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap().to_path_buf();
    let engine = dir.join("mock-vllm");
    if !engine.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "tandemn-bench", "--bin", "mock-vllm"])
            .status()
            .unwrap();
        assert!(status.success(), "cargo build -p tandemn-bench --bin mock-vllm failed");
    }
    assert!(engine.exists(), "{} is missing", engine.display());
    engine
}

async fn start() -> (FakeSkyPilot, SkyPilotSpot, TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let config = FakeConfig {
        engine: vec![mock_vllm().into()],
        provision_delay: Duration::from_millis(300),
        engine_boot: Duration::from_millis(300),
        log_dir: logs.path().to_path_buf(),
        ..FakeConfig::default()
    };
    let fake = FakeSkyPilot::start(config).await.unwrap();
    let client = SkyClient::new(&fake.endpoint(), None).unwrap();
    let settings = SkyPilotSettings {
        cloud: "aws".into(),
        region: None,
        gpu: "L4".into(),
        gpu_count: 1,
        model: "Qwen/Qwen3-0.6B".into(),
        tp_size: 1,
        max_model_len: 4096,
        engine_port: 8000,
        disk_size_gb: 100,
        image: None,
        replica_key: Secret::new(KEY),
    };
    (fake, SkyPilotSpot::new(client, settings).unwrap(), logs)
}

/// Polls (bounded) until `done` accepts the replica's status; returns it.
async fn wait_for(spot: &SkyPilotSpot, replica: &ReplicaRef, done: impl Fn(&ReplicaStatus) -> bool) -> ReplicaStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = spot.status(replica).await.unwrap();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{} still {status:?} after {WAIT:?}", replica.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn replica_id(service: &str, n: u32) -> ReplicaId {
    ReplicaId::new(service, 1_764_000_000_000, n).unwrap()
}

async fn models(url: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(format!("{url}/v1/models"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_launches_runs_is_preempted_and_terminates() {
    let (fake, spot, _logs) = start().await;
    let id = replica_id("svc", 1);
    let spec = spot.replica_spec("svc", id.clone());

    let replica = spot.launch(&spec).await.unwrap();
    assert_eq!(replica.id, id);
    assert!(replica.data["launch_request"].is_string(), "{:?}", replica.data);
    assert_eq!(spot.status(&replica).await.unwrap(), ReplicaStatus::Pending);

    // Launching the same id again launches nothing, while it boots and once it runs.
    let again = spot.launch(&spec).await.unwrap();
    assert_eq!(again.id, id);
    let running = wait_for(&spot, &replica, |s| matches!(s, ReplicaStatus::Running { .. })).await;
    spot.launch(&spec).await.unwrap();
    assert_eq!(fake.launches(id.as_str()), 1);

    let ReplicaStatus::Running { url, placement } = running else { unreachable!() };
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let record = fake.clusters().into_iter().find(|c| c.name == id.as_str()).unwrap();
    assert_eq!(
        placement,
        Some(Placement { instance_type: record.instance_type.clone(), region: record.region, spot: true })
    );
    assert_eq!(record.instance_type, "g6.xlarge");
    // The engine got the replica key (as a secret, not on its command line).
    let deadline = Instant::now() + WAIT;
    while models(&url, Some(KEY)).await != 200 {
        assert!(Instant::now() < deadline, "the engine at {url} never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(models(&url, None).await, 401);
    assert_eq!(models(&url, Some("wrong")).await, 401);

    // list finds it for its service only; a reference without data adopts it.
    let listed = spot.list("svc").await.unwrap();
    assert_eq!(listed.iter().map(|l| &l.id).collect::<Vec<_>>(), vec![&id]);
    assert!(listed[0].reference.launched_ms > 0);
    assert!(spot.list("sv").await.unwrap().is_empty());
    let adopted = ReplicaRef { id: id.clone(), launched_ms: 1, data: serde_json::Value::Null };
    assert!(matches!(spot.status(&adopted).await.unwrap(), ReplicaStatus::Running { .. }));

    // A spot reclaim: the cluster vanishes at the next refresh; the launch had succeeded.
    fake.preempt(id.as_str()).await.unwrap();
    let preempted = spot.status(&replica).await.unwrap();
    assert!(matches!(preempted, ReplicaStatus::Preempted { .. }), "{preempted:?}");
    // Adopted without a launch request, a vanished cluster is simply not found.
    assert_eq!(spot.status(&adopted).await.unwrap(), ReplicaStatus::NotFound);
    // Terminate is idempotent: the cluster is already gone.
    assert!(spot.terminate(&replica).await.unwrap() > 0);
    assert!(spot.list("svc").await.unwrap().is_empty());
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replica_is_preempted_and_terminate_tears_it_down() {
    let (fake, spot, _logs) = start().await;
    let id = replica_id("svc", 2);
    let replica = spot.launch(&spot.replica_spec("svc", id.clone())).await.unwrap();
    wait_for(&spot, &replica, |s| matches!(s, ReplicaStatus::Running { .. })).await;

    fake.stop(id.as_str()).await.unwrap();
    let stopped = spot.status(&replica).await.unwrap();
    assert!(matches!(stopped, ReplicaStatus::Preempted { at_ms } if at_ms > 0), "{stopped:?}");
    // A stopped cluster still exists (and bills its disk): terminate takes it down.
    assert_eq!(spot.list("svc").await.unwrap().len(), 1);
    let stopped_ms = spot.terminate(&replica).await.unwrap();
    assert!(stopped_ms > replica.launched_ms);
    assert!(spot.list("svc").await.unwrap().is_empty());
    let record = fake.clusters().into_iter().find(|c| c.name == id.as_str()).unwrap();
    assert!(!record.listed && record.status == InstanceStatus::Terminated, "{record:?}");
    spot.terminate(&replica).await.unwrap();
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_launch_is_failed_with_skypilot_s_reason() {
    let (fake, spot, _logs) = start().await;
    fake.fail_launches(1, "ResourcesUnavailableError", "Failed to acquire resources in all zones in us-east-2.");
    let id = replica_id("svc", 3);
    let replica = spot.launch(&spot.replica_spec("svc", id.clone())).await.unwrap();
    let failed = wait_for(&spot, &replica, |s| !matches!(s, ReplicaStatus::Pending)).await;
    assert!(
        matches!(&failed, ReplicaStatus::Failed { reason, .. } if reason.contains("no capacity") && reason.contains("all zones")),
        "{failed:?}"
    );
    assert!(spot.terminate(&replica).await.is_ok());

    // A launch not yet visible as a cluster is listed from its request (adoption after a
    // crash right after the launch call).
    let next = replica_id("svc", 4);
    spot.launch(&spot.replica_spec("svc", next.clone())).await.unwrap();
    let listed = spot.list("svc").await.unwrap();
    assert!(listed.iter().any(|l| l.id == next), "{listed:?}");
    let pending = listed.iter().find(|l| l.id == next).unwrap();
    spot.terminate(&pending.reference).await.unwrap();
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_account_token_is_sent_and_never_shown() {
    let logs = tempfile::tempdir().unwrap();
    let token = "sky_service-account-token-for-tests";
    let config = FakeConfig {
        engine: vec![mock_vllm().into()],
        token: Some(token.to_string()),
        log_dir: logs.path().to_path_buf(),
        ..FakeConfig::default()
    };
    let fake = FakeSkyPilot::start(config).await.unwrap();
    let good = SkyClient::new(&fake.endpoint(), Some(Secret::new(token))).unwrap();
    assert_eq!(good.status(None, Refresh::Auto).await.unwrap(), vec![]);
    let wrong = SkyClient::new(&fake.endpoint(), Some(Secret::new("sky_wrong-token"))).unwrap();
    let error = wrong.status(None, Refresh::Auto).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Auth(m) if !m.contains("sky_wrong-token")), "{error:?}");
    let none = SkyClient::new(&fake.endpoint(), None).unwrap();
    assert!(matches!(none.enabled_clouds().await, Err(ProviderError::Auth(_))));
    assert_eq!(good.enabled_clouds().await.unwrap(), vec!["aws".to_string()]);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_does_not_finish_in_time_is_transient() {
    let (fake, _spot, _logs) = start().await;
    let client = SkyClient::new(&fake.endpoint(), None)
        .unwrap()
        .with_deadlines(Deadlines { call: Duration::from_secs(5), wait: Duration::from_millis(500) });
    fake.hang(Duration::from_secs(5));
    let started = Instant::now();
    let error = client.status(None, Refresh::None).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "the deadline held: {:?}", started.elapsed());
    assert!(
        matches!(&error, ProviderError::Transient { message, .. } if message.contains("did not finish within")),
        "{error:?}"
    );
    fake.hang(Duration::ZERO);
    assert_eq!(client.status(None, Refresh::None).await.unwrap(), vec![]);
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_a_replica_whose_launch_is_still_queued_leaves_no_cluster() {
    let (fake, spot, _logs) = start().await;
    let id = replica_id("svc", 1);
    // The server's workers are busy: the launch is accepted and waits, with no cluster yet.
    fake.queue_launches(true);
    let replica = spot.launch(&spot.replica_spec("svc", id.clone())).await.unwrap();
    assert_eq!(spot.status(&replica).await.unwrap(), ReplicaStatus::Pending);
    spot.terminate(&replica).await.unwrap();
    fake.queue_launches(false);
    // Had the launch gone on after the down, its cluster would come up now and bill unseen.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(fake.clusters().iter().all(|c| !c.listed), "{:?}", fake.clusters());
    assert!(matches!(spot.status(&replica).await.unwrap(), ReplicaStatus::Failed { .. } | ReplicaStatus::NotFound));
    fake.shutdown().await;
}
