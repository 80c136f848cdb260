//! One backend and its live counters. A `Backend` outlives table swaps (it is shared
//! by `Arc` between consecutive tables), so its in-flight count, health and circuit
//! state survive reconfiguration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::Notify;

use tandemn_config::api::{BackendAuth, BackendUrl, Tier};

/// Whether a backend may take requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BackendState {
    /// Taking requests.
    Ready = 0,
    /// Active probes fail; no requests until one succeeds.
    Down = 1,
    /// Leaving: finishes what it has, takes nothing new.
    Draining = 2,
}

impl BackendState {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Down,
            2 => Self::Draining,
            _ => Self::Ready,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Down => "down",
            Self::Draining => "draining",
        }
    }
}

/// Consecutive transport failures that open a backend's circuit.
pub const CIRCUIT_THRESHOLD: u32 = 3;
const CIRCUIT_BASE_MS: u64 = 500;
const CIRCUIT_MAX_MS: u64 = 30_000;

/// Wakes requests queued for capacity when any backend frees a slot. Shared by every
/// backend of a router; touched on release only when someone is waiting.
#[derive(Default)]
pub struct CapacitySignal {
    waiting: AtomicUsize,
    freed: Notify,
}

impl CapacitySignal {
    fn slot_freed(&self) {
        if self.waiting.load(Relaxed) > 0 {
            self.freed.notify_one();
        }
    }

    /// Wakes every waiter, for example after new backends were published.
    pub fn wake_all(&self) {
        self.freed.notify_waiters();
    }

    /// Waits until a slot may have been freed, or `timeout` passes; false on timeout.
    pub async fn wait(&self, timeout: Duration) -> bool {
        self.waiting.fetch_add(1, Relaxed);
        let woke = tokio::time::timeout(timeout, self.freed.notified()).await.is_ok();
        self.waiting.fetch_sub(1, Relaxed);
        woke
    }
}

pub struct Backend {
    /// The publisher's name for it, or `tier/host:port/base`; stable across swaps: the
    /// identity tables match on, and what load reports carry.
    pub id: String,
    pub tier: Tier,
    pub url: BackendUrl,
    pub auth: BackendAuth,
    pub capacity: u32,
    state: AtomicU8,
    pub stats: BackendStats,
    signal: Arc<CapacitySignal>,
    /// The last address the host name resolved to (host names only; IPs need none).
    pub resolved: arc_swap::ArcSwapOption<std::net::SocketAddr>,
}

/// Counters every request updates with relaxed atomics.
#[derive(Default)]
pub struct BackendStats {
    pub inflight: AtomicU32,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    pub consecutive_failures: AtomicU32,
    /// Consecutive failed active probes (spot replicas only).
    pub probe_failures: AtomicU32,
    /// While the circuit is open: milliseconds on the router clock when a probe may pass.
    pub circuit_open_until_ms: AtomicU64,
    /// Exponentially weighted time to first byte, in microseconds (0 = no sample yet).
    pub ttfb_ewma_us: AtomicU64,
    pub output_tokens: AtomicU64,
    pub responses_2xx: AtomicU64,
    pub responses_4xx: AtomicU64,
    pub responses_5xx: AtomicU64,
}

impl Backend {
    pub fn new(
        id: String,
        tier: Tier,
        url: BackendUrl,
        auth: BackendAuth,
        capacity: u32,
        signal: Arc<CapacitySignal>,
    ) -> Self {
        Self {
            id,
            tier,
            url,
            auth,
            capacity,
            state: AtomicU8::new(BackendState::Ready as u8),
            stats: BackendStats::default(),
            signal,
            resolved: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// The id a backend at `url` in `tier` has: tables match backends on it.
    pub fn identity(tier: Tier, url: &BackendUrl) -> String {
        format!("{tier}/{}{}", url.authority(), url.base_path)
    }

    pub fn state(&self) -> BackendState {
        BackendState::from_u8(self.state.load(Relaxed))
    }

    pub fn set_state(&self, state: BackendState) {
        self.state.store(state as u8, Relaxed);
    }

    /// Moves `from` → `to` only if the backend is still in `from` (a publish that marked
    /// it draining meanwhile wins); true if it moved.
    pub fn transition(&self, from: BackendState, to: BackendState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Relaxed, Relaxed).is_ok()
    }

    pub fn inflight(&self) -> u32 {
        self.stats.inflight.load(Relaxed)
    }

    /// Whether the circuit lets a request through at `now_ms` (open circuits let one
    /// through once their backoff has passed: the half-open probe).
    pub fn circuit_allows(&self, now_ms: u64) -> bool {
        self.stats.circuit_open_until_ms.load(Relaxed) <= now_ms
    }

    /// Could take a request now: ready, circuit closed (or due a probe), below capacity.
    pub fn available(&self, now_ms: u64) -> bool {
        self.state() == BackendState::Ready && self.circuit_allows(now_ms) && self.inflight() < self.capacity
    }

    /// Takes one of the backend's `capacity` slots, or `None` if all are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InflightGuard> {
        let taken = self.stats.inflight.fetch_update(Relaxed, Relaxed, |n| (n < self.capacity).then_some(n + 1));
        taken.ok().map(|_| InflightGuard { backend: self.clone() })
    }

