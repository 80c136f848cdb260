//! The providers a deployment's configuration names, built the same way for the process
//! that runs it (`deploy`) and for the commands that act on it from outside (`destroy`,
//! `preempt`): everything they do to a replica goes through its provider.

use std::sync::Arc;

use std::time::Duration;
use tandemn_config::api::BackendAuth;
use tandemn_config::{Choice, DeploymentSpec, ServerlessProvider as ServerlessChoice, SpotCloud};

use tandemn_config::api::Secret;
use tandemn_provisioner::local::now_ms;
use tandemn_provisioner::local::{LocalServerless, LocalSpot};
use tandemn_provisioner::provider::{ProviderError, ReplicaId, ServerlessProvider, SpotProvider};
use tandemn_provisioner::reconciler::Timing;
use tandemn_provisioner::skypilot::client::SkyClient;
use tandemn_provisioner::skypilot::{DOWN_DEADLINE, SUPPORTED_CLOUDS, SkyPilotSettings, SkyPilotSpot, task};
use tandemn_provisioner::{StateStore, replica_key};

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
    let cloud = spec.spots_cloud.as_str();
    if spec.spots_cloud != SpotCloud::Local && !SUPPORTED_CLOUDS.contains(&cloud) {
        return Err(UsageError(format!(
            "spot cloud `{cloud}` is not supported yet: the SkyPilot provider launches on {} (the catalog \
             prices spot GPUs there), or use `--spots-cloud local`",
            SUPPORTED_CLOUDS.join(", ")
        )));
    }
    Ok(())
}

/// The settings every SkyPilot replica of `spec` is launched with.
fn skypilot_settings(spec: &DeploymentSpec, replica_key: Secret) -> SkyPilotSettings {
    SkyPilotSettings {
        cloud: spec.spots_cloud.as_str().to_string(),
        region: spec.region.clone(),
        gpu: spec.gpu.clone(),
        gpu_count: spec.gpu_count,
        model: spec.model.clone(),
        tp_size: spec.tp_size,
        max_model_len: spec.max_model_len,
        engine_port: task::DEFAULT_ENGINE_PORT,
        disk_size_gb: task::DEFAULT_DISK_GB,
        image: None,
        replica_key,
    }
}

/// The SkyPilot task a replica of `spec` would be launched with, its key shown as `***`
/// (for `deploy --dry-run`); `None` for local spot.
pub fn task_preview(spec: &DeploymentSpec) -> anyhow::Result<Option<String>> {
    if spec.spots_cloud == SpotCloud::Local {
        return Ok(None);
    }
    // Nothing is sent and no key is made: the printed form hides the key anyway.
    let settings = skypilot_settings(spec, Secret::new("unused"));
    let spot = SkyPilotSpot::new(SkyClient::from_env().map_err(usage)?, settings).map_err(usage)?;
    let id = ReplicaId::new(&spec.service_name, now_ms(), 1).map_err(UsageError)?;
    Ok(Some(spot.task(&spot.replica_spec(&spec.service_name, id)).map_err(usage)?.to_string()))
}

pub fn for_deployment(spec: &DeploymentSpec) -> anyhow::Result<Providers> {
    supported(spec)?;
    let home = StateStore::default_dir()?;
    let dir = home.join("local").join(&spec.service_name);
    let exe = std::env::current_exe()?;
    let serverless: Arc<dyn ServerlessProvider> = Arc::new(LocalServerless::new(spec.local.clone(), &dir, &exe)?);
    if spec.spots_cloud == SpotCloud::Local {
        let spot: Arc<dyn SpotProvider> = Arc::new(LocalSpot::new(spec.local.clone(), &dir, &exe)?);
        return Ok(Providers { spot, serverless, timing: Timing::default(), replica_auth: BackendAuth::None });
    }
    let replica_key = replica_key::load_or_create(&home, &spec.service_name)?;
    let settings = skypilot_settings(spec, replica_key.clone());
    let spot = SkyPilotSpot::new(SkyClient::from_env().map_err(usage)?, settings).map_err(usage)?;
    let timing = Timing {
        // `/status` with refresh asks the cloud; SkyPilot caches a spot cluster's state 2 s.
        status_interval: Duration::from_secs(2),
        // The client bounds each call itself (a teardown may take minutes); this is the
        // loop's outer guard.
        call_timeout: DOWN_DEADLINE + Duration::from_secs(60),
        ..Timing::default()
    };
    Ok(Providers { spot: Arc::new(spot), serverless, timing, replica_auth: BackendAuth::Bearer { token: replica_key } })
}

fn usage(error: ProviderError) -> UsageError {
    UsageError(error.to_string())
}
