//! The serverless simulation: virtual containers inside the one process that
//! cold-start, take `concurrency` requests each, scale out to `containers_max`, stop
//! after `scaledown_window` of idleness, and are billed per second of life. The only
//! writer of the containers' state; it knows nothing of HTTP, tokens or pacing.
//!
//! `FleetState` is the plain model (every method takes `now`); `Fleet` wraps it with
//! the lock, the FIFO line of waiting requests and the scale-down timer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use super::config::ServerlessSim;

/// The provider's own billing record, as `GET /billing` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Billing {
    /// Every container ever started, oldest first.
    pub containers: Vec<BilledContainer>,
    /// Containers running now (cold-starting, serving or idling).
    pub running: u32,
    /// Containers ever started; each start is a cold start.
    pub cold_starts: u64,
}

/// One container's life: billed from the start of its cold start until it stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BilledContainer {
    /// 1 for the first container; a stopped container's id is never reused.
    pub id: u32,
    pub started_unix_ms: u64,
    /// `None` while it runs.
    pub stopped_unix_ms: Option<u64>,
}

/// The containers of one simulated endpoint. Shared by every connection.
pub struct Fleet {
    sim: ServerlessSim,
    state: Mutex<Line>,
    /// Wakes the scale-down timer when a container turns idle.
    turned_idle: Notify,
}

/// The model plus the requests waiting for a slot, under one lock so a freed slot
/// goes to the head of the line before any newcomer can take it.
struct Line {
    fleet: FleetState,
    /// Requests waiting for a slot, first come first served. A waiter whose client
    /// went away has dropped its receiver and is skipped.
    waiting: VecDeque<oneshot::Sender<Lease>>,
}

