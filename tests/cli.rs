//! The `tandemn` binary as a user runs it: output, exit codes (0 ok, 1 failed,
//! 2 usage or configuration error) and state, with HOME and PATH isolated.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;
use tandemn_config::{Catalog, Override, Sources};
use tandemn_provisioner::{DeploymentStatus, StateStore};

/// A sandbox: its own HOME, TANDEMN_HOME and an empty PATH, no provider variables.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn tandemn(&self, args: &[&str]) -> Command {
        let mut command = Command::cargo_bin("tandemn").unwrap();
        command.args(args).env_clear().env("HOME", self.home()).env("TANDEMN_HOME", self.state());
        command.env("PATH", self.dir.path().join("bin")).current_dir(env!("CARGO_MANIFEST_DIR"));
        command
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn stdout_of(command: &mut Command) -> String {
    String::from_utf8(command.assert().success().get_output().stdout.clone()).unwrap()
}

#[test]
fn show_gpus_lists_every_priced_gpu_with_spot_savings() {
    let sandbox = Sandbox::new();
    let out = stdout_of(&mut sandbox.tandemn(&["show-gpus"]));
    let header = out.lines().next().unwrap();
    for column in ["GPU", "VRAM", "MODAL", "RUNPOD", "CLOUDRUN", "AWS SPOT", "AWS ON-DEMAND", "SPOT SAVINGS"] {
        assert!(header.contains(column), "missing column {column}: {header}");
    }
    let l4 = out.lines().find(|l| l.starts_with("L4 ")).unwrap();
    assert!(l4.contains("$0.68/hr*") && l4.contains("$0.26/hr") && l4.contains("62% cheaper"), "{l4}");
    for gpu in &Catalog::embedded().gpus {
        assert!(out.lines().any(|l| l.starts_with(&format!("{} ", gpu.name))), "{} missing", gpu.name);
    }
}

