//! The spot tier through SkyPilot on one machine: `tandemn deploy` with `spots_cloud: aws`
//! and local serverless, against the loopback fake SkyPilot API server (its clusters are
//! mock-vllm processes that take a second to provision and a second to boot).
//!
//! The story: serverless serves while the cluster provisions; traffic moves to spot; a
//! preemption under load fails no request that had not started streaming and the replica
//! is replaced under a new name; idle scales spot to zero and takes the cluster down;
//! `destroy` leaves no cluster; the cost matches the fake's own bill.
//!
//! Resume: the deploy is SIGKILLed with a ready replica, started again, and adopts it (no
//! second launch); SIGKILLed again while a termination is under way, started again, and the
//! termination finishes; the bill has no gap and no double count.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use support::*;
use tandemn_bench::fakes::skypilot::{ClusterRecord, FakeConfig, FakeSkyPilot, InstanceStatus};

fn config(min_replicas: u32) -> String {
    format!(
        "
service_name: story
model: mock-model
gpu: L4
serverless_provider: local
spots_cloud: aws
region: us-east-2
scaling:
  spot: {{min_replicas: {min_replicas}, max_replicas: 1, target_qps: 1000, upscale_delay: 0, downscale_delay: 2, demand_window: 2}}
  serverless: {{concurrency: 8, scaledown_window: 1, workers_max: 2}}
router: {{listen: 127.0.0.1:0, spot_capacity: 2}}
local: {{cold_start_secs: 0.3}}
"
    )
}

/// The fake SkyPilot on its own runtime (it outlives the deploys the tests kill).
struct Cloud {
    fake: FakeSkyPilot,
    runtime: tokio::runtime::Runtime,
    _logs: tempfile::TempDir,
}

impl Cloud {
    fn start() -> Cloud {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let logs = tempfile::tempdir().unwrap();
        let config = FakeConfig {
            engine: vec![env!("CARGO_BIN_EXE_tandemn").into(), "mock-vllm".into()],
            provision_delay: Duration::from_secs(1),
            engine_boot: Duration::from_secs(1),
            log_dir: logs.path().to_path_buf(),
            ..FakeConfig::default()
        };
        let fake = runtime.block_on(FakeSkyPilot::start(config)).unwrap();
        Cloud { fake, runtime, _logs: logs }
    }

    fn deploy(&self, home: tempfile::TempDir, min_replicas: u32) -> Deployment {
        let endpoint = self.fake.endpoint();
        Deployment::start_in(home, &config(min_replicas), &[("SKYPILOT_API_SERVER_ENDPOINT", endpoint.as_str())])
    }

    /// Clusters the fake still lists (its table, as `sky status` shows it).
    fn listed(&self) -> Vec<ClusterRecord> {
        self.fake.clusters().into_iter().filter(|c| c.listed).collect()
    }
}

/// The replica `status` shows in `phase`, if one is.
fn replica_in(status: &Value, phase: &str) -> Option<String> {
    live_replicas(status).into_iter().find(|(_, p)| p == phase).map(|(name, _)| name)
}

/// Our billed interval of each replica against the fake's bill of its cluster: the same
/// to within a second (a launch and a teardown are one API round trip apart). A preempted
/// cluster is billed until the preemption is seen, at most a status poll (2 s) late: an
/// over-estimate, never an under-estimate.
fn bills_agree(status: &Value, cloud: &Cloud) {
    let clusters = cloud.fake.clusters();
    for replica in status["replicas"].as_array().unwrap() {
        let name = replica["replica"].as_str().unwrap();
        let records: Vec<&ClusterRecord> = clusters.iter().filter(|c| c.name == name).collect();
        if records.is_empty() {
            assert_eq!(replica["ended_at_ms"], replica["launched_at_ms"], "never created, never billed: {replica}");
            continue;
        }
        let ours = replica["ended_at_ms"].as_u64().unwrap() - replica["launched_at_ms"].as_u64().unwrap();
        let theirs: u64 = records.iter().map(|c| c.billed_ms).sum();
        let late = if replica["phase"] == "preempted" { 3_500 } else { 1_000 };
        assert!(ours >= theirs.saturating_sub(1_000), "{name}: billed {ours} ms, less than the cloud's {theirs} ms");
        assert!(ours <= theirs + late, "{name}: billed {ours} ms, the cloud billed {theirs} ms");
    }
}

