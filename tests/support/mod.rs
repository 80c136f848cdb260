//! What the end-to-end deployment tests share: a `tandemn deploy` child process with its
//! printed endpoint and keys, `status` as JSON, streamed requests and bounded waits.

#![allow(dead_code, reason = "each test binary uses its own share of the helpers")]

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Deployment {
    pub home: tempfile::TempDir,
    pub child: Child,
    pub endpoint: String,
    pub api_key: String,
    /// Printed once when generated (it is stored nowhere).
    pub admin_key: String,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// Collects a child's output lines as they come (and keeps its pipe drained).
pub fn collect(stream: impl std::io::Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

impl Deployment {
    /// `tandemn deploy` of `config` (the service `story`) with `home` as HOME and
    /// TANDEMN_HOME, plus `env`.
    pub fn start_in(home: tempfile::TempDir, config: &str, env: &[(&str, &str)]) -> Deployment {
        let path = home.path().join("story.yaml");
        std::fs::write(&path, config).unwrap();
        let config = path;
        let child = tandemn(home.path())
            .args(["deploy", "--config", config.to_str().unwrap()])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Owned by the value that kills it on drop before anything can fail.
        let mut deployment = Deployment {
            home,
            child,
            endpoint: String::new(),
            api_key: String::new(),
            admin_key: String::new(),
            stdout: Arc::default(),
            stderr: Arc::default(),
        };
        deployment.stdout = collect(deployment.child.stdout.take().unwrap());
        deployment.stderr = collect(deployment.child.stderr.take().unwrap());
        let lines = deployment.stdout.clone();
        let field = |name: &str| {
            let found = lines.lock().unwrap().iter().find(|l| l.starts_with(name)).cloned();
            found.map(|line| line.split_whitespace().nth(2).unwrap().to_string())
        };
        wait_for("the endpoint and keys to be printed", Duration::from_secs(30), || field("admin key").is_some());
        deployment.endpoint = lines
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("endpoint"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches("/v1")
            .to_string();
        deployment.api_key = field("api key").unwrap();
        deployment.admin_key = field("admin key").unwrap();
        deployment
    }

    pub fn tandemn(&self, args: &[&str]) -> Value {
        let output = tandemn(self.home.path()).args(args).output().unwrap();
        assert!(output.status.success(), "tandemn {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    }

    pub fn status(&self) -> Value {
        self.tandemn(&["status", "--service-name", "story", "--json"])
    }

    /// Sends one request with `key`, then waits until a spot replica process runs.
    pub fn launch_a_replica(&self, key: &str) {
        let target = (self.endpoint.clone(), key.to_string());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        assert!(runtime.block_on(request(&client(), &target, 2)).ok, "a request with the key failed");
        wait_for("a spot replica process", Duration::from_secs(10), || {
            self.status()["replicas"].as_array().unwrap().iter().any(|r| r["reference"]["data"]["pid"].is_u64())
        });
    }

    pub fn billing_record(&self) -> PathBuf {
        self.home.path().join("local/story/billing.jsonl")
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tandemn(home: &Path) -> Command {
    let mut command = Command::new(assert_cmd::cargo::cargo_bin("tandemn"));
    command.env_clear().env("HOME", home).env("TANDEMN_HOME", home);
    command
}

pub fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// How one streamed request ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tier: String,
    pub ok: bool,
    /// The response had started (200 and headers) before anything went wrong.
    pub started: bool,
}

pub async fn request(client: &reqwest::Client, d: &(String, String), max_tokens: u32) -> Outcome {
    let body = serde_json::json!({
        "model": "mock-model", "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "hello"}],
    });
    let sent = client.post(format!("{}/v1/chat/completions", d.0)).bearer_auth(&d.1).json(&body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(error) => return Outcome { tier: format!("error: {error:?}"), ok: false, started: false },
    };
    let tier = response.headers().get("x-tandemn-backend").map_or("", |v| v.to_str().unwrap()).to_string();
    let tier = tier.split('/').next().unwrap().to_string();
    if response.status() != 200 {
        return Outcome { tier, ok: false, started: false };
    }
    let text = response.text().await.unwrap_or_default();
    let ok = text.ends_with("data: [DONE]\n\n") && !text.contains("\"error\"");
    Outcome { tier, ok, started: true }
}

pub fn live_replicas(status: &Value) -> Vec<(String, String)> {
    let replicas = status["replicas"].as_array().unwrap();
    replicas
        .iter()
        .map(|r| (r["replica"].as_str().unwrap().to_string(), r["phase"].as_str().unwrap().to_string()))
        .filter(|(_, phase)| !["terminated", "preempted", "failed"].contains(&phase.as_str()))
        .collect()
}

/// Every request gives up after 30 s: a stuck stream fails the test instead of hanging it.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// A `tandemn` process that must end by itself within `timeout`; killed if it does not.
pub fn finishes(mut command: Command, timeout: Duration) -> std::process::Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the command still ran after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
