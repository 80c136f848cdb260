//! `tandemn destroy`: stops a running deployment (it drains and removes what it runs)
//! and cleans up after one whose process died, so no replica process is left behind.
//! A deployment whose record is unreadable is still stopped from what its run recorded.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tandemn_config::{Catalog, Sources, SpotCloud};
use tandemn_provisioner::process::is_running;
use tandemn_provisioner::provider::{ProviderError, ReplicaRef};
use tandemn_provisioner::state_store::{ContainerRow, Phase};
use tandemn_provisioner::{DeploymentStatus, StateStore, StoreError, replica_key};

use super::UsageError;
use super::deployment::{View, alive, billed_until};
use crate::cli::DestroyArgs;
use crate::output::println;

/// How long a deployment gets to drain its streams and stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(660);

pub fn run(args: &DestroyArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let Some(name) = &args.service_name else { return destroy_all(&store) };
    destroy(&store, name)
}

/// Every active deployment; one that cannot be read or stopped does not stop the others.
fn destroy_all(store: &StateStore) -> anyhow::Result<()> {
    let listing = store.deployments(None)?;
    let mut missed = 0;
    for unreadable in &listing.unreadable {
        crate::output::eprintln(&format!(
            "warning: {unreadable}; skipped (`tandemn destroy --service-name NAME` stops what it can)"
        ));
        missed += 1;
    }
    let names: Vec<String> = listing
        .deployments
        .into_iter()
        .filter(|d| matches!(d.status, DeploymentStatus::Active | DeploymentStatus::Deploying))
        .map(|d| d.service_name)
        .collect();
    if names.is_empty() && missed == 0 {
        println("No active deployments.");
    }
    for name in names {
        if let Err(error) = destroy(store, &name) {
            crate::output::eprintln(&format!("error: {name}: {}", super::message(&error)));
            missed += 1;
        }
    }
    if missed > 0 {
        anyhow::bail!("{missed} deployment(s) were skipped or not destroyed; see above");
    }
    Ok(())
}