#[test]
fn check_reports_the_skypilot_api_server_without_its_token() {
    let cloud = Cloud::start();
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("story.yaml");
    std::fs::write(&path, config(1)).unwrap();
    let check = |endpoint: &str| {
        tandemn(home.path())
            .args(["check", "--config", path.to_str().unwrap()])
            .env("SKYPILOT_API_SERVER_ENDPOINT", endpoint)
            .env("SKYPILOT_SERVICE_ACCOUNT_TOKEN", "sky-VERY-SECRET-token")
            .output()
            .unwrap()
    };
    let up = check(&cloud.fake.endpoint());
    let out = String::from_utf8_lossy(&up.stdout);
    assert!(up.status.success(), "{out}{}", String::from_utf8_lossy(&up.stderr));
    assert!(out.contains("reachable, version 0.14.1 (API 62), AWS enabled"), "{out}");
    // A port nothing listens on (bound, then freed): the deployment cannot run, and
    // `check` says why.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down = check(&format!("http://{free}"));
    let out = String::from_utf8_lossy(&down.stdout).to_string() + &String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "{out}");
    assert!(out.contains("not reachable") && out.contains("sky api start"), "{out}");
    assert!(!out.contains("VERY-SECRET"), "the token leaked: {out}");
}

#[test]
fn spot_through_skypilot_tells_the_whole_story() {
    let cloud = Cloud::start();
    let mut deployment = cloud.deploy(tempfile::tempdir().unwrap(), 0);
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let client = client();
    let send = |max_tokens| cloud.runtime.block_on(request(&client, &target, max_tokens));

    // Serverless answers at once while the first cluster provisions.
    let first = send(4);
    assert!(first.ok && first.tier == "serverless", "{first:?}");
    wait_for("a cluster to be launched", Duration::from_secs(10), || !cloud.listed().is_empty());

    // Traffic moves to spot once the cluster is up and its engine ready.
    wait_for("traffic on spot", Duration::from_secs(30), || send(4).tier == "spot");
    let ready = replica_in(&deployment.status(), "ready").unwrap();
    assert_eq!(cloud.fake.launches(&ready), 1);

    // A preemption under load: no request that had not started streaming fails.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, outcomes, client, target) = (stop.clone(), outcomes.clone(), client.clone(), target.clone());
            cloud.runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = request(&client, &target, 10).await;
                    outcomes.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();
    wait_for("load on spot", Duration::from_secs(10), || {
        outcomes.lock().unwrap().iter().filter(|o| o.tier == "spot").count() >= 5
    });
    cloud.runtime.block_on(cloud.fake.preempt(&ready)).unwrap();
    wait_for("a replacement, under a new name, to be ready", Duration::from_secs(40), || {
        replica_in(&deployment.status(), "ready").is_some_and(|name| name != ready)
    });
    let replaced_at = outcomes.lock().unwrap().len();
    wait_for("traffic on the replacement", Duration::from_secs(15), || {
        outcomes.lock().unwrap()[replaced_at..].iter().any(|o| o.tier == "spot")
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        cloud.runtime.block_on(worker).unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    let unstarted_failures: Vec<&Outcome> = outcomes.iter().filter(|o| !o.ok && !o.started).collect();
    assert!(unstarted_failures.is_empty(), "{unstarted_failures:?}");
    assert!(outcomes.iter().any(|o| o.tier == "serverless"), "serverless covered for the preempted replica");
    let status = deployment.status();
    let preempted: Vec<_> =
        status["replicas"].as_array().unwrap().iter().filter(|r| r["phase"] == "preempted").collect();
    assert_eq!(preempted.len(), 1, "{status}");
    assert_eq!(preempted[0]["replica"], ready.as_str());

    // Idle: spot scales to zero and its cluster goes down.
    wait_for("spot to scale to zero", Duration::from_secs(30), || {
        live_replicas(&deployment.status()).is_empty() && cloud.listed().is_empty()
    });

    // destroy: nothing listed, the process gone, the bill the cloud's.
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    assert!(deployment.child.wait().unwrap().success());
    assert!(cloud.listed().is_empty());
    assert!(
        cloud.fake.clusters().iter().all(|c| c.status == InstanceStatus::Terminated),
        "{:?}",
        cloud.fake.clusters()
    );
    let status = deployment.status();
    bills_agree(&status, &cloud);
    let cost = deployment.tandemn(&["cost", "--service-name", "story", "--json"]);
    let ran = status["replicas"].as_array().unwrap().len();
    assert_eq!(cost["spot_priced_by_placement"].as_u64(), Some(ran as u64), "priced at what SkyPilot chose: {cost}");
}

#[test]
fn a_killed_deploy_resumes_its_clusters_without_a_second_launch_or_a_billing_gap() {
    let cloud = Cloud::start();
    let home = tempfile::tempdir().unwrap();
    let home_path = home.path().to_path_buf();
    let mut deployment = cloud.deploy(home, 1);
    wait_for("a ready replica", Duration::from_secs(30), || replica_in(&deployment.status(), "ready").is_some());
    let adopted = replica_in(&deployment.status(), "ready").unwrap();

    // 1. SIGKILL with a ready replica, then deploy again: the cluster is adopted.
    deployment.child.kill().unwrap();
    deployment.child.wait().unwrap();
    assert_eq!(cloud.listed().len(), 1, "the cluster outlives the process");
    let mut deployment = cloud.deploy(std::mem::replace(&mut deployment.home, tempfile::tempdir().unwrap()), 1);
    assert_eq!(deployment.home.path(), home_path);
    wait_for("the adopted replica to be ready again", Duration::from_secs(30), || {
        replica_in(&deployment.status(), "ready").as_deref() == Some(adopted.as_str())
    });
    assert_eq!(cloud.fake.launches(&adopted), 1, "adopted, not launched again");
    assert_eq!(cloud.fake.clusters().len(), 1, "no second cluster");
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let client = client();
    wait_for("traffic on the adopted replica (it still takes the kept key)", Duration::from_secs(15), || {
        cloud.runtime.block_on(request(&client, &target, 2)).tier == "spot"
    });

    // 2. Stop it, with the cloud slow to take the cluster down, and SIGKILL it mid-termination.
    cloud.fake.hang(Duration::from_secs(60));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(deployment.child.id()).unwrap()),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    wait_for("the termination to be under way", Duration::from_secs(20), || {
        replica_in(&deployment.status(), "terminating").is_some()
    });
    deployment.child.kill().unwrap();
    deployment.child.wait().unwrap();
    cloud.fake.hang(Duration::ZERO);

    // 3. Deploy again: the termination finishes; min_replicas brings a new replica.
    let mut deployment = cloud.deploy(std::mem::replace(&mut deployment.home, tempfile::tempdir().unwrap()), 1);
    wait_for("the interrupted termination to finish", Duration::from_secs(30), || {
        let status = deployment.status();
        status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["replica"] == adopted.as_str() && r["phase"] == "terminated")
    });
    wait_for("a new replica to be ready", Duration::from_secs(30), || {
        replica_in(&deployment.status(), "ready").is_some_and(|name| name != adopted)
    });
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    deployment.child.wait().unwrap();
    assert!(cloud.listed().is_empty(), "{:?}", cloud.listed());
    let status = deployment.status();
    assert_eq!(cloud.fake.launches(&adopted), 1);
    // Billed from its first launch to its termination across both restarts, as the cloud billed it.
    bills_agree(&status, &cloud);
}

