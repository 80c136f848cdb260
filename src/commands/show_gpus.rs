//! `tandemn show-gpus`: the embedded price catalog as a table, a detail view or JSON.

use serde_json::json;
use tandemn_config::Catalog;
use tandemn_config::catalog::{GpuSpec, Offer, SpotPrice};

use super::UsageError;
use crate::cli::ShowGpusArgs;
use crate::output::{Table, usd_per_hour};
use crate::output::{print, println};

/// Everything the catalog knows about one GPU's prices.
struct GpuPrices<'a> {
    gpu: &'a GpuSpec,
    serverless: Vec<Offer<'a>>,
    cheapest: Option<Offer<'a>>,
    spot: Vec<(&'a str, &'a SpotPrice)>,
}

impl<'a> GpuPrices<'a> {
    fn of(catalog: &'a Catalog, gpu: &'a GpuSpec, provider: Option<&str>) -> Self {
        let shown = |name: &str| provider.is_none_or(|p| p == name);
        let serverless: Vec<Offer> =
            catalog.serverless_offers(&gpu.name).into_iter().filter(|o| shown(o.provider)).collect();
        let spot = catalog
            .spot_clouds()
            .filter(|cloud| shown(cloud))
            .filter_map(|cloud| catalog.spot_price(cloud, &gpu.name).map(|p| (cloud, p)))
            .collect();
        Self { gpu, cheapest: catalog.cheapest_serverless(&gpu.name), serverless, spot }
    }

    fn is_empty(&self) -> bool {
        self.serverless.is_empty() && self.spot.is_empty()
    }

    /// The cheapest spot offer, and how much less than the cheapest serverless it costs (%).
    fn spot_savings(&self) -> Option<(&'a str, f64, f64)> {
        let (cloud, spot) = self
            .spot
            .iter()
            .filter_map(|(cloud, price)| price.spot_usd_per_hour.map(|p| (*cloud, p)))
            .reduce(|a, b| if b.1 < a.1 { b } else { a })?;
        let serverless = self.cheapest?.price.usd_per_hour;
        Some((cloud, spot, (serverless - spot) / serverless * 100.0))
    }

    fn json(&self, catalog: &Catalog) -> serde_json::Value {
        let as_of = |source: &str| catalog.sources.get(source).map(|s| s.as_of.clone());
        json!({
            "gpu": self.gpu.name,
            "full_name": self.gpu.full_name,
            "vram_gb": self.gpu.vram_gb,
            "arch": self.gpu.arch,
            "aliases": self.gpu.aliases,
            "serverless": self.serverless.iter().map(|o| json!({
                "provider": o.provider,
                "provider_gpu_id": o.price.id,
                "usd_per_hour": o.price.usd_per_hour,
                "as_of": as_of(&o.price.source),
                "source": catalog.sources.get(&o.price.source).map(|s| &s.cite),
            })).collect::<Vec<_>>(),
            "cheapest_serverless": self.cheapest.map(|o| o.provider),
            "spot": self.spot.iter().map(|(cloud, p)| json!({
                "cloud": cloud,
                "instance_type": p.instance_type,
                "region": p.region,
                "spot_usd_per_hour": p.spot_usd_per_hour,
                "on_demand_usd_per_hour": p.on_demand_usd_per_hour,
                "as_of": as_of(&p.source),
                "source": catalog.sources.get(&p.source).map(|s| &s.cite),
            })).collect::<Vec<_>>(),
            "spot_savings_percent": self.spot_savings().map(|(_, _, pct)| (pct * 10.0).round() / 10.0),
        })
    }
}

pub fn run(args: &ShowGpusArgs) -> anyhow::Result<()> {
    let catalog = Catalog::embedded();
    if let Some(provider) = &args.provider {
        let known: Vec<&str> = catalog.serverless_providers().chain(catalog.spot_clouds()).collect();
        if !known.contains(&provider.as_str()) {
            return Err(UsageError(format!("unknown provider `{provider}`; choose one of {}", known.join(", "))).into());
        }
    }
    let provider = args.provider.as_deref();

    if let Some(name) = &args.gpu {
        let gpu = catalog.gpu(name).ok_or_else(|| {
            let hint = catalog.suggest_gpu(name).map_or(String::new(), |s| format!("; did you mean `{s}`?"));
            UsageError(format!("unknown GPU `{name}`{hint} (`tandemn show-gpus` lists them)"))
        })?;
        let prices = GpuPrices::of(catalog, gpu, provider);
        if args.json {
            println(&serde_json::to_string_pretty(&prices.json(catalog))?);
        } else {
            print(&detail(catalog, &prices));
        }
        return Ok(());
    }

    let mut rows: Vec<GpuPrices> =
        catalog.gpus.iter().map(|gpu| GpuPrices::of(catalog, gpu, provider)).filter(|p| !p.is_empty()).collect();
    rows.sort_by_key(|p| p.gpu.vram_gb);
    if args.json {
        let all: Vec<_> = rows.iter().map(|p| p.json(catalog)).collect();
        println(&serde_json::to_string_pretty(&all)?);
    } else {
        print(&table(catalog, &rows, provider));
    }
    Ok(())
}