#[test]
fn show_gpus_detail_json_and_filters() {
    let sandbox = Sandbox::new();
    let out = stdout_of(&mut sandbox.tandemn(&["show-gpus", "--gpu", "a100"]));
    assert!(out.contains("GPU:      A100_80GB") && out.contains("Cheapest serverless: modal at $2.50/hr"), "{out}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout_of(&mut sandbox.tandemn(&["show-gpus", "--gpu", "L4", "--json"]))).unwrap();
    assert_eq!(json["gpu"], "L4");
    assert_eq!(json["cheapest_serverless"], "runpod");
    assert_eq!(json["serverless"].as_array().unwrap().len(), 3);
    assert_eq!(json["spot"][0]["instance_type"], "g6.xlarge");
    assert!(json["serverless"][0]["as_of"].is_string() && json["serverless"][0]["source"].is_string());

    let out = stdout_of(&mut sandbox.tandemn(&["show-gpus", "--provider", "cloudrun"]));
    let header = out.lines().next().unwrap();
    assert!(header.contains("CLOUDRUN") && !header.contains("MODAL") && !header.contains("AWS"), "{header}");
    assert_eq!(out.lines().filter(|l| l.contains("/hr")).count(), 1, "only L4 is on Cloud Run: {out}");

    let all: serde_json::Value =
        serde_json::from_str(&stdout_of(&mut sandbox.tandemn(&["show-gpus", "--json", "--provider", "aws"]))).unwrap();
    assert!(all.as_array().unwrap().iter().all(|g| g["serverless"].as_array().unwrap().is_empty()));

    sandbox
        .tandemn(&["show-gpus", "--gpu", "L5"])
        .assert()
        .code(2)
        .stderr(contains("unknown GPU `L5`; did you mean `L4`?"));
    sandbox
        .tandemn(&["show-gpus", "--provider", "lambda"])
        .assert()
        .code(2)
        .stderr(contains("unknown provider `lambda`"));
}

fn seed(state: &Path, name: &str, gpu: &str, status: DeploymentStatus) {
    let store = StateStore::open(state).unwrap();
    let overrides = vec![
        Override::text("service_name", "--service-name", name),
        Override::text("model", "--model", "Qwen/Qwen3-0.6B"),
        Override::text("gpu", "--gpu", gpu),
    ];
    let spec = Sources { overrides, ..Sources::default() }.load(Catalog::embedded()).unwrap();
    store.save_deployment(&spec, status).unwrap();
}

#[test]
fn list_reads_the_state_store() {
    let sandbox = Sandbox::new();
    sandbox.tandemn(&["list"]).assert().success().stdout(contains("No deployments found."));
    seed(&sandbox.state(), "alpha", "L4", DeploymentStatus::Active);
    seed(&sandbox.state(), "beta", "H100", DeploymentStatus::Destroyed);

    let out = stdout_of(&mut sandbox.tandemn(&["list"]));
    assert!(out.starts_with("SERVICE NAME"), "{out}");
    let alpha = out.lines().find(|l| l.starts_with("alpha")).unwrap();
    assert!(alpha.contains("active") && alpha.contains("Qwen/Qwen3-0.6B") && alpha.contains("runpod"), "{alpha}");
    assert!(out.lines().any(|l| l.starts_with("beta") && l.contains("destroyed") && l.contains("modal")));

    let active = stdout_of(&mut sandbox.tandemn(&["list", "--status", "active"]));
    assert!(active.contains("alpha") && !active.contains("beta"), "{active}");
    sandbox.tandemn(&["list", "--status", "failed"]).assert().success().stdout(contains("No failed deployments"));

    let json: serde_json::Value = serde_json::from_str(&stdout_of(&mut sandbox.tandemn(&["list", "--json"]))).unwrap();
    let names: Vec<&str> = json.as_array().unwrap().iter().map(|d| d["service_name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 2);
    assert!(json[0]["created_at"].as_str().unwrap().ends_with('Z'));

    sandbox.tandemn(&["list", "--status", "running"]).assert().code(2);
}

#[test]
fn check_reports_every_problem_with_its_location() {
    let sandbox = Sandbox::new();
    let file =
        sandbox.write("bad.yaml", "model: m\ngpu: L5\nscaling:\n  spot:\n    target_qp: 3\n    min_replicas: -1\n");
    let assert = sandbox.tandemn(&["check", "--config", file.to_str().unwrap(), "--concurrency", "0"]).assert().code(2);
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(out.contains("Configuration: 4 problems"), "{out}");
    for expected in [
        "bad.yaml:2:1: `gpu`: unknown GPU `L5`; did you mean `L4`?",
        "bad.yaml:5:5: `scaling.spot.target_qp`: unknown key; did you mean `target_qps`?",
        "bad.yaml:6:5: `scaling.spot.min_replicas`: must be between 0 and 100, got -1",
        "flag --concurrency: `scaling.serverless.concurrency`: must be between 1 and 1024, got 0",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in {out}");
    }
    assert!(out.contains("Provider setup:"), "credentials are reported even for a bad config");
}

#[test]
fn check_reports_credentials_without_echoing_secrets() {
    let sandbox = Sandbox::new();
    let assert = sandbox
        .tandemn(&["check", "--model", "m", "--gpu", "L4", "--serverless-provider", "runpod"])
        .env("RUNPOD_API_KEY", "rp-VERY-SECRET")
        .assert()
        .code(1)
        .stderr(contains("needs credentials that are missing: skypilot"));
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(out.contains("[ok     ] runpod    RUNPOD_API_KEY is set (needed by this deployment)"), "{out}");
    assert!(
        out.contains("[missing] skypilot")
            && out.contains("fix: install SkyPilot (`pip install \"skypilot[aws]\"`) and run `sky api start`"),
        "{out}"
    );
    assert!(!out.contains("VERY-SECRET"), "the key leaked: {out}");

    sandbox.tandemn(&["check", "--config", "examples/local.yaml"]).assert().success();
    sandbox.tandemn(&["check"]).assert().success().stdout(contains("Configuration: none given"));
}

#[test]
fn every_example_config_validates() {
    let sandbox = Sandbox::new();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let path = path.to_str().unwrap();
        let args: Vec<&str> = if path.ends_with("scaling-policy.yaml") {
            vec!["deploy", "--dry-run", "--model", "m", "--gpu", "L4", "--scaling-policy", path]
        } else {
            vec!["deploy", "--dry-run", "--config", path]
        };
        sandbox.tandemn(&args).assert().success().stdout(contains("scaling      spot"));
        checked += 1;
    }
    assert!(checked >= 3);
}

#[test]
fn deploy_validates_and_cloud_providers_are_refused_for_now() {
    let sandbox = Sandbox::new();
    sandbox
        .tandemn(&["deploy", "--model", "Qwen/Qwen3-0.6B", "--gpu", "L4", "--no-scale-to-zero"])
        .assert()
        .code(2)
        .stdout(contains("spot 1..8 replicas").and(contains("idle 300 s")).and(contains("(generated")))
        .stderr(contains("is not in this build yet"));
    sandbox.tandemn(&["deploy", "--gpu", "L4"]).assert().code(2).stderr(contains("`model`: is required"));
    sandbox.tandemn(&["deploy", "--model", "m", "--gpu", "L4", "--tp-size", "-1"]).assert().code(2);
    assert!(!sandbox.state().join("state.db").exists(), "a rejected deploy records nothing");
}

#[test]
fn commands_on_unknown_deployments_exit_2() {
    let sandbox = Sandbox::new();
    for args in [
        &["destroy", "--service-name", "x"][..],
        &["status", "--service-name", "x"],
        &["cost", "--service-name", "x"],
        &["preempt", "x"],
    ] {
        sandbox.tandemn(args).assert().code(2).stdout("").stderr(contains("no deployment named `x`"));
    }
    sandbox.tandemn(&["destroy", "--all"]).assert().success().stdout(contains("No active deployments."));
    sandbox.tandemn(&["destroy"]).assert().code(2);
    sandbox.tandemn(&["destroy", "--all", "--service-name", "x"]).assert().code(2);
    sandbox.tandemn(&["status"]).assert().code(2).stderr(contains("--service-name"));
    sandbox.tandemn(&[]).assert().code(2);
}

#[test]
fn deploy_help_lists_every_seed_flag_and_verbose_is_global() {
    let sandbox = Sandbox::new();
    let help = stdout_of(&mut sandbox.tandemn(&["deploy", "--help"]));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" "); // undo line wrapping
    for flag in [
        "--model",
        "--gpu",
        "--gpu-count",
        "--serverless-provider",
        "--spots-cloud",
        "--region",
        "--tp-size",
        "--max-model-len",
        "--concurrency",
        "--workers-max",
        "--cold-start-mode",
        "--no-scale-to-zero",
        "--scaling-policy",
        "--service-name",
        "--public",
        "--gcp-project",
        "--gcp-region",
        "--config",
        "--verbose",
    ] {
        assert!(help.contains(flag), "deploy --help lacks {flag}");
    }
    for default in ["[default: 1]", "[default: aws]", "[default: 4096]", "[default: fast_boot]", "cheapest for GPU"] {
        assert!(help.contains(default), "deploy --help lacks {default}");
    }
    let top = stdout_of(&mut sandbox.tandemn(&["--help"]));
    for command in ["deploy", "destroy", "status", "cost", "list", "show-gpus", "check", "router"] {
        assert!(top.contains(command), "--help lacks {command}");
    }
    sandbox.tandemn(&["show-gpus", "-v", "--gpu", "T4"]).assert().success();
    sandbox.tandemn(&["-v", "list"]).assert().success();
}

#[test]
fn bench_and_mock_vllm_reject_bad_flags_with_usage_errors() {
    let sandbox = Sandbox::new();
    let url = ["bench", "--url", "http://127.0.0.1:9"];
    sandbox.tandemn(&url).assert().code(2).stderr(contains("choose a load"));
    sandbox.tandemn(&["bench", "--url", "localhost:80", "--rate", "1"]).assert().code(2).stderr(contains("http://"));
    sandbox.tandemn(&[&url[..], &["--rate", "0"]].concat()).assert().code(2).stderr(contains("--rate"));
    sandbox.tandemn(&[&url[..], &["--profile", "day-cycle"]].concat()).assert().code(2).stderr(contains("--duration"));
    sandbox.tandemn(&[&url[..], &["--concurrency", "2", "--rate", "3"]].concat()).assert().code(2);
    let trace = sandbox.write("trace.jsonl", "{\"timestamp\": 1}\n");
    sandbox
        .tandemn(&[&url[..], &["--trace", trace.to_str().unwrap()]].concat())
        .assert()
        .code(2)
        .stderr(contains("trace.jsonl:1:"));
    // Nothing listens on port 9: every request fails, so the run fails.
    sandbox
        .tandemn(&[&url[..], &["--concurrency", "1", "--requests", "2", "--model", "m"]].concat())
        .assert()
        .code(1)
        .stderr(contains("all 2 requests failed").and(contains("connect 2")));

    sandbox.tandemn(&["mock-vllm", "--error-rate", "2"]).assert().code(2).stderr(contains("error_rate"));
    let profile = sandbox.write("mock.yaml", "ttft_ms: 5\nbogus: 1\n");
    sandbox
        .tandemn(&["mock-vllm", "--config", profile.to_str().unwrap()])
        .assert()
        .code(2)
        .stderr(contains("unknown field `bogus`"));
}

#[test]
fn mock_vllm_and_bench_work_end_to_end_from_the_cli() {
    let sandbox = Sandbox::new();
    let (_mock, first_line) =
        start(&["mock-vllm", "--port", "0", "--ttft-ms", "5", "--itl-ms", "1", "--exit-after-secs", "60"]);
    let url = first_line.split_whitespace().last().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{first_line}");

    let out = stdout_of(&mut sandbox.tandemn(&[
        "bench",
        "--url",
        &url,
        "--concurrency",
        "4",
        "--requests",
        "40",
        "--osl",
        "8",
        "--isl",
        "16",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["succeeded"], 40);
    assert_eq!(report["output_tokens"], 320);
    assert_eq!(report["itl_ms"]["count"], 40 * 7);
}

#[test]
fn the_router_refuses_to_run_open_by_accident() {
    let sandbox = Sandbox::new();
    sandbox
        .tandemn(&["router", "--spot", "http://127.0.0.1:9"])
        .assert()
        .code(2)
        .stderr(contains("refusing to serve without client auth").and(contains("--public")));
    sandbox.tandemn(&["router", "--public", "--api-key", "k"]).assert().code(2).stderr(contains("choose one"));
    sandbox
        .tandemn(&["router", "--api-key", "k", "--spot", "ftp://x"])
        .assert()
        .code(2)
        .stderr(contains("--spot: the scheme `ftp` is not supported"));
}

#[test]
fn the_router_serves_end_to_end_from_the_cli() {
    let sandbox = Sandbox::new();
    let (_spot, spot_line) = start(&["mock-vllm", "--port", "0", "--ttft-ms", "2", "--itl-ms", "1"]);
    let spot_url = spot_line.split_whitespace().last().unwrap().to_string();
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (_router, router_line) =
        start(&["router", "--listen", &listen.to_string(), "--spot", &spot_url, "--api-key", "secret-key"]);
    assert!(router_line.contains("1 spot, 0 serverless"), "{router_line}");
    wait_until(|| std::net::TcpStream::connect(listen).is_ok());
    let url = format!("http://{listen}");
    let out = stdout_of(&mut sandbox.tandemn(&[
        "bench",
        "--url",
        &url,
        "--api-key",
        "secret-key",
        "--model",
        "mock-model",
        "--concurrency",
        "4",
        "--requests",
        "20",
        "--osl",
        "4",
        "--isl",
        "8",
        "--json",
    ]));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["succeeded"], 20);
    assert_eq!(report["tiers"]["spot"], 20);
    let mut denied =
        sandbox.tandemn(&["bench", "--url", &url, "--model", "mock-model", "--concurrency", "1", "--requests", "1"]);
    denied.assert().code(1).stderr(contains("status_401 1"));
}

#[test]
fn the_router_reloads_its_backends_on_sighup() {
    let sandbox = Sandbox::new();
    let config = |ports: &[u16]| {
        let backends: String =
            ports.iter().map(|p| format!("    - {{tier: spot, url: 'http://127.0.0.1:{p}'}}\n")).collect();
        format!("model: m\ngpu: L4\nrouter:\n  api_keys: [{{env: TANDEMN_TEST_KEY}}]\n  backends:\n{backends}")
    };
    let file = sandbox.write("router.yaml", &config(&[9]));
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandemn"))
        .args(["router", "--config", file.to_str().unwrap(), "--listen", &listen.to_string(), "--admin-key", "adm"])
        .env("TANDEMN_TEST_KEY", "k")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let router = KillOnDrop(child.unwrap());
    let backends = || -> usize {
        let health = http_get(listen, "/router/health", "adm");
        health.matches("\"tier\":\"spot\"").count()
    };
    wait_until(|| std::net::TcpStream::connect(listen).is_ok());
    assert_eq!(backends(), 1);
    std::fs::write(&file, config(&[9, 10, 11])).unwrap();
    let status = std::process::Command::new("kill").args(["-HUP", &router.0.id().to_string()]).status().unwrap();
    assert!(status.success());
    wait_until(|| backends() == 3);

    // A broken file is refused (and logged); the router keeps serving and takes the next good one.
    let hangup = || {
        let status = std::process::Command::new("kill").args(["-HUP", &router.0.id().to_string()]).status();
        assert!(status.unwrap().success());
    };
    std::fs::write(&file, "model: m\ngpu: L4\nrouter: {bogus: 1}\n").unwrap();
    hangup();
    std::fs::write(&file, config(&[9, 12])).unwrap();
    hangup();
    wait_until(|| backends() == 2);
}

/// Polls `done` every 10 ms for at most five seconds.
fn wait_until(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("the condition never held");
}

/// A plain HTTP/1.1 GET with a bearer key; returns the whole response as text.
fn http_get(addr: std::net::SocketAddr, path: &str, key: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Starts `tandemn ARGS` in the background and returns it with the first line it printed
/// (the servers print their address there once they listen).
fn start(args: &[&str]) -> (KillOnDrop, String) {
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandemn"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut child = KillOnDrop(child.unwrap());
    let stdout = std::io::BufReader::new(child.0.stdout.take().unwrap());
    let first_line = std::io::BufRead::lines(stdout).next().unwrap().unwrap();
    (child, first_line)
}

/// A child process that is killed and reaped however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback address nothing listens on (bound and released), for a server that must not start.
fn unused_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn write_private(sandbox: &Sandbox, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = sandbox.write(name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// Finding 1: an empty or blank key, from any source, stops the start with exit 2 and a
/// message naming the source; the router never listens.
#[test]
fn empty_keys_are_refused_at_startup_naming_their_source() {
    let sandbox = Sandbox::new();
    let blank = write_private(&sandbox, "blank.keys", "\n   \n# no key here\n", 0o600);
    let blank = blank.to_str().unwrap();
    let listen = unused_addr().to_string();
    let router = ["router", "--listen", &listen, "--spot", "http://127.0.0.1:9"];
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, String);
    let cases: Vec<Case> = vec![
        (vec!["--api-key", ""], vec![], "--api-key is empty".into()),
        (vec!["--api-key", "ok", "--api-key", " \t "], vec![], "--api-key is empty".into()),
        (vec!["--api-key", "ok", "--admin-key", ""], vec![], "--admin-key is empty".into()),
        (vec!["--api-key", "ok"], vec![("TANDEMN_ADMIN_KEY", "")], "TANDEMN_ADMIN_KEY is set but empty".into()),
        (vec![], vec![("TANDEMN_API_KEY", " ")], "TANDEMN_API_KEY is set but empty".into()),
        (vec!["--api-key-file", blank], vec![], format!("--api-key-file {blank} holds no key")),
        (vec!["--api-key", "ok", "--admin-key-file", blank], vec![], format!("--admin-key-file {blank} holds no key")),
    ];
    for (flags, env, expected) in &cases {
        let mut command = sandbox.tandemn(&[&router[..], flags].concat());
        command.envs(env.iter().copied()).timeout(std::time::Duration::from_secs(20));
        let assert = command.assert().code(2).stderr(contains(expected.as_str()));
        let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
        assert!(!out.contains("tandemn router on"), "{flags:?} {env:?} started: {out}");
        assert!(std::net::TcpStream::connect(&listen).is_err(), "{flags:?} {env:?}: something listens");
    }
    // deploy refuses them too, before it records anything.
    let deploy = ["deploy", "--config", "examples/local.yaml"];
    sandbox
        .tandemn(&[&deploy[..], &["--api-key", " "]].concat())
        .assert()
        .code(2)
        .stderr(contains("--api-key is empty"));
    sandbox
        .tandemn(&deploy)
        .env("TANDEMN_ADMIN_KEY", "")
        .assert()
        .code(2)
        .stderr(contains("TANDEMN_ADMIN_KEY is set but empty"));
    sandbox
        .tandemn(&[&deploy[..], &["--admin-key-file", blank]].concat())
        .assert()
        .code(2)
        .stderr(contains(format!("--admin-key-file {blank} holds no key")));
    assert!(!sandbox.state().join("state.db").exists(), "a refused deploy records nothing");
}

/// Finding 10b: keys come from files and the environment, off the command line; a key
/// file others can read is warned about; the help says why.
#[test]
fn router_keys_come_from_files_and_the_environment() {
    let sandbox = Sandbox::new();
    let keys = write_private(&sandbox, "client.keys", "# rotated\nkey-one\n\nkey-two\n", 0o600);
    let admin = write_private(&sandbox, "admin.key", "admin-from-file\n", 0o600);
    let listen = unused_addr();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandemn"))
        .args(["router", "--listen", &listen.to_string(), "--spot", "http://127.0.0.1:9"])
        .args(["--api-key-file", keys.to_str().unwrap(), "--admin-key-file", admin.to_str().unwrap()])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut router = KillOnDrop(child.unwrap());
    let first = std::io::BufRead::lines(std::io::BufReader::new(router.0.stdout.take().unwrap())).next();
    assert!(!first.unwrap().unwrap().contains("admin key"), "a given admin key is not printed");
    wait_until(|| std::net::TcpStream::connect(listen).is_ok());
    let status = |path: &str, key: &str| http_get(listen, path, key).split(' ').nth(1).unwrap().to_string();
    assert_ne!(status("/v1/models", "key-one"), "401");
    assert_ne!(status("/v1/models", "key-two"), "401");
    assert_eq!(status("/v1/models", "rotated"), "401", "comments are not keys");
    assert_eq!(status("/router/health", "admin-from-file"), "200");
    drop(router);

    let listen = unused_addr();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("tandemn"))
        .args(["router", "--listen", &listen.to_string(), "--spot", "http://127.0.0.1:9"])
        .env_clear()
        .env("TANDEMN_API_KEY", "key-from-env")
        .env("TANDEMN_ADMIN_KEY", "admin-from-env")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let _router = KillOnDrop(child.unwrap());
    wait_until(|| std::net::TcpStream::connect(listen).is_ok());
    let status = |path: &str, key: &str| http_get(listen, path, key).split(' ').nth(1).unwrap().to_string();
    assert_ne!(status("/v1/models", "key-from-env"), "401");
    assert_eq!(status("/v1/models", "admin-from-env"), "401");
    assert_eq!(status("/router/health", "admin-from-env"), "200");

    // A key file others can read works, with a warning that never shows the key.
    let loose = write_private(&sandbox, "loose.keys", "key-loose\n", 0o644);
    let assert = sandbox
        .tandemn(&["deploy", "--dry-run", "--config", "examples/local.yaml", "--api-key-file", loose.to_str().unwrap()])
        .assert()
        .success()
        .stdout(contains("1 API key(s)"));
    let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
    assert!(stderr.contains("can be read or written by group or others (mode 0644)"), "{stderr}");
    assert!(!stderr.contains("key-loose"), "{stderr}");

    let help = stdout_of(&mut sandbox.tandemn(&["router", "--help"]));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in ["--api-key-file", "--admin-key-file", "TANDEMN_API_KEY", "TANDEMN_ADMIN_KEY", "visible to other users"]
    {
        assert!(help.contains(text), "router --help lacks {text}: {help}");
    }
}

/// Finding 13: one corrupt `deployments` row is named and skipped; the others are listed
/// and destroyed, and `destroy` of the bad one still does what it can.
#[test]
fn a_corrupt_deployment_row_spoils_no_other() {
    let sandbox = Sandbox::new();
    seed(&sandbox.state(), "alpha", "L4", DeploymentStatus::Active);
    seed(&sandbox.state(), "beta", "L4", DeploymentStatus::Active);
    seed(&sandbox.state(), "gamma", "H100", DeploymentStatus::Deploying);
    let db = rusqlite::Connection::open(sandbox.state().join("state.db")).unwrap();
    db.execute("UPDATE deployments SET status = 'exploded' WHERE service_name = 'beta'", []).unwrap();
    drop(db);
    let path = sandbox.state().join("state.db");
    let warning =
        format!("warning: {}: deployment `beta` has an unreadable record: unknown status `exploded`", path.display());

    let assert = sandbox.tandemn(&["list"]).assert().success().stderr(contains(&warning));
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(out.contains("alpha") && out.contains("gamma") && !out.contains("beta"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&stdout_of(&mut sandbox.tandemn(&["list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    let assert = sandbox.tandemn(&["destroy", "--all"]).assert().code(1).stderr(contains(&warning));
    let out = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(out.contains("alpha: nothing was running; marked destroyed"), "{out}");
    assert!(out.contains("gamma: nothing was running; marked destroyed"), "{out}");
    sandbox
        .tandemn(&["destroy", "--service-name", "beta"])
        .assert()
        .success()
        .stdout(contains("beta: nothing was running; marked destroyed"));
    // Destroying it mended its status.
    let out = String::from_utf8_lossy(&sandbox.tandemn(&["list"]).assert().success().stderr("").get_output().stdout)
        .to_string();
    assert!(out.lines().any(|l| l.starts_with("beta") && l.contains("destroyed")), "{out}");
}

/// Finding 13: a corrupted store's error says each cause once.
#[test]
fn a_corrupted_state_error_says_its_cause_once() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.state()).unwrap();
    let path = sandbox.state().join("state.db");
    std::fs::write(&path, "this is not a database, just some text that is long enough to be read as a header").unwrap();
    sandbox.tandemn(&["list"]).assert().code(1).stderr(format!("error: {}: file is not a database\n", path.display()));

    std::fs::remove_file(&path).unwrap();
    seed(&sandbox.state(), "alpha", "L4", DeploymentStatus::Active);
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "INSERT INTO runs (service_name, pid, endpoint, started_at_ms, updated_at_ms)
         VALUES ('alpha', 'not-a-pid', 'http://127.0.0.1:9', 1, 1)",
        [],
    )
    .unwrap();
    drop(db);
    sandbox.tandemn(&["status", "--service-name", "alpha"]).assert().code(1).stderr(format!(
        "error: {}: deployment `alpha` has an unreadable record: runs: `pid` holds text, not the expected type\n",
        path.display()
    ));
}

#[test]
fn check_reports_an_empty_key_without_a_config() {
    let sandbox = Sandbox::new();
    sandbox
        .tandemn(&["check"])
        .env("TANDEMN_API_KEY", "")
        .assert()
        .code(2)
        .stdout(contains("Keys: TANDEMN_API_KEY is set but empty"));
}

#[test]
fn a_spot_dry_run_shows_the_skypilot_task_without_its_key_and_makes_none() {
    let sandbox = Sandbox::new();
    sandbox.tandemn(&["deploy", "--dry-run", "--config", "examples/aws-spot.yaml"]).assert().success().stdout(
        contains("use_spot: true")
            .and(contains("accelerators: L4:1"))
            .and(contains("VLLM_API_KEY: '***'"))
            .and(contains("run: vllm serve Qwen/Qwen3-0.6B")),
    );
    assert!(!sandbox.state().join("keys").exists(), "a dry run makes no key");
    assert!(!sandbox.state().join("state.db").exists(), "nor any record");
}

#[test]
fn a_skypilot_endpoint_s_user_information_is_never_printed() {
    let sandbox = Sandbox::new();
    let endpoint = "http://tandemn:VERY-SECRET-pw@127.0.0.1:1";
    for args in [
        &["deploy", "--dry-run", "--config", "examples/aws-spot.yaml"][..],
        &["check", "--config", "examples/aws-spot.yaml"][..],
        &["deploy", "--config", "examples/aws-spot.yaml"][..],
    ] {
        let output = sandbox.tandemn(args).env("SKYPILOT_API_SERVER_ENDPOINT", endpoint).output().unwrap();
        let shown = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!shown.contains("VERY-SECRET"), "{args:?} printed the endpoint's password: {shown}");
        assert!(shown.contains("127.0.0.1:1"), "{args:?} names the server: {shown}");
    }
}

#[test]
fn deploy_refuses_a_skypilot_api_server_that_is_missing_or_not_skypilot() {
    let sandbox = Sandbox::new();
    let missing = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // A server that answers, but not as SkyPilot does.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in other.incoming() {
            use std::io::{Read, Write};
            let mut stream = stream.unwrap();
            let _ = stream.read(&mut [0; 4096]);
            let _ =
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\nconnection: close\r\n\r\n<html></html>");
        }
    });
    for (endpoint, says) in
        [(format!("http://{missing}"), "not reachable"), (format!("http://{other_addr}"), "is not SkyPilot's")]
    {
        sandbox
            .tandemn(&["deploy", "--config", "examples/aws-spot.yaml"])
            .env("SKYPILOT_API_SERVER_ENDPOINT", &endpoint)
            .env("TANDEMN_API_KEY", "client-key-client-key")
            .timeout(std::time::Duration::from_secs(30))
            .assert()
            .code(1)
            .stderr(contains(says).and(contains(endpoint.as_str())));
    }
    sandbox.tandemn(&["list"]).assert().success().stdout(contains("aws-spot-demo").not());
}
