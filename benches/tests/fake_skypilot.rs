//! The fake SkyPilot API server driven over plain HTTP, as Tandemn's client drives the
//! real one: the async-request envelope, `/api/get` blocking and failing in the real
//! shapes, clusters that are real mock-vllm processes (boot, serve with the replica
//! key, preemption seen only after a refresh, stop, down), bad input, the token, the
//! injected faults, and the fake's own bill.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tandemn_bench::fakes::skypilot::{ClusterRecord, FakeConfig, FakeSkyPilot, InstanceStatus};
use tempfile::TempDir;

const KEY: &str = "replica-key-0f9e";

fn config(logs: &TempDir) -> FakeConfig {
    FakeConfig {
        engine: vec![env!("CARGO_BIN_EXE_mock-vllm").into()],
        provision_delay: Duration::from_millis(300),
        engine_boot: Duration::from_millis(300),
        log_dir: logs.path().to_path_buf(),
        ..FakeConfig::default()
    }
}

async fn start() -> (FakeSkyPilot, Client, TempDir) {
    let logs = tempfile::tempdir().unwrap();
    let fake = FakeSkyPilot::start(config(&logs)).await.unwrap();
    let client = Client::new(&fake, None);
    (fake, client, logs)
}

/// The replica task as Tandemn renders it: the key travels as a secret.
fn replica(gpu: &str) -> String {
    format!(
        "resources:\n  cloud: aws\n  accelerators: {gpu}\n  use_spot: true\n  ports: 8000\n  disk_size: 100\n\
         secrets:\n  VLLM_API_KEY: {KEY}\n\
         run: |\n  vllm serve Qwen/Qwen3-0.6B --port 8000 --max-model-len 4096\n"
    )
}

/// A SkyPilot REST client as small as the provider's.
struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// A finished request: `Ok(return_value parsed)` or `Err((type, message))`.
type Outcome = Result<Value, (String, String)>;

