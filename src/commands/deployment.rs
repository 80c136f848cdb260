//! What `deploy`, `status`, `cost`, `destroy` and `preempt` share: finding a deployment's
//! run in the state store, telling whether its process still lives, and its cost.

use tandemn_config::Catalog;
use tandemn_provisioner::ledger::{CostReport, Prices, placed_rate};
use tandemn_provisioner::local::now_ms;
use tandemn_provisioner::process::is_running;
use tandemn_provisioner::state_store::{ContainerRow, Phase, ReplicaRow, Run};
use tandemn_provisioner::{Deployment, StateStore};

use super::UsageError;

/// A deployment with everything its run recorded.
pub struct View {
    pub deployment: Deployment,
    pub run: Run,
    pub replicas: Vec<ReplicaRow>,
    pub containers: Vec<ContainerRow>,
}

impl View {
    pub fn load(store: &StateStore, service: &str) -> anyhow::Result<View> {
        let Some(deployment) = store.deployment(service)? else {
            return Err(UsageError(format!("no deployment named `{service}`; `tandemn list` shows them")).into());
        };
        let Some(run) = store.run(service)? else {
            return Err(UsageError(format!("`{service}` was never started, so there is nothing to show")).into());
        };
        Ok(View { deployment, run, replicas: store.replicas(service)?, containers: store.containers(service)? })
    }

    /// Whether the deployment's process is still serving.
    pub fn alive(&self) -> bool {
        alive(&self.run)
    }

    pub fn cost(&self) -> CostReport {
        let d = &self.deployment;
        let prices = Prices::lookup(Catalog::embedded(), &d.gpu, d.gpu_count, &d.serverless_provider, &d.spots_cloud);
        let placed = |r: &ReplicaRow| placed_rate(Catalog::embedded(), &d.spots_cloud, r.placement.as_ref());
        CostReport::new(prices, &self.run, &self.replicas, &self.containers, self.billed_until(), placed)
    }

    /// Cloud replicas outlive a process that died: they bill until now, until a resumed
    /// run or `destroy` ends them.
    pub fn billed_until(&self) -> u64 {
        if self.deployment.spots_cloud != "local" && self.run.ended_at_ms.is_none() {
            return now_ms();
        }
        billed_until(&self.run)
    }

    pub fn live_replicas(&self) -> impl Iterator<Item = &ReplicaRow> {
        self.replicas.iter().filter(|r| !r.phase.is_final())
    }

    /// One line: each tier's state, the routing split and the spend so far.
    pub fn progress_line(&self) -> String {
        let count = |phase: Phase| self.live_replicas().filter(|r| r.phase == phase).count();
        let mut spot = Vec::new();
        for phase in [Phase::Ready, Phase::Booting, Phase::Provisioning, Phase::Draining] {
            let n = count(phase);
            if n > 0 {
                spot.push(format!("{n} {}", phase.as_str()));
            }
        }
        let spot = if spot.is_empty() { "none".to_string() } else { spot.join(", ") };
        let usage = &self.run.usage;
        let cost = self.cost();
        format!(
            "spot: {spot} (want {}) | serverless: {} container(s) | {} | spent ${:.4} (all-serverless ${:.4})",
            usage.desired_replicas,
            usage.serverless_running,
            split(usage.spot_requests, usage.serverless_requests),
            cost.total_usd,
            cost.pure_serverless_usd,
        )
    }
}

/// Whether a run's process is still serving.
pub fn alive(run: &Run) -> bool {
    run.ended_at_ms.is_none() && is_running(run.pid, run.pid_started)
}

/// Open records bill up to now while the deployment runs. If its process died without
/// closing them, its replicas died with it, so billing ends at its last tick.
pub fn billed_until(run: &Run) -> u64 {
    match run.ended_at_ms {
        Some(ended) => ended,
        None if alive(run) => now_ms(),
        None => run.updated_at_ms,
    }
}

/// `63% spot / 37% serverless (1,234 requests)`.
pub fn split(spot: u64, serverless: u64) -> String {
    let total = spot + serverless;
    if total == 0 {
        return "no requests yet".to_string();
    }
    let pct = |n: u64| n as f64 * 100.0 / total as f64;
    format!("{:.0}% spot / {:.0}% serverless ({total} requests)", pct(spot), pct(serverless))
}

/// `12s`, `4m 05s`, `2h 03m`.
pub fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        s => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
