//! The whole product on one machine, time-scaled (2 s spot boots, 1 s scaledown windows):
//! `tandemn deploy` with the local provider, driven with real traffic and checked with
//! `status`, `preempt`, `destroy` and `cost`, as a user would.
//!
//! 1. Serverless serves first while spot boots.
//! 2. Traffic shifts to spot once it is ready.
//! 3. Serverless scales to zero.
//! 4. Load above spot capacity spills to serverless.
//! 5. A preempted replica fails no request that had not started streaming, and is replaced.
//! 6. Idle scales spot to zero.
//! 7. `cost` matches the provider's own billing record.
//! 8. `destroy` leaves no process behind.

#![allow(clippy::unwrap_used, reason = "test helpers fail the test by panicking")]

mod support;

use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn start() -> Deployment {
    Deployment::start_in(tempfile::tempdir().unwrap(), CONFIG, &[])
}

fn start_in(home: tempfile::TempDir, env: &[(&str, &str)]) -> Deployment {
    Deployment::start_in(home, CONFIG, env)
}

const CONFIG: &str = "
service_name: story
model: mock-model
gpu: L4
serverless_provider: local
spots_cloud: local
scaling:
  spot: {max_replicas: 1, target_qps: 1000, upscale_delay: 0, downscale_delay: 2, demand_window: 2}
  serverless: {concurrency: 8, scaledown_window: 1, workers_max: 2}
router: {listen: 127.0.0.1:0, spot_capacity: 2}
local: {spot_boot_secs: 2, cold_start_secs: 0.3}
";

