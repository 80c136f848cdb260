//! The control loop. Every tick it observes (the router's load, each replica's status
//! and readiness, the serverless endpoint's containers), decides with the pure `plan`,
//! applies the actions, and publishes the live backends to the router. A failed action
//! is logged, counted and retried on a later tick; nothing ends the loop but `stop`.
//!
//! Replica lifecycle: Provisioning → Booting → Ready → Draining → Terminated, or
//! Preempted / Failed. Each transition is an event in the state store.

use std::sync::Arc;
use std::time::Duration;

use tandemn_config::DeploymentSpec;
use tandemn_config::api::{BackendSpec, LoadSource, RouteSink, Tier};

use crate::autoscaler::Autoscaler;
use crate::ledger::ServerlessShadow;
use crate::local::now_ms;
use crate::provider::{
    Endpoint, ErrorKind, ProviderError, ReplicaHandle, ReplicaSpec, ReplicaStatus, ServerlessProvider, ServerlessSpec,
    SpotProvider,
};
use crate::state_store::{ContainerRow, Phase, ReplicaRow, StateStore, Usage};

/// Failed status calls in a row after which the serverless endpoint is deployed anew.
const ENDPOINT_FAILURES_BEFORE_REDEPLOY: u32 = 5;

/// What `plan` sees of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: String,
    pub phase: Phase,
    pub inflight: u32,
    /// When it entered its phase.
    pub since_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Launch,
    /// Out of selection; its streams finish.
    Drain(String),
    /// Demand came back while it drained: cheaper than a launch.
    Undrain(String),
    Terminate(String),
}

/// The actions that move `replicas` toward `desired` live ones. Surplus replicas that
/// still boot are stopped first (they serve nothing), then the least busy ready ones
/// drain; a drained replica is terminated when its last stream ends or `drain_timeout_ms`
/// passes. Launches wait while `launch_allowed` is false (the failure backoff).
pub fn plan(
    desired: u32,
    replicas: &[ReplicaView],
    now_ms: u64,
    launch_allowed: bool,
    drain_timeout_ms: u64,
) -> Vec<Action> {
    let desired = usize::try_from(desired).unwrap_or(usize::MAX);
    let mut actions = Vec::new();
    let live: Vec<&ReplicaView> =
        replicas.iter().filter(|r| matches!(r.phase, Phase::Provisioning | Phase::Booting | Phase::Ready)).collect();
    let mut draining: Vec<&ReplicaView> = replicas.iter().filter(|r| r.phase == Phase::Draining).collect();
    if live.len() < desired {
        let mut missing = desired - live.len();
        // Busiest drainers first: they are the warmest.
        draining.sort_by_key(|r| std::cmp::Reverse(r.inflight));
        while missing > 0 && !draining.is_empty() {
            actions.push(Action::Undrain(draining.remove(0).id.clone()));
            missing -= 1;
        }
        if launch_allowed {
            actions.extend(std::iter::repeat_n(Action::Launch, missing));
        }
    } else if live.len() > desired {
        let mut surplus: Vec<&ReplicaView> = live.clone();
        // Not ready first (newest first), then ready ones with the fewest streams.
        surplus.sort_by_key(|r| (r.phase == Phase::Ready, r.inflight, std::cmp::Reverse(r.since_ms)));
        for replica in surplus.into_iter().take(live.len() - desired) {
            actions.push(if replica.phase == Phase::Ready {
                Action::Drain(replica.id.clone())
            } else {
                Action::Terminate(replica.id.clone())
            });
        }
    }
    for replica in draining {
        if replica.inflight == 0 || now_ms.saturating_sub(replica.since_ms) >= drain_timeout_ms {
            actions.push(Action::Terminate(replica.id.clone()));
        }
    }
    actions
}

/// Relaunch delay after preemptions or failed launches: doubling from 1 s up to 60 s,
/// reset when a replica becomes ready.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until_ms: u64,
}

impl Backoff {
    const BASE_MS: u64 = 1_000;
    const MAX_MS: u64 = 60_000;