impl Fleet {
    pub fn new(sim: ServerlessSim) -> Arc<Self> {
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| millis(d.as_millis()));
        let state = Line { fleet: FleetState::new(Instant::now(), unix_ms), waiting: VecDeque::new() };
        Arc::new(Self { sim, state: Mutex::new(state), turned_idle: Notify::new() })
    }

    pub fn sim(&self) -> &ServerlessSim {
        &self.sim
    }

    /// A slot on a container: a free one, one on a newly started container, or the
    /// next one to free up. Cancel-safe: dropping the future gives up the place in line
    /// (and the slot, if it was handed over meanwhile).
    pub async fn acquire(self: &Arc<Self>) -> Lease {
        let placed = {
            let mut line = self.lock();
            match line.fleet.place(&self.sim, Instant::now()) {
                Some((container, ready_at)) => Ok(Lease { fleet: self.clone(), container, ready_at, armed: true }),
                None => {
                    let (handover, wait) = oneshot::channel();
                    line.waiting.push_back(handover);
                    Err(wait)
                }
            }
        };
        match placed {
            Ok(lease) => lease,
            Err(wait) => wait.await.expect("the fleet outlives its waiters and hands every sender a lease"),
        }
    }

    /// Frees a slot: the head of the line takes it over, or the container gets a
    /// slot back (and may turn idle).
    fn release(self: &Arc<Self>, container: u32) {
        let mut line = self.lock();
        while let Some(handover) = line.waiting.pop_front() {
            let ready_at = line.fleet.ready_at(container);
            let lease = Lease { fleet: self.clone(), container, ready_at, armed: true };
            match handover.send(lease) {
                Ok(()) => return,
                // That client went away; disarm so the drop does not re-enter the lock.
                Err(mut unwanted) => unwanted.armed = false,
            }
        }
        if line.fleet.free(container, Instant::now()) {
            self.turned_idle.notify_one();
        }
    }

    /// The record as the scale-down timer has kept it (a read; it stops nothing).
    pub fn billing(&self) -> Billing {
        self.lock().fleet.billing()
    }

    /// Stops containers once they have idled for the window, sleeping until the next
    /// deadline or until a container turns idle. Runs for the server's lifetime, so
    /// scale-down happens even if no request ever comes again.
    pub async fn scale_down(&self) -> Infallible {
        loop {
            let next = self.lock().fleet.stop_idle(&self.sim, Instant::now());
            // A `notify_one` between the unlock and here leaves a permit, so none is lost.
            match next {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline.into()) => {}
                    () = self.turned_idle.notified() => {}
                },
                None => self.turned_idle.notified().await,
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Line> {
        // No code panics while holding the lock; if one did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A request's slot on a container, given back when dropped (the request finished
/// or its client went away).
pub struct Lease {
    fleet: Arc<Fleet>,
    container: u32,
    ready_at: Instant,
    /// False only for a lease nobody took, which never held the slot on its own.
    armed: bool,
}

impl Lease {
    /// Waits out the container's cold start (at once if it is warm).
    pub async fn ready(&self) {
        tokio::time::sleep_until(self.ready_at.into()).await;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            self.fleet.release(self.container);
        }
    }
}

/// The containers as plain data: where a request goes, when a container stops, what
/// is billed. No clock and no locks; `now` comes in.
#[derive(Debug)]
struct FleetState {
    /// Every container ever started; the id of `containers[i]` is `i + 1`.
    containers: Vec<Container>,
    /// One moment on both clocks, to turn instants into Unix milliseconds that keep
    /// the monotonic clock's order (a wall-clock step cannot make a stop precede a start).
    epoch: Instant,
    epoch_unix_ms: u64,
}

#[derive(Debug)]
struct Container {
    started: Instant,
    ready_at: Instant,
    in_flight: u32,
    /// Since when it has had nothing in flight (never before `ready_at`).
    idle_since: Option<Instant>,
    stopped: Option<Instant>,
}

impl FleetState {
    fn new(epoch: Instant, epoch_unix_ms: u64) -> Self {
        Self { containers: Vec::new(), epoch, epoch_unix_ms }
    }

    /// Takes a slot for a request: on the warm container with the most in flight that
    /// has room (packing lets the others idle and scale down), else on a cold-starting
    /// one, else on a new container. `None`: every slot is taken and no container may
    /// start, so the request waits. Returns the container's id and when it is ready.
    fn place(&mut self, sim: &ServerlessSim, now: Instant) -> Option<(u32, Instant)> {
        self.stop_idle(sim, now);
        let best = self
            .containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.stopped.is_none() && c.in_flight < sim.concurrency)
            // `Reverse(index)`: among equals, the oldest container.
            .max_by_key(|(i, c)| (c.ready_at <= now, c.in_flight, std::cmp::Reverse(*i)))
            .map(|(i, _)| i);
        if let Some(i) = best {
            let container = &mut self.containers[i];
            container.in_flight += 1;
            container.idle_since = None;
            return Some((id_of(i), container.ready_at));
        }
        if self.running() >= sim.containers_max {
            return None;
        }
        let ready_at = now + sim.cold_start();
        self.containers.push(Container { started: now, ready_at, in_flight: 1, idle_since: None, stopped: None });
        let id = id_of(self.containers.len() - 1);
        tracing::info!(container = id, running = self.running(), "mock-vllm serverless: container cold-starting");
        Some((id, ready_at))
    }

    /// Gives a slot back; true if the container turned idle. An idle spell starts no
    /// earlier than the end of the cold start, which runs to its end regardless.
    fn free(&mut self, id: u32, now: Instant) -> bool {
        let container = self.container(id);
        container.in_flight = container.in_flight.checked_sub(1).expect("a slot is freed only after it was taken");
        if container.in_flight > 0 {
            return false;
        }
        container.idle_since = Some(now.max(container.ready_at));
        true
    }

    fn ready_at(&mut self, id: u32) -> Instant {
        self.container(id).ready_at
    }

    /// Stops every container whose idle window has passed, at the moment it passed, so
    /// billing does not depend on when the timer runs. Returns the next such moment.
    fn stop_idle(&mut self, sim: &ServerlessSim, now: Instant) -> Option<Instant> {
        let window = sim.scaledown_window();
        let mut next = None::<Instant>;
        for (i, container) in self.containers.iter_mut().enumerate() {
            let Some(idle_since) = container.idle_since.filter(|_| container.stopped.is_none()) else {
                continue;
            };
            let deadline = idle_since + window;
            if deadline <= now {
                container.stopped = Some(deadline);
                container.idle_since = None;
                let lived = deadline - container.started;
                tracing::info!(container = id_of(i), ?lived, "mock-vllm serverless: container scaled down");
            } else {
                next = Some(next.map_or(deadline, |n| n.min(deadline)));
            }
        }
        next
    }

    fn running(&self) -> u32 {
        let running = self.containers.iter().filter(|c| c.stopped.is_none()).count();
        u32::try_from(running).expect("at most containers_max (a u32) containers run")
    }

    fn billing(&self) -> Billing {
        let containers = self
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| BilledContainer {
                id: id_of(i),
                started_unix_ms: self.unix_ms(c.started),
                stopped_unix_ms: c.stopped.map(|at| self.unix_ms(at)),
            })
            .collect();
        Billing { containers, running: self.running(), cold_starts: self.containers.len() as u64 }
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        self.epoch_unix_ms.saturating_add(millis(at.saturating_duration_since(self.epoch).as_millis()))
    }

    fn container(&mut self, id: u32) -> &mut Container {
        let index = usize::try_from(id - 1).expect("ids fit in usize");
        &mut self.containers[index]
    }
}

fn id_of(index: usize) -> u32 {
    u32::try_from(index + 1).expect("a u32 count of containers")
}

