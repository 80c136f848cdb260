//! Test harness: the real SkyPilot API server (`sky api start`) with moto as its AWS endpoint,
//! a seeded catalog and a private HOME, all on 127.0.0.1, started by `scripts/skypilot-sandbox`.
//! It only starts and stops the sandbox: what a test sends to the server is the test's business.
//! Never run a real (non-dry-run) launch against it: moto's instances have non-loopback
//! addresses that SkyPilot would SSH to.
//!
//! Use it from an integration test with
//! `#[path = "support/sky_sandbox.rs"] mod sky_sandbox;`. One sandbox costs 20-40 s to start on a
//! busy 2-core machine and about 2 GB of resident memory (the server and its executor processes,
//! moto), so a test binary should start one and share it across its checks.

// Each test binary that includes this file uses a different part of it.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Set (to anything) where the sandbox must run, as in CI: a missing venv then fails the test
/// instead of skipping it.
pub const REQUIRE_ENV: &str = "TANDEMN_REQUIRE_SKYPILOT";

/// The script's own waits add up to about 5.5 minutes (moto 30 s, server 120 s, enabling AWS
/// 180 s); this is the outer bound in case the script itself hangs.
const START_TIMEOUT: Duration = Duration::from_secs(400);
/// `sky api stop` (60 s at most) plus SIGTERM/SIGKILL of two process groups (20 s each).
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const VENV_TIMEOUT: Duration = Duration::from_secs(30);
/// `scripts/skypilot-sandbox venv` exits with this when scripts/setup has not made the venv.
const EXIT_VENV_MISSING: i32 = 3;

/// A running sandbox. Dropping it stops the server and moto (by their recorded pids) and
/// removes its directory. If the test process dies without dropping it, a watchdog started
/// with the sandbox stops it within a second or two.
pub struct SkySandbox {
    /// `http://127.0.0.1:PORT`: the SkyPilot REST API, without a trailing slash.
    endpoint: String,
    /// `http://127.0.0.1:PORT`: moto, for tests that stage cloud-side events (a preemption is
    /// `TerminateInstances` there).
    aws_endpoint: String,
    script: PathBuf,
    dir: tempfile::TempDir,
}

impl SkySandbox {
    /// Starts a sandbox in a fresh temporary directory and waits (bounded) until the server is
    /// healthy and AWS is enabled.
    ///
    /// Returns `None`, after printing why, only when the venv from `scripts/setup` is missing
    /// and [`REQUIRE_ENV`] is unset. Panics, with the script's output and log tails, on any
    /// other failure.
    pub fn start() -> Option<SkySandbox> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the provisioner crate sits inside the workspace root")
            .to_path_buf();
        let script = root.join("scripts/skypilot-sandbox");
        let dir = tempfile::Builder::new()
            .prefix("tandemn-sky-sandbox-")
            .tempdir()
            .expect("create a temporary directory for the SkyPilot sandbox");

        let venv_log = dir.path().join("venv-check.log");
        let status = run_bounded(Command::new(&script).arg("venv"), &venv_log, VENV_TIMEOUT);
        match status.code() {
            Some(0) => {}
            Some(EXIT_VENV_MISSING) => {
                let why = read_lossy(&venv_log);
                if std::env::var_os(REQUIRE_ENV).is_some() {
                    panic!("{REQUIRE_ENV} is set but the SkyPilot sandbox cannot run: {}", why.trim());
                }
                eprintln!("skipping the SkyPilot sandbox: {} (set {REQUIRE_ENV}=1 to make this a failure)", why.trim());
                return None;
            }
            _ => panic!("`{} venv` failed ({status}): {}", script.display(), read_lossy(&venv_log).trim()),
        }

        let start_log = dir.path().join("start.log");
        let started = Instant::now();
        let status = run_bounded(
            Command::new(&script)
                .arg("start")
                .arg(dir.path())
                // The script's watchdog stops the sandbox once this process is gone.
                .env("SKY_SANDBOX_OWNER_PID", std::process::id().to_string()),
            &start_log,
            START_TIMEOUT,
        );
        if !status.success() {
            let report = failure_report(dir.path(), &start_log);
            // Whatever did start is recorded in the directory: stop it before the panic
            // drops the directory.
            stop(&script, dir.path());
            panic!("`skypilot-sandbox start` failed ({status}):\n{report}");
        }

        let env_text = read_lossy(&dir.path().join("env"));
        let value =
            |key: &str| env_text.lines().find_map(|line| line.strip_prefix(key)?.strip_prefix('=')).map(str::to_owned);
        let (Some(endpoint), Some(aws_endpoint)) = (value("SKYPILOT_API_SERVER_ENDPOINT"), value("AWS_ENDPOINT_URL"))
        else {
            stop(&script, dir.path());
            panic!("the sandbox's env file lacks its endpoints:\n{env_text}");
        };
        // The script's last line names the phases' times; cargo shows it for a failing test.
        eprintln!("SkyPilot sandbox up in {:.1?}: {}", started.elapsed(), tail(&read_lossy(&start_log), 1));
        Some(SkySandbox { endpoint, aws_endpoint, script, dir })
    }

    /// The SkyPilot REST API, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// moto's endpoint, `http://127.0.0.1:PORT`.
    pub fn aws_endpoint(&self) -> &str {
        &self.aws_endpoint
    }

    /// The sandbox directory: `home/` (the server's HOME), `sky-server.log`, `moto.log`, `env`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the server's log, for a failing test's message.
    pub fn server_log_tail(&self) -> String {
        tail(&read_lossy(&self.dir.path().join("sky-server.log")), 40)
    }
}

impl Drop for SkySandbox {
    fn drop(&mut self) {
        stop(&self.script, self.dir.path());
    }
}

/// Runs `scripts/skypilot-sandbox stop DIR`, bounded; a failure is printed, not raised, because
/// this runs in `Drop` (possibly while a test is already panicking).
fn stop(script: &Path, dir: &Path) {
    let log = dir.join("stop.log");
    let status = run_bounded(Command::new(script).arg("stop").arg(dir), &log, STOP_TIMEOUT);
    if !status.success() {
        eprintln!("`skypilot-sandbox stop {}` failed ({status}): {}", dir.display(), read_lossy(&log).trim());
    }
}

/// Runs `cmd` with stdout and stderr going to `log`, waiting at most `timeout`; a command still
/// running then is killed, and the status says so.
fn run_bounded(cmd: &mut Command, log: &Path, timeout: Duration) -> ExitStatus {
    let out = File::create(log).expect("create a sandbox log file");
    let err = out.try_clone().expect("clone a sandbox log file handle");
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", cmd.get_program()));
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Ok(None) => {
                // The processes it started are in the directory's pid files: `stop` ends them.
                let _ = child.kill();
                let status = child.wait().expect("reap a killed sandbox script");
                eprintln!("{:?} ran past {timeout:?} and was killed", cmd.get_program());
                return status;
            }
            Err(e) => panic!("wait for {:?}: {e}", cmd.get_program()),
        }
    }
}

fn failure_report(dir: &Path, start_log: &Path) -> String {
    let mut report = format!("--- script output\n{}", read_lossy(start_log));
    for name in ["sky-check.log", "sky-server.log", "moto.log"] {
        let text = read_lossy(&dir.join(name));
        if !text.is_empty() {
            report.push_str(&format!("--- {name} (last lines)\n{}\n", tail(&text, 30)));
        }
    }
    report
}

fn read_lossy(path: &Path) -> String {
    std::fs::read(path).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
