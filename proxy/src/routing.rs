//! The routing table and the one place it is swapped. Requests load a snapshot once
//! and keep it; publishers build the next table from specs, carrying over every
//! backend whose identity is unchanged so its counters and health survive.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tandemn_config::api::{BackendAuth, BackendId, BackendSpec, BackendUrl, Secret, Tier};

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
    /// Every spec is checked before any live backend is touched, so a refused set changes
    /// nothing; the first bad spec is reported. Linear in the number of backends.
    pub fn build(
        specs: &[BackendSpec],
        previous: &RouteTable,
        signal: &Arc<CapacitySignal>,
    ) -> Result<RouteTable, String> {
        let mut seen = HashSet::with_capacity(specs.len());
        let mut checked = Vec::with_capacity(specs.len());
        for spec in specs {
            let url = BackendUrl::parse(&spec.url)?;
            if spec.capacity == 0 {
                return Err(format!("backend {} has capacity 0", spec.url));
            }
            if let Some(field) = empty_secret(&spec.auth) {
                // The field, never the value: a whitespace-only secret is still the operator's.
                return Err(format!("backend {}: {field} is empty", spec.url));
            }
            let id = match &spec.id {
                Some(id) => checked_id(id)?,
                None => Backend::identity(spec.tier, &url),
            };
            if !seen.insert(id.clone()) {
                return Err(format!("backend {} is listed twice", spec.url));
            }
            checked.push((spec, url, id));
        }
        let known: HashMap<&str, &Arc<Backend>> = previous.backends().map(|b| (b.id.as_str(), b)).collect();
        let mut spot = Vec::new();
        let mut serverless = Vec::new();
        for (spec, url, id) in checked {
            let backend = match known.get(id.as_str()) {
                Some(existing)
                    if existing.url == url && existing.capacity == spec.capacity && existing.auth == spec.auth =>
                {
                    Arc::clone(existing)
                }
                existing => {
                    if existing.is_some() {
                        // Same identity, new settings: keep the live counters meaningful by
                        // starting a new backend; in-flight guards still hold the old one.
                        tracing::debug!(%id, "backend settings changed");
                    }
                    Arc::new(Backend::new(id, spec.tier, url, spec.auth.clone(), spec.capacity, signal.clone()))
                }
            };
            if spec.draining {
                backend.set_state(BackendState::Draining);
            } else if backend.state() == BackendState::Draining {
                backend.set_state(BackendState::Ready);
            }
            if backend.tier == Tier::Spot { spot.push(backend) } else { serverless.push(backend) }
        }
        Ok(RouteTable { spot: spot.into(), serverless: serverless.into(), version: previous.version + 1 })
    }

    pub fn backends(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.spot.iter().chain(self.serverless.iter())
    }
}

/// The first secret of `auth` that is empty or only whitespace, by its config path: such
/// a secret would send an empty credential to the backend. Specs published in-process
/// are never deserialized, so this cannot rest on `Secret`'s own checks.
/// A publisher's backend id goes into metric labels, logs and a response header: short,
/// and only characters that need no escaping anywhere.
fn checked_id(id: &BackendId) -> Result<String, String> {
    let text = id.as_str();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/');
    if text.is_empty() || text.len() > 128 || !text.chars().all(allowed) {
        return Err(format!("backend id `{}` is not 1 to 128 of [A-Za-z0-9-_.:/]", text.escape_debug()));
    }
    Ok(text.to_string())
}

fn empty_secret(auth: &BackendAuth) -> Option<&'static str> {
    let secrets: &[(&'static str, &Secret)] = match auth {
        BackendAuth::None => &[],
        BackendAuth::Bearer { token } => &[("auth.bearer.token", token)],
        BackendAuth::Modal { key, secret } => &[("auth.modal.key", key), ("auth.modal.secret", secret)],
        BackendAuth::CloudRun { id_token } => &[("auth.cloud_run.id_token", id_token)],
    };
    secrets.iter().find(|(_, secret)| secret.expose().trim().is_empty()).map(|(field, _)| *field)
}

/// The proxy's only shared mutable state: the current table, swapped whole.
pub struct RoutingState {
    table: ArcSwap<RouteTable>,
    pub capacity: Arc<CapacitySignal>,
    /// Serializes publishers (admin API, reloads) so no update is lost; requests never take it.
    publishing: std::sync::Mutex<()>,
    /// Whether any backend was ever published: an empty table then is a gap (a dead
    /// endpoint being replaced) worth waiting out, not a router with nothing to route to.
    had_backends: std::sync::atomic::AtomicBool,
}