impl Client {
    fn new(fake: &FakeSkyPilot, token: Option<&str>) -> Self {
        Self { http: reqwest::Client::new(), base: fake.endpoint(), token: token.map(str::to_string) }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// A POST of the async kind: `200 null` and the server's request id.
    async fn submit(&self, path: &str, body: Value) -> String {
        let response = self.post(path, body).await;
        assert_eq!(response.status(), 200, "{path}");
        let id = response.headers()["x-skypilot-request-id"].to_str().unwrap().to_string();
        assert_eq!(response.text().await.unwrap(), "null");
        id
    }

    /// A GET of the async kind (`/enabled_clouds`).
    async fn submit_get(&self, path: &str) -> String {
        let response = self.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        response.headers()["x-skypilot-request-id"].to_str().unwrap().to_string()
    }

    /// `/api/get`: blocks until done; checks the payload's shape either way.
    async fn wait(&self, id: &str) -> Outcome {
        let response = self.get(&format!("/api/get?request_id={id}")).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        match status {
            StatusCode::OK => {
                assert_eq!(body["status"], "SUCCEEDED", "{body}");
                assert_eq!(body["error"], "null", "on success `error` is the string \"null\"");
                Ok(serde_json::from_str(body["return_value"].as_str().unwrap()).unwrap())
            }
            StatusCode::INTERNAL_SERVER_ERROR => {
                let detail = &body["detail"];
                assert_eq!(detail["status"], "FAILED", "{body}");
                assert_eq!(detail["return_value"], "null");
                let error: Value = serde_json::from_str(detail["error"].as_str().unwrap()).unwrap();
                assert!(error["object"].as_str().is_some_and(|o| !o.is_empty()), "{error}");
                Err((error["type"].as_str().unwrap().to_string(), error["message"].as_str().unwrap().to_string()))
            }
            other => panic!("/api/get answered {other}: {body}"),
        }
    }

    async fn call(&self, path: &str, body: Value) -> Outcome {
        let id = self.submit(path, body).await;
        self.wait(&id).await
    }

    async fn launch(&self, name: &str, task: &str) -> Outcome {
        self.call("/launch", json!({"task": task, "cluster_name": name})).await
    }

    async fn status(&self, name: &str, refresh: &str) -> Vec<Value> {
        let body = json!({"cluster_names": [name], "refresh": refresh, "include_credentials": false,
                          "include_handle": false});
        self.call("/status", body).await.unwrap().as_array().unwrap().clone()
    }

    async fn endpoints(&self, name: &str) -> Outcome {
        self.call("/endpoints", json!({"cluster": name, "port": 8000})).await
    }

    async fn down(&self, name: &str) -> Outcome {
        self.call("/down", json!({"cluster_name": name})).await
    }

    /// Polls `/status` (bounded) until the cluster is listed; returns its record.
    async fn listed(&self, name: &str) -> Value {
        for _ in 0..400 {
            if let Some(record) = self.status(name, "NONE").await.first() {
                return record.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("cluster {name} was never listed");
    }
}

fn failure_type(outcome: Outcome) -> String {
    outcome.unwrap_err().0
}

/// Polls (bounded) until `ready` holds; panics with `what` otherwise.
async fn eventually<F, Fut>(what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..400 {
        if ready().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never happened: {what}");
}

async fn process_gone(pid: u32) {
    let proc = &format!("/proc/{pid}");
    eventually(&format!("process {pid} gone"), || async move { !Path::new(proc).exists() }).await;
}

fn only_record(fake: &FakeSkyPilot, name: &str) -> ClusterRecord {
    let mut records: Vec<_> = fake.clusters().into_iter().filter(|c| c.name == name).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

#[tokio::test]
async fn health_and_enabled_clouds_answer_the_real_shapes() {
    let (_fake, client, _logs) = start().await;
    let health: Value = client.get("/api/health").await.json().await.unwrap();
    assert_eq!(
        (&health["status"], &health["api_version"], &health["version"]),
        (&json!("healthy"), &json!("62"), &json!("0.14.1"))
    );
    let id = client.submit_get("/enabled_clouds").await;
    assert_eq!(client.wait(&id).await.unwrap(), json!(["AWS"]));
}

#[tokio::test]
async fn a_launch_boots_an_engine_that_serves_with_the_replica_key_and_is_reused() {
    let (fake, client, _logs) = start().await;
    let id = client.submit("/launch", json!({"task": replica("L4:1"), "cluster_name": "tdm-r1"})).await;

    // While provisioning: the request runs and the cluster shows INIT.
    let running: Value = client.get(&format!("/api/status?request_ids={id}")).await.json().await.unwrap();
    assert!(matches!(running[0]["status"].as_str(), Some("PENDING" | "RUNNING")), "{running}");
    assert_eq!(running[0]["name"], "sky.launch");
    assert_eq!(client.listed("tdm-r1").await["status"], "INIT");

    let launched = client.wait(&id).await.unwrap();
    assert_eq!(launched["job_id"], 1);
    assert!(launched["handle"].as_str().is_some_and(|h| !h.is_empty()));
    let done: Value = client.get(&format!("/api/status?request_ids={}", &id[..8])).await.json().await.unwrap();
    assert_eq!(done[0]["status"], "SUCCEEDED");

    let record = &client.status("tdm-r1", "AUTO").await[0];
    assert_eq!(
        (&record["status"], &record["cloud"], &record["region"]),
        (&json!("UP"), &json!("AWS"), &json!("us-east-2"))
    );
    assert_eq!(record["resources_str"], "1x[spot](gpus=L4:1, g6.xlarge, cpus=4, mem=16, disk=100)");
    assert_eq!((&record["autostop"], &record["to_down"], &record["nodes"]), (&json!(-1), &json!(false), &json!(1)));
    assert!(record["cluster_name_on_cloud"].as_str().unwrap().starts_with("tdm-r1-"));
    assert_eq!(record["last_event"], "All nodes up; SkyPilot runtime healthy.");
    let launched_at = record["launched_at"].as_u64().unwrap();

    let endpoints = client.endpoints("tdm-r1").await.unwrap();
    let address = endpoints["8000"].as_str().unwrap().to_string();
    assert!(address.starts_with("127.0.0.1:") && !address.contains("://"), "host:port, no scheme: {address}");
    let engine = &format!("http://{address}");
    let http = &reqwest::Client::new();
    eventually("the engine has booted", || async move {
        http.get(format!("{engine}/health")).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    let chat = json!({"model": "Qwen/Qwen3-0.6B", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    let answer = http.post(format!("{engine}/v1/chat/completions")).bearer_auth(KEY).json(&chat).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["model"], "Qwen/Qwen3-0.6B");
    let keyless = http.post(format!("{engine}/v1/chat/completions")).json(&chat).send().await.unwrap();
    assert_eq!(keyless.status(), 401);

    let bill = only_record(&fake, "tdm-r1");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", bill.pid.unwrap())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(KEY), "the key is never on a command line");
    assert_eq!((bill.status, bill.instance_type.as_str(), bill.spot), (InstanceStatus::Up, "g6.xlarge", true));
    assert!(bill.launched_at_ms / 1000 == launched_at, "{} vs {launched_at}", bill.launched_at_ms);

    // `sky launch` of an existing cluster reuses it: same process, one more launch.
    let again = client.launch("tdm-r1", &replica("L4:1")).await.unwrap();
    assert_eq!(again["job_id"], 2);
    let reused = only_record(&fake, "tdm-r1");
    assert_eq!((reused.pid, reused.launches), (bill.pid, 2));
    assert_eq!(fake.launches("tdm-r1"), 2);
}

#[tokio::test]
async fn a_preemption_shows_only_after_a_refresh_and_the_cluster_is_gone() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-p1", &replica("L4:1")).await.unwrap();
    let pid = only_record(&fake, "tdm-p1").pid.unwrap();

    let preempted: ClusterRecord =
        client.post("/fake/preempt", json!({"cluster": "tdm-p1"})).await.json().await.unwrap();
    assert_eq!(preempted.status, InstanceStatus::Terminated);
    process_gone(pid).await;
    assert_eq!(client.status("tdm-p1", "NONE").await[0]["status"], "UP", "without a refresh the cache still says UP");
    assert!(client.status("tdm-p1", "AUTO").await.is_empty(), "a refresh finds the spot cluster gone");

    let (kind, message) = client.endpoints("tdm-p1").await.unwrap_err();
    assert_eq!((kind.as_str(), message.as_str()), ("ClusterNotUpError", "Cluster 'tdm-p1' not found."));
    let (kind, message) = client.down("tdm-p1").await.unwrap_err();
    assert_eq!((kind.as_str(), message.as_str()), ("ClusterDoesNotExist", "Cluster 'tdm-p1' does not exist."));

    let bill = only_record(&fake, "tdm-p1");
    assert!(!bill.listed);
    let terminated = bill.terminated_at_ms.unwrap();
    assert_eq!(bill.billed_ms, terminated - bill.launched_at_ms, "billed from launch to the preemption");

    // The name launches again as a new instance with a bill of its own.
    client.launch("tdm-p1", &replica("L4:1")).await.unwrap();
    let records: Vec<_> = fake.clusters().into_iter().filter(|c| c.name == "tdm-p1").collect();
    assert_eq!(records.len(), 2);
    assert_eq!((records[1].status, records[1].launches), (InstanceStatus::Up, 1));
    assert_ne!(records[0].pid, records[1].pid);
    assert_eq!(records[0].billed_ms, bill.billed_ms, "a terminated instance bills no more");
}

#[tokio::test]
async fn endpoints_before_a_refresh_see_a_preempted_cluster_is_not_up() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-p2", &replica("A10G:1")).await.unwrap();
    fake.preempt("tdm-p2").await.unwrap();
    let (kind, message) = client.endpoints("tdm-p2").await.unwrap_err();
    assert_eq!(kind, "ClusterNotUpError");
    assert!(message.contains("not found on the cloud provider") && message.contains('\u{1b}'), "{message}");
    assert!(client.status("tdm-p2", "NONE").await.is_empty(), "/endpoints refreshed the record away");
}

#[tokio::test]
async fn a_stopped_cluster_shows_stopped_after_a_refresh_and_can_be_torn_down() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-s1", &replica("T4:1")).await.unwrap();
    let pid = only_record(&fake, "tdm-s1").pid.unwrap();
    let stopped = client.post("/fake/stop", json!({"cluster": "tdm-s1"})).await;
    assert_eq!(stopped.status(), 200);
    process_gone(pid).await;

    assert_eq!(client.status("tdm-s1", "NONE").await[0]["status"], "UP");
    let record = &client.status("tdm-s1", "FORCE").await[0];
    assert_eq!(record["status"], "STOPPED");
    assert_eq!(record["last_event"], "All nodes stopped, cleaning up the cluster.");
    assert_eq!(failure_type(client.endpoints("tdm-s1").await), "ClusterNotUpError");
    assert_eq!(failure_type(client.launch("tdm-s1", &replica("T4:1")).await), "NotSupportedError");

    assert_eq!(client.down("tdm-s1").await.unwrap(), Value::Null);
    let bill = only_record(&fake, "tdm-s1");
    assert_eq!((bill.status, bill.listed), (InstanceStatus::Terminated, false));
    assert_eq!(
        bill.billed_ms,
        bill.stopped_at_ms.unwrap() - bill.launched_at_ms,
        "a stopped instance bills no compute"
    );
    let again = client.post("/fake/stop", json!({"cluster": "tdm-s1"})).await;
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn down_kills_the_engine_and_forgets_the_cluster() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-d1", &replica("L40S:1")).await.unwrap();
    let pid = only_record(&fake, "tdm-d1").pid.unwrap();
    assert_eq!(client.down("tdm-d1").await.unwrap(), Value::Null);
    process_gone(pid).await;
    assert!(client.status("tdm-d1", "NONE").await.is_empty());
    assert_eq!(failure_type(client.down("tdm-d1").await), "ClusterDoesNotExist");
    let bill = only_record(&fake, "tdm-d1");
    assert_eq!((bill.status, bill.instance_type.as_str()), (InstanceStatus::Terminated, "g6e.xlarge"));
    assert!(bill.terminated_at_ms.unwrap() >= bill.launched_at_ms);
}

#[tokio::test]
async fn a_down_during_provisioning_fails_the_launch_and_starts_no_engine() {
    let logs = tempfile::tempdir().unwrap();
    let fake =
        FakeSkyPilot::start(FakeConfig { provision_delay: Duration::from_secs(2), ..config(&logs) }).await.unwrap();
    let client = Client::new(&fake, None);
    let launch = client.submit("/launch", json!({"task": replica("L4:1"), "cluster_name": "tdm-d2"})).await;
    client.listed("tdm-d2").await;
    assert_eq!(client.down("tdm-d2").await.unwrap(), Value::Null);
    assert_eq!(failure_type(client.wait(&launch).await), "ClusterDoesNotExist");
    let bill = only_record(&fake, "tdm-d2");
    assert_eq!((bill.status, bill.pid), (InstanceStatus::Terminated, None));
}

#[tokio::test]
async fn a_cancelled_launch_is_taken_over_by_the_next_one() {
    let logs = tempfile::tempdir().unwrap();
    let fake =
        FakeSkyPilot::start(FakeConfig { provision_delay: Duration::from_secs(1), ..config(&logs) }).await.unwrap();
    let client = Client::new(&fake, None);
    let launch = client.submit("/launch", json!({"task": replica("L4:1"), "cluster_name": "tdm-c1"})).await;
    client.listed("tdm-c1").await;
    let cancelled = client.call("/api/cancel", json!({"request_ids": [launch]})).await.unwrap();
    assert_eq!(cancelled, json!([launch]));
    let payload: Value = client.get(&format!("/api/get?request_id={launch}")).await.json().await.unwrap();
    assert_eq!(payload["status"], "CANCELLED");

    assert_eq!(client.launch("tdm-c1", &replica("L4:1")).await.unwrap()["job_id"], 2);
    let bill = only_record(&fake, "tdm-c1");
    assert_eq!((bill.status, bill.launches), (InstanceStatus::Up, 2));
}

#[tokio::test]
async fn bad_input_fails_as_the_real_server_fails() {
    let (fake, client, _logs) = start().await;
    let (kind, message) = client.launch("Tandemn_R1!", &replica("L4:1")).await.unwrap_err();
    assert_eq!(kind, "InvalidClusterNameError");
    assert!(message.contains("\u{1b}[1m"), "messages carry ANSI escapes like the real ones: {message:?}");

    let missing = client.post("/launch", json!({"task": replica("L4:1")})).await;
    assert_eq!(missing.status(), 422);
    let detail: Value = missing.json().await.unwrap();
    assert_eq!(detail["detail"][0]["loc"], json!(["body", "cluster_name"]));
    assert_eq!(detail["detail"][0]["type"], "missing");
    let not_json = client.http.post(format!("{}/status", client.base)).body("{").send().await.unwrap();
    assert_eq!(not_json.status(), 422);

    let unknown = client.get("/api/get?request_id=deadbeef").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(unknown.json::<Value>().await.unwrap(), json!({"detail": "Request 'deadbeef' not found"}));

    let typo = replica("L4:1").replace("use_spot", "use_spotz");
    let (kind, message) = client.launch("tdm-b1", &typo).await.unwrap_err();
    assert_eq!(kind, "InvalidSkyPilotConfigError");
    assert!(message.contains("did you mean 'use_spot'"), "{message}");
    assert_eq!(failure_type(client.launch("tdm-b1", &replica("FOO:1")).await), "ResourcesUnavailableError");
    let dry = client.call("/launch", json!({"task": replica("L4:1"), "cluster_name": "tdm-b1", "dryrun": true})).await;
    assert_eq!(dry.unwrap()["job_id"], Value::Null);
    assert!(fake.clusters().is_empty(), "neither a refused launch nor a dry run makes a cluster");

    let refresh = client.post("/status", json!({"refresh": "SOMETIMES"})).await;
    assert_eq!(refresh.status(), 422);
    assert_eq!(refresh.json::<Value>().await.unwrap()["detail"][0]["type"], "enum");
}

#[tokio::test]
async fn validate_is_synchronous_and_checks_the_schema_only() {
    let (_fake, client, _logs) = start().await;
    let validate = |dag: String| client.post("/validate", json!({"dag": dag, "request_options": null}));
    let ok = validate(replica("L4:1")).await;
    assert_eq!((ok.status(), ok.text().await.unwrap()), (StatusCode::OK, "null".to_string()));
    assert_eq!(validate(replica("FOO:1")).await.status(), 200, "like the real one, no catalog check");
    let bad = validate(replica("L4:1").replace("ports: 8000", "ports: eighty")).await;
    assert_eq!(bad.status(), 400);
    let detail = bad.json::<Value>().await.unwrap()["detail"].clone();
    assert_eq!(detail["type"], "ValueError");
    assert!(detail["message"].as_str().unwrap().contains("Invalid port range eighty"), "{detail}");
    let no_options = client.post("/validate", json!({"dag": replica("L4:1")})).await;
    assert_eq!(no_options.status(), 422);
}

#[tokio::test]
async fn a_configured_token_guards_every_route_but_health() {
    let logs = tempfile::tempdir().unwrap();
    let fake = FakeSkyPilot::start(FakeConfig { token: Some("sky_test".into()), ..config(&logs) }).await.unwrap();
    let anonymous = Client::new(&fake, None);
    let wrong = Client::new(&fake, Some("sky_other"));
    assert_eq!(anonymous.get("/api/health").await.status(), 200);
    for client in [&anonymous, &wrong] {
        assert_eq!(client.post("/status", json!({})).await.status(), 401);
        assert_eq!(client.get("/api/get?request_id=x").await.status(), 401);
        assert_eq!(client.get("/fake/clusters").await.status(), 401);
    }
    let refused = anonymous.post("/launch", json!({})).await;
    assert_eq!(refused.json::<Value>().await.unwrap(), json!({"detail": "Invalid or expired service account token"}));
    let authorized = Client::new(&fake, Some("sky_test"));
    assert_eq!(authorized.call("/status", json!({"cluster_names": null})).await.unwrap(), json!([]));
}

#[tokio::test]
async fn injected_launch_failures_come_first_then_launches_succeed() {
    let (fake, client, _logs) = start().await;
    let body = json!({"count": 2, "type": "ResourcesUnavailableError", "message": "No spot capacity in us-east-2."});
    assert_eq!(client.post("/fake/fail_launches", body).await.status(), 200);
    for _ in 0..2 {
        let (kind, message) = client.launch("tdm-f1", &replica("L4:1")).await.unwrap_err();
        assert_eq!((kind.as_str(), message.as_str()), ("ResourcesUnavailableError", "No spot capacity in us-east-2."));
    }
    assert!(fake.clusters().is_empty(), "a refused launch bills nothing");
    client.launch("tdm-f1", &replica("L4:1")).await.unwrap();
    assert_eq!(fake.launches("tdm-f1"), 1);
}

#[tokio::test]
async fn a_hang_delays_every_api_get() {
    let (_fake, client, _logs) = start().await;
    assert_eq!(client.post("/fake/hang", json!({"seconds": 0.6})).await.status(), 200);
    let id = client.submit("/status", json!({})).await;
    let started = Instant::now();
    client.wait(&id).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
    client.post("/fake/hang", json!({"seconds": 0})).await;
    let started = Instant::now();
    client.call("/status", json!({})).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(600), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_bill_lists_every_cluster_over_http_too() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-b2", &replica("L4:1")).await.unwrap();
    let listed: Vec<ClusterRecord> = client.get("/fake/clusters").await.json().await.unwrap();
    assert_eq!(listed.len(), 1);
    let raw: Value = client.get("/fake/clusters").await.json().await.unwrap();
    assert_eq!(raw[0]["status"], "UP");
    assert_eq!(raw[0]["accelerators"], "L4:1");
    let before = fake.clusters()[0].billed_ms;
    let fake = &fake;
    eventually("the bill grows while the instance runs", || async move { fake.clusters()[0].billed_ms > before }).await;
}

#[tokio::test]
async fn dropping_the_fake_kills_its_engines() {
    let (fake, client, _logs) = start().await;
    client.launch("tdm-x1", &replica("L4:1")).await.unwrap();
    let pid = only_record(&fake, "tdm-x1").pid.unwrap();
    drop(fake);
    process_gone(pid).await;
}

#[tokio::test]
async fn a_preemption_during_provisioning_fails_the_launch_as_unavailable() {
    let logs = tempfile::tempdir().unwrap();
    let fake =
        FakeSkyPilot::start(FakeConfig { provision_delay: Duration::from_secs(1), ..config(&logs) }).await.unwrap();
    let client = Client::new(&fake, None);
    let launch = client.submit("/launch", json!({"task": replica("L4:1"), "cluster_name": "tdm-p3"})).await;
    client.listed("tdm-p3").await;
    fake.preempt("tdm-p3").await.unwrap();
    assert_eq!(failure_type(client.wait(&launch).await), "ResourcesUnavailableError");
    assert!(client.status("tdm-p3", "AUTO").await.is_empty());
    assert_eq!(only_record(&fake, "tdm-p3").pid, None, "no engine was ever started");
}
