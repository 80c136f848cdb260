//! Proves the SkyPilot sandbox (`scripts/skypilot-sandbox`, `support/sky_sandbox.rs`) is the real
//! thing and usable: the real `sky api start` server answers on loopback with AWS enabled
//! through moto, validates task YAML with its own schema, and resolves a dry-run launch to the
//! seeded catalog's g6.xlarge spot. Only raw reqwest and serde_json: it checks the sandbox,
//! not Tandemn's client. It never launches for real (moto's instances are not on loopback).

#[path = "support/sky_sandbox.rs"]
mod sky_sandbox;

use serde_json::{Value, json};
use sky_sandbox::SkySandbox;
use std::time::Duration;

/// The replica task Tandemn renders for an L4 spot replica (the shape issue 10 asks for).
const REPLICA_TASK: &str = r#"name: svc-abc-1
resources: {cloud: aws, region: us-east-2, accelerators: "L4:1", use_spot: true, ports: 8000, disk_size: 100}
envs: {MODEL: Qwen/Qwen3-0.6B}
secrets: {VLLM_API_KEY: placeholder}
setup: pip install vllm==0.11.0
run: vllm serve Qwen/Qwen3-0.6B --port 8000 --tensor-parallel-size 1 --max-model-len 4096
"#;

/// Every call is bounded; `/api/get` blocks until its request ends (a dry run takes 1-15 s).
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).send().await.unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// POSTs an asynchronous route and returns the server-made request id.
    async fn submit(&self, path: &str, body: &Value) -> String {
        let resp = self.post(path, body).await;
        assert_eq!(resp.status(), 200, "POST {path}");
        request_id(&resp)
    }

    /// `GET /api/get`: waits for the request to end; returns (HTTP status, payload).
    async fn outcome(&self, request_id: &str) -> (u16, Value) {
        let resp = self.get(&format!("/api/get?request_id={request_id}")).await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("/api/get answers JSON");
        (status, body)
    }

    /// The request's log as the CLI shows it (plain text, what has been written so far).
    async fn log(&self, request_id: &str) -> String {
        let resp = self.get(&format!("/api/stream?request_id={request_id}&format=plain&follow=false")).await;
        assert_eq!(resp.status(), 200, "/api/stream for {request_id}");
        resp.text().await.expect("the request log is text")
    }
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-skypilot-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("every response carries X-Skypilot-Request-ID")
        .to_owned()
}

/// `return_value` is a JSON document inside a JSON string.
fn return_value(payload: &Value) -> Value {
    let text = payload["return_value"].as_str().unwrap_or_else(|| panic!("return_value is a string: {payload}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("return_value {text:?}: {e}"))
}

/// A failed request's `detail.error`, itself a JSON string: `{"object", "type", "message"}`.
fn request_error(payload: &Value) -> Value {
    let text =
        payload["detail"]["error"].as_str().unwrap_or_else(|| panic!("a failed request has detail.error: {payload}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("detail.error {text:?}: {e}"))
}

// One test and one sandbox: a start costs 20-40 s and about 2 GB on a 2-core machine.
#[test]
fn the_real_skypilot_server_validates_and_dry_runs_an_l4_spot_replica() {
    let Some(sandbox) = SkySandbox::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            // Loopback only, whatever proxy the environment names.
            .no_proxy()
            .build()
            .expect("a reqwest client"),
        base: sandbox.endpoint().to_owned(),
    };
    runtime.block_on(async {
        // Health: the pinned server's API version.
        let resp = api.get("/api/health").await;
        assert_eq!(resp.status(), 200);
        let health: Value = resp.json().await.expect("health is JSON");
        assert_eq!(health["status"], "healthy", "{health}");
        assert_eq!(health["api_version"], "62", "{health}");
        assert_eq!(health["version"], "0.14.1", "{health}");

        // Enabled clouds: an asynchronous GET whose result is read through /api/get.
        let resp = api.get("/enabled_clouds").await;
        assert_eq!(resp.status(), 200);
        let id = request_id(&resp);
        let (status, payload) = api.outcome(&id).await;
        assert_eq!(status, 200, "{payload}");
        assert_eq!(payload["status"], "SUCCEEDED", "{payload}");
        assert_eq!(return_value(&payload), json!(["aws"]), "{payload}");

        // Validate: synchronous; 200 with a null body, or 400 naming the typo.
        for (case, task, want_error) in [
            ("the replica task", REPLICA_TASK.to_owned(), None),
            (
                "use_spotz",
                REPLICA_TASK.replace("use_spot:", "use_spotz:"),
                Some("Instead of 'use_spotz', did you mean 'use_spot'?"),
            ),
        ] {
            let resp = api.post("/validate", &json!({"dag": task, "request_options": null})).await;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("/validate answers JSON");
            match want_error {
                None => assert_eq!((status, &body), (200, &Value::Null), "{case}"),
                Some(message) => {
                    assert_eq!(status, 400, "{case}: {body}");
                    assert_eq!(body["detail"]["type"], "InvalidSkyPilotConfigError", "{case}");
                    let got = body["detail"]["message"].as_str().unwrap_or_default();
                    assert!(got.contains(message), "{case}: {got:?}");
                }
            }
        }

        // A dry-run launch through the real optimizer, with the seeded catalog and moto.
        let id =
            api.submit("/launch", &json!({"task": REPLICA_TASK, "cluster_name": "svc-abc-1", "dryrun": true})).await;
        let (status, payload) = api.outcome(&id).await;
        assert_eq!(status, 200, "{payload}\n{}", sandbox.server_log_tail());
        assert_eq!(payload["status"], "SUCCEEDED", "{payload}");
        assert_eq!(payload["error"], "null", "success carries the string \"null\"");
        // A dry run returns no job and a pickled None handle; the choice is in the log.
        assert_eq!(return_value(&payload)["job_id"], Value::Null, "{payload}");
        let log = api.log(&id).await;
        let chosen = log
            .lines()
            .find(|line| line.contains("g6.xlarge[Spot]"))
            .unwrap_or_else(|| panic!("the dry run chose g6.xlarge spot:\n{log}"));
        for want in ["AWS (us-east-2", "L4:1", "0.26"] {
            assert!(chosen.contains(want), "{want:?} in {chosen:?}");
        }
        assert!(log.contains("Dryrun finished."), "{log}");

        // Nothing was launched: /status lists no cluster, and /down of it fails as missing.
        let id = api
            .submit(
                "/status",
                &json!({"cluster_names": null, "refresh": "AUTO",
                        "include_credentials": false, "include_handle": false}),
            )
            .await;
        let (status, payload) = api.outcome(&id).await;
        assert_eq!(status, 200, "{payload}");
        assert_eq!(return_value(&payload), json!([]), "{payload}");

        let id = api.submit("/down", &json!({"cluster_name": "svc-abc-1"})).await;
        let (status, payload) = api.outcome(&id).await;
        assert_eq!(status, 500, "{payload}");
        assert_eq!(payload["detail"]["status"], "FAILED", "{payload}");
        let error = request_error(&payload);
        assert_eq!(error["type"], "ClusterDoesNotExist", "{error}");
        assert_eq!(error["message"], "Cluster 'svc-abc-1' does not exist.", "{error}");
    });
}