    /// A transport-level failure (connect error, timeout, reset): counts toward the circuit.
    pub fn record_failure(&self, now_ms: u64) {
        self.stats.failures.fetch_add(1, Relaxed);
        let consecutive = self.stats.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if consecutive >= CIRCUIT_THRESHOLD {
            self.stats.circuit_open_until_ms.store(now_ms + backoff_ms(consecutive), Relaxed);
        }
    }

    /// For a request about to use this backend: true if its circuit is closed, or if it
    /// is due a half-open probe and this request is the one that gets it (the others keep
    /// seeing an open circuit until the probe's outcome is known).
    pub fn claim_circuit(&self, now_ms: u64) -> bool {
        let until = self.stats.circuit_open_until_ms.load(Relaxed);
        if until == 0 {
            return true;
        }
        if now_ms < until {
            return false;
        }
        let rearmed = now_ms + backoff_ms(self.stats.consecutive_failures.load(Relaxed));
        self.stats.circuit_open_until_ms.compare_exchange(until, rearmed, Relaxed, Relaxed).is_ok()
    }

    /// Any answer from the backend, even an error status, proves the transport works.
    pub fn record_success(&self, ttfb: Duration) {
        self.stats.consecutive_failures.store(0, Relaxed);
        self.stats.circuit_open_until_ms.store(0, Relaxed);
        let sample = u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .stats
            .ttfb_ewma_us
            .fetch_update(Relaxed, Relaxed, |old| Some(if old == 0 { sample } else { (old * 7 + sample) / 8 }));
    }

    pub fn record_status(&self, status: u16) {
        let counter = match status {
            200..=399 => &self.stats.responses_2xx,
            400..=499 => &self.stats.responses_4xx,
            _ => &self.stats.responses_5xx,
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn circuit_open(&self, now_ms: u64) -> bool {
        !self.circuit_allows(now_ms)
    }
}

/// How long a circuit stays open after `consecutive` failures: doubling from 0.5 s, at
/// most 30 s.
fn backoff_ms(consecutive: u32) -> u64 {
    let doublings = consecutive.saturating_sub(CIRCUIT_THRESHOLD).min(10);
    (CIRCUIT_BASE_MS << doublings).min(CIRCUIT_MAX_MS)
}

/// Holds one capacity slot of a backend; releases it when dropped, however the request ends.
pub struct InflightGuard {
    backend: Arc<Backend>,
}

impl InflightGuard {
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.backend.stats.inflight.fetch_sub(1, Relaxed);
        self.backend.signal.slot_freed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(capacity: u32) -> Arc<Backend> {
        let url = BackendUrl::parse("http://127.0.0.1:1").unwrap();
        Arc::new(Backend::new(
            Backend::identity(Tier::Spot, &url),
            Tier::Spot,
            url,
            BackendAuth::None,
            capacity,
            Arc::default(),
        ))
    }

    #[test]
    fn guards_respect_capacity_and_release_on_drop() {
        let b = backend(2);
        let first = b.try_acquire().unwrap();
        let second = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none());
        assert!(!b.available(0));
        drop(first);
        assert_eq!(b.inflight(), 1);
        let third = b.try_acquire().unwrap();
        drop((second, third));
        assert_eq!(b.inflight(), 0);
    }

    #[test]
    fn consecutive_failures_open_the_circuit_with_backoff() {
        let b = backend(4);
        b.record_failure(1000);
        b.record_failure(1000);
        assert!(b.available(1000), "below the threshold the circuit stays closed");
        b.record_failure(1000);
        assert!(!b.available(1000) && b.available(1000 + CIRCUIT_BASE_MS), "open, then half-open after backoff");
        b.record_failure(2000);
        assert!(!b.available(2000 + CIRCUIT_BASE_MS), "the next failure doubles the backoff");
        assert!(b.available(2000 + 2 * CIRCUIT_BASE_MS));
        b.record_success(Duration::from_millis(3));
        assert!(b.available(0) && b.stats.consecutive_failures.load(Relaxed) == 0);
    }

    #[test]
    fn a_half_open_circuit_admits_one_probe_at_a_time() {
        let b = backend(4);
        assert!(b.claim_circuit(0), "closed circuits admit everyone");
        for _ in 0..CIRCUIT_THRESHOLD {
            b.record_failure(1000);
        }
        assert!(!b.claim_circuit(1000), "open");
        let due = 1000 + CIRCUIT_BASE_MS;
        assert!(b.claim_circuit(due), "the first request after the backoff is the probe");
        assert!(!b.claim_circuit(due), "everyone else waits for its outcome");
        b.record_success(Duration::from_millis(1));
        assert!(b.claim_circuit(due) && b.claim_circuit(due), "a successful probe closes the circuit");
    }

    #[test]
    fn ttfb_is_a_moving_average() {
        let b = backend(1);
        b.record_success(Duration::from_micros(800));
        b.record_success(Duration::from_micros(1600));
        assert_eq!(b.stats.ttfb_ewma_us.load(Relaxed), 900);
    }
}
