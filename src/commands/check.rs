//! `tandemn check`: validates a configuration (every problem at once), then reports
//! which provider credentials and CLIs this machine has. Secrets are never printed.

use std::time::Duration;

use tandemn_config::{Catalog, SpotCloud};
use tandemn_provisioner::credentials::{Account, Environment, probe};
use tandemn_provisioner::skypilot::client::SkyClient;
use tandemn_provisioner::skypilot::{self, SkyCheck};

use super::UsageError;
use super::keys::Keys;
use crate::cli::DeployArgs;
use crate::output::println;

pub fn run(args: &DeployArgs) -> anyhow::Result<()> {
    let sources = args.sources();
    let mut needed = Vec::new();
    let mut needs_skypilot = false;
    let mut problems = 0;
    // Keys from flags, files and the environment are checked whatever else is given.
    let flag_keys = match Keys::from_args(&args.keys) {
        Ok(keys) => keys.client.len(),
        Err(problem) => {
            problems += 1;
            println(&format!("Keys: {problem}"));
            0
        }
    };
    if sources.is_empty() {
        println("Configuration: none given (pass --config FILE or deploy flags to check one)");
    } else {
        match sources.load(Catalog::embedded()) {
            Ok(spec) => {
                println("Configuration: valid");
                for line in super::deploy::summary(&spec, flag_keys).lines() {
                    println(&format!("  {line}"));
                }
                needed = vec![Account::for_serverless(spec.serverless_provider), Account::for_spot(spec.spots_cloud)];
                needs_skypilot = spec.spots_cloud != SpotCloud::Local;
            }
            Err(error) => {
                let count = error.violations.len();
                problems += count;
                println(&format!("Configuration: {count} problem{}", if count == 1 { "" } else { "s" }));
                for violation in &error.violations {
                    println(&format!("  {violation}"));
                }
            }
        }
    }

    println("\nProvider setup:");
    let env = Environment::current();
    // The SkyPilot API server the spot tier talks to: reachable, its version, AWS enabled.
    // One that answers, with AWS, is all the spot tier needs (no local `sky`).
    let sky = skypilot_check();
    let sky_ready = sky.as_ref().is_ok_and(|c| c.problem.is_none());
    let mut missing = Vec::new();
    for account in Account::ALL {
        let mut status = probe(account, &env);
        if account == Account::Skypilot && sky_ready {
            status.ready = true;
            status.found = vec!["the API server answers (below)".to_string()];
            status.missing.clear();
        }
        let mark = if status.ready { "ok" } else { "missing" };
        let needed_note = if needed.contains(&account) { " (needed by this deployment)" } else { "" };
        println(&format!("  [{mark:<7}] {:<9} {}{needed_note}", account.name(), status.found.join("; ")));
        for fix in &status.missing {
            println(&format!("              fix: {fix}"));
        }
        if !status.ready && needed.contains(&account) {
            missing.push(account.name());
        }
    }

    let mark = if sky_ready { "ok" } else { "problem" };
    match &sky {
        Ok(report) => println(&format!("  [{mark:<7}] {report}")),
        Err(problem) => println(&format!("  [{mark:<7}] SkyPilot API server: {problem}")),
    }
    if needs_skypilot && !sky_ready {
        missing.push("a SkyPilot API server with AWS enabled (see the README's SkyPilot section)");
    }

    if problems > 0 {
        return Err(UsageError(format!("the configuration has {problems} problem(s), listed above")).into());
    }
    if !missing.is_empty() {
        anyhow::bail!("this deployment needs credentials that are missing: {}", missing.join(", "));
    }
    Ok(())
}

/// Asks the SkyPilot API server (`SKYPILOT_API_SERVER_ENDPOINT`, default loopback) what
/// `check` reports, within a few seconds.
pub(super) fn skypilot_check() -> Result<SkyCheck, String> {
    let client = SkyClient::from_env().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(15), skypilot::check(&client)).await })
        .map_err(|_| format!("{} did not answer within 15 s", client.api_endpoint()))
}
