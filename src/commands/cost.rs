//! `tandemn cost`: what a deployment spent per tier, next to what the same traffic would
//! have cost on pure serverless and on always-on on-demand instances.

use tandemn_provisioner::StateStore;

use super::deployment::{View, duration, split};
use crate::cli::ServiceArgs;
use crate::output::{Table, print, println};

pub fn run(args: &ServiceArgs) -> anyhow::Result<()> {
    let store = StateStore::open_default()?;
    let view = View::load(&store, &args.service_name)?;
    let cost = view.cost();
    if args.json {
        println(&serde_json::to_string_pretty(&cost)?);
        return Ok(());
    }
    let d = &view.deployment;
    let money = |usd: f64| format!("${usd:.4}");
    println(&format!("Cost: {}{}", d.service_name, if view.alive() { " (running; so far)" } else { "" }));
    println(&format!(
        "GPU {} x{} · serverless {} at ${:.2}/h · spot {} at ${:.2}/h · on-demand ${:.2}/h (per GPU)",
        d.gpu,
        d.gpu_count,
        d.serverless_provider,
        cost.prices.serverless,
        d.spots_cloud,
        cost.prices.spot,
        cost.prices.on_demand
    ));
    let missing: Vec<&str> =
        [("spot", cost.prices.spot), ("serverless", cost.prices.serverless), ("on-demand", cost.prices.on_demand)]
            .into_iter()
            .filter(|&(_, price)| price <= 0.0)
            .map(|(name, _)| name)
            .collect();
    if !missing.is_empty() {
        println(&format!(
            "note: the catalog has no {} price for {}; those rows count it as $0",
            missing.join(" / "),
            d.gpu
        ));
    }
    println(&format!(
        "Uptime {} · {}\n",
        duration(cost.uptime_secs),
        split(cost.spot_requests, cost.serverless_requests)
    ));
    let mut actual = Table::new(["ACTUAL", "COST", "BILLED"]);
    actual.row(vec![
        format!("Serverless ({})", d.serverless_provider),
        money(cost.serverless.usd),
        format!("{} container-seconds in {} container(s)", cost.serverless.billed_secs, cost.serverless.units),
    ]);
    actual.row(vec![
        format!("Spot ({})", d.spots_cloud),
        money(cost.spot.usd),
        format!("{} replica-seconds in {} replica(s)", cost.spot.billed_secs, cost.spot.units),
    ]);
    actual.row(vec!["Total".into(), money(cost.total_usd), String::new()]);
    print(&actual.render());
    if cost.spot.units > 0 && d.spots_cloud != "local" {
        println(&format!(
            "Spot priced at the instance the cloud reported for {} of {} replica(s){}\n",
            cost.spot_priced_by_placement,
            cost.spot.units,
            if cost.spot_priced_by_placement < cost.spot.units {
                format!("; the rest at the catalog's {} spot price", d.gpu)
            } else {
                String::new()
            }
        ));
    }
    let versus = |usd: f64| {
        if cost.total_usd > 0.0 && usd > 0.0 { format!("{:.1}x actual", usd / cost.total_usd) } else { "-".into() }
    };
    let mut alternatives = Table::new(["IF YOU HAD USED", "COST", "VS ACTUAL", "HOW"]);
    alternatives.row(vec![
        "All serverless".into(),
        money(cost.pure_serverless_usd),
        versus(cost.pure_serverless_usd),
        format!("{} container-seconds under the same scaledown rules", cost.pure_serverless_secs),
    ]);
    alternatives.row(vec![
        "All on-demand".into(),
        money(cost.on_demand_usd),
        versus(cost.on_demand_usd),
        format!("{} always-on instance(s) for the whole uptime", cost.on_demand_instances),
    ]);
    print(&format!("\n{}", alternatives.render()));
    if cost.spot_requests + cost.serverless_requests == 0 {
        println("\nNo requests yet.");
    } else if cost.saved_vs_serverless_usd > 0.0 {
        println(&format!(
            "\nSaved {} vs all-serverless ({:.0}% cheaper) and {} vs on-demand.",
            money(cost.saved_vs_serverless_usd),
            cost.saved_vs_serverless_usd / cost.pure_serverless_usd * 100.0,
            money(cost.saved_vs_on_demand_usd)
        ));
    } else {
        println(&format!(
            "\nThis run cost {} more than all-serverless would have (spot boot time is billed while serverless \
             serves; savings need traffic that keeps spot busy).",
            money(-cost.saved_vs_serverless_usd)
        ));
    }
    Ok(())
}
