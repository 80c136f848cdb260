//! The control loop, in three steps a tick: observe (finished provider calls, the
//! router's load, health), decide with the pure [`plan::plan`], and apply (start provider
//! calls, record, publish the live backends to the router). Provider calls run beside the
//! loop under deadlines ([`calls`]), so nothing a cloud does delays a tick. A failed call
//! is logged, counted and retried later; nothing ends the loop but `stop`.
//!
//! Replica lifecycle: Provisioning (no address) → Booting → Ready → Draining →
//! Terminating → Terminated, or Preempted / Failed. Each transition is an event in the
//! state store, and a replica's row (with its provider reference) is written before its
//! launch starts, so a restarted process adopts it ([`Reconciler::run`] resumes first).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tandemn_config::DeploymentSpec;
use tandemn_config::api::{BackendAuth, BackendId, BackendSpec, LoadSnapshot, LoadSource, RouteSink, Tier};

use crate::autoscaler::Autoscaler;
use crate::ledger::ServerlessShadow;
use crate::provider::{
    ContainerBill, Endpoint, Placement, ProviderError, ReplicaId, ReplicaRef, ReplicaSpec, ReplicaStatus,
    ServerlessProvider, ServerlessSpec, SpotProvider,
};
use crate::state_store::{ContainerRow, Phase, ReplicaRow, StateStore, Usage};

mod calls;
mod lifecycle;
pub mod plan;

use calls::{Calls, Done, within};
use plan::{Action, Ending, EndpointView, Limits, Observed, ReplicaView};

/// Where the loop's time comes from: the wall clock, or tokio's (which tests pause and
/// advance) counted from a given start.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    Wall,
    Tokio { start_ms: u64, origin: tokio::time::Instant },
}

impl Clock {
    pub fn tokio(start_ms: u64) -> Self {
        Self::Tokio { start_ms, origin: tokio::time::Instant::now() }
    }

    pub fn now_ms(&self) -> u64 {
        match self {
            Self::Wall => crate::local::now_ms(),
            Self::Tokio { start_ms, origin } => {
                start_ms + u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
            }
        }
    }
}

/// Timing of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub tick: Duration,
    /// How often each replica's provider status is asked for (a cloud API is slower and
    /// rate-limited; the local one is cheap).
    pub status_interval: Duration,
    /// Deadline of one provider call.
    pub call_timeout: Duration,
    /// How long a booting replica's readiness probe may take.
    pub probe_timeout: Duration,
    /// How long draining replicas get to finish their streams.
    pub drain_timeout: Duration,
    /// How long a ready replica may fail the router's health checks before it is replaced.
    pub unhealthy_timeout: Duration,
    /// How long a replica may boot (launch to its first healthy probe) before it is replaced.
    pub boot_timeout: Duration,
    /// Delay before a failed terminate or serverless deploy is tried again.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            status_interval: Duration::from_millis(500),
            call_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(600),
            unhealthy_timeout: Duration::from_secs(60),
            // A real engine downloads and loads weights: minutes, not seconds.
            boot_timeout: Duration::from_secs(1800),
            retry: Duration::from_secs(5),
        }
    }
}

fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Failed status calls in a row after which the serverless endpoint is deployed anew.
const ENDPOINT_FAILURES_BEFORE_REDEPLOY: u32 = 5;

/// Relaunch delay after preemptions or failed launches: doubling from 1 s up to 60 s,
/// reset when a replica becomes ready.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until_ms: u64,
}

impl Backoff {
    const BASE: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    fn failed(&mut self, now_ms: u64) {
        self.failures += 1;
        let delay = ms(Self::BASE).saturating_mul(1 << (self.failures - 1).min(10)).min(ms(Self::MAX));
        self.until_ms = self.until_ms.max(now_ms + delay);
    }

