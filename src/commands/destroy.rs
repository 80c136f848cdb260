//! `tandemn destroy`: stops a running deployment (it drains and removes what it runs)
//! and cleans up after one whose process died, so no replica process is left behind.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tandemn_provisioner::process::is_running;
use tandemn_provisioner::state_store::{Phase, ReplicaRow};
use tandemn_provisioner::{DeploymentStatus, StateStore};

use super::UsageError;
use super::deployment::{View, kill_group};
use crate::cli::DestroyArgs;
use crate::output::println;

/// How long a deployment gets to drain its streams and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(660);

pub fn run(args: &DestroyArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let names: Vec<String> = match &args.service_name {
        Some(name) => vec![name.clone()],
        None => store
            .deployments(None)?
            .into_iter()
            .filter(|d| matches!(d.status, DeploymentStatus::Active | DeploymentStatus::Deploying))
            .map(|d| d.service_name)
            .collect(),
    };
    if names.is_empty() {
        println("No active deployments.");
    }
    for name in names {
        destroy(&store, &name)?;
    }
    Ok(())
}

fn destroy(store: &StateStore, name: &str) -> anyhow::Result<()> {
    if store.deployment(name)?.is_none() {
        return Err(UsageError(format!("no deployment named `{name}`; `tandemn list` shows them")).into());
    }
    if store.run(name)?.is_none() {
        store.set_status(name, DeploymentStatus::Destroyed)?;
        println(&format!("{name}: nothing was running; marked destroyed"));
        return Ok(());
    }
    let view = View::load(store, name)?;
    if view.alive() {
        println(&format!(
            "{name}: stopping (pid {}): draining streams, then removing replicas and serverless…",
            view.run.pid
        ));
        let pid = Pid::from_raw(i32::try_from(view.run.pid)?);
        // It may have stopped on its own just now (ESRCH): then there is nothing to signal.
        let _ = kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        while view.alive() {
            if started.elapsed() > STOP_TIMEOUT {
                println(&format!("{name}: did not stop within {STOP_TIMEOUT:?}; killing it"));
                if is_running(view.run.pid, view.run.pid_started) {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let cleaned = clean_up(store, name)?;
    if cleaned > 0 {
        println(&format!("{name}: the deployment's process had died; stopped {cleaned} leftover process(es)"));
    }
    store.set_status(name, DeploymentStatus::Destroyed)?;
    let cost = View::load(store, name)?.cost();
    println(&format!("{name}: destroyed; spent ${:.4} (`tandemn cost --service-name {name}`)", cost.total_usd));
    Ok(())
}

/// After the deployment's process is gone: stops whatever it left running and closes
/// its records. Returns how many processes were stopped.
fn clean_up(store: &StateStore, name: &str) -> anyhow::Result<usize> {
    let view = View::load(store, name)?;
    if view.run.ended_at_ms.is_some() {
        return Ok(0);
    }
    let now = view.billed_until();
    let mut stopped = 0;
    let replicas: Vec<&ReplicaRow> = view.live_replicas().collect();
    for replica in replicas {
        if replica.pid.is_some_and(|pid| kill_group(pid, replica.pid_started, Signal::SIGKILL)) {
            stopped += 1;
        }
        store.replica_phase(name, replica, Phase::Terminated, now, Some("cleaned up by destroy"))?;
    }
    if view.run.serverless_pid.is_some_and(|pid| kill_group(pid, view.run.serverless_pid_started, Signal::SIGKILL)) {
        stopped += 1;
    }
    {
        let open: Vec<_> = view
            .containers
            .iter()
            .filter(|c| c.stopped_at_ms.is_none())
            .map(|c| tandemn_provisioner::state_store::ContainerRow { stopped_at_ms: Some(now), ..*c })
            .collect();
        store.save_containers(name, &open)?;
        store.end_run(name, now)?;
    }
    Ok(stopped)
}