#[test]
fn a_local_deployment_tells_the_whole_story() {
    let mut deployment = start();
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = client();
    let sent = AtomicU64::new(0);
    let send = |max_tokens: u32| {
        sent.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(request(&client, &target, max_tokens))
    };

    // 1. Serverless answers at once while the first spot replica boots.
    let first = send(4);
    assert!(first.ok, "{first:?}");
    assert_eq!(first.tier, "serverless");
    wait_for("the first request to start a spot launch", Duration::from_secs(5), || {
        let live = live_replicas(&deployment.status());
        live.len() == 1 && live[0].1 != "ready"
    });

    // 2. Traffic shifts to spot once it is ready.
    let mut served_while_booting = 1;
    let shifted = Instant::now();
    loop {
        let outcome = send(4);
        assert!(outcome.ok, "{outcome:?}");
        if outcome.tier == "spot" {
            break;
        }
        served_while_booting += 1;
        assert!(shifted.elapsed() < Duration::from_secs(30), "spot never took traffic");
    }
    assert!(served_while_booting >= 1);

    // 3. With spot carrying the traffic, serverless scales to zero.
    wait_for("serverless to scale to zero", Duration::from_secs(30), || {
        assert_eq!(send(4).tier, "spot");
        deployment.status()["usage"]["serverless_running"] == 0
    });
    assert!((0..5).all(|_| send(4).tier == "spot"));

    // 4. Above spot's capacity (2 streams) the rest spills to serverless.
    let burst: Vec<Outcome> = runtime.block_on(async {
        let requests = (0..6).map(|_| request(&client, &target, 40));
        futures_util::future::join_all(requests).await
    });
    sent.fetch_add(6, Ordering::Relaxed);
    assert!(burst.iter().all(|o| o.ok), "{burst:?}");
    let spilled = burst.iter().filter(|o| o.tier == "serverless").count();
    assert_eq!((burst.len() - spilled, spilled), (2, 4), "{burst:?}");

    // 5. Preempt the replica under load: nothing fails before streaming starts, and a
    // new replica replaces it.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let workers: Vec<_> = (0..3)
        .map(|_| {
            let (stop, outcomes, client, target) = (stop.clone(), outcomes.clone(), client.clone(), target.clone());
            runtime.spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = request(&client, &target, 10).await;
                    outcomes.lock().unwrap().push(outcome);
                }
            })
        })
        .collect();
    wait_for("load on spot", Duration::from_secs(10), || outcomes.lock().unwrap().len() >= 10);
    let first = live_replicas(&deployment.status())[0].0.clone();
    let preempt = tandemn(deployment.home.path()).args(["preempt", "story"]).output().unwrap();
    assert!(preempt.status.success(), "{}", String::from_utf8_lossy(&preempt.stderr));
    assert!(String::from_utf8_lossy(&preempt.stdout).contains(&format!("preempted {first}")));
    wait_for("a replacement replica, under a new name, to be ready", Duration::from_secs(30), || {
        let live = live_replicas(&deployment.status());
        live.len() == 1 && live[0].0 != first && live[0].1 == "ready"
    });
    let replaced_at = outcomes.lock().unwrap().len();
    wait_for("traffic on the replacement", Duration::from_secs(10), || {
        outcomes.lock().unwrap()[replaced_at..].iter().any(|o| o.tier == "spot")
    });
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        runtime.block_on(worker).unwrap();
    }
    let outcomes = outcomes.lock().unwrap().clone();
    sent.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
    let failed_before_streaming: Vec<_> = outcomes.iter().filter(|o| !o.started).collect();
    assert!(failed_before_streaming.is_empty(), "{failed_before_streaming:?}");
    assert!(outcomes.iter().any(|o| o.tier == "serverless"), "serverless covered for the preempted replica");
    let events: Vec<Value> = deployment.status()["replicas"].as_array().unwrap().clone();
    assert_eq!(events[0]["phase"], "preempted", "{events:?}");

    // 6. Idle scales spot to zero.
    wait_for("spot to scale to zero", Duration::from_secs(30), || {
        let status = deployment.status();
        live_replicas(&status).is_empty() && status["usage"]["desired_replicas"] == 0
    });

    // 8. `destroy` stops the deployment and leaves no process behind.
    let status = deployment.status();
    let pids = pids_of(&status);
    assert_eq!(pids.len(), 3, "two replicas and the serverless endpoint: {status}");
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while deployment.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the deploy process did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("no replica or serverless process left", Duration::from_secs(10), || {
        pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    assert_eq!(deployment.tandemn(&["status", "--service-name", "story", "--json"])["status"], "destroyed");

    // 7. `cost` agrees with the provider's own billing record, to the cent.
    let (cost, spot_secs, serverless_secs) = cost_against_the_billing_record(&deployment);
    assert!(spot_secs > 0 && serverless_secs > 0);
    let routed = cost["spot_requests"].as_u64().unwrap() + cost["serverless_requests"].as_u64().unwrap();
    assert_eq!(routed, sent.load(Ordering::Relaxed), "every request is in the routing split");
    assert!(cost["pure_serverless_usd"].as_f64().unwrap() > 0.0 && cost["on_demand_usd"].as_f64().unwrap() > 0.0);
}

/// Replicas die with the deployment even when it is killed with SIGKILL (no chance to
/// clean up); `list` tells, and `destroy` closes the records.
#[test]
fn replicas_die_with_a_killed_deployment_and_destroy_closes_its_records() {
    let mut deployment = start();
    deployment.launch_a_replica(&deployment.api_key);
    let status = deployment.status();
    let mut pids: Vec<u64> =
        status["replicas"].as_array().unwrap().iter().filter_map(|r| r["reference"]["data"]["pid"].as_u64()).collect();
    pids.extend(status["serverless"]["endpoint"]["data"]["pid"].as_u64());
    assert_eq!(pids.len(), 2, "{status}");

    deployment.child.kill().unwrap();
    deployment.child.wait().unwrap();
    wait_for("the replicas to exit by themselves", Duration::from_secs(10), || {
        pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
    let list = tandemn(deployment.home.path()).args(["list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("active (not running)"));
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    let status = deployment.status();
    assert_eq!(status["status"], "destroyed");
    assert!(live_replicas(&status).is_empty(), "{status}");
}

/// A serverless endpoint that dies is deployed again, its containers are billed up to its
/// death, and traffic comes back to the new one.
#[test]
fn a_dead_serverless_endpoint_is_deployed_again() {
    let deployment = start();
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = client();
    assert!(runtime.block_on(request(&client, &target, 2)).ok);
    wait_for("the container to be recorded", Duration::from_secs(5), || {
        !deployment.status()["serverless"]["containers"].as_array().unwrap().is_empty()
    });
    let first = deployment.status()["serverless"]["endpoint"]["data"]["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(first).unwrap()), nix::sys::signal::SIGKILL)
        .unwrap();
    wait_for("a new serverless endpoint", Duration::from_secs(20), || {
        deployment.status()["serverless"]["endpoint"]["data"]["pid"].as_u64().is_some_and(|pid| pid != first)
    });
    // The router routes to the new endpoint (spot, ready by now, takes this light traffic).
    wait_for("the router to route to the new endpoint", Duration::from_secs(10), || {
        let status = deployment.status();
        let url = status["serverless"]["url"].clone();
        status["router"]["backends"].as_array().unwrap().iter().any(|b| b["tier"] == "serverless" && b["url"] == url)
    });
    assert!(runtime.block_on(request(&client, &target, 2)).ok);
    // A burst above spot's capacity spills to the new endpoint.
    let burst: Vec<Outcome> =
        runtime.block_on(async { futures_util::future::join_all((0..6).map(|_| request(&client, &target, 20))).await });
    assert!(burst.iter().all(|o| o.ok), "{burst:?}");
    assert!(burst.iter().any(|o| o.tier == "serverless"), "{burst:?}");
    // The new endpoint's containers reach the record with its next status poll.
    let new_container = |status: &Value| {
        status["serverless"]["containers"].as_array().unwrap().iter().any(|c| c["container"].as_u64() > Some(1_000_000))
    };
    wait_for("the new endpoint's container in the record", Duration::from_secs(5), || {
        new_container(&deployment.status())
    });
    let status = deployment.status();
    let containers = status["serverless"]["containers"].as_array().unwrap();
    let (old, new): (Vec<&Value>, Vec<&Value>) =
        containers.iter().partition(|c| c["container"].as_u64().unwrap() < 1_000_000);
    assert!(!old.is_empty() && !new.is_empty(), "{containers:?}");
    assert!(old.iter().all(|c| c["stopped_at_ms"].is_u64()), "the dead endpoint's containers are closed: {old:?}");
    // The killed endpoint's containers are in the provider's record too, as the ledger has them.
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    let (_, _, serverless_secs) = cost_against_the_billing_record(&deployment);
    assert!(serverless_secs > 0);
}

/// `cost --json` after the deployment stopped, checked against the provider's own
/// billing record: billed seconds exactly, USD to the cent. Returns the cost and the
/// billed spot and serverless seconds.
fn cost_against_the_billing_record(deployment: &Deployment) -> (Value, u64, u64) {
    let cost = deployment.tandemn(&["cost", "--service-name", "story", "--json"]);
    let record = std::fs::read_to_string(deployment.billing_record()).unwrap();
    let (mut spot_secs, mut serverless_secs) = (0, 0);
    for line in record.lines() {
        let bill: Value = serde_json::from_str(line).unwrap();
        let secs =
            (bill["stopped_unix_ms"].as_u64().unwrap() - bill["started_unix_ms"].as_u64().unwrap()).div_ceil(1000);
        if bill["tier"] == "spot" { spot_secs += secs } else { serverless_secs += secs }
    }
    let catalog = tandemn_config::Catalog::embedded();
    let spot_price = catalog.spot_price("aws", "L4").unwrap().spot_usd_per_hour.unwrap();
    let serverless_price = catalog.cheapest_serverless("L4").unwrap().price.usd_per_hour;
    assert_eq!(cost["spot"]["billed_secs"].as_u64().unwrap(), spot_secs, "{cost}\n{record}");
    assert_eq!(cost["serverless"]["billed_secs"].as_u64().unwrap(), serverless_secs, "{cost}\n{record}");
    let cents = |usd: f64| (usd * 100.0).round();
    assert_eq!(cents(cost["spot"]["usd"].as_f64().unwrap()), cents(spot_secs as f64 / 3600.0 * spot_price));
    assert_eq!(
        cents(cost["serverless"]["usd"].as_f64().unwrap()),
        cents(serverless_secs as f64 / 3600.0 * serverless_price)
    );
    (cost, spot_secs, serverless_secs)
}

fn pids_of(status: &Value) -> Vec<u64> {
    let mut pids: Vec<u64> =
        status["replicas"].as_array().unwrap().iter().filter_map(|r| r["reference"]["data"]["pid"].as_u64()).collect();
    pids.extend(status["serverless"]["endpoint"]["data"]["pid"].as_u64());
    pids
}

/// Finding 6: a second deploy of a running service is refused at once, naming the pid
/// that holds it, and changes nothing; `destroy` then stops everything.
#[test]
fn a_second_deploy_of_a_running_service_is_refused_and_changes_nothing() {
    let mut deployment = start();
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(request(&client(), &target, 2)).ok);
    let before = deployment.status();
    let pid = deployment.child.id();
    assert_eq!(before["pid"].as_u64(), Some(u64::from(pid)));

    let config = deployment.home.path().join("story.yaml");
    let mut second = tandemn(deployment.home.path());
    second.args(["deploy", "--config", config.to_str().unwrap()]);
    let refused = finishes(second, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`story` is already being deployed by another process (pid {pid}); stop it with \
             `tandemn destroy --service-name story` (or `kill {pid}`)"
        )),
        "{stderr}"
    );
    let after = deployment.status();
    assert_eq!((&after["pid"], &after["endpoint"]), (&before["pid"], &before["endpoint"]), "the record is the first's");
    assert!(runtime.block_on(request(&client(), &target, 2)).ok, "the first still serves");

    let pids = pids_of(&after);
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
    wait_for("the deploy process to exit", Duration::from_secs(30), || deployment.child.try_wait().unwrap().is_some());
    wait_for("no replica or serverless process left", Duration::from_secs(10), || {
        pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
}

/// Finding 6: the lock is taken before anything is written, and whoever holds it is
/// named; once it is free, the deploy runs.
#[test]
fn deploy_takes_the_service_lock_before_it_writes_anything() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("locks")).unwrap();
    let lock = std::fs::File::create(home.path().join("locks/story.lock")).unwrap();
    lock.try_lock().unwrap();
    std::io::Write::write_all(&mut &lock, format!("{}\n", std::process::id()).as_bytes()).unwrap();
    std::fs::write(home.path().join("story.yaml"), CONFIG).unwrap();

    let mut deploy = tandemn(home.path());
    deploy.args(["deploy", "--config", home.path().join("story.yaml").to_str().unwrap()]);
    let refused = finishes(deploy, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("another process (pid {})", std::process::id())), "{stderr}");
    assert!(!home.path().join("state.db").exists(), "nothing was written before the lock");

    drop(lock);
    let deployment = start_in(home, &[]);
    assert_eq!(deployment.status()["pid"].as_u64(), Some(u64::from(deployment.child.id())));
}

/// Every byte SQLite keeps for the store: the file, its WAL and its shared memory.
fn state_bytes(home: &Path) -> Vec<u8> {
    ["state.db", "state.db-wal", "state.db-shm"]
        .iter()
        .flat_map(|name| std::fs::read(home.join(name)).unwrap_or_default())
        .collect()
}

async fn status_of(url: String, key: &str, post: bool) -> u16 {
    let client = client();
    let request = if post { client.post(url).body("{\"backends\": []}") } else { client.get(url) };
    request.header("x-api-key", key).send().await.unwrap().status().as_u16()
}

/// Finding 10a: neither the client key nor the admin key reaches state.db; `status`
/// reads the router's health with a per-run token that opens nothing else.
#[test]
fn no_key_is_stored_and_status_reads_health_with_its_own_token() {
    let deployment = start();
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(request(&client(), &target, 2)).ok);
    wait_for("the router's health in status", Duration::from_secs(10), || {
        deployment.status()["router"]["backends"].as_array().is_some_and(|b| !b.is_empty())
    });

    let bytes = state_bytes(deployment.home.path());
    for (what, key) in [("client key", &deployment.api_key), ("admin key", &deployment.admin_key)] {
        assert!(key.len() > 20, "{what}: {key}");
        assert!(!bytes.windows(key.len()).any(|w| w == key.as_bytes()), "the {what} is in state.db");
    }

    let store = tandemn_provisioner::StateStore::open(deployment.home.path()).unwrap();
    let token = store.run("story").unwrap().unwrap().health_token.unwrap();
    let url = |path: &str| format!("{}{path}", deployment.endpoint);
    let admin = &deployment.admin_key;
    let got = |path: &str, key: &str, post: bool| runtime.block_on(status_of(url(path), key, post));
    assert_eq!(got("/router/health", &token, false), 200);
    assert_eq!(got("/metrics", &token, false), 401, "the token opens health only");
    assert_eq!(got("/router/config", &token, true), 401, "the token opens health only");
    assert_eq!(got("/metrics", admin, false), 200, "the printed admin key works");
}

/// Finding 12: SIGHUP does not stop a deployment; it keeps serving and later stops
/// cleanly on SIGTERM.
#[test]
fn sighup_leaves_a_deployment_serving() {
    let mut deployment = start_in(tempfile::tempdir().unwrap(), &[("RUST_LOG", "info")]);
    let target = (deployment.endpoint.clone(), deployment.api_key.clone());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert!(runtime.block_on(request(&client(), &target, 2)).ok);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(deployment.child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::SIGHUP).unwrap();
    let stderr = deployment.stderr.clone();
    wait_for("the SIGHUP to be logged", Duration::from_secs(10), || {
        stderr.lock().unwrap().iter().any(|l| l.contains("SIGHUP ignored; deploy has no config to reload"))
    });
    assert!(deployment.child.try_wait().unwrap().is_none(), "SIGHUP stopped the deployment");
    for _ in 0..3 {
        let outcome = runtime.block_on(request(&client(), &target, 2));
        assert!(outcome.ok, "{outcome:?}");
    }

    nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = deployment.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the deploy process did not exit on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let stdout = deployment.stdout.clone();
    wait_for("the stop summary", Duration::from_secs(5), || {
        stdout.lock().unwrap().iter().any(|l| l.starts_with("story stopped after"))
    });
    assert_eq!(deployment.status()["status"], "destroyed");
}

/// Finding 6: two deploys of one service started at the same moment: exactly one runs,
/// and the other is refused naming it.
#[test]
fn of_two_deploys_started_at_once_exactly_one_runs() {
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("story.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let spawn = || {
        let child = tandemn(home.path())
            .args(["deploy", "--config", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        KillOnDrop(child)
    };
    let mut both = [spawn(), spawn()];
    let mut refused = None;
    wait_for("one of the two to be refused", Duration::from_secs(20), || {
        refused = both.iter_mut().enumerate().find_map(|(i, d)| d.0.try_wait().unwrap().map(|code| (i, code)));
        refused.is_some()
    });
    let (loser, code) = refused.unwrap();
    let winner = both[1 - loser].0.id();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut both[loser].0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(code.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("already being deployed by another process (pid {winner})")), "{stderr}");
    let status = || {
        let output = tandemn(home.path()).args(["status", "--service-name", "story", "--json"]).output().unwrap();
        serde_json::from_slice::<Value>(&output.stdout).unwrap_or(Value::Null)
    };
    wait_for("the winner's run record", Duration::from_secs(20), || {
        status()["pid"].as_u64() == Some(u64::from(winner))
    });
    assert!(both[1 - loser].0.try_wait().unwrap().is_none(), "the winner keeps running");
    let destroyed = tandemn(home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success(), "{}", String::from_utf8_lossy(&destroyed.stderr));
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Finding 13: a running deployment whose record was corrupted is still listed apart and
/// stopped by `destroy --service-name`, with every process it ran.
#[test]
fn destroy_stops_a_running_deployment_whose_record_is_corrupt() {
    let mut deployment = start();
    deployment.launch_a_replica(&deployment.api_key);
    let pids = pids_of(&deployment.status());
    let db = rusqlite::Connection::open(deployment.home.path().join("state.db")).unwrap();
    db.execute("UPDATE deployments SET config_json = '{broken' WHERE service_name = 'story'", []).unwrap();
    drop(db);

    let list = tandemn(deployment.home.path()).arg("list").output().unwrap();
    assert!(list.status.success());
    assert!(
        String::from_utf8_lossy(&list.stderr).contains("deployment `story` has an unreadable record: config_json:")
    );
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&destroyed.stdout), String::from_utf8_lossy(&destroyed.stderr));
    assert!(destroyed.status.success(), "{stderr}");
    assert!(stderr.contains("stopping what its run recorded anyway"), "{stderr}");
    assert!(stdout.contains("story: destroyed; its record is unreadable, so there is no cost report"), "{stdout}");
    wait_for("the deploy process to exit", Duration::from_secs(30), || deployment.child.try_wait().unwrap().is_some());
    wait_for("no replica or serverless process left", Duration::from_secs(10), || {
        pids.iter().all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
    });
}

/// A key in tandemn's environment stays tandemn's: no replica or serverless process
/// inherits it (engines and their logs are not trusted with the router's keys).
#[test]
fn children_do_not_inherit_the_router_keys() {
    const KEY: &str = "tdn-env-secret-7f3a";
    let deployment = start_in(tempfile::tempdir().unwrap(), &[("TANDEMN_API_KEY", KEY)]);
    deployment.launch_a_replica(KEY);
    let pids = pids_of(&deployment.status());
    assert!(pids.len() >= 2, "a replica and the serverless endpoint");
    for pid in pids {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(!String::from_utf8_lossy(&environ).contains(KEY), "process {pid} inherited TANDEMN_API_KEY");
    }
    let destroyed = tandemn(deployment.home.path()).args(["destroy", "--service-name", "story"]).output().unwrap();
    assert!(destroyed.status.success());
}
