//! `tandemn status`: a deployment's tiers, replicas and routing, from the state store
//! and, while it runs, the router's admin API.

use std::time::Duration;

use tandemn_provisioner::StateStore;
use tandemn_provisioner::local::now_ms;

use super::deployment::{View, duration, split};
use crate::cli::ServiceArgs;
use crate::output::{Table, print, println};

pub fn run(args: &ServiceArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let view = View::load(&store, &args.service_name)?;
    let alive = view.alive();
    let health = if alive { router_health(&view) } else { None };
    if args.json {
        let json = serde_json::json!({
            "service_name": view.deployment.service_name,
            "status": view.deployment.status.as_str(),
            "running": alive,
            "endpoint": view.run.endpoint,
            "pid": view.run.pid,
            "usage": view.run.usage,
            "note": view.run.note,
            "replicas": view.replicas,
            "serverless": {"url": view.run.serverless_url, "endpoint": view.run.serverless, "running_containers": view.run.usage.serverless_running,
                           "containers": view.containers},
            "router": health,
            "events": store.events(&args.service_name)?,
            "cost": view.cost(),
        });
        println(&serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let run = &view.run;
    let d = &view.deployment;
    let state = if alive {
        format!("running (pid {}) for {}", run.pid, duration(now_ms().saturating_sub(run.started_at_ms) / 1000))
    } else {
        let ended = run.ended_at_ms.unwrap_or(run.updated_at_ms);
        format!("stopped after {} ({})", duration(ended.saturating_sub(run.started_at_ms) / 1000), d.status.as_str())
    };
    println(&format!("{}  {}", d.service_name, state));
    println(&format!("model        {} on {} x{}", d.model, d.gpu, d.gpu_count));
    println(&format!("endpoint     {}/v1", run.endpoint));
    let spot_state = health.as_ref().and_then(|h| h["spot_state"].as_str()).unwrap_or("unknown");
    println(&format!(
        "spot         {} ({}), {} replica(s) live, autoscaler wants {}",
        d.spots_cloud,
        if alive { spot_state } else { "stopped" },
        view.live_replicas().count(),
        run.usage.desired_replicas
    ));
    println(&format!(
        "serverless   {} at {}, {} container(s) running",
        d.serverless_provider,
        run.serverless_url.as_deref().unwrap_or("(not deployed)"),
        run.usage.serverless_running
    ));
    println(&format!("routing      {}", split(run.usage.spot_requests, run.usage.serverless_requests)));
    println(&format!("spent        ${:.4}{}", view.cost().total_usd, if alive { " so far" } else { "" }));
    if let Some(note) = &run.note {
        println(&format!("note         {note}"));
    }
    if !view.replicas.is_empty() {
        let mut table = Table::new(["REPLICA", "PHASE", "URL", "UP FOR", "DETAIL"]);
        for r in &view.replicas {
            let end = r.ended_at_ms.unwrap_or_else(now_ms);
            table.row(vec![
                r.replica.clone(),
                r.phase.as_str().to_string(),
                r.url.clone().unwrap_or_else(|| "(none yet)".to_string()),
                duration(end.saturating_sub(r.launched_at_ms) / 1000),
                r.detail.clone().unwrap_or_default(),
            ]);
        }
        print(&format!("\n{}", table.render()));
    }
    let events = store.events(&args.service_name)?;
    if !events.is_empty() {
        let skipped = events.len().saturating_sub(RECENT_EVENTS);
        println(&format!(
            "\nrecent replica events{}:",
            if skipped > 0 { format!(" (last {RECENT_EVENTS})") } else { String::new() }
        ));
        for event in &events[skipped..] {
            let at = std::time::UNIX_EPOCH + Duration::from_millis(event.at_ms);
            let detail = event.detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            println(&format!(
                "  {}  {:<8} {}{detail}",
                humantime::format_rfc3339_seconds(at),
                event.replica,
                event.phase.as_str()
            ));
        }
    }
    Ok(())
}

/// How many replica events the text output shows.
const RECENT_EVENTS: usize = 12;

/// `/router/health` of a running deployment, if it answers.
/// It authenticates with the run's health token (runs older than tokens have none).
fn router_health(view: &View) -> Option<serde_json::Value> {
    let token = view.run.health_token.as_deref()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .get(format!("{}/router/health", view.run.endpoint))
            .header("x-api-key", token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    })
}
