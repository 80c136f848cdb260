//! The routing table and the one place it is swapped. Requests load a snapshot once
//! and keep it; publishers build the next table from specs, carrying over every
//! backend whose identity is unchanged so its counters and health survive.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tandemn_config::api::{BackendSpec, BackendUrl, Tier};

use crate::backend::{Backend, BackendState, CapacitySignal};

/// An immutable set of backends, by tier.
#[derive(Default)]
pub struct RouteTable {
    pub spot: Box<[Arc<Backend>]>,
    pub serverless: Box<[Arc<Backend>]>,
    pub version: u64,
}

impl RouteTable {
    /// The next table: new backends for new identities, the previous `Arc` for known ones.
    /// A spec whose URL does not parse is reported and left out.
    pub fn build(
        specs: &[BackendSpec],
        previous: &RouteTable,
        signal: &Arc<CapacitySignal>,
    ) -> Result<RouteTable, String> {
        let known: HashMap<&str, &Arc<Backend>> =
            previous.spot.iter().chain(previous.serverless.iter()).map(|b| (b.id.as_str(), b)).collect();
        let mut spot = Vec::new();
        let mut serverless = Vec::new();
        for spec in specs {
            let url = BackendUrl::parse(&spec.url)?;
            if spec.capacity == 0 {
                return Err(format!("backend {} has capacity 0", spec.url));
            }
            let fresh = Backend::new(spec.tier, url, spec.auth.clone(), spec.capacity, signal.clone());
            let backend = match known.get(fresh.id.as_str()) {
                Some(existing)
                    if existing.url == fresh.url
                        && existing.capacity == fresh.capacity
                        && existing.auth == fresh.auth =>
                {
                    Arc::clone(existing)
                }
                Some(existing) => {
                    // Same identity, new settings: keep the live counters meaningful by
                    // starting a new backend; in-flight guards still hold the old one.
                    tracing::debug!(id = %existing.id, "backend settings changed");
                    Arc::new(fresh)
                }
                None => Arc::new(fresh),
            };
            if spec.draining {
                backend.set_state(BackendState::Draining);
            } else if backend.state() == BackendState::Draining {
                backend.set_state(BackendState::Ready);
            }
            let list = if backend.tier == Tier::Spot { &mut spot } else { &mut serverless };
            if list.iter().any(|b: &Arc<Backend>| b.id == backend.id) {
                return Err(format!("backend {} is listed twice", spec.url));
            }
            list.push(backend);
        }
        Ok(RouteTable { spot: spot.into(), serverless: serverless.into(), version: previous.version + 1 })
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.spot.iter().chain(self.serverless.iter())
    }
}

/// The proxy's only shared mutable state: the current table, swapped whole.
pub struct RoutingState {
    table: ArcSwap<RouteTable>,
    pub capacity: Arc<CapacitySignal>,
    /// Serializes publishers (admin API, reloads) so no update is lost; requests never take it.
    publishing: std::sync::Mutex<()>,
}

impl Default for RoutingState {
    fn default() -> Self {
        Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            capacity: Arc::default(),
            publishing: std::sync::Mutex::new(()),
        }
    }
}

impl RoutingState {
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Builds and swaps in the next table; the only writer of the table. On error the
    /// current table stays.
    pub fn publish(&self, specs: &[BackendSpec]) -> Result<u64, String> {
        let _one_at_a_time = self.publishing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = RouteTable::build(specs, &self.table.load(), &self.capacity)?;
        let version = next.version;
        self.table.store(Arc::new(next));
        // New backends may have room for queued requests.
        self.capacity.wake_all();
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandemn_config::api::BackendAuth;

    fn spec(tier: Tier, url: &str, capacity: u32) -> BackendSpec {
        BackendSpec { tier, url: url.into(), capacity, auth: BackendAuth::None, draining: false }
    }

    #[test]
    fn unchanged_backends_keep_their_counters_across_swaps() {
        let state = RoutingState::default();
        state
            .publish(&[spec(Tier::Spot, "http://127.0.0.1:1", 4), spec(Tier::Serverless, "http://127.0.0.1:2", 8)])
            .unwrap();
        let before = state.snapshot();
        let guard = before.spot[0].try_acquire().unwrap();
        state
            .publish(&[
                spec(Tier::Spot, "http://127.0.0.1:1/", 4),
                spec(Tier::Spot, "http://127.0.0.1:3", 4),
                spec(Tier::Serverless, "http://127.0.0.1:2", 16),
            ])
            .unwrap();
        let after = state.snapshot();
        assert_eq!(after.version, before.version + 1);
        assert!(Arc::ptr_eq(&before.spot[0], &after.spot[0]), "same id, same Arc");
        assert_eq!(after.spot[0].inflight(), 1, "the in-flight count survived the swap");
        assert_eq!(after.spot.len(), 2);
        assert!(!Arc::ptr_eq(&before.serverless[0], &after.serverless[0]), "new capacity, new backend");
        drop(guard);
        assert_eq!(after.spot[0].inflight(), 0);
    }

    #[test]
    fn bad_specs_are_refused_and_the_table_is_kept() {
        let state = RoutingState::default();
        state.publish(&[spec(Tier::Spot, "http://127.0.0.1:1", 4)]).unwrap();
        assert!(state.publish(&[spec(Tier::Spot, "ftp://x", 4)]).unwrap_err().contains("http://"));
        assert!(state.publish(&[spec(Tier::Spot, "http://a:1", 0)]).unwrap_err().contains("capacity 0"));
        let twice = [spec(Tier::Spot, "http://a:1", 1), spec(Tier::Spot, "http://a:1/", 1)];
        assert!(state.publish(&twice).unwrap_err().contains("twice"));
        assert_eq!(state.snapshot().spot.len(), 1);
    }

    /// `count` distinct backends, alternating tiers.
    fn many(count: usize) -> Vec<BackendSpec> {
        (0..count)
            .map(|i| {
                let tier = if i % 2 == 0 { Tier::Spot } else { Tier::Serverless };
                spec(tier, &format!("http://10.{}.{}.{}:8000", i / 65_536, (i / 256) % 256, i % 256), 4)
            })
            .collect()
    }

    #[test]
    #[ignore = "a timing, not a check: cargo test -p tandemn-proxy --release --lib publish_timing -- --ignored --nocapture"]
    fn publish_timing_at_15000_backends() {
        let specs = many(15_000);
        let state = RoutingState::default();
        let started = std::time::Instant::now();
        state.publish(&specs).unwrap();
        let first = started.elapsed();
        let started = std::time::Instant::now();
        state.publish(&specs).unwrap();
        eprintln!("15000 backends: first publish {first:?}, republish {:?}", started.elapsed());
    }
}
