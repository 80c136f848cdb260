//! `tandemn router` as a process: signals, and the open-file limit it raises for itself.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A router process on a free loopback port, killed if the test ends early.
struct RouterProcess {
    child: Child,
    listen: SocketAddr,
}

impl RouterProcess {
    /// Starts `tandemn router` through `sh -c` so a test can lower limits first.
    fn start(shell_prefix: &str) -> Self {
        let listen = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let exe = env!("CARGO_BIN_EXE_tandemn");
        let script = format!("{shell_prefix} exec '{exe}' router --listen {listen} --public");
        let child = Command::new("sh")
            .args(["-c", &script])
            .env("TANDEMN_HOME", std::env::temp_dir().join(format!("tandemn-router-test-{}", listen.port())))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let router = Self { child, listen };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&listen, Duration::from_millis(100)).is_err() {
            assert!(Instant::now() < deadline, "the router never listened on {listen}");
            std::thread::sleep(Duration::from_millis(20));
        }
        router
    }

    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap();
    }

    /// Waits for the process to exit, at most `limit`; how long it took.
    fn exits_within(&mut self, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.child.try_wait().unwrap().is_some() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn answers(&self) -> bool {
        let Ok(mut socket) = TcpStream::connect_timeout(&self.listen, Duration::from_secs(1)) else { return false };
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!("GET /v1/models HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.listen);
        std::io::Write::write_all(&mut socket, request.as_bytes()).unwrap();
        let mut response = String::new();
        let _ = socket.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 ")
    }
}

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_idle_router_exits_at_once_on_sigterm() {
    let mut router = RouterProcess::start("");
    router.signal(Signal::SIGTERM);
    let took = router.exits_within(Duration::from_secs(10));
    assert!(took.is_some_and(|t| t < Duration::from_secs(5)), "exit took {took:?} (the grace period is 30 s)");
}

#[test]
fn sighup_does_not_kill_a_router_without_a_config_file() {
    let mut router = RouterProcess::start("");
    router.signal(Signal::SIGHUP);
    assert!(router.answers(), "the router stopped answering after SIGHUP");
    assert!(router.exits_within(Duration::from_millis(200)).is_none(), "SIGHUP ended the router");
    router.signal(Signal::SIGTERM);
    assert!(router.exits_within(Duration::from_secs(10)).is_some());
}

#[test]
fn the_router_raises_its_open_file_limit_to_the_hard_limit() {
    let hard = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap().1;
    if hard <= 256 {
        return; // nothing to raise to on this machine
    }
    let router = RouterProcess::start("ulimit -Sn 256;");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", router.child.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let soft: u64 = line.split_whitespace().nth(3).unwrap().parse().unwrap();
    assert_eq!(soft, hard, "{line}");
    assert!(router.answers());
}

#[test]
fn a_closed_stderr_does_not_stop_the_router() {
    let mut router = RouterProcess::start("");
    // The reader of its logs goes away, as `tandemn router 2>&1 | head` does.
    drop(router.child.stderr.take());
    for _ in 0..5 {
        assert!(router.answers(), "a request after stderr closed went unanswered");
    }
    router.signal(Signal::SIGTERM);
    assert!(router.exits_within(Duration::from_secs(10)).is_some());
    assert!(router.child.wait().unwrap().success(), "the router did not exit cleanly");
}