/// A deploy stopped while the cloud does not answer: the second SIGTERM ends it within
/// seconds, leaving its replica `terminating` (the cloud never said it was gone). Returns
/// the exited deploy and the replica.
fn stopped_while_the_cloud_hangs(cloud: &Cloud) -> (Deployment, String) {
    let mut deployment = cloud.deploy(tempfile::tempdir().unwrap(), 1);
    wait_for("a ready replica", Duration::from_secs(30), || replica_in(&deployment.status(), "ready").is_some());
    let replica = replica_in(&deployment.status(), "ready").unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(deployment.child.id()).unwrap());
    cloud.fake.hang(Duration::from_secs(3600));
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    wait_for("the drain to begin", Duration::from_secs(20), || replica_in(&deployment.status(), "ready").is_none());
    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    wait_for("the deploy to exit after the second signal", Duration::from_secs(10), || {
        deployment.child.try_wait().unwrap().is_some()
    });
    assert!(!deployment.child.wait().unwrap().success(), "a deploy that left a replica running says so");
    let status = deployment.status();
    assert_eq!(replica_in(&status, "terminating").as_deref(), Some(replica.as_str()), "{status}");
    cloud.fake.hang(Duration::ZERO);
    (deployment, replica)
}

#[test]
fn destroy_all_finds_the_cluster_a_stopped_deploy_could_not_take_down() {
    let cloud = Cloud::start();
    let (deployment, _) = stopped_while_the_cloud_hangs(&cloud);
    let destroyed = finishes(
        {
            let mut command = tandemn(deployment.home.path());
            command.args(["destroy", "--all"]).env("SKYPILOT_API_SERVER_ENDPOINT", cloud.fake.endpoint());
            command
        },
        Duration::from_secs(60),
    );
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    assert!(cloud.listed().is_empty(), "{:?}", cloud.listed());
    let status = deployment.status();
    assert!(live_replicas(&status).is_empty(), "{}: {status}", String::from_utf8_lossy(&destroyed.stdout));
    // Billed until `destroy` confirmed it gone (never less than the cloud billed).
    let row = &status["replicas"][0];
    let ours = row["ended_at_ms"].as_u64().unwrap() - row["launched_at_ms"].as_u64().unwrap();
    let theirs = cloud.fake.clusters()[0].billed_ms;
    assert!(ours + 1_000 >= theirs, "billed {ours} ms, the cloud {theirs} ms");
}

#[test]
fn the_next_deploy_finishes_a_termination_the_last_one_left_and_keeps_its_bill() {
    let cloud = Cloud::start();
    let (mut deployment, replica) = stopped_while_the_cloud_hangs(&cloud);
    let deployment = cloud.deploy(std::mem::replace(&mut deployment.home, tempfile::tempdir().unwrap()), 1);
    wait_for("the left termination to finish", Duration::from_secs(30), || {
        deployment.status()["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["replica"] == replica.as_str() && r["phase"] == "terminated")
    });
    assert_eq!(cloud.fake.launches(&replica), 1);
}
