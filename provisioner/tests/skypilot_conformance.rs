//! Conformance of the SkyPilot client and provider against the real SkyPilot API server
//! (0.14.1, with moto as its AWS endpoint, all on loopback), started by the sandbox
//! harness. Checks the protocol: health and version, `/validate` of every golden task,
//! the real optimizer's dry run, `/status`, `/endpoints`, `/down`, `/api/get`, and the
//! error classification of the server's real answers. Never launches for real (moto's
//! instances have non-loopback addresses SkyPilot would SSH to); the launch-to-preempt
//! story is tested against the loopback fake instead.
//!
//! Without the sandbox's venv (`scripts/setup` makes it) the test says so and passes,
//! unless `TANDEMN_REQUIRE_SKYPILOT` is set (CI), when it fails.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

#[path = "support/sky_sandbox.rs"]
mod sky_sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sky_sandbox::SkySandbox;

use tandemn_config::api::Secret;
use tandemn_provisioner::provider::{Placement, ProviderError, ReplicaId, ReplicaRef, ReplicaStatus, SpotProvider};
use tandemn_provisioner::skypilot::client::{MIN_API_VERSION, Refresh, RequestId, RequestState, SkyClient};
use tandemn_provisioner::skypilot::{SkyPilotSettings, SkyPilotSpot, check};

const TEST_KEY: &str = "TEST-REPLICA-KEY-not-a-secret";

fn settings() -> SkyPilotSettings {
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
        replica_key: Secret::new(TEST_KEY),
    }
}

fn id(name: &str) -> ReplicaId {
    ReplicaId::parse(name).unwrap()
}

/// The golden task files, as sent.
fn goldens() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/skypilot/testdata");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "golden files in {}", dir.display());
    files.into_iter().map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// Test-only cloud events, run with the sandbox's own Python (provider-validation.md §1.6):
/// `seed NAME` starts a tagged spot g6.xlarge in moto and registers it with SkyPilot as an
/// UP cluster whose head is 127.0.0.2 (what a finished launch leaves, without SSH to a
/// fake address); `terminate`/`stop NAME` do to its instance what a spot reclaim does;
/// `state NAME` prints the instance's EC2 state.
const CLOUD_EVENTS: &str = r#"
import os, sys
import boto3
command, name = sys.argv[1], sys.argv[2]
on_cloud, region = name + '-2ea4', 'us-east-2'
ec2 = boto3.client('ec2', region_name=region)
def instance_ids():
    found = ec2.describe_instances(Filters=[{'Name': 'tag:ray-cluster-name', 'Values': [on_cloud]}])
    return [i['InstanceId'] for r in found['Reservations'] for i in r['Instances']]
if command == 'seed':
    group = 'sky-sg-' + on_cloud
    ec2.create_security_group(GroupName=group, Description='sandbox')
    ec2.run_instances(ImageId='ami-785db401', InstanceType='g6.xlarge', MinCount=1, MaxCount=1,
        InstanceMarketOptions={'MarketType': 'spot'}, SecurityGroups=[group],
        Placement={'AvailabilityZone': region + 'a'},
        TagSpecifications=[{'ResourceType': 'instance', 'Tags': [
            {'Key': 'ray-cluster-name', 'Value': on_cloud}, {'Key': 'skypilot-cluster-name', 'Value': on_cloud},
            {'Key': 'ray-node-type', 'Value': 'head'}]}])
    import yaml
    from sky import global_user_state, resources as resources_lib
    from sky.backends import cloud_vm_ray_backend
    config = {'cluster_name': on_cloud, 'provider': {'type': 'external', 'module': 'sky.provision.aws',
        'region': region, 'availability_zone': region + 'a',
        'security_group': {'GroupName': group, 'ManagedBySkyPilot': True}},
        'auth': {'ssh_user': 'ubuntu', 'ssh_private_key': '~/.ssh/sky-key'}}
    path = os.path.expanduser('~/.sky/generated/' + name + '.yml')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    text = yaml.safe_dump(config)
    with open(path, 'w') as f:
        f.write(text)
    global_user_state.set_cluster_yaml(path, text)
    res = resources_lib.Resources(infra='aws/' + region, instance_type='g6.xlarge', accelerators={'L4': 1},
        use_spot=True, ports=['8000']).copy(zone=region + 'a')
    handle = cloud_vm_ray_backend.CloudVmRayResourceHandle(cluster_name=name, cluster_name_on_cloud=on_cloud,
        cluster_yaml=path, launched_nodes=1, launched_resources=res,
        stable_internal_external_ips=[('127.0.0.2', '127.0.0.2')], stable_ssh_ports=[22])
    global_user_state.add_or_update_cluster(name, handle, requested_resources={res}, ready=True)
elif command == 'terminate':
    ec2.terminate_instances(InstanceIds=instance_ids())
elif command == 'stop':
    ec2.stop_instances(InstanceIds=instance_ids())