impl Default for RoutingState {
    fn default() -> Self {
        Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            capacity: Arc::default(),
            publishing: std::sync::Mutex::new(()),
            had_backends: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl RoutingState {
    pub fn had_backends(&self) -> bool {
        self.had_backends.load(std::sync::atomic::Ordering::Relaxed)
    }

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
        if !specs.is_empty() {
            self.had_backends.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        // New backends may have room for queued requests.
        self.capacity.wake_all();
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tier: Tier, url: &str, capacity: u32) -> BackendSpec {
        BackendSpec { id: None, tier, url: url.into(), capacity, auth: BackendAuth::None, draining: false }
    }

    #[test]
    fn a_backend_is_known_by_its_publisher_id_or_by_its_parsed_url() {
        let state = RoutingState::default();
        let named =
            BackendSpec { id: Some(BackendId::new("spot/svc-abc-1")), ..spec(Tier::Spot, "https://x.example", 4) };
        state.publish(&[named.clone(), spec(Tier::Serverless, "https://y.example", 4)]).unwrap();
        let table = state.snapshot();
        assert_eq!(table.spot[0].id, "spot/svc-abc-1", "what load reports carry, whatever the URL's spelling");
        assert_eq!(table.serverless[0].id, "serverless/y.example:443");
        // Two spellings of one URL are one backend.
        let twice = [spec(Tier::Spot, "https://x.example", 4), spec(Tier::Spot, "https://x.example:443", 4)];
        assert!(state.publish(&twice).unwrap_err().contains("listed twice"));
        for bad in ["", "spot/a b", "spot/\u{1b}[1m", &"a".repeat(129)] {
            let spec = BackendSpec { id: Some(BackendId::new(bad)), ..named.clone() };
            assert!(state.publish(&[spec]).unwrap_err().contains("backend id"), "{bad:?}");
        }
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

    #[test]
    fn a_refused_set_changes_no_live_backend() {
        let state = RoutingState::default();
        state.publish(&[spec(Tier::Spot, "http://127.0.0.1:1", 4)]).unwrap();
        let live = state.snapshot();
        let draining = BackendSpec { draining: true, ..spec(Tier::Spot, "http://127.0.0.1:1", 4) };
        assert!(state.publish(&[draining, spec(Tier::Spot, "ftp://x", 4)]).is_err());
        assert_eq!(live.spot[0].state(), BackendState::Ready, "the refused set did not drain the live backend");
        assert_eq!(state.snapshot().version, live.version);
    }

    #[test]
    fn empty_backend_secrets_are_refused_by_field_never_by_value() {
        let secret = |value: &str| Secret::new(value);
        let cases = [
            (BackendAuth::Bearer { token: secret("") }, "auth.bearer.token"),
            (BackendAuth::Bearer { token: secret(" \t\n") }, "auth.bearer.token"),
            (BackendAuth::Modal { key: secret("modal-key-value"), secret: secret("  ") }, "auth.modal.secret"),
            (BackendAuth::Modal { key: secret(""), secret: secret("modal-secret-value") }, "auth.modal.key"),
            (BackendAuth::CloudRun { id_token: secret("\u{3000}") }, "auth.cloud_run.id_token"),
        ];
        let state = RoutingState::default();
        state.publish(&[spec(Tier::Spot, "http://127.0.0.1:1", 4)]).unwrap();
        for (auth, field) in cases {
            let bad = BackendSpec { auth, ..spec(Tier::Serverless, "https://api.example.com/v2/x", 4) };
            let error = state.publish(&[spec(Tier::Spot, "http://127.0.0.1:1", 4), bad]).unwrap_err();
            assert_eq!(error, format!("backend https://api.example.com/v2/x: {field} is empty"));
            assert!(!error.contains("value"), "{error}");
        }
        assert_eq!(state.snapshot().version, 1, "nothing was published");
        let padded = BackendAuth::Bearer { token: secret(" sk-1 ") };
        state.publish(&[BackendSpec { auth: padded, ..spec(Tier::Spot, "http://127.0.0.1:1", 4) }]).unwrap();
    }

    #[test]
    fn fifteen_thousand_backends_keep_their_counters_and_refuse_duplicates() {
        let state = RoutingState::default();
        let mut specs = many(15_000);
        state.publish(&specs).unwrap();
        let before = state.snapshot();
        assert_eq!((before.spot.len(), before.serverless.len()), (7_500, 7_500));
        let guard = before.serverless[3_888].try_acquire().unwrap();
        specs.push(spec(Tier::Spot, "http://10.1.0.0:9000", 4));
        specs.swap(0, 14_000);
        state.publish(&specs).unwrap();
        let after = state.snapshot();
        assert_eq!(after.version, before.version + 1);
        assert_eq!(after.backends().count(), 15_001);
        let carried = after.serverless.iter().find(|b| b.id == before.serverless[3_888].id).unwrap();
        assert!(Arc::ptr_eq(carried, &before.serverless[3_888]));
        assert_eq!(carried.inflight(), 1, "the in-flight count survived the swap");
        drop(guard);

        let mut twice = many(15_000);
        let again = format!("{}/", twice[9_001].url);
        twice.insert(12_345, spec(Tier::Serverless, &again, 2));
        assert_eq!(state.publish(&twice).unwrap_err(), format!("backend {again} is listed twice"));
        let mut other_tier = many(15_000);
        other_tier.push(spec(Tier::Serverless, &other_tier[0].url.clone(), 4));
        state.publish(&other_tier).expect("one URL in both tiers is two backends");
        assert_eq!(state.snapshot().version, after.version + 1);
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
