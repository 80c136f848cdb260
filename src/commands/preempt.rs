//! `tandemn preempt`: kills a local spot replica the way a cloud takes a spot instance
//! back, to watch the router fail over and the provisioner replace it.

use tandemn_provisioner::StateStore;
use tandemn_provisioner::local::LocalSpot;
use tandemn_provisioner::state_store::Phase;

use super::UsageError;
use super::deployment::View;
use crate::cli::PreemptArgs;
use crate::output::println;

pub fn run(args: &PreemptArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let view = View::load(&store, &args.service)?;
    if !view.alive() {
        return Err(UsageError(format!("`{}` is not running", args.service)).into());
    }
    if view.deployment.spots_cloud != "local" {
        return Err(UsageError("only local spot replicas can be preempted on demand".to_string()).into());
    }
    let live: Vec<_> = view.live_replicas().collect();
    let replica = match &args.replica {
        Some(id) => live.iter().find(|r| &r.replica == id).copied().ok_or_else(|| {
            let ids: Vec<&str> = live.iter().map(|r| r.replica.as_str()).collect();
            UsageError(format!(
                "no live replica `{id}`; live: {}",
                if ids.is_empty() { "none".into() } else { ids.join(", ") }
            ))
        })?,
        None => live
            .iter()
            .find(|r| r.phase == Phase::Ready)
            .or(live.first())
            .copied()
            .ok_or_else(|| UsageError(format!("`{}` has no spot replica to preempt", args.service)))?,
    };
    let Some(reference) = &replica.reference else {
        return Err(UsageError(format!("{} is still launching", replica.replica)).into());
    };
    LocalSpot::preempt(reference).map_err(|error| UsageError(error.to_string()))?;
    println(&format!(
        "preempted {} ({}); serverless takes its traffic and the provisioner replaces it",
        replica.replica,
        replica.phase.as_str()
    ));
    Ok(())
}