    /// A failed launch waits at least as its error asks: a cloud without capacity longer
    /// than a network blip, a refusal that retrying cannot cure (credentials, a bad
    /// request) the longest.
    fn launch_failed(&mut self, error: &ProviderError, now_ms: u64) {
        self.failed(now_ms);
        self.until_ms = self.until_ms.max(now_ms + ms(error.backoff(Self::BASE, Self::MAX)));
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

/// Tells whether a booting replica's engine is ready to serve.
#[async_trait::async_trait]
pub trait Readiness: Send + Sync {
    async fn ready(&self, url: &str) -> bool;
}

/// Ready when the engine answers `GET /health` with a 2xx (vLLM's needs no key).
pub struct HealthEndpoint {
    http: reqwest::Client,
    timeout: Duration,
}

#[async_trait::async_trait]
impl Readiness for HealthEndpoint {
    async fn ready(&self, url: &str) -> bool {
        let probe = self.http.get(format!("{url}/health")).timeout(self.timeout).send().await;
        probe.is_ok_and(|r| r.status().is_success())
    }
}

struct Replica {
    reference: ReplicaRef,
    /// Known once the provider reports the replica running.
    url: Option<String>,
    placement: Option<Placement>,
    phase: Phase,
    since_ms: u64,
    unready_since_ms: Option<u64>,
    /// A launch or terminate is under way: nothing else is started on it.
    busy: bool,
    /// A status call is under way (it decides nothing: the plan may still act).
    polling: bool,
    polled_ms: u64,
    retry_at_ms: u64,
    /// How it is recorded once its termination is confirmed.
    ending: Ending,
    /// Adopted after a restart and not yet seen running: when a process last saw it, and
    /// when it was adopted. An end the provider dates at or after the adoption (it only
    /// noticed now) happened while nobody watched: it is billed until it was last seen.
    unwatched: Option<(u64, u64)>,
}

impl Replica {
    fn id(&self) -> &ReplicaId {
        &self.reference.id
    }

    /// `spot/<name>`: what the router reports its load and health under.
    fn backend_id(&self) -> BackendId {
        BackendId::new(format!("spot/{}", self.id()))
    }
}

enum EndpointState {
    Missing { retry_at_ms: u64 },
    Busy,
    Up { endpoint: Endpoint, failures: u32, polling: bool },
}

pub struct Reconciler {
    spec: DeploymentSpec,
    spot: Arc<dyn SpotProvider>,
    serverless: Arc<dyn ServerlessProvider>,
    sink: Arc<dyn RouteSink>,
    load: Arc<dyn LoadSource>,
    store: StateStore,
    timing: Timing,
    clock: Clock,
    readiness: Arc<dyn Readiness>,
    calls: Calls,
    /// When the service's run started: part of every replica name.
    run_started_ms: u64,
    next_replica: u32,
    replicas: Vec<Replica>,
    endpoint: EndpointState,
    /// Deploys of the serverless endpoint so far: keeps container ids of a redeploy apart.
    endpoint_generation: u64,
    /// Containers as last recorded, to write only what changed.
    recorded_containers: HashMap<u64, (u64, Option<u64>)>,
    autoscaler: Autoscaler,
    shadow: ServerlessShadow,
    /// What earlier processes of this run counted (a resumed run adds to it).
    base_usage: Usage,
    usage: Usage,
    backoff: Backoff,
    /// What the router sends every spot replica (the deployment's engine key).
    replica_auth: BackendAuth,
    published: Option<Vec<BackendSpec>>,
    /// Shutting down: every backend drains, so new requests are refused while the
    /// in-flight ones finish.
    stopping: bool,
    /// Calls that failed since the start (logged each time).
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
        clock: Clock,
    ) -> Self {
        let now = clock.now_ms();
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
            clock,
            readiness: Arc::new(HealthEndpoint { http: reqwest::Client::new(), timeout: timing.probe_timeout }),
            calls: Calls::default(),
            run_started_ms: now,
            next_replica: 1,
            replicas: Vec::new(),
            endpoint: EndpointState::Missing { retry_at_ms: 0 },
            endpoint_generation: 0,
            recorded_containers: HashMap::new(),
            autoscaler,
            shadow,
            base_usage: Usage::default(),
            usage: Usage::default(),
            backoff: Backoff::default(),
            replica_auth: BackendAuth::None,
            published: None,
            stopping: false,
            errors: 0,
            note: None,
        }
    }