    fn failed(&mut self, now_ms: u64) {
        self.failures += 1;
        let delay = Self::BASE_MS.saturating_mul(1 << (self.failures - 1).min(10)).min(Self::MAX_MS);
        self.until_ms = now_ms + delay;
    }

    /// A failed launch: a cloud without capacity is asked again later than usual, and a
    /// refusal that retrying cannot cure (credentials, a bad request) waits the longest.
    fn launch_failed(&mut self, kind: ErrorKind, now_ms: u64) {
        self.failed(now_ms);
        match kind {
            ErrorKind::Transient => {}
            ErrorKind::NoCapacity => self.failed(now_ms),
            ErrorKind::Auth | ErrorKind::Invalid => self.until_ms = now_ms + Self::MAX_MS,
        }
    }

    fn allows(&self, now_ms: u64) -> bool {
        now_ms >= self.until_ms
    }

    fn note(&self, now_ms: u64) -> Option<String> {
        (!self.allows(now_ms)).then(|| {
            format!(
                "spot relaunch in {:.0} s after {} failed or preempted replica(s)",
                (self.until_ms - now_ms) as f64 / 1000.0,
                self.failures
            )
        })
    }
}

/// A replica is ready when its engine answers `GET /health` with a 2xx.
async fn ready(http: &reqwest::Client, url: &str, timeout: Duration) -> bool {
    let probe = http.get(format!("{url}/health")).timeout(timeout).send().await;
    probe.is_ok_and(|r| r.status().is_success())
}

struct Replica {
    handle: ReplicaHandle,
    phase: Phase,
    since_ms: u64,
    /// Since when the router has seen a ready replica fail its health checks.
    unready_since: Option<u64>,
}

/// Timing of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub tick: Duration,
    /// How long a booting replica's readiness probe may take.
    pub probe_timeout: Duration,
    /// How long draining replicas get to finish their streams.
    pub drain_timeout: Duration,
    /// How long a ready replica may fail the router's health checks before it is replaced.
    pub unhealthy_timeout: Duration,
    /// How long a replica may boot (launch to its first healthy probe) before it is replaced.
    pub boot_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            probe_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(600),
            unhealthy_timeout: Duration::from_secs(60),
            // A real engine downloads and loads weights: minutes, not seconds.
            boot_timeout: Duration::from_secs(1800),
        }
    }
}

pub struct Reconciler {
    spec: DeploymentSpec,
    spot: Arc<dyn SpotProvider>,
    serverless: Arc<dyn ServerlessProvider>,
    sink: Arc<dyn RouteSink>,
    load: Arc<dyn LoadSource>,
    store: StateStore,
    timing: Timing,
    http: reqwest::Client,
    replicas: Vec<Replica>,
    endpoint: Option<Endpoint>,
    /// Deploys of the serverless endpoint so far: keeps container ids of a redeploy apart.
    endpoint_generation: u64,
    endpoint_failures: u32,
    /// Containers as last recorded, to write only what changed.
    recorded_containers: std::collections::HashMap<u64, Option<u64>>,
    container_starts: std::collections::HashMap<u64, u64>,
    autoscaler: Autoscaler,
    shadow: ServerlessShadow,
    usage: Usage,
    backoff: Backoff,
    launched: u32,
    published: Option<Vec<BackendSpec>>,
    /// Shutting down: every backend drains, so new requests are refused while the
    /// in-flight ones finish.
    stopping: bool,
    /// Actions that failed since the start (logged each time).
    errors: u64,
    note: Option<String>,
}