fn millis(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sim(containers_max: u32, concurrency: u32) -> ServerlessSim {
        ServerlessSim { containers_max, concurrency, cold_start_secs: 2.0, scaledown_window_secs: 60.0 }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn the_first_request_cold_starts_and_the_next_ones_pack_onto_it() {
        let t0 = Instant::now();
        let sim = sim(3, 2);
        let mut fleet = FleetState::new(t0, 1_000);
        assert_eq!(fleet.place(&sim, t0), Some((1, t0 + secs(2.0))));
        assert_eq!(fleet.place(&sim, t0 + secs(1.0)), Some((1, t0 + secs(2.0))), "joins the cold start");
        assert_eq!(fleet.place(&sim, t0 + secs(1.5)), Some((2, t0 + secs(3.5))), "container 1 is full");
        assert_eq!(fleet.place(&sim, t0 + secs(1.6)), Some((2, t0 + secs(3.5))));
        assert_eq!(fleet.place(&sim, t0 + secs(1.7)), Some((3, t0 + secs(3.7))));
        assert_eq!(fleet.place(&sim, t0 + secs(1.8)), Some((3, t0 + secs(3.7))));
        assert_eq!(fleet.place(&sim, t0 + secs(1.9)), None, "all full and containers_max reached");
        let billing = fleet.billing();
        assert_eq!((billing.running, billing.cold_starts), (3, 3));
        assert_eq!(billing.containers[1], BilledContainer { id: 2, started_unix_ms: 2_500, stopped_unix_ms: None });
    }

    #[test]
    fn placement_prefers_warm_then_fullest_then_oldest() {
        let t0 = Instant::now();
        let sim = sim(3, 4);
        let mut fleet = FleetState::new(t0, 0);
        for _ in 0..4 {
            fleet.place(&sim, t0);
        }
        fleet.place(&sim, t0 + secs(3.0)); // container 2
        fleet.place(&sim, t0 + secs(3.0));
        fleet.free(1, t0 + secs(4.0));
        fleet.free(1, t0 + secs(4.0));
        fleet.free(1, t0 + secs(4.0));
        // Container 1 (warm, 1 in flight) versus 2 (cold until 5 s, 2 in flight).
        assert_eq!(fleet.place(&sim, t0 + secs(4.0)).map(|p| p.0), Some(1), "warm beats fuller but cold");
        assert_eq!(fleet.place(&sim, t0 + secs(6.0)).map(|p| p.0), Some(1), "both warm, 2 each: the oldest");
        assert_eq!(fleet.place(&sim, t0 + secs(6.0)).map(|p| p.0), Some(1), "the fullest");
        assert_eq!(fleet.place(&sim, t0 + secs(6.0)).map(|p| p.0), Some(2), "1 is full");
    }

    #[test]
    fn idle_containers_stop_after_the_window_and_are_never_reused() {
        let t0 = Instant::now();
        let sim = sim(1, 1);
        let mut fleet = FleetState::new(t0, 10_000);
        assert_eq!(fleet.place(&sim, t0).map(|p| p.0), Some(1));
        assert!(fleet.free(1, t0 + secs(5.0)));
        assert_eq!(fleet.stop_idle(&sim, t0 + secs(64.0)), Some(t0 + secs(65.0)));
        assert_eq!(fleet.place(&sim, t0 + secs(64.0)).map(|p| p.0), Some(1), "still warm inside the window");
        assert!(fleet.free(1, t0 + secs(70.0)));
        // Nobody looked until long after the deadline: the stop is billed at the deadline.
        assert_eq!(fleet.place(&sim, t0 + secs(500.0)), Some((2, t0 + secs(502.0))));
        let billing = fleet.billing();
        assert_eq!(billing.containers[0].stopped_unix_ms, Some(10_000 + 130_000));
        assert_eq!((billing.running, billing.cold_starts), (1, 2));
        assert_eq!(fleet.stop_idle(&sim, t0 + secs(1000.0)), None, "container 2 is busy");
    }

    #[test]
    fn an_abandoned_cold_start_still_finishes_before_the_idle_window_starts() {
        let t0 = Instant::now();
        let sim = sim(1, 1);
        let mut fleet = FleetState::new(t0, 0);
        fleet.place(&sim, t0);
        assert!(fleet.free(1, t0 + secs(0.5)), "the client left during the cold start");
        assert_eq!(fleet.stop_idle(&sim, t0 + secs(1.0)), Some(t0 + secs(62.0)));
        assert_eq!(fleet.stop_idle(&sim, t0 + secs(62.0)), None);
        assert_eq!(fleet.billing().containers[0].stopped_unix_ms, Some(62_000));
    }

    #[test]
    fn a_zero_window_stops_a_container_as_soon_as_it_idles() {
        let t0 = Instant::now();
        let sim = ServerlessSim { scaledown_window_secs: 0.0, cold_start_secs: 0.0, ..sim(1, 1) };
        let mut fleet = FleetState::new(t0, 0);
        fleet.place(&sim, t0);
        fleet.free(1, t0 + secs(1.0));
        assert_eq!(fleet.place(&sim, t0 + secs(1.0)).map(|p| p.0), Some(2));
    }
}