    /// How readiness is told (tests script it).
    pub fn with_readiness(mut self, readiness: Arc<dyn Readiness>) -> Self {
        self.readiness = readiness;
        self
    }

    /// Spot replicas require this from the router (their engine's `--api-key`).
    pub fn with_replica_auth(mut self, auth: BackendAuth) -> Self {
        self.replica_auth = auth;
        self
    }

    fn service(&self) -> &str {
        &self.spec.service_name
    }

    fn limits(&self) -> Limits {
        Limits {
            boot_ms: ms(self.timing.boot_timeout),
            unhealthy_ms: ms(self.timing.unhealthy_timeout),
            drain_ms: ms(self.timing.drain_timeout),
            endpoint_failures: ENDPOINT_FAILURES_BEFORE_REDEPLOY,
        }
    }

    /// Resumes what the store and the providers know of this service, then reconciles
    /// every tick until `stop` resolves; then drains and removes everything it runs.
    /// `hurry` cuts the drain short.
    pub async fn run(
        mut self,
        stop: impl std::future::Future<Output = ()>,
        hurry: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        tokio::select! {
            () = &mut stop => {}
            () = self.resume() => {
                let mut ticks = tokio::time::interval(self.timing.tick);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = &mut stop => break,
                        _ = ticks.tick() => self.tick().await,
                    }
                }
            }
        }
        self.teardown(hurry).await;
    }

    fn failed(&mut self, what: &str, error: &ProviderError) {
        self.errors += 1;
        tracing::warn!(service = %self.spec.service_name, %error, "{what} failed; retrying");
        self.note = Some(format!("{} provider call(s) failed so far; the last: {what}: {error}", self.errors));
    }

    fn index_of(&self, id: &ReplicaId) -> Option<usize> {
        self.replicas.iter().position(|r| r.id() == id)
    }

    fn row(&self, index: usize) -> ReplicaRow {
        let replica = &self.replicas[index];
        ReplicaRow {
            replica: replica.reference.id.to_string(),
            url: replica.url.clone(),
            reference: Some(replica.reference.clone()),
            placement: replica.placement.clone(),
            phase: replica.phase,
            launched_at_ms: replica.reference.launched_ms,
            ended_at_ms: None,
            detail: None,
        }
    }

    /// Moves a replica to `phase` at `at_ms` and records it (a final phase removes it).
    fn record(&mut self, index: usize, phase: Phase, at_ms: u64, detail: Option<&str>) {
        let replica = &mut self.replicas[index];
        replica.phase = phase;
        replica.since_ms = at_ms;
        let row = self.row(index);
        tracing::info!(service = %self.spec.service_name, replica = %row.replica, phase = phase.as_str(), "replica");
        if let Err(error) = self.store.replica_phase(&self.spec.service_name, &row, phase, at_ms, detail) {
            tracing::warn!(%error, "cannot record a replica event");
        }
        if phase.is_final() {
            self.replicas.remove(index);
        }
    }

    /// Records what the provider said of a replica, without a lifecycle event.
    fn update(&self, index: usize) {
        if let Err(error) = self.store.update_replica(self.service(), &self.row(index)) {
            tracing::warn!(%error, "cannot record a replica");
        }
    }

    pub async fn tick(&mut self) {
        let now = self.clock.now_ms();
        self.note = None;
        for done in self.calls.finished() {
            self.take(done);
        }
        let load = self.load.snapshot();
        self.poll(now);
        let desired = self.autoscaler.observe(now, load.arrived);
        self.count(&load, desired, now);
        let observed = self.observe(&load, desired, now);
        for action in plan::plan(&self.limits(), &observed, now) {
            self.apply(action, now);
        }
        self.publish();
        let note = self.backoff.note(self.clock.now_ms()).or_else(|| self.note.clone());
        if let Err(error) = self.store.update_usage(self.service(), &self.usage, note.as_deref(), now) {
            tracing::warn!(%error, "cannot record usage");
        }
    }

    /// Usage of this run so far: what earlier processes counted plus this one's.
    fn count(&mut self, load: &LoadSnapshot, desired: u32, now: u64) {
        let busy = load.arrived + self.base_usage.arrived > self.usage.arrived;
        self.shadow.observe(now, load.peak_inflight, busy);
        let base = &self.base_usage;
        self.usage = Usage {
            arrived: base.arrived + load.arrived,
            spot_requests: base.spot_requests + load.spot_requests,
            serverless_requests: base.serverless_requests + load.serverless_requests,
            pure_serverless_ms: base.pure_serverless_ms + self.shadow.billed_ms,
            peak_replicas: self.usage.peak_replicas.max(base.peak_replicas).max(desired),
            desired_replicas: desired,
            serverless_running: self.usage.serverless_running,
        };
    }

    /// What `plan` needs, from the replicas, the router's load and health, and the time.
    fn observe(&mut self, load: &LoadSnapshot, desired: u32, now: u64) -> Observed {
        let seen = |id: &BackendId| load.backends.iter().find(|b| b.tier == Tier::Spot && &b.id == id);
        for replica in &mut self.replicas {
            let healthy = seen(&replica.backend_id()).is_none_or(|b| b.ready);
            replica.unready_since_ms = match (replica.phase, healthy) {
                (Phase::Ready, false) => Some(replica.unready_since_ms.unwrap_or(now)),
                _ => None,
            };
        }
        let replicas = self
            .replicas
            .iter()
            .map(|r| ReplicaView {
                id: r.id().clone(),
                phase: r.phase,
                inflight: seen(&r.backend_id()).map_or(0, |b| b.inflight),
                since_ms: r.since_ms,
                launched_ms: r.reference.launched_ms,
                unready_since_ms: r.unready_since_ms,
                busy: r.busy,
                retry_at_ms: r.retry_at_ms,
            })
            .collect();
        let endpoint = match &self.endpoint {
            EndpointState::Missing { retry_at_ms } => EndpointView::Missing { retry_at_ms: *retry_at_ms },
            EndpointState::Busy => EndpointView::Busy,
            EndpointState::Up { failures, .. } => EndpointView::Up { failures: *failures },
        };
        Observed { desired, replicas, launch_allowed: self.backoff.allows(now), endpoint }
    }

    /// Starts the status calls that are due: each idle replica's, and the endpoint's.
    fn poll(&mut self, now: u64) {
        let interval = ms(self.timing.status_interval);
        let deadline = self.timing.call_timeout;
        for replica in &mut self.replicas {
            // One the router's probes see failing is asked about at once: a preemption
            // shows there first.
            let due = now.saturating_sub(replica.polled_ms) >= interval || replica.unready_since_ms.is_some();
            if replica.busy || replica.polling || replica.phase == Phase::Terminating || !due {
                continue;
            }
            replica.polling = true;
            replica.polled_ms = now;
            let (spot, readiness, reference) = (self.spot.clone(), self.readiness.clone(), replica.reference.clone());
            let probe = replica.phase != Phase::Ready;
            self.calls.spawn_read(async move {
                let status = within(deadline, "replica status", spot.status(&reference)).await;
                let ready = match &status {
                    Ok(ReplicaStatus::Running { url, .. }) if probe => readiness.ready(url).await,
                    _ => false,
                };
                Done::Status(reference.id, status, ready)
            });
        }
        if let EndpointState::Up { endpoint, polling, .. } = &mut self.endpoint
            && !*polling
        {
            *polling = true;
            let (serverless, endpoint) = (self.serverless.clone(), endpoint.clone());
            self.calls.spawn_read(async move {
                Done::EndpointStatus(within(deadline, "serverless status", serverless.status(&endpoint)).await)
            });
        }
    }

    /// Takes in a finished provider call.
    fn take(&mut self, done: Done) {
        let now = self.clock.now_ms();
        match done {
            Done::Launched(id, result) => {
                let Some(index) = self.index_of(&id) else { return };
                self.replicas[index].busy = false;
                match result {
                    Ok(reference) => {
                        self.replicas[index].reference = reference;
                        self.update(index);
                    }
                    Err(error) => {
                        self.backoff.launch_failed(&error, now);
                        self.failed("spot launch", &error);
                        let reason = format!("launch failed: {error}");
                        if matches!(error, ProviderError::Transient { .. }) {
                            // It may have been created anyway: make sure, billed until it is gone.
                            self.replicas[index].ending = Ending::Failed(reason.clone());
                            self.record(index, Phase::Terminating, now, Some(&reason));
                            self.start_terminate(index);
                        } else {
                            // Refused: nothing was created, nothing is billed.
                            let launched = self.replicas[index].reference.launched_ms;
                            self.record(index, Phase::Failed, launched, Some(&reason));
                        }
                    }
                }
            }
            Done::Status(id, result, ready) => {
                let Some(index) = self.index_of(&id) else { return };
                self.replicas[index].polling = false;
                if self.replicas[index].busy || self.replicas[index].phase == Phase::Terminating {
                    // Asked before its termination started: the answer is stale.
                    return;
                }
                match result {
                    Ok(status) => self.observed_status(index, status, ready, now),
                    Err(error) => self.failed("replica status", &error),
                }
            }
            Done::Terminated(id, result) => {
                let Some(index) = self.index_of(&id) else { return };
                self.replicas[index].busy = false;
                match result {
                    Ok(at_ms) => {
                        let (phase, detail) = match &self.replicas[index].ending {
                            Ending::Terminated => (Phase::Terminated, None),
                            Ending::Failed(reason) => (Phase::Failed, Some(reason.clone())),
                        };
                        self.record(index, phase, at_ms, detail.as_deref());
                    }
                    Err(error) => {
                        self.replicas[index].retry_at_ms = now + ms(error.backoff(self.timing.retry, Backoff::MAX));
                        self.failed("spot terminate", &error);
                    }
                }
            }
            Done::CleanedUp(id, result) => {
                if let Err(error) = result {
                    tracing::warn!(replica = %id, %error, "cannot remove a preempted replica's resource; destroy finds it");
                }
            }
            Done::Deployed(result) => match result {
                Ok(endpoint) => {
                    self.endpoint_generation += 1;
                    tracing::info!(service = %self.spec.service_name, url = %endpoint.url, "serverless deployed");
                    if let Err(error) = self.store.set_serverless(self.service(), Some(&endpoint)) {
                        tracing::warn!(%error, "cannot record the serverless endpoint");
                    }
                    self.endpoint = EndpointState::Up { endpoint, failures: 0, polling: false };
                }
                Err(error) => {
                    self.failed("serverless deploy", &error);
                    let retry_at_ms = now + ms(error.backoff(self.timing.retry, Backoff::MAX));
                    self.endpoint = EndpointState::Missing { retry_at_ms };
                }
            },
            Done::EndpointStatus(result) => {
                let EndpointState::Up { failures, polling, .. } = &mut self.endpoint else { return };
                *polling = false;
                match result {
                    Ok(status) => {
                        *failures = 0;
                        self.usage.serverless_running = status.running;
                        self.save_containers(&status.containers);
                    }
                    Err(error) => {
                        *failures += 1;
                        self.failed("serverless status", &error);
                    }
                }
            }
            Done::Replaced(result) => {
                // Its containers are billed as its provider says, or (if it cannot) up to now.
                if let Ok(containers) = result {
                    self.save_containers(&containers);
                }
                self.close_containers(now);
                self.usage.serverless_running = 0;
                self.endpoint = EndpointState::Missing { retry_at_ms: now };
            }
        }
    }

    fn observed_status(&mut self, index: usize, status: ReplicaStatus, ready: bool, now: u64) {
        match status {
            ReplicaStatus::Pending => {}
            ReplicaStatus::Running { url, placement } => {
                let replica = &mut self.replicas[index];
                replica.unwatched = None;
                let changed =
                    replica.url.as_ref() != Some(&url) || (placement.is_some() && replica.placement != placement);
                replica.url = Some(url);
                replica.placement = placement.or(replica.placement.take());
                match replica.phase {
                    Phase::Provisioning => self.record(index, Phase::Booting, now, None),
                    Phase::Booting if ready => {
                        self.record(index, Phase::Ready, now, None);
                        self.backoff = Backoff::default();
                    }
                    _ if changed => self.update(index),
                    _ => {}
                }
            }
            ReplicaStatus::Preempted { at_ms } => {
                let at_ms = match self.replicas[index].unwatched {
                    Some((seen, adopted)) if at_ms >= adopted => seen,
                    _ => at_ms,
                };
                let reference = self.replicas[index].reference.clone();
                self.record(index, Phase::Preempted, at_ms, None);
                self.backoff.failed(at_ms);
                // A stopped (not terminated) instance still costs: its resource goes too.
                self.cleanup_preempted(reference);
            }
            ReplicaStatus::Failed { at_ms, reason } => {
                self.backoff.failed(at_ms);
                self.replicas[index].ending = Ending::Failed(reason.clone());
                self.record(index, Phase::Terminating, now, Some(&reason));
                self.start_terminate(index);
            }
            ReplicaStatus::NotFound => {
                self.backoff.failed(now);
                let at_ms = self.replicas[index].unwatched.map_or(now, |(seen, _)| seen);
                self.record(index, Phase::Failed, at_ms, Some("its provider no longer knows it"));
            }
        }
    }

    fn start_terminate(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        replica.busy = true;
        let (spot, reference, deadline) = (self.spot.clone(), replica.reference.clone(), self.timing.call_timeout);
        self.calls.spawn(async move {
            Done::Terminated(reference.id.clone(), within(deadline, "spot terminate", spot.terminate(&reference)).await)
        });
    }

    fn cleanup_preempted(&mut self, reference: ReplicaRef) {
        let (spot, deadline) = (self.spot.clone(), self.timing.call_timeout);
        self.calls.spawn(async move {
            Done::CleanedUp(reference.id.clone(), within(deadline, "spot terminate", spot.terminate(&reference)).await)
        });
    }

    /// Carries out one of `plan`'s actions: starts its provider call, or records it.
    fn apply(&mut self, action: Action, now: u64) {
        match action {
            Action::Launch => self.launch(now),
            Action::Drain(id) => {
                if let Some(index) = self.index_of(&id) {
                    self.record(index, Phase::Draining, now, None);
                }
            }
            Action::Undrain(id) => {
                if let Some(index) = self.index_of(&id) {
                    self.record(index, Phase::Ready, now, Some("demand came back"));
                }
            }
            Action::Terminate(id, ending) => {
                let Some(index) = self.index_of(&id) else { return };
                if let Some(ending) = ending {
                    let detail = match &ending {
                        Ending::Failed(reason) => Some(reason.clone()),
                        Ending::Terminated => None,
                    };
                    self.replicas[index].ending = ending;
                    self.record(index, Phase::Terminating, now, detail.as_deref());
                    if detail.is_some() {
                        self.backoff.failed(now);
                    }
                }
                self.start_terminate(index);
            }
            Action::DeployServerless => {
                self.endpoint = EndpointState::Busy;
                let (serverless, spec, deadline) =
                    (self.serverless.clone(), self.serverless_spec(), self.timing.call_timeout);
                self.calls.spawn(async move {
                    Done::Deployed(within(deadline, "serverless deploy", serverless.deploy(&spec)).await)
                });
            }
            Action::ReplaceServerless => {
                let EndpointState::Up { endpoint, .. } = std::mem::replace(&mut self.endpoint, EndpointState::Busy)
                else {
                    return;
                };
                // Gone for good: out of the table now, deployed again once it is removed.
                let (serverless, deadline) = (self.serverless.clone(), self.timing.call_timeout);
                self.calls.spawn(async move {
                    Done::Replaced(within(deadline, "serverless destroy", serverless.destroy(&endpoint)).await)
                });
            }
        }
    }

    /// Names the next replica and records it before its launch starts, so a process that
    /// dies mid-launch leaves a record that the next one adopts or cleans up.
    fn launch(&mut self, now: u64) {
        let id = match ReplicaId::new(self.service(), self.run_started_ms, self.next_replica) {
            Ok(id) => id,
            Err(problem) => {
                self.failed("spot launch", &ProviderError::Invalid(problem));
                return;
            }
        };
        self.next_replica += 1;
        let reference = ReplicaRef { id: id.clone(), launched_ms: now, data: serde_json::Value::Null };
        self.replicas.push(Replica {
            reference,
            url: None,
            placement: None,
            phase: Phase::Provisioning,
            since_ms: now,
            unready_since_ms: None,
            busy: true,
            polling: false,
            polled_ms: now,
            retry_at_ms: 0,
            ending: Ending::Terminated,
            unwatched: None,
        });
        self.record(self.replicas.len() - 1, Phase::Provisioning, now, None);
        let spec = ReplicaSpec {
            service: self.spec.service_name.clone(),
            id: id.clone(),
            model: self.spec.model.clone(),
            gpu: self.spec.gpu.clone(),
            gpu_count: self.spec.gpu_count,
        };
        let (spot, deadline) = (self.spot.clone(), self.timing.call_timeout);
        self.calls.spawn(async move { Done::Launched(id, within(deadline, "spot launch", spot.launch(&spec)).await) });
    }

    fn serverless_spec(&self) -> ServerlessSpec {
        let policy = &self.spec.scaling.serverless;
        ServerlessSpec {
            service: self.spec.service_name.clone(),
            model: self.spec.model.clone(),
            gpu: self.spec.gpu.clone(),
            gpu_count: self.spec.gpu_count,
            concurrency: policy.concurrency,
            workers_max: policy.workers_max,
            scaledown_window_secs: policy.scaledown_window,
        }
    }

    /// Records containers as billed, writing only those that are new or changed. Ids
    /// are kept apart per deploy of the endpoint.
    fn save_containers(&mut self, containers: &[ContainerBill]) {
        let offset = self.endpoint_generation.saturating_sub(1) * 1_000_000;
        let rows: Vec<ContainerRow> = containers
            .iter()
            .map(|c| ContainerRow {
                container: offset + c.id,
                started_at_ms: c.started_ms,
                stopped_at_ms: c.stopped_ms,
            })
            .filter(|row| self.recorded_containers.get(&row.container) != Some(&(row.started_at_ms, row.stopped_at_ms)))
            .collect();
        self.write_containers(&rows);
    }

    fn write_containers(&mut self, rows: &[ContainerRow]) {
        if rows.is_empty() {
            return;
        }
        match self.store.save_containers(&self.spec.service_name, rows) {
            Ok(()) => {
                self.recorded_containers.extend(rows.iter().map(|r| (r.container, (r.started_at_ms, r.stopped_at_ms))))
            }
            Err(error) => tracing::warn!(%error, "cannot record serverless containers"),
        }
    }

    /// Closes the containers still recorded open, at `at_ms`.
    fn close_containers(&mut self, at_ms: u64) {
        let rows: Vec<ContainerRow> = self
            .recorded_containers
            .iter()
            .filter(|(_, (_, stopped))| stopped.is_none())
            .map(|(&container, &(started, _))| ContainerRow {
                container,
                started_at_ms: started,
                stopped_at_ms: Some(at_ms.max(started)),
            })
            .collect();
        self.write_containers(&rows);
    }

    /// The backends the router should route to now; published only when they change.
    fn backends(&self) -> Vec<BackendSpec> {
        let spot = self.replicas.iter().filter(|r| matches!(r.phase, Phase::Ready | Phase::Draining)).filter_map(|r| {
            Some(BackendSpec {
                id: Some(r.backend_id()),
                tier: Tier::Spot,
                url: r.url.clone()?,
                capacity: self.spec.router.spot_capacity,
                auth: self.replica_auth.clone(),
                draining: r.phase == Phase::Draining,
            })
        });
        let policy = &self.spec.scaling.serverless;
        let serverless = match &self.endpoint {
            EndpointState::Up { endpoint, .. } => Some(BackendSpec {
                id: Some(BackendId::new(format!("serverless/{}", endpoint.id))),
                tier: Tier::Serverless,
                url: endpoint.url.clone(),
                capacity: policy.concurrency.saturating_mul(policy.workers_max.max(1)),
                auth: endpoint.auth.clone(),
                draining: self.stopping,
            }),
            _ => None,
        };
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
}

#[cfg(test)]
mod tests;