impl Reconciler {
    #[allow(clippy::too_many_arguments, reason = "the loop's collaborators, each needed once")]
    pub fn new(
        spec: DeploymentSpec,
        spot: Arc<dyn SpotProvider>,
        serverless: Arc<dyn ServerlessProvider>,
        sink: Arc<dyn RouteSink>,
        load: Arc<dyn LoadSource>,
        store: StateStore,
        timing: Timing,
    ) -> Self {
        let now = now_ms();
        let autoscaler = Autoscaler::new(spec.scaling.spot.clone(), now);
        let serverless_policy = &spec.scaling.serverless;
        let shadow = ServerlessShadow::new(serverless_policy.concurrency, serverless_policy.scaledown_window, now);
        Self {
            spec,
            spot,
            serverless,
            sink,
            load,
            store,
            timing,
            http: reqwest::Client::new(),
            replicas: Vec::new(),
            endpoint: None,
            endpoint_generation: 0,
            endpoint_failures: 0,
            recorded_containers: std::collections::HashMap::new(),
            container_starts: std::collections::HashMap::new(),
            autoscaler,
            shadow,
            usage: Usage::default(),
            backoff: Backoff::default(),
            launched: 0,
            published: None,
            stopping: false,
            errors: 0,
            note: None,
        }
    }

