//! Conformance of the SkyPilot client and provider against the real SkyPilot API server
//! (0.14.1, with moto as its AWS endpoint, all on loopback), started by the sandbox
//! harness. Checks the protocol: health and version, `/validate` of every golden task,
//! the real optimizer's dry run, `/status`, `/endpoints`, `/down`, `/api/get`, and the
//! error classification of the server's real answers. Never launches for real (moto's
//! instances have non-loopback addresses SkyPilot would SSH to); the launch-to-preempt
//! story is tested against the loopback fake instead.
//!
//! Without the sandbox's venv (`scripts/setup` makes it) each test says so and passes.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

// TEMPORARY stand-in for the sandbox harness (replaced when branch `sandbox` lands).
mod sandbox {
    pub struct Sandbox(String);
    impl Sandbox {
        pub fn endpoint(&self) -> String {
            self.0.clone()
        }
    }
    pub fn start() -> Option<Sandbox> {
        let Ok(dir) = std::env::var("SKY_SANDBOX_DIR") else {
            eprintln!("skipped: SKY_SANDBOX_DIR names no running `scripts/skypilot-sandbox start DIR`");
            return None;
        };
        let env = std::fs::read_to_string(format!("{dir}/env")).ok()?;
        env.lines().find_map(|l| l.strip_prefix("SKYPILOT_API_SERVER_ENDPOINT=")).map(|e| Sandbox(e.to_string()))
    }
}

use std::time::Duration;

use tandemn_config::api::Secret;
use tandemn_provisioner::provider::{ProviderError, ReplicaId, ReplicaRef, ReplicaStatus, SpotProvider};
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

/// One test function runs everything against one server: a start costs 10-40 s here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_skypilot_server_speaks_our_protocol() {
    let Some(sandbox) = sandbox::start() else { return };
    let client = SkyClient::new(&sandbox.endpoint(), None).unwrap();

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