fn table(catalog: &Catalog, rows: &[GpuPrices], provider: Option<&str>) -> String {
    let shown = |name: &str| provider.is_none_or(|p| p == name);
    let serverless: Vec<&str> = catalog.serverless_providers().filter(|p| shown(p)).collect();
    let clouds: Vec<&str> = catalog.spot_clouds().filter(|c| shown(c)).collect();
    let mut headers = vec!["GPU".to_string(), "VRAM".to_string()];
    headers.extend(serverless.iter().map(|p| p.to_uppercase()));
    for cloud in &clouds {
        headers.push(format!("{} SPOT", cloud.to_uppercase()));
        headers.push(format!("{} ON-DEMAND", cloud.to_uppercase()));
    }
    if !clouds.is_empty() {
        headers.push("SPOT SAVINGS".to_string());
    }
    let mut table = Table::new(headers);
    for prices in rows {
        let mut cells = vec![prices.gpu.name.clone(), format!("{} GB", prices.gpu.vram_gb)];
        for name in &serverless {
            let cell = prices.serverless.iter().find(|o| o.provider == *name).map_or("-".to_string(), |o| {
                let mark = if prices.cheapest.is_some_and(|c| c.provider == *name) { "*" } else { "" };
                format!("{}{mark}", usd_per_hour(o.price.usd_per_hour))
            });
            cells.push(cell);
        }
        for cloud in &clouds {
            let price = prices.spot.iter().find(|(c, _)| c == cloud).map(|(_, p)| *p);
            cells.push(price.and_then(|p| p.spot_usd_per_hour).map_or("-".to_string(), usd_per_hour));
            cells.push(price.map_or("-".to_string(), |p| usd_per_hour(p.on_demand_usd_per_hour)));
        }
        if !clouds.is_empty() {
            cells.push(prices.spot_savings().map_or("-".to_string(), |(_, _, pct)| savings(pct)));
        }
        table.row(cells);
    }
    let mut out = table.render();
    out.push_str(
        "\nUSD per GPU-hour, list prices. * = cheapest serverless provider, which `deploy` picks \
         when --serverless-provider is not given.\nSpot savings compare the cheapest spot price with \
         the cheapest serverless one. Dates and sources: `tandemn show-gpus --gpu <GPU>` or --json.\n",
    );
    out
}

fn detail(catalog: &Catalog, prices: &GpuPrices) -> String {
    let gpu = prices.gpu;
    let aliases = if gpu.aliases.is_empty() { "-".to_string() } else { gpu.aliases.join(", ") };
    let mut out = format!(
        "GPU:      {}\nName:     {}\nVRAM:     {} GB\nArch:     {}\nAliases:  {aliases}\n\n",
        gpu.name, gpu.full_name, gpu.vram_gb, gpu.arch
    );
    let as_of = |source: &str| catalog.sources.get(source).map_or("-".to_string(), |s| s.as_of.clone());
    let mut table = Table::new(["PROVIDER", "KIND", "PRICE", "PROVIDER GPU / INSTANCE", "AS OF"]);
    let mut serverless = prices.serverless.clone();
    serverless.sort_by(|a, b| a.price.usd_per_hour.total_cmp(&b.price.usd_per_hour));
    for offer in &serverless {
        let price = offer.price;
        let rate = usd_per_hour(price.usd_per_hour);
        table.row(vec![offer.provider.into(), "serverless".into(), rate, price.id.clone(), as_of(&price.source)]);
    }
    for (cloud, price) in &prices.spot {
        let instance = format!("{}, {}", price.instance_type, price.region);
        if let Some(spot) = price.spot_usd_per_hour {
            table.row(vec![
                cloud.to_string(),
                "spot".into(),
                usd_per_hour(spot),
                instance.clone(),
                as_of(&price.source),
            ]);
        }
        let on_demand = usd_per_hour(price.on_demand_usd_per_hour);
        table.row(vec![cloud.to_string(), "on-demand".into(), on_demand, instance, as_of(&price.source)]);
    }
    if prices.is_empty() {
        out.push_str("No prices for this GPU from the chosen provider.\n");
    } else {
        out.push_str(&table.render());
    }
    out.push('\n');
    match prices.cheapest {
        Some(offer) => out.push_str(&format!(
            "Cheapest serverless: {} at {} (what `deploy` picks without --serverless-provider)\n",
            offer.provider,
            usd_per_hour(offer.price.usd_per_hour)
        )),
        None => {
            out.push_str("No serverless provider offers this GPU; use `--serverless-provider local` to run it here.\n")
        }
    }
    if let (Some((cloud, spot, pct)), Some(cheapest)) = (prices.spot_savings(), prices.cheapest) {
        out.push_str(&format!(
            "{cloud} spot at {}: {} than the cheapest serverless ({} {})\n",
            usd_per_hour(spot),
            savings(pct),
            cheapest.provider,
            usd_per_hour(cheapest.price.usd_per_hour),
        ));
    }
    out
}

fn savings(percent: f64) -> String {
    match percent.round() {
        p if p > 0.0 => format!("{p:.0}% cheaper"),
        p if p < 0.0 => format!("{:.0}% dearer", -p),
        _ => "no cheaper".to_string(),
    }
}
