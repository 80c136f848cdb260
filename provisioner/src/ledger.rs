//! What a deployment cost, and what the same traffic would have cost on pure serverless
//! and on always-on on-demand instances.
//!
//! Billing is per second, each interval rounded up to a whole second, as the providers
//! bill: spot replicas from launch to termination (booting included), serverless
//! containers from cold start to scale-down (the idle scaledown window included). The
//! pure-serverless counterfactual replays the observed concurrency through the same
//! container rules (`ServerlessShadow`); on-demand is enough always-on instances for the
//! most replicas the autoscaler asked for, for the whole run.

use serde::Serialize;
use tandemn_config::{Catalog, Choice, ServerlessProvider, SpotCloud};

use crate::provider::Placement;
use crate::state_store::{ContainerRow, ReplicaRow, Run};

/// USD per GPU-hour for each way of running the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    pub spot: f64,
    pub serverless: f64,
    pub on_demand: f64,
    pub gpu_count: u32,
}

impl Prices {
    /// Catalog prices for a GPU on the given providers. The `local` tiers are billed as
    /// the cheapest catalog offer of their kind, so a local run shows what a cloud charges.
    pub fn lookup(
        catalog: &Catalog,
        gpu: &str,
        gpu_count: u32,
        serverless_provider: &str,
        spots_cloud: &str,
    ) -> Prices {
        let spot_offer = if spots_cloud == SpotCloud::Local.as_str() {
            let by_spot = |p: &&tandemn_config::catalog::SpotPrice| p.spot_usd_per_hour.unwrap_or(f64::MAX);
            catalog
                .spot_clouds()
                .filter_map(|cloud| catalog.spot_price(cloud, gpu))
                .min_by(|a, b| by_spot(a).total_cmp(&by_spot(b)))
        } else {
            catalog.spot_price(spots_cloud, gpu)
        };
        let serverless = if serverless_provider == ServerlessProvider::Local.as_str() {
            catalog.cheapest_serverless(gpu).map(|o| o.price.usd_per_hour)
        } else {
            catalog.serverless_price(serverless_provider, gpu).map(|p| p.usd_per_hour)
        };
        Prices {
            spot: spot_offer.and_then(|p| p.spot_usd_per_hour).unwrap_or(0.0),
            serverless: serverless.unwrap_or(0.0),
            on_demand: spot_offer.map_or(0.0, |p| p.on_demand_usd_per_hour),
            gpu_count,
        }
    }
}

/// The hourly spot price of the instance a cloud placed a replica on, where the catalog
/// lists that instance type in that region.
pub fn placed_rate(catalog: &Catalog, cloud: &str, placement: Option<&Placement>) -> Option<f64> {
    let placement = placement.filter(|p| p.spot)?;
    catalog
        .spot_prices(cloud)
        .find(|p| p.instance_type == placement.instance_type && p.region == placement.region)?
        .spot_usd_per_hour
}

/// Whole seconds billed for an interval: started seconds count in full.
pub fn billed_secs(start_ms: u64, end_ms: u64) -> u64 {
    end_ms.saturating_sub(start_ms).div_ceil(1000)
}

