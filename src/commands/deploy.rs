//! `tandemn deploy`: validates the configuration; launching arrives with the provisioner.

use tandemn_config::{Catalog, Choice, DeploymentSpec, SpotCloud};

use super::UsageError;
use crate::cli::DeployArgs;
use crate::output::print;
use crate::output::usd_per_hour;

pub fn run(args: &DeployArgs) -> anyhow::Result<()> {
    let spec = args.sources().load(Catalog::embedded())?;
    print(&summary(&spec));
    Err(UsageError(
        "the configuration above is valid, but `tandemn deploy` is not available yet in this build; \
         launching arrives with the provisioner"
            .to_string(),
    )
    .into())
}

/// A few lines that say what a spec will deploy, with prices from the catalog.
pub fn summary(spec: &DeploymentSpec) -> String {
    let catalog = Catalog::embedded();
    let name_note = if spec.service_name_generated { " (generated; fix it with --service-name)" } else { "" };
    let serverless_price = catalog
        .serverless_price(spec.serverless_provider.as_str(), &spec.gpu)
        .map_or(String::new(), |p| format!(" at {}", usd_per_hour(p.usd_per_hour)));
    let why = if spec.serverless_provider_auto { " (cheapest for this GPU)" } else { "" };
    let spot_price = match spec.spots_cloud {
        SpotCloud::Local => String::new(),
        cloud => catalog
            .spot_price(cloud.as_str(), &spec.gpu)
            .and_then(|p| p.spot_usd_per_hour)
            .map_or(" (no catalog spot price for this GPU)".to_string(), |p| format!(" at {} spot", usd_per_hour(p))),
    };
    let spot = &spec.scaling.spot;
    let serverless = &spec.scaling.serverless;
    let auth = if spec.public {
        "public (no client auth)".to_string()
    } else if spec.router.api_keys.is_empty() {
        "an API key is generated at deploy".to_string()
    } else {
        format!("{} API key(s)", spec.router.api_keys.len())
    };
    format!(
        "service      {}{name_note}\n\
         model        {}\n\
         gpu          {} x{} (tp {}, max_model_len {})\n\
         serverless   {}{serverless_price}{why}\n\
         spot         {}{spot_price}\n\
         scaling      spot {}..{} replicas at {} req/s each (up after {} s, down after {} s)\n\
         \x20            serverless {} requests per container, {}..{} containers, idle {} s, timeout {} s\n\
         router       {}, {auth}\n",
        spec.service_name,
        spec.model,
        spec.gpu,
        spec.gpu_count,
        spec.tp_size,
        spec.max_model_len,
        spec.serverless_provider,
        spec.spots_cloud,
        spot.min_replicas,
        spot.max_replicas,
        spot.target_qps,
        spot.upscale_delay,
        spot.downscale_delay,
        serverless.concurrency,
        serverless.workers_min,
        serverless.workers_max,
        serverless.scaledown_window,
        serverless.timeout,
        spec.router.listen,
    )
}