    /// Deploys serverless, then reconciles every tick until `stop` resolves; then drains
    /// and removes everything it runs. `hurry` cuts the drain short.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        hurry: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut ticks = tokio::time::interval(self.timing.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = ticks.tick() => self.tick().await,
            }
        }
        self.teardown(hurry).await;
    }

    fn failed(&mut self, what: &str, error: &ProviderError) {
        self.errors += 1;
        tracing::warn!(service = %self.spec.service_name, %error, "{what} failed; retrying");
        self.note = Some(format!("{} provider call(s) failed so far; the last: {what}: {error}", self.errors));
    }

    fn record(&mut self, index: usize, phase: Phase, at_ms: u64, detail: Option<&str>) {
        let replica = &mut self.replicas[index];
        replica.phase = phase;
        replica.since_ms = at_ms;
        let row = ReplicaRow {
            replica: replica.handle.replica.clone(),
            url: replica.handle.url.clone(),
            pid: replica.handle.pid,
            // Read once, when the replica is first recorded (later rows keep the first value).
            pid_started: replica.handle.pid.and_then(crate::process::start_ticks),
            phase,
            launched_at_ms: replica.handle.launched_ms,
            ended_at_ms: None,
            detail: None,
        };
        tracing::info!(service = %self.spec.service_name, replica = %row.replica, phase = phase.as_str(), "replica");
        if let Err(error) = self.store.replica_phase(&self.spec.service_name, &row, phase, at_ms, detail) {
            tracing::warn!(%error, "cannot record a replica event");
        }
    }

    pub async fn tick(&mut self) {
        let now = now_ms();
        self.note = None;
        if self.endpoint.is_none() {
            self.deploy_serverless().await;
        }
        let load = self.load.snapshot();
        self.observe_replicas().await;
        self.observe_serverless().await;

        let desired = self.autoscaler.observe(now, load.arrived);
        let busy = load.arrived > self.usage.arrived;
        self.shadow.observe(now, load.peak_inflight, busy);
        self.usage = Usage {
            arrived: load.arrived,
            spot_requests: load.spot_requests,
            serverless_requests: load.serverless_requests,
            pure_serverless_ms: self.shadow.billed_ms,
            peak_replicas: self.usage.peak_replicas.max(desired),
            desired_replicas: desired,
            serverless_running: self.usage.serverless_running,
        };

        let inflight =
            |url: &str| load.backends.iter().find(|b| b.tier == Tier::Spot && b.url == url).map_or(0, |b| b.inflight);
        let views: Vec<ReplicaView> = self
            .replicas
            .iter()
            .map(|r| ReplicaView {
                id: r.handle.replica.clone(),
                phase: r.phase,
                inflight: inflight(&r.handle.url),
                since_ms: r.since_ms,
            })
            .collect();
        let drain_ms = self.ms(self.timing.drain_timeout);
        self.replace_unhealthy(&load, now).await;
        let mut launching = self.backoff.allows(now);
        for action in plan(desired, &views, now, launching, drain_ms) {
            if action == Action::Launch && !launching {
                continue;
            }
            // After a failed launch, the rest of this tick's launches wait for the backoff.
            launching &= self.apply(action).await;
        }
        self.publish();
        let note = self.backoff.note(now_ms()).or_else(|| self.note.clone());
        if let Err(error) = self.store.update_usage(&self.spec.service_name, &self.usage, note.as_deref(), now_ms()) {
            tracing::warn!(%error, "cannot record usage");
        }
    }

    async fn deploy_serverless(&mut self) {
        let policy = &self.spec.scaling.serverless;
        let spec = ServerlessSpec {
            service: self.spec.service_name.clone(),
            model: self.spec.model.clone(),
            gpu: self.spec.gpu.clone(),
            gpu_count: self.spec.gpu_count,
            concurrency: policy.concurrency,
            workers_max: policy.workers_max,
            scaledown_window_secs: policy.scaledown_window,
        };
        match self.serverless.deploy(&spec).await {
            Ok(endpoint) => {
                self.endpoint_generation += 1;
                tracing::info!(service = %self.spec.service_name, url = %endpoint.url, "serverless deployed");
                if let Err(error) = self.store.set_serverless(&self.spec.service_name, &endpoint.url, endpoint.pid) {
                    tracing::warn!(%error, "cannot record the serverless endpoint");
                }
                self.endpoint = Some(endpoint);
                self.publish();
            }
            Err(error) => self.failed("serverless deploy", &error),
        }
    }

    async fn observe_replicas(&mut self) {
        let mut index = 0;
        while index < self.replicas.len() {
            let handle = self.replicas[index].handle.clone();
            match self.spot.poll(&handle).await {
                Ok(ReplicaStatus::Running) => match self.replicas[index].phase {
                    Phase::Provisioning => self.record(index, Phase::Booting, now_ms(), None),
                    Phase::Booting if ready(&self.http, &handle.url, self.timing.probe_timeout).await => {
                        self.record(index, Phase::Ready, now_ms(), None);
                        self.backoff = Backoff::default();
                    }
                    Phase::Booting
                        if now_ms().saturating_sub(handle.launched_ms) >= self.ms(self.timing.boot_timeout) =>
                    {
                        let reason = format!("not ready {:?} after launch", self.timing.boot_timeout);
                        self.give_up(index, &reason).await;
                        continue;
                    }
                    _ => {}
                },
                Ok(ReplicaStatus::Preempted { at_ms }) => {
                    self.record(index, Phase::Preempted, at_ms, None);
                    self.replicas.remove(index);
                    self.backoff.failed(at_ms);
                    continue;
                }
                Ok(ReplicaStatus::Failed { at_ms, reason }) => {
                    self.record(index, Phase::Failed, at_ms, Some(&reason));
                    self.replicas.remove(index);
                    self.backoff.failed(at_ms);
                    continue;
                }
                Err(error) => self.failed("replica status", &error),
            }
            index += 1;
        }
    }

    async fn observe_serverless(&mut self) {
        let Some(endpoint) = &self.endpoint else { return };
        match self.serverless.status(endpoint).await {
            Ok(status) => {
                self.endpoint_failures = 0;
                self.usage.serverless_running = status.running;
                self.save_containers(&status.containers);
            }
            Err(error) => {
                self.endpoint_failures += 1;
                self.failed("serverless status", &error);
                if self.endpoint_failures >= ENDPOINT_FAILURES_BEFORE_REDEPLOY {
                    // Gone for good: out of the table now, deployed again on the next tick. Its
                    // containers are billed as its provider says, or (if it cannot) up to now.
                    if let Some(endpoint) = self.endpoint.take()
                        && let Ok(containers) = self.serverless.destroy(&endpoint).await
                    {
                        self.save_containers(&containers);
                    }
                    self.close_containers(now_ms());
                    self.endpoint_failures = 0;
                    self.usage.serverless_running = 0;
                    self.publish();
                }
            }
        }
    }

    /// Records containers as billed, writing only those that are new or changed. Ids
    /// are kept apart per deploy of the endpoint.
    fn save_containers(&mut self, containers: &[crate::provider::ContainerBill]) {
        let offset = self.endpoint_generation.saturating_sub(1) * 1_000_000;
        let rows: Vec<ContainerRow> = containers
            .iter()
            .map(|c| ContainerRow {
                container: offset + c.id,
                started_at_ms: c.started_ms,
                stopped_at_ms: c.stopped_ms,
            })
            .filter(|row| self.recorded_containers.get(&row.container) != Some(&row.stopped_at_ms))
            .collect();
        if rows.is_empty() {
            return;
        }
        match self.store.save_containers(&self.spec.service_name, &rows) {
            Ok(()) => {
                self.recorded_containers.extend(rows.iter().map(|r| (r.container, r.stopped_at_ms)));
                self.container_starts.extend(rows.iter().map(|r| (r.container, r.started_at_ms)));
            }
            Err(error) => tracing::warn!(%error, "cannot record serverless containers"),
        }
    }

    /// Closes the current endpoint's containers still recorded open, at `at_ms`.
    fn close_containers(&mut self, at_ms: u64) {
        let rows: Vec<ContainerRow> = self
            .recorded_containers
            .iter()
            .filter(|&(_, stopped)| stopped.is_none())
            .filter_map(|(&container, _)| {
                let started = self.container_starts.get(&container)?;
                Some(ContainerRow { container, started_at_ms: *started, stopped_at_ms: Some(at_ms.max(*started)) })
            })
            .collect();
        if let Err(error) = self.store.save_containers(&self.spec.service_name, &rows) {
            tracing::warn!(%error, "cannot record serverless containers");
        }
        self.recorded_containers.extend(rows.iter().map(|r| (r.container, r.stopped_at_ms)));
    }

    /// A ready replica the router has seen unhealthy for `unhealthy_timeout` (a hung
    /// engine whose process still runs) is stopped and recorded failed, so it is replaced.
    async fn replace_unhealthy(&mut self, load: &tandemn_config::api::LoadSnapshot, now: u64) {
        let limit = self.ms(self.timing.unhealthy_timeout);
        let mut index = 0;
        while index < self.replicas.len() {
            let replica = &mut self.replicas[index];
            let seen = load.backends.iter().find(|b| b.tier == Tier::Spot && b.url == replica.handle.url);
            let healthy = seen.is_none_or(|b| b.ready);
            replica.unready_since = match (replica.phase, healthy) {
                (Phase::Ready, false) => Some(replica.unready_since.unwrap_or(now)),
                _ => None,
            };
            if replica.unready_since.is_some_and(|since| now.saturating_sub(since) >= limit) {
                let reason = format!("unhealthy for {:?}", self.timing.unhealthy_timeout);
                self.give_up(index, &reason).await;
                continue;
            }
            index += 1;
        }
    }

    fn ms(&self, duration: Duration) -> u64 {
        u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
    }

    /// Stops a replica that will not serve, records it failed and backs off before the
    /// replacement. One the provider could not stop says so.
    async fn give_up(&mut self, index: usize, reason: &str) {
        let handle = self.replicas[index].handle.clone();
        let (at_ms, detail) = match self.spot.terminate(&handle).await {
            Ok(at_ms) => (at_ms, format!("{reason}; replaced")),
            Err(error) => (now_ms(), format!("{reason}; could not be terminated: {error}")),
        };
        self.record(index, Phase::Failed, at_ms, Some(&detail));
        self.replicas.remove(index);
        self.backoff.failed(at_ms);
    }

    /// Carries out one action; false if it failed.
    async fn apply(&mut self, action: Action) -> bool {
        let index_of = |replicas: &[Replica], id: &str| replicas.iter().position(|r| r.handle.replica == id);
        match action {
            Action::Launch => {
                self.launched += 1;
                let spec = ReplicaSpec {
                    service: self.spec.service_name.clone(),
                    replica: format!("spot-{}", self.launched),
                    model: self.spec.model.clone(),
                    gpu: self.spec.gpu.clone(),
                    gpu_count: self.spec.gpu_count,
                };
                match self.spot.launch(&spec).await {
                    Ok(handle) => {
                        let at = handle.launched_ms;
                        self.replicas.push(Replica {
                            handle,
                            phase: Phase::Provisioning,
                            since_ms: at,
                            unready_since: None,
                        });
                        self.record(self.replicas.len() - 1, Phase::Provisioning, at, None);
                    }
                    Err(error) => {
                        self.backoff.launch_failed(error.kind, now_ms());
                        self.failed("spot launch", &error);
                        return false;
                    }
                }
            }
            Action::Drain(id) => {
                if let Some(index) = index_of(&self.replicas, &id) {
                    self.record(index, Phase::Draining, now_ms(), None);
                }
            }
            Action::Undrain(id) => {
                if let Some(index) = index_of(&self.replicas, &id) {
                    self.record(index, Phase::Ready, now_ms(), Some("demand came back"));
                }
            }
            Action::Terminate(id) => {
                let Some(index) = index_of(&self.replicas, &id) else { return true };
                let handle = self.replicas[index].handle.clone();
                match self.spot.terminate(&handle).await {
                    Ok(at_ms) => {
                        self.record(index, Phase::Terminated, at_ms, None);
                        self.replicas.remove(index);
                    }
                    Err(error) => {
                        self.failed("spot terminate", &error);
                        return false;
                    }
                }
            }
        }
        true
    }

    /// The backends the router should route to now; published only when they change.
    fn backends(&self) -> Vec<BackendSpec> {
        let spot =
            self.replicas.iter().filter(|r| matches!(r.phase, Phase::Ready | Phase::Draining)).map(|r| BackendSpec {
                tier: Tier::Spot,
                url: r.handle.url.clone(),
                capacity: self.spec.router.spot_capacity,
                auth: Default::default(),
                draining: r.phase == Phase::Draining,
            });
        let policy = &self.spec.scaling.serverless;
        let serverless = self.endpoint.iter().map(|e| BackendSpec {
            tier: Tier::Serverless,
            url: e.url.clone(),
            capacity: policy.concurrency.saturating_mul(policy.workers_max.max(1)),
            auth: Default::default(),
            draining: self.stopping,
        });
        spot.chain(serverless).collect()
    }

    fn publish(&mut self) {
        let backends = self.backends();
        if self.published.as_ref() == Some(&backends) {
            return;
        }
        match self.sink.publish(&backends) {
            Ok(()) => self.published = Some(backends),
            Err(problem) => {
                self.errors += 1;
                tracing::warn!(%problem, "cannot publish backends; retrying");
            }
        }
    }

    /// Drains every backend (new requests are refused; streams on spot and serverless
    /// finish, bounded by the drain timeout or cut short by `hurry`), stops replicas that
    /// serve nothing at once, then the rest and the serverless endpoint.
    async fn teardown(&mut self, hurry: impl std::future::Future<Output = ()>) {
        for index in 0..self.replicas.len() {
            if self.replicas[index].phase == Phase::Ready {
                self.record(index, Phase::Draining, now_ms(), Some("deployment stopping"));
            }
        }
        self.stopping = true;
        self.publish();
        // Replicas that serve nothing need no drain.
        let mut index = 0;
        while index < self.replicas.len() {
            if self.replicas[index].phase == Phase::Draining {
                index += 1;
            } else {
                self.stop_replica(index).await;
            }
        }
        let load = self.load.clone();
        let drained = async move {
            while load.snapshot().backends.iter().any(|b| b.inflight > 0) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let waited = tokio::time::timeout(self.timing.drain_timeout, async {
            tokio::select! {
                () = drained => {}
                () = hurry => tracing::warn!("not waiting for streams to finish"),
            }
        });
        let _ = waited.await;
        while !self.replicas.is_empty() {
            self.stop_replica(0).await;
        }
        if let Some(endpoint) = self.endpoint.take() {
            match self.serverless.destroy(&endpoint).await {
                Ok(containers) => self.save_containers(&containers),
                Err(error) => self.failed("serverless destroy", &error),
            }
        }
        self.publish();
        self.usage.serverless_running = 0;
        let now = now_ms();
        let _ = self.store.update_usage(&self.spec.service_name, &self.usage, self.note.as_deref(), now);
        if let Err(error) = self.store.end_run(&self.spec.service_name, now) {
            tracing::warn!(%error, "cannot record the end of the run");
        }
    }

    /// Terminates a replica at shutdown; one the provider could not stop is recorded
    /// failed (not terminated), so `status` shows it may still run.
    async fn stop_replica(&mut self, index: usize) {
        let handle = self.replicas[index].handle.clone();
        match self.spot.terminate(&handle).await {
            Ok(at_ms) => self.record(index, Phase::Terminated, at_ms, Some("deployment stopped")),
            Err(error) => {
                self.failed("spot terminate", &error);
                let detail = format!("could not be terminated: {error}");
                self.record(index, Phase::Failed, now_ms(), Some(&detail));
            }
        }
        self.replicas.remove(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, phase: Phase, inflight: u32, since_ms: u64) -> ReplicaView {
        ReplicaView { id: id.into(), phase, inflight, since_ms }
    }

    #[test]
    fn launches_what_is_missing_unless_backing_off() {
        let replicas = [view("a", Phase::Ready, 0, 0)];
        assert_eq!(plan(3, &replicas, 10, true, 1_000), [Action::Launch, Action::Launch]);
        assert!(plan(3, &replicas, 10, false, 1_000).is_empty());
        assert!(plan(1, &replicas, 10, true, 1_000).is_empty());
    }

    #[test]
    fn booting_surplus_stops_first_then_the_least_busy_ready_replica_drains() {
        let replicas = [
            view("busy", Phase::Ready, 5, 0),
            view("idle", Phase::Ready, 1, 0),
            view("booting", Phase::Booting, 0, 50),
        ];
        assert_eq!(plan(2, &replicas, 100, true, 1_000), [Action::Terminate("booting".into())]);
        assert_eq!(
            plan(0, &replicas, 100, true, 1_000),
            [Action::Terminate("booting".into()), Action::Drain("idle".into()), Action::Drain("busy".into())]
        );
    }

    #[test]
    fn a_draining_replica_ends_when_its_streams_do_or_the_timeout_passes() {
        let replicas = [view("a", Phase::Draining, 2, 0), view("b", Phase::Draining, 0, 0)];
        assert_eq!(plan(0, &replicas, 500, true, 1_000), [Action::Terminate("b".into())]);
        assert_eq!(
            plan(0, &replicas, 1_000, true, 1_000),
            [Action::Terminate("a".into()), Action::Terminate("b".into())]
        );
    }

    #[test]
    fn returning_demand_takes_a_draining_replica_back_before_launching() {
        let replicas = [view("a", Phase::Draining, 3, 0), view("b", Phase::Draining, 0, 0)];
        assert_eq!(plan(1, &replicas, 10, true, 1_000), [Action::Undrain("a".into()), Action::Terminate("b".into())]);
        assert_eq!(
            plan(3, &replicas, 10, true, 1_000),
            [Action::Undrain("a".into()), Action::Undrain("b".into()), Action::Launch]
        );
    }

    #[test]
    fn backoff_doubles_is_bounded_and_resets() {
        let mut backoff = Backoff::default();
        let delays: Vec<u64> = (0..10)
            .map(|_| {
                backoff.failed(0);
                backoff.until_ms
            })
            .collect();
        assert_eq!(delays[..4], [1_000, 2_000, 4_000, 8_000]);
        assert_eq!(*delays.last().unwrap(), 60_000);
        assert!(backoff.note(0).unwrap().contains("10 failed"));
        assert!(backoff.allows(60_000));
    }

    #[test]
    fn launch_failures_back_off_by_kind() {
        let delay = |kind| {
            let mut backoff = Backoff::default();
            backoff.launch_failed(kind, 0);
            backoff.until_ms
        };
        assert_eq!(delay(ErrorKind::Transient), 1_000);
        assert_eq!(delay(ErrorKind::NoCapacity), 2_000);
        assert_eq!(delay(ErrorKind::Auth), 60_000);
        assert_eq!(delay(ErrorKind::Invalid), 60_000);
    }
}
