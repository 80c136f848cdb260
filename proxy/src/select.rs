//! Choosing a backend: a pure function of the table, what this request already tried,
//! the time and a random source. Ready spot replicas with room come first, chosen by
//! the lower in-flight count of two random picks; serverless takes the rest.

use std::sync::Arc;

use rand::Rng;
use tandemn_config::api::Tier;

use crate::backend::{Backend, BackendState, InflightGuard};
use crate::routing::RouteTable;

/// A backend slot for one attempt.
pub struct Pick {
    pub guard: InflightGuard,
    /// Serverless was chosen although healthy spot replicas exist: they were all full.
    pub spilled: bool,
}

/// Why nothing could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPick {
    /// Usable backends exist but every one is at capacity: worth waiting.
    Saturated,
    /// No backend is ready (none configured, all down or all already tried).
    NoBackends,
}

pub fn pick(table: &RouteTable, tried: &[String], now_ms: u64, rng: &mut impl Rng) -> Result<Pick, NoPick> {
    let usable = |b: &&Arc<Backend>| {
        b.state() == BackendState::Ready && b.circuit_allows(now_ms) && !tried.iter().any(|t| *t == b.id)
    };
    let mut saturated = false;
    for tier in [&table.spot, &table.serverless] {
        let mut candidates: Vec<&Arc<Backend>> = tier.iter().filter(usable).collect();
        saturated |= !candidates.is_empty();
        while !candidates.is_empty() {
            let index = two_choices(&candidates, rng);
            // A backend due a half-open probe lets exactly one request through.
            match candidates[index].try_acquire().filter(|g| g.backend().claim_circuit(now_ms)) {
                Some(guard) => {
                    let spilled = guard.backend().tier == Tier::Serverless && table.spot.iter().any(|b| usable(&b));
                    return Ok(Pick { guard, spilled });
                }
                // Full (or filled up between the look and the grab), or its one probe is
                // taken: try the others.
                None => {
                    candidates.swap_remove(index);
                }
            }
        }
    }
    Err(if saturated { NoPick::Saturated } else { NoPick::NoBackends })
}

