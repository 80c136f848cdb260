//! `tandemn list`: deployments from the state store, newest first.

use tandemn_provisioner::{DeploymentStatus, StateStore};

use crate::cli::{ListArgs, StatusFilter};
use crate::output::Table;
use crate::output::{print, println};

pub fn run(args: &ListArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let status = args.status.map(|s| match s {
        StatusFilter::Deploying => DeploymentStatus::Deploying,
        StatusFilter::Active => DeploymentStatus::Active,
        StatusFilter::Failed => DeploymentStatus::Failed,
        StatusFilter::Destroyed => DeploymentStatus::Destroyed,
    });
    let listing = store.deployments(status)?;
    // A bad row is named and skipped: it must not hide every other deployment.
    for unreadable in &listing.unreadable {
        crate::output::eprintln(&format!("warning: {unreadable}; it is left out"));
    }
    let deployments = listing.deployments;
    if args.json {
        println(&serde_json::to_string_pretty(&deployments)?);
        return Ok(());
    }
    if deployments.is_empty() {
        match status {
            Some(status) => println(&format!("No {} deployments found.", status.as_str())),
            None => println("No deployments found. Start one with `tandemn deploy`."),
        }
        return Ok(());
    }
    let mut table = Table::new(["SERVICE NAME", "STATUS", "MODEL", "GPU", "SERVERLESS", "SPOT", "CREATED"]);
    for d in &deployments {
        let gpu = if d.gpu_count == 1 { d.gpu.clone() } else { format!("{}x{}", d.gpu_count, d.gpu) };
        // An active deployment whose process died (a crash, a SIGKILL) says so.
        let run = store.run(&d.service_name).unwrap_or_else(|unreadable| {
            crate::output::eprintln(&format!("warning: {unreadable}"));
            None
        });
        let stale = d.status == DeploymentStatus::Active
            && run.is_some_and(|run| {
                run.ended_at_ms.is_none() && !tandemn_provisioner::process::is_running(run.pid, run.pid_started)
            });
        table.row(vec![
            d.service_name.clone(),
            if stale { "active (not running)".to_string() } else { d.status.as_str().to_string() },
            d.model.clone(),
            gpu,
            d.serverless_provider.clone(),
            d.spots_cloud.clone(),
            humantime::format_rfc3339_seconds(d.created_at).to_string(),
        ]);
    }
    print(&table.render());
    Ok(())
}