fn usd(secs: u64, usd_per_hour: f64, gpu_count: u32) -> f64 {
    secs as f64 / 3600.0 * usd_per_hour * f64::from(gpu_count)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierCost {
    pub usd: f64,
    pub billed_secs: u64,
    /// Replicas (spot) or containers (serverless) that were billed.
    pub units: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostReport {
    pub prices: Prices,
    pub uptime_secs: u64,
    pub spot: TierCost,
    pub serverless: TierCost,
    /// Spot replicas priced at the instance their cloud reported (the rest at the
    /// catalog's price for the GPU).
    pub spot_priced_by_placement: usize,
    pub total_usd: f64,
    pub pure_serverless_usd: f64,
    pub pure_serverless_secs: u64,
    pub on_demand_usd: f64,
    pub on_demand_instances: u32,
    pub saved_vs_serverless_usd: f64,
    pub saved_vs_on_demand_usd: f64,
    pub spot_requests: u64,
    pub serverless_requests: u64,
}

impl CostReport {
    /// The spend of `run` up to `now_ms` (or its end): replicas and containers still
    /// running are billed up to then.
    /// `placed_rate` is a replica's hourly price from where its cloud placed it, when known.
    pub fn new(
        prices: Prices,
        run: &Run,
        replicas: &[ReplicaRow],
        containers: &[ContainerRow],
        now_ms: u64,
        placed_rate: impl Fn(&ReplicaRow) -> Option<f64>,
    ) -> Self {
        let until = run.ended_at_ms.unwrap_or(now_ms);
        let replica_secs = |r: &ReplicaRow| billed_secs(r.launched_at_ms, r.ended_at_ms.unwrap_or(until));
        let spot_secs: u64 = replicas.iter().map(replica_secs).sum();
        let mut spot_placed = 0;
        let spot_usd: f64 = replicas
            .iter()
            .map(|r| match placed_rate(r) {
                Some(rate) => {
                    spot_placed += 1;
                    usd(replica_secs(r), rate, 1)
                }
                None => usd(replica_secs(r), prices.spot, prices.gpu_count),
            })
            .sum();
        let serverless_secs: u64 =
            containers.iter().map(|c| billed_secs(c.started_at_ms, c.stopped_at_ms.unwrap_or(until))).sum();
        let spot = TierCost { usd: spot_usd, billed_secs: spot_secs, units: replicas.len() };
        let serverless = TierCost {
            usd: usd(serverless_secs, prices.serverless, prices.gpu_count),
            billed_secs: serverless_secs,
            units: containers.len(),
        };
        let total_usd = spot.usd + serverless.usd;
        let uptime_secs = billed_secs(run.started_at_ms, until);
        let pure_serverless_secs = run.usage.pure_serverless_ms.div_ceil(1000);
        let pure_serverless_usd = usd(pure_serverless_secs, prices.serverless, prices.gpu_count);
        let on_demand_instances = run.usage.peak_replicas.max(1);
        let on_demand_usd = usd(uptime_secs, prices.on_demand, prices.gpu_count) * f64::from(on_demand_instances);
        CostReport {
            prices,
            uptime_secs,
            spot,
            serverless,
            spot_priced_by_placement: spot_placed,
            total_usd,
            pure_serverless_usd,
            pure_serverless_secs,
            on_demand_usd,
            on_demand_instances,
            saved_vs_serverless_usd: pure_serverless_usd - total_usd,
            saved_vs_on_demand_usd: on_demand_usd - total_usd,
            spot_requests: run.usage.spot_requests,
            serverless_requests: run.usage.serverless_requests,
        }
    }
}

/// The same traffic on serverless alone: containers start when concurrency needs them
/// and stop after `scaledown_window` without work, billed the whole time.
#[derive(Debug, Clone)]
pub struct ServerlessShadow {
    concurrency: u64,
    scaledown_window_ms: u64,
    /// Per container: when it last had work.
    containers: Vec<u64>,
    last_ms: u64,
    pub billed_ms: u64,
}

impl ServerlessShadow {
    pub fn new(concurrency: u32, scaledown_window_secs: u64, now_ms: u64) -> Self {
        Self {
            concurrency: u64::from(concurrency.max(1)),
            scaledown_window_ms: scaledown_window_secs * 1000,
            containers: Vec::new(),
            last_ms: now_ms,
            billed_ms: 0,
        }
    }

    /// Accounts the time since the last call, given the peak concurrency seen in it
    /// (`busy`: whether any request arrived, however short). Containers the load needed
    /// are billed for the whole interval; idle ones until their window runs out.
    pub fn observe(&mut self, now_ms: u64, peak_inflight: u64, busy: bool) {
        // The wall clock may step back: time never runs backwards here.
        let now_ms = now_ms.max(self.last_ms);
        let since = self.last_ms;
        self.last_ms = now_ms;
        let elapsed = now_ms.saturating_sub(since);
        let needed = peak_inflight.div_ceil(self.concurrency).max(u64::from(busy));
        let needed = usize::try_from(needed).unwrap_or(usize::MAX);
        // The busiest containers are the first ones; missing ones start with the interval.
        while self.containers.len() < needed {
            self.containers.push(since);
        }
        for (index, last_work) in self.containers.iter_mut().enumerate() {
            if index < needed {
                self.billed_ms += elapsed;
                *last_work = now_ms;
            } else {
                let stops_at = *last_work + self.scaledown_window_ms;
                self.billed_ms += stops_at.clamp(since, now_ms) - since;
            }
        }
        let window = self.scaledown_window_ms;
        self.containers.retain(|&last_work| last_work + window > now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_store::{Phase, Usage};

    fn run(started: u64, ended: Option<u64>, usage: Usage) -> Run {
        Run {
            service_name: "svc".into(),
            pid: 1,
            pid_started: None,
            endpoint: String::new(),
            health_token: None,
            started_at_ms: started,
            updated_at_ms: started,
            ended_at_ms: ended,
            serverless_url: None,
            serverless: None,
            usage,
            note: None,
        }
    }

    fn replica(launched: u64, ended: Option<u64>) -> ReplicaRow {
        ReplicaRow {
            replica: "spot-1".into(),
            url: None,
            reference: None,
            placement: None,
            phase: Phase::Ready,
            launched_at_ms: launched,
            ended_at_ms: ended,
            detail: None,
        }
    }

    #[test]
    fn intervals_bill_started_seconds() {
        assert_eq!(billed_secs(1_000, 1_000), 0);
        assert_eq!(billed_secs(1_000, 1_001), 1);
        assert_eq!(billed_secs(1_000, 61_000), 60);
        assert_eq!(billed_secs(5_000, 1_000), 0);
    }

    #[test]
    fn report_adds_tiers_and_counterfactuals() {
        let prices = Prices { spot: 0.36, serverless: 0.72, on_demand: 0.80, gpu_count: 2 };
        let usage = Usage {
            pure_serverless_ms: 7_200_000,
            peak_replicas: 2,
            spot_requests: 90,
            serverless_requests: 10,
            ..Usage::default()
        };
        let hour = 3_600_000;
        let report = CostReport::new(
            prices,
            &run(0, Some(hour), usage),
            &[replica(0, Some(hour / 2)), replica(hour / 2, None)],
            &[ContainerRow { container: 1, started_at_ms: 0, stopped_at_ms: Some(hour / 4) }],
            5 * hour,
            |_| None,
        );
        // Spot: one hour in all (the open replica is billed to the run's end), 2 GPUs.
        assert!((report.spot.usd - 0.72).abs() < 1e-9, "{report:?}");
        assert!((report.serverless.usd - 0.36).abs() < 1e-9);
        assert!((report.total_usd - 1.08).abs() < 1e-9);
        assert!((report.pure_serverless_usd - 2.88).abs() < 1e-9);
        // Two always-on instances for the hour.
        assert!((report.on_demand_usd - 3.20).abs() < 1e-9);
        assert!((report.saved_vs_serverless_usd - 1.80).abs() < 1e-9);
        assert_eq!(report.uptime_secs, 3600);
    }

    #[test]
    fn a_replica_is_priced_at_the_instance_its_cloud_placed_it_on_where_the_catalog_lists_it() {
        let catalog = Catalog::embedded();
        let placement = |instance: &str, region: &str, spot| Placement {
            instance_type: instance.into(),
            region: region.into(),
            spot,
        };
        assert_eq!(placed_rate(catalog, "aws", Some(&placement("g6.xlarge", "us-east-2", true))), Some(0.26));
        for unknown in [placement("g6.xlarge", "eu-west-9", true), placement("g6.xlarge", "us-east-2", false)] {
            assert_eq!(placed_rate(catalog, "aws", Some(&unknown)), None, "{unknown:?}");
        }
        let prices = Prices { spot: 1.0, serverless: 0.0, on_demand: 0.0, gpu_count: 1 };
        let hour = 3_600_000;
        let placed =
            ReplicaRow { placement: Some(placement("g6.xlarge", "us-east-2", true)), ..replica(0, Some(hour)) };
        let report = CostReport::new(
            prices,
            &run(0, Some(hour), Usage::default()),
            &[placed, replica(0, Some(hour))],
            &[],
            hour,
            |r| placed_rate(catalog, "aws", r.placement.as_ref()),
        );
        assert!((report.spot.usd - 1.26).abs() < 1e-9, "{report:?}");
        assert_eq!(report.spot_priced_by_placement, 1);
    }

    #[test]
    fn the_shadow_bills_busy_time_plus_the_scaledown_window() {
        let mut shadow = ServerlessShadow::new(4, 10, 0);
        shadow.observe(1_000, 0, false);
        assert_eq!(shadow.billed_ms, 0, "idle: nothing runs");
        // 6 requests at once need two containers, busy from 1 s to 6 s.
        for t in 2..=6 {
            shadow.observe(t * 1_000, 6, true);
        }
        assert_eq!(shadow.billed_ms, 2 * 5_000);
        // Then silence: each container stops 10 s after its last work (at 16 s).
        for t in 7..=30 {
            shadow.observe(t * 1_000, 0, false);
        }
        assert_eq!(shadow.billed_ms, 2 * 15_000);
        // A single short request still needs one for its interval, plus the window.
        shadow.observe(31_000, 0, true);
        for t in 32..=60 {
            shadow.observe(t * 1_000, 0, false);
        }
        assert_eq!(shadow.billed_ms, 2 * 15_000 + 1_000 + 10_000);
    }

    #[test]
    fn a_zero_scaledown_window_still_bills_the_busy_time() {
        let mut shadow = ServerlessShadow::new(1, 0, 0);
        for t in 1..=4 {
            shadow.observe(t * 1_000, 1, true);
        }
        shadow.observe(5_000, 0, false);
        assert_eq!(shadow.billed_ms, 4_000);
    }
}