/// The less loaded of two distinct random candidates (the only one if there is one).
fn two_choices(candidates: &[&Arc<Backend>], rng: &mut impl Rng) -> usize {
    if candidates.len() == 1 {
        return 0;
    }
    let a = rng.random_range(0..candidates.len());
    let b = (a + rng.random_range(1..candidates.len())) % candidates.len();
    if candidates[b].inflight() < candidates[a].inflight() { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CapacitySignal;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use tandemn_config::api::{BackendAuth, BackendUrl};

    fn backend(tier: Tier, port: u16, capacity: u32, state: BackendState) -> Arc<Backend> {
        let url = BackendUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let backend = Backend::new(
            Backend::identity(tier, &url),
            tier,
            url,
            BackendAuth::None,
            capacity,
            Arc::new(CapacitySignal::default()),
        );
        backend.set_state(state);
        Arc::new(backend)
    }

    fn table(spot: Vec<Arc<Backend>>, serverless: Vec<Arc<Backend>>) -> RouteTable {
        RouteTable { spot: spot.into(), serverless: serverless.into(), version: 1 }
    }

    #[test]
    fn spot_first_then_spillover_then_saturation() {
        let t = table(
            vec![backend(Tier::Spot, 1, 1, BackendState::Ready)],
            vec![backend(Tier::Serverless, 2, 1, BackendState::Ready)],
        );
        let mut rng = StdRng::seed_from_u64(1);
        let first = pick(&t, &[], 0, &mut rng).unwrap();
        assert_eq!((first.guard.backend().tier, first.spilled), (Tier::Spot, false));
        let second = pick(&t, &[], 0, &mut rng).unwrap();
        assert_eq!((second.guard.backend().tier, second.spilled), (Tier::Serverless, true));
        assert_eq!(pick(&t, &[], 0, &mut rng).err(), Some(NoPick::Saturated));
        drop(first);
        assert_eq!(pick(&t, &[], 0, &mut rng).unwrap().guard.backend().tier, Tier::Spot);
    }

    #[test]
    fn down_tried_and_open_circuit_backends_are_skipped() {
        let down = backend(Tier::Spot, 1, 8, BackendState::Down);
        let tripped = backend(Tier::Spot, 2, 8, BackendState::Ready);
        for _ in 0..crate::backend::CIRCUIT_THRESHOLD {
            tripped.record_failure(1_000);
        }
        let svl = backend(Tier::Serverless, 3, 8, BackendState::Ready);
        let t = table(vec![down, tripped.clone()], vec![svl.clone()]);
        let mut rng = StdRng::seed_from_u64(2);
        let chosen = pick(&t, &[], 1_000, &mut rng).unwrap();
        assert_eq!(chosen.guard.backend().id, svl.id);
        assert!(!chosen.spilled, "no healthy spot replica: this is fallback, not spillover");
        assert_eq!(pick(&t, std::slice::from_ref(&svl.id), 1_000, &mut rng).err(), Some(NoPick::NoBackends));
        assert_eq!(pick(&t, &[], 60_000, &mut rng).unwrap().guard.backend().id, tripped.id, "half-open probe");
        assert_eq!(pick(&table(vec![], vec![]), &[], 0, &mut rng).err(), Some(NoPick::NoBackends));
    }

    #[test]
    fn load_spreads_evenly_across_spot_replicas() {
        let replicas: Vec<_> = (1..5).map(|p| backend(Tier::Spot, p, 100, BackendState::Ready)).collect();
        let t = table(replicas.clone(), vec![]);
        let mut rng = StdRng::seed_from_u64(3);
        let guards: Vec<_> = (0..200).map(|_| pick(&t, &[], 0, &mut rng).unwrap()).collect();
        for replica in &replicas {
            assert!((45..=55).contains(&replica.inflight()), "uneven: {}", replica.inflight());
        }
        drop(guards);
        assert!(replicas.iter().all(|r| r.inflight() == 0));
    }

    proptest! {
        #[test]
        fn never_picks_an_unusable_backend_and_slots_return(
            spot in prop::collection::vec((1u32..4, 0u8..3, 0u32..4), 0..5),
            serverless in prop::collection::vec((1u32..4, 0u8..3, 0u32..4), 0..3),
            tried_mask in 0u32..256,
            picks in 1usize..20,
            seed in any::<u64>(),
        ) {
            let make = |tier, specs: &[(u32, u8, u32)], offset: u16| -> Vec<Arc<Backend>> {
                specs.iter().enumerate().map(|(i, &(capacity, state, busy))| {
                    let state = [BackendState::Ready, BackendState::Down, BackendState::Draining][state as usize];
                    let b = backend(tier, offset + i as u16, capacity, state);
                    b.stats.inflight.store(busy.min(capacity), std::sync::atomic::Ordering::Relaxed);
                    b
                }).collect()
            };
            let t = table(make(Tier::Spot, &spot, 100), make(Tier::Serverless, &serverless, 200));
            let all: Vec<Arc<Backend>> = t.backends().cloned().collect();
            let before: Vec<u32> = all.iter().map(|b| b.inflight()).collect();
            let tried: Vec<String> = all.iter().enumerate().filter(|(i, _)| tried_mask & (1 << i) != 0).map(|(_, b)| b.id.clone()).collect();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut held = Vec::new();
            for _ in 0..picks {
                let usable_spot = t.spot.iter().any(|b| b.available(0) && !tried.contains(&b.id));
                match pick(&t, &tried, 0, &mut rng) {
                    Ok(chosen) => {
                        let b = chosen.guard.backend();
                        prop_assert_eq!(b.state(), BackendState::Ready);
                        prop_assert!(!tried.contains(&b.id));
                        prop_assert!(b.inflight() <= b.capacity);
                        if usable_spot { prop_assert_eq!(b.tier, Tier::Spot, "spot first"); }
                        held.push(chosen);
                    }
                    Err(_) => prop_assert!(!all.iter().any(|b| b.available(0) && !tried.contains(&b.id))),
                }
            }
            drop(held);
            let after: Vec<u32> = all.iter().map(|b| b.inflight()).collect();
            prop_assert_eq!(before, after, "every slot was returned");
        }
    }
}
