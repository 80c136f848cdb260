//! The providers a deployment's configuration names, built the same way for the process
//! that runs it (`deploy`) and for the commands that act on it from outside (`destroy`,
//! `preempt`): everything they do to a replica goes through its provider.

use std::sync::Arc;

use tandemn_config::api::BackendAuth;
use tandemn_config::{DeploymentSpec, ServerlessProvider as ServerlessChoice, SpotCloud};
use tandemn_provisioner::StateStore;
use tandemn_provisioner::local::{LocalServerless, LocalSpot};
use tandemn_provisioner::provider::{ServerlessProvider, SpotProvider};
use tandemn_provisioner::reconciler::Timing;

use super::UsageError;

pub struct Providers {
    pub spot: Arc<dyn SpotProvider>,
    pub serverless: Arc<dyn ServerlessProvider>,
    /// The loop's timing for these providers (a cloud is polled less often).
    pub timing: Timing,
    /// What the router sends the spot replicas.
    pub replica_auth: BackendAuth,
}

/// Refuses, before anything is written, a provider this build cannot drive.
pub fn supported(spec: &DeploymentSpec) -> Result<(), UsageError> {
    if spec.serverless_provider != ServerlessChoice::Local {
        return Err(UsageError(format!(
            "serverless provider `{}` is not in this build yet; use `--serverless-provider local`",
            spec.serverless_provider
        )));
    }
    if spec.spots_cloud != SpotCloud::Local {
        return Err(UsageError(format!(
            "spot cloud `{}` is not in this build yet; use `--spots-cloud local`",
            spec.spots_cloud
        )));
    }
    Ok(())
}

pub fn for_deployment(spec: &DeploymentSpec) -> anyhow::Result<Providers> {
    supported(spec)?;
    let dir = StateStore::default_dir()?.join("local").join(&spec.service_name);
    let exe = std::env::current_exe()?;
    let spot: Arc<dyn SpotProvider> = Arc::new(LocalSpot::new(spec.local.clone(), &dir, &exe)?);
    let serverless: Arc<dyn ServerlessProvider> = Arc::new(LocalServerless::new(spec.local.clone(), &dir, &exe)?);
    Ok(Providers { spot, serverless, timing: Timing::default(), replica_auth: BackendAuth::None })
}