fn destroy(store: &StateStore, name: &str) -> anyhow::Result<()> {
    let readable = match store.deployment(name) {
        Ok(Some(_)) => true,
        Ok(None) => {
            return Err(UsageError(format!("no deployment named `{name}`; `tandemn list` shows them")).into());
        }
        Err(corrupt @ StoreError::Corrupt { .. }) => {
            crate::output::eprintln(&format!("warning: {corrupt}; stopping what its run recorded anyway"));
            false
        }
        Err(other) => return Err(other.into()),
    };
    let Some(run) = store.run(name)? else {
        store.set_status(name, DeploymentStatus::Destroyed)?;
        println(&format!("{name}: nothing was running; marked destroyed"));
        return Ok(());
    };
    if alive(&run) {
        println(&format!(
            "{name}: stopping (pid {}): draining streams, then removing replicas and serverless…",
            run.pid
        ));
        let pid = Pid::from_raw(i32::try_from(run.pid)?);
        // It may have stopped on its own just now (ESRCH): then there is nothing to signal.
        let _ = kill(pid, Signal::SIGTERM);
        let started = Instant::now();
        while alive(&run) {
            if started.elapsed() > STOP_TIMEOUT {
                println(&format!("{name}: did not stop within {STOP_TIMEOUT:?}; killing it"));
                if is_running(run.pid, run.pid_started) {
                    let _ = kill(pid, Signal::SIGKILL);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let cleaned = clean_up(store, name)?;
    if cleaned > 0 {
        println(&format!("{name}: the deployment's process had died; stopped {cleaned} leftover resource(s)"));
    }
    // Also mends an unreadable status: the row now says what is true.
    store.set_status(name, DeploymentStatus::Destroyed)?;
    // The replicas' key goes with the last of them.
    if store.replicas(name)?.iter().all(|r| r.phase.is_final()) {
        replica_key::remove(&StateStore::default_dir()?, name)?;
    }
    if readable {
        let cost = View::load(store, name)?.cost();
        println(&format!("{name}: destroyed; spent ${:.4} (`tandemn cost --service-name {name}`)", cost.total_usd));
    } else {
        println(&format!("{name}: destroyed; its record is unreadable, so there is no cost report"));
    }
    Ok(())
}

/// After the deployment's process is gone: terminates, through its providers, whatever
/// it left (recorded replicas, any other resource of the service a provider lists, the
/// serverless endpoint) and closes its records. Returns how many resources were stopped.
fn clean_up(store: &StateStore, name: &str) -> anyhow::Result<usize> {
    let Some(run) = store.run(name)? else { return Ok(0) };
    let open_replicas: Vec<_> = store.replicas(name)?.into_iter().filter(|r| !r.phase.is_final()).collect();
    if run.ended_at_ms.is_some() && open_replicas.is_empty() {
        return Ok(0);
    }
    let Some(deployment) = store.deployment(name)? else { return Ok(0) };
    let spec = Sources::stored(&deployment.config.to_string(), Catalog::embedded())?;
    let providers = super::providers::for_deployment(&spec)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let deadline = Duration::from_secs(120);
        let mut stopped = 0;
        let mut failures = Vec::new();
        let listed = within(deadline, providers.spot.list(name)).await;
        let mut references: Vec<ReplicaRef> = open_replicas.iter().filter_map(|r| r.reference.clone()).collect();
        match &listed {
            Ok(listed) => {
                let unrecorded: Vec<ReplicaRef> = listed
                    .iter()
                    .filter(|l| !references.iter().any(|r| r.id == l.id))
                    .map(|l| l.reference.clone())
                    .collect();
                references.extend(unrecorded);
            }
            // Without the list, a replica nobody recorded could hide: not done.
            Err(error) => failures.push(format!("listing the service's replicas: {error}")),
        }
        for reference in &references {
            let row = open_replicas.iter().find(|r| r.replica == reference.id.as_str());
            match within(deadline, providers.spot.terminate(reference)).await {
                Ok(at_ms) => {
                    stopped += 1;
                    // A local replica died with its process: billed until its last heartbeat.
                    let ended = if spec.spots_cloud == SpotCloud::Local { billed_until(&run) } else { at_ms };
                    if let Some(row) = row {
                        store.replica_phase(name, row, Phase::Terminated, ended, Some("terminated by destroy"))?;
                    }
                }
                Err(error) => failures.push(format!("{}: {error}", reference.id)),
            }
        }
        // Never launched (no reference) and not listed: nothing to stop.
        for row in open_replicas.iter().filter(|r| r.reference.is_none() && listed.is_ok()) {
            store.replica_phase(name, row, Phase::Failed, row.launched_at_ms, Some("never launched"))?;
        }
        let now = billed_until(&run);
        if let Some(endpoint) = &run.serverless {
            match within(deadline, providers.serverless.destroy(endpoint)).await {
                Ok(_) => stopped += 1,
                Err(error) => failures.push(format!("serverless {}: {error}", endpoint.id)),
            }
        }
        let open: Vec<ContainerRow> = store
            .containers(name)?
            .iter()
            .filter(|c| c.stopped_at_ms.is_none())
            .map(|c| ContainerRow { stopped_at_ms: Some(now), ..*c })
            .collect();
        store.save_containers(name, &open)?;
        if !failures.is_empty() {
            // The records stay open, so the next `destroy` tries again.
            anyhow::bail!(
                "could not terminate {}; run `tandemn destroy --service-name {name}` again",
                failures.join("; ")
            );
        }
        store.set_serverless(name, None)?;
        if run.ended_at_ms.is_none() {
            store.end_run(name, now)?;
        }
        Ok(stopped)
    })
}

async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(ProviderError::transient(format!("no answer within {deadline:?}"))))
}
