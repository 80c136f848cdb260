//! The GPU catalog and price list (`catalog.yaml`, embedded at build time), and the
//! cheapest-provider rule: the lowest price wins, ties go to the provider listed first.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub sources: BTreeMap<String, PriceSource>,
    pub gpus: Vec<GpuSpec>,
    /// In tie-break order.
    pub serverless: Vec<ServerlessOffers>,
    pub spot: Vec<SpotOffers>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSource {
    pub as_of: String,
    pub cite: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    pub full_name: String,
    pub vram_gb: u32,
    pub arch: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessOffers {
    pub provider: String,
    pub prices: Vec<ServerlessPrice>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessPrice {
    pub gpu: String,
    /// The provider's own name for the GPU.
    pub id: String,
    pub usd_per_hour: f64,
    pub source: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpotOffers {
    pub cloud: String,
    pub prices: Vec<SpotPrice>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpotPrice {
    pub gpu: String,
    pub instance_type: String,
    pub region: String,
    /// Absent where the instance has no spot market.
    pub spot_usd_per_hour: Option<f64>,
    pub on_demand_usd_per_hour: f64,
    pub source: String,
}

/// One serverless offer for a GPU, with the provider that makes it.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub provider: &'a str,
    pub price: &'a ServerlessPrice,
}

impl Catalog {
    /// The catalog compiled into this binary.
    pub fn embedded() -> &'static Catalog {
        static CATALOG: OnceLock<Catalog> = OnceLock::new();
        CATALOG.get_or_init(|| {
            serde_yaml::from_str(include_str!("catalog.yaml"))
                .expect("the embedded catalog.yaml parses; the catalog tests check it")
        })
    }

    /// Looks a GPU up by name or alias, ignoring case.
    pub fn gpu(&self, name: &str) -> Option<&GpuSpec> {
        self.gpus
            .iter()
            .find(|gpu| gpu.name.eq_ignore_ascii_case(name) || gpu.aliases.iter().any(|a| a.eq_ignore_ascii_case(name)))
    }

    /// The known GPU name closest to a misspelt one, if any is close.
    pub fn suggest_gpu(&self, name: &str) -> Option<&str> {
        let names = self.gpus.iter().flat_map(|g| std::iter::once(&g.name).chain(&g.aliases));
        crate::closest(name, names.map(String::as_str))
    }

    /// Serverless offers for `gpu` (canonical name), in catalog order.
    pub fn serverless_offers(&self, gpu: &str) -> Vec<Offer<'_>> {
        self.serverless
            .iter()
            .flat_map(|offers| {
                offers.prices.iter().filter(|p| p.gpu == gpu).map(|price| Offer { provider: &offers.provider, price })
            })
            .collect()
    }

    /// The cheapest serverless offer for `gpu`; on a tie, the provider listed first.
    pub fn cheapest_serverless(&self, gpu: &str) -> Option<Offer<'_>> {
        self.serverless_offers(gpu)
            .into_iter()
            .reduce(|best, next| if next.price.usd_per_hour < best.price.usd_per_hour { next } else { best })
    }

    pub fn serverless_price(&self, provider: &str, gpu: &str) -> Option<&ServerlessPrice> {
        self.serverless_offers(gpu).into_iter().find(|o| o.provider == provider).map(|o| o.price)
    }

    pub fn spot_price<'a>(&'a self, cloud: &'a str, gpu: &str) -> Option<&'a SpotPrice> {
        self.spot_prices(cloud).find(|p| p.gpu == gpu)
    }

    /// Every spot price listed for `cloud`.
    pub fn spot_prices<'a>(&'a self, cloud: &'a str) -> impl Iterator<Item = &'a SpotPrice> + 'a {
        self.spot.iter().filter(move |offers| offers.cloud == cloud).flat_map(|o| &o.prices)
    }

    pub fn serverless_providers(&self) -> impl Iterator<Item = &str> {
        self.serverless.iter().map(|o| o.provider.as_str())
    }

    pub fn spot_clouds(&self) -> impl Iterator<Item = &str> {
        self.spot.iter().map(|o| o.cloud.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Choice, ServerlessProvider};

    #[test]
    fn embedded_catalog_is_consistent() {
        let catalog = Catalog::embedded();
        let mut names = std::collections::HashSet::new();
        for gpu in &catalog.gpus {
            for name in std::iter::once(&gpu.name).chain(&gpu.aliases) {
                assert!(names.insert(name.to_ascii_lowercase()), "GPU name or alias {name} is listed twice");
            }
            assert!(gpu.vram_gb > 0, "{} has no VRAM", gpu.name);
        }
        let known = |gpu: &str| catalog.gpus.iter().any(|g| g.name == gpu);
        for offers in &catalog.serverless {
            assert!(
                ServerlessProvider::parse(&offers.provider).is_some(),
                "unknown serverless provider {}",
                offers.provider
            );
            for price in &offers.prices {
                assert!(known(&price.gpu), "{} prices unknown GPU {}", offers.provider, price.gpu);
                assert!(price.usd_per_hour > 0.0, "{} {} has no price", offers.provider, price.gpu);
                assert!(catalog.sources.contains_key(&price.source), "unknown source {}", price.source);
            }
        }
        for offers in &catalog.spot {
            for price in &offers.prices {
                assert!(known(&price.gpu), "{} prices unknown GPU {}", offers.cloud, price.gpu);
                assert!(price.on_demand_usd_per_hour > 0.0);
                assert!(price.spot_usd_per_hour.is_none_or(|p| p > 0.0 && p < price.on_demand_usd_per_hour));
                assert!(catalog.sources.contains_key(&price.source), "unknown source {}", price.source);
            }
        }
        for gpu in &catalog.gpus {
            assert!(
                catalog.cheapest_serverless(&gpu.name).is_some() || catalog.spot_price("aws", &gpu.name).is_some(),
                "{} has no price anywhere",
                gpu.name
            );
        }
    }

    #[test]
    fn lookups_accept_aliases_and_any_case() {
        let catalog = Catalog::embedded();
        assert_eq!(catalog.gpu("A100").map(|g| g.name.as_str()), Some("A100_80GB"));
        assert_eq!(catalog.gpu("l40s").map(|g| g.name.as_str()), Some("L40S"));
        assert_eq!(catalog.gpu("4090").map(|g| g.name.as_str()), Some("RTX4090"));
        assert!(catalog.gpu("Z9000").is_none());
        assert_eq!(catalog.suggest_gpu("L4OS"), Some("L40S"));
        assert_eq!(catalog.suggest_gpu("H10"), Some("H100"));
    }

    #[test]
    fn cheapest_provider_is_the_lowest_price() {
        let catalog = Catalog::embedded();
        let cheapest = |gpu: &str| catalog.cheapest_serverless(gpu).map(|o| (o.provider, o.price.usd_per_hour));
        assert_eq!(cheapest("L4"), Some(("runpod", 0.68)));
        assert_eq!(cheapest("T4"), Some(("modal", 0.59)));
        assert_eq!(cheapest("H100"), Some(("modal", 3.95)));
        assert_eq!(cheapest("L40S"), Some(("runpod", 1.91)));
        assert_eq!(cheapest("RTX_PRO_6000"), Some(("runpod", 4.00)));
    }

    #[test]
    fn ties_go_to_the_provider_listed_first() {
        let text = r#"
sources: { s: { as_of: today, cite: test } }
gpus: [{ name: X, full_name: X, vram_gb: 1, arch: a }]
serverless:
  - { provider: runpod, prices: [{ gpu: X, id: x, usd_per_hour: 1.0, source: s }] }
  - { provider: modal, prices: [{ gpu: X, id: x, usd_per_hour: 1.0, source: s }] }
  - { provider: cloudrun, prices: [{ gpu: X, id: x, usd_per_hour: 2.0, source: s }] }
spot: []
"#;
        let catalog: Catalog = serde_yaml::from_str(text).unwrap();
        assert_eq!(catalog.cheapest_serverless("X").map(|o| o.provider), Some("runpod"));
    }
}