elif command == 'state':
    found = ec2.describe_instances(InstanceIds=instance_ids())
    print(' '.join(i['State']['Name'] for r in found['Reservations'] for i in r['Instances']))
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs [`CLOUD_EVENTS`] with the sandbox's venv and environment (nothing leaves loopback).
fn cloud_event(sandbox: &SkySandbox, command: &str, name: &str) -> String {
    let venv = Command::new(repo_root().join("scripts/skypilot-sandbox")).arg("venv").output().unwrap();
    assert!(venv.status.success(), "skypilot-sandbox venv: {}", String::from_utf8_lossy(&venv.stderr));
    let venv = PathBuf::from(String::from_utf8(venv.stdout).unwrap().trim());
    let blackhole = "http://127.0.0.1:9";
    let out = Command::new(venv.join("bin/python"))
        .args(["-c", CLOUD_EVENTS, command, name])
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", venv.join("bin").display()))
        .env("HOME", sandbox.dir().join("home"))
        .env("AWS_ENDPOINT_URL", sandbox.aws_endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_DEFAULT_REGION", "us-east-2")
        .env("SKYPILOT_DISABLE_USAGE_COLLECTION", "1")
        .envs([("HTTP_PROXY", blackhole), ("HTTPS_PROXY", blackhole), ("ALL_PROXY", blackhole)])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .unwrap();
    assert!(out.status.success(), "cloud event {command} {name}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The replica's status once it is no longer Running: a refresh within 2 s of the last
/// one answers from SkyPilot's cache (`CLUSTER_STATUS_CACHE_DURATION_SECONDS`), so a
/// cloud event shows within a few seconds, not at once. Bounded.
async fn settle(spot: &SkyPilotSpot, replica: &ReplicaRef) -> ReplicaStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = spot.status(replica).await.unwrap();
        if !matches!(status, ReplicaStatus::Running { .. }) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "{} still {status:?} after 30 s", replica.id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One test function runs everything against one server: a start costs 10-40 s here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_skypilot_server_speaks_our_protocol() {
    let Some(sandbox) = SkySandbox::start() else { return };
    let client = SkyClient::new(sandbox.endpoint(), None).unwrap();

    // Health and version.
    let info = client.health().await.unwrap();
    assert!(info.api_version >= MIN_API_VERSION, "{info:?}");
    assert_eq!(info.version, "0.14.1");

    // `tandemn check`'s view: reachable, AWS enabled (through moto), no problem.
    let report = check(&client).await;
    assert!(report.reachable && report.aws_enabled == Some(true) && report.problem.is_none(), "{report}");
    assert_eq!(report.api_version, Some(info.api_version));

    // Every golden task passes the server's schema; a typo is refused with its hint.
    for (file, yaml) in goldens() {
        client.validate(&yaml).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    let (_, default) = &goldens()[0];
    let typo = default.replace("use_spot:", "use_spotz:");
    let error = client.validate(&typo).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Invalid(m) if m.contains("did you mean 'use_spot'")), "{error:?}");
    let region = default.replace("cloud: aws", "cloud: aws\n  region: us-west-9");
    let error = client.validate(&region).await.unwrap_err();
    assert!(matches!(&error, ProviderError::Invalid(m) if m.contains("us-west-9") && !m.contains('\n')), "{error:?}");

    // Nothing runs yet.
    assert_eq!(client.status(None, Refresh::Auto).await.unwrap(), vec![]);

    // A dry run through the real optimizer picks a spot g6.xlarge for one L4.
    let spot = SkyPilotSpot::new(client.clone(), settings()).unwrap();
    let spec = spot.replica_spec("conf", id("conf-dry-1"));
    let log = spot.dry_run(&spec).await.unwrap();
    assert!(log.contains("g6.xlarge[Spot]") && log.contains("Dryrun finished"), "{log}");
    assert!(!log.contains(TEST_KEY));
    // ... and eight L4s on one instance do not exist: no capacity, in the catalog's words,
    // and a replica whose launch request failed that way is Failed with that reason.
    let mut eight = spot.replica_spec("conf", id("conf-dry-2"));
    eight.gpu_count = 8;
    let yaml = tandemn_provisioner::skypilot::task::render(&spot.task(&eight).unwrap());
    let request = client.launch(&eight.id, &yaml, true).await.unwrap();
    let error = client.get(&request, Duration::from_secs(120)).await.unwrap_err();
    assert!(matches!(&error, ProviderError::NoCapacity(m) if m.contains("'L4': 8")), "{error:?}");
    let info = client.request_status(&request).await.unwrap().expect("the server knows its request");
    assert!(info.is_launch() && info.status == RequestState::Failed, "{info:?}");
    assert_eq!(info.cluster_name.as_deref(), Some("conf-dry-2"));
    let failed = ReplicaRef {
        id: eight.id.clone(),
        launched_ms: 1,
        data: serde_json::json!({"cluster": "conf-dry-2", "launch_request": request.as_str()}),
    };
    let status = spot.status(&failed).await.unwrap();
    assert!(
        matches!(&status, ReplicaStatus::Failed { reason, at_ms } if reason.contains("ResourcesUnavailableError") && *at_ms > 1),
        "{status:?}"
    );
    // A dry run creates no cluster.
    assert_eq!(client.status(None, Refresh::Auto).await.unwrap(), vec![]);

    // A missing cluster: down is done, its endpoint is not found, the provider sees nothing.
    let missing = id("conf-missing-1");
    client.down(&missing, Duration::from_secs(60)).await.unwrap();
    let error = client.endpoint(&missing, 8000).await.unwrap_err();
    assert!(matches!(&error, ProviderError::NotFound(m) if m.contains("conf-missing-1")), "{error:?}");
    let reference = ReplicaRef { id: missing.clone(), launched_ms: 1, data: serde_json::Value::Null };
    assert_eq!(spot.status(&reference).await.unwrap(), ReplicaStatus::NotFound);
    assert!(spot.terminate(&reference).await.is_ok());
    assert!(spot.list("conf").await.unwrap().is_empty());
    // What terminate sends to cancel a launch still under way is accepted (the dry run's
    // request has finished: nothing is cancelled).
    client.cancel(std::slice::from_ref(&request)).await.unwrap();

    // A cluster as a finished launch leaves it (seeded: a real launch would SSH to moto's
    // fake addresses): /status parses, /endpoints gives the address, placement is priced.
    let seeded = id("conf-seed-1");
    cloud_event(&sandbox, "seed", seeded.as_str());
    let adopted = ReplicaRef { id: seeded.clone(), launched_ms: 1, data: serde_json::Value::Null };
    let placement = Some(Placement { instance_type: "g6.xlarge".into(), region: "us-east-2".into(), spot: true });
    assert_eq!(
        spot.status(&adopted).await.unwrap(),
        ReplicaStatus::Running { url: "http://127.0.0.2:8000".into(), placement: placement.clone() }
    );
    let listed = spot.list("conf").await.unwrap();
    assert_eq!(listed.iter().map(|l| &l.id).collect::<Vec<_>>(), vec![&seeded]);
    let launched_s = listed[0].reference.launched_ms / 1000;
    let now_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(launched_s + 600 > now_s && launched_s <= now_s, "launched_ms {}", listed[0].reference.launched_ms);
    // A launch of an existing cluster launches nothing (SkyPilot would rerun the task).
    let again = spot.launch(&spot.replica_spec("conf", seeded.clone())).await.unwrap();
    assert_eq!(again.data["launch_request"], serde_json::Value::Null, "{:?}", again.data);
    assert_eq!(
        spot.status(&again).await.unwrap(),
        ReplicaStatus::Running { url: "http://127.0.0.2:8000".into(), placement }
    );

    // A spot reclaim (the instance terminated in the cloud): gone at the next refresh.
    cloud_event(&sandbox, "terminate", seeded.as_str());
    assert_eq!(settle(&spot, &adopted).await, ReplicaStatus::NotFound);
    let error = client.endpoint(&seeded, 8000).await.unwrap_err();
    assert!(matches!(error, ProviderError::NotFound(_)), "{error:?}");
    assert!(spot.terminate(&adopted).await.is_ok());
    assert!(spot.list("conf").await.unwrap().is_empty());

    // A stopped spot instance: STOPPED at the next refresh, Preempted; terminate really
    // tears it down in the cloud.
    let stopped = id("conf-seed-2");
    cloud_event(&sandbox, "seed", stopped.as_str());
    let reference = ReplicaRef { id: stopped.clone(), launched_ms: 1, data: serde_json::Value::Null };
    assert!(matches!(spot.status(&reference).await.unwrap(), ReplicaStatus::Running { .. }));
    cloud_event(&sandbox, "stop", stopped.as_str());
    let status = settle(&spot, &reference).await;
    assert!(matches!(status, ReplicaStatus::Preempted { at_ms } if at_ms > 1), "{status:?}");
    assert!(spot.terminate(&reference).await.unwrap() > 1);
    assert_eq!(cloud_event(&sandbox, "state", stopped.as_str()), "terminated");
    assert_eq!(spot.status(&reference).await.unwrap(), ReplicaStatus::NotFound);
    assert_eq!(client.status(None, Refresh::Auto).await.unwrap(), vec![]);

    // An id the server never gave: not found.
    let error = client.get(&RequestId::parse("deadbeef").unwrap(), Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(&error, ProviderError::NotFound(m) if m.contains("deadbeef")), "{error:?}");

    // A bad cluster name never reaches the server: it cannot be made into a ReplicaId,
    // nor read back from a stored reference.
    assert!(ReplicaId::parse("Tandemn_R1!").is_err());
    assert!(serde_json::from_value::<ReplicaRef>(serde_json::json!({"id": "Tandemn_R1!", "launched_ms": 1})).is_err());
    let tampered = ReplicaRef { data: serde_json::json!({"cluster": "Tandemn_R1!"}), ..reference };
    assert!(matches!(spot.status(&tampered).await, Err(ProviderError::Invalid(_))));
}
