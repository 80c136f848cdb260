//! The start and the end of a run. A process that starts for a service whose previous
//! process died resumes it: replicas and the endpoint are reloaded from the state store and
//! checked against what the providers list, so what still runs is adopted (never
//! launched twice), terminations under way finish, and billing continues. At the end,
//! every backend drains and everything is terminated; what a provider would not stop
//! stays recorded as `terminating`, for `destroy` or the next run to finish.

use std::collections::HashMap;

use super::calls::within;
use super::plan::Ending;
use super::{EndpointState, Reconciler, Replica};
use crate::provider::{Listed, ReplicaId, ReplicaRef};
use crate::state_store::Phase;

impl Reconciler {
    /// Takes over what the store and the providers know of this service.
    pub(super) async fn resume(&mut self) {
        let service = self.service().to_string();
        let run = match self.store.run(&service) {
            Ok(run) => run,
            Err(error) => {
                tracing::warn!(%error, "cannot read the run's record; starting afresh");
                None
            }
        };
        let Some(run) = run else { return };
        self.run_started_ms = run.started_at_ms;
        self.base_usage = crate::state_store::Usage { serverless_running: 0, ..run.usage.clone() };
        // The previous process's last heartbeat: when what vanished meanwhile stopped billing.
        let gone_at = run.updated_at_ms;
        let now = self.clock.now_ms();
        let rows = self.store.replicas(&service).unwrap_or_default();
        let events = self.store.events(&service).unwrap_or_default();
        // When the previous process last saw a replica (its last event, or its last tick).
        let last_seen = |replica: &str| {
            events.iter().filter(|e| e.replica == replica).map(|e| e.at_ms).max().unwrap_or(0).max(gone_at)
        };
        self.next_replica =
            rows.iter().filter_map(|r| r.replica.rsplit('-').next()?.parse::<u32>().ok()).max().unwrap_or(0) + 1;
        let listed = match within(self.timing.call_timeout, "spot list", self.spot.list(&service)).await {
            Ok(listed) => Some(listed),
            Err(error) => {
                // Not knowing is no reason to forget: the records are trusted and polled.
                self.failed("spot list", &error);
                None
            }
        };
        for row in rows.iter().filter(|r| !r.phase.is_final()) {
            let recorded = row.reference.clone().filter(|r| !r.data.is_null());
            let found = listed.as_ref().map(|all| all.iter().find(|l| l.id.as_str() == row.replica));
            // Its launch may have reached the provider before the process died, and the
            // provider cannot say now: kept, and asked about by its name.
            let recorded = match (&found, recorded) {
                (None, None) => ReplicaId::parse(&row.replica).ok().map(|id| ReplicaRef {
                    id,
                    launched_ms: row.launched_at_ms,
                    data: serde_json::Value::Null,
                }),
                (_, recorded) => recorded,
            };
            let reference = match (found, recorded) {
                (Some(Some(_)), Some(reference)) | (None, Some(reference)) => reference,
                (Some(Some(listed)), None) => listed.reference.clone(),
                (Some(None), recorded) | (None, recorded @ None) => {
                    // Gone while no process watched it. One whose launch never returned was
                    // never created; one being terminated finished; the others vanished.
                    // Each billed until the previous process last saw it.
                    let (phase, ended, detail) = match (recorded, row.phase) {
                        (None, _) => (Phase::Failed, row.launched_at_ms, "its launch never started"),
                        (Some(_), Phase::Terminating | Phase::Draining) => {
                            (Phase::Terminated, last_seen(&row.replica), "its termination finished meanwhile")
                        }
                        (Some(_), _) => (Phase::Failed, last_seen(&row.replica), "gone while tandemn was not running"),
                    };
                    if let Err(error) = self.store.replica_phase(&service, row, phase, ended, Some(detail)) {
                        tracing::warn!(%error, "cannot record a replica event");
                    }
                    continue;
                }
            };
            let phase = match row.phase {
                Phase::Terminating | Phase::Draining => Phase::Terminating,
                Phase::Ready | Phase::Booting => Phase::Booting,
                _ => Phase::Provisioning,
            };
            self.adopt(reference, row.url.clone(), row.placement.clone(), phase, now);
            if let Some(adopted) = self.replicas.last_mut() {
                adopted.unwatched = Some((last_seen(&row.replica).max(row.launched_at_ms), now));
            }
        }
        for listed in listed.iter().flatten().filter(|l| !rows.iter().any(|r| r.replica == l.id.as_str())) {
            let Listed { reference, .. } = listed.clone();
            tracing::warn!(replica = %reference.id, "adopting a replica that runs without a record");
            self.adopt(reference, None, None, Phase::Provisioning, now);
        }
        self.resume_serverless(&run, gone_at).await;
    }

    fn adopt(
        &mut self,
        reference: ReplicaRef,
        url: Option<String>,
        placement: Option<crate::provider::Placement>,
        phase: Phase,
        now: u64,
    ) {
        self.replicas.push(Replica {
            reference,
            url,
            placement,
            phase,
            since_ms: now,
            unready_since_ms: None,
            busy: false,
            polling: false,
            polled_ms: 0,
            retry_at_ms: 0,
            ending: Ending::Terminated,
            unwatched: None,
        });
        self.record(self.replicas.len() - 1, phase, now, Some("adopted after a restart"));
    }

    async fn resume_serverless(&mut self, run: &crate::state_store::Run, gone_at: u64) {
        let service = self.service().to_string();
        let containers = self.store.containers(&service).unwrap_or_default();
        self.recorded_containers =
            containers.iter().map(|c| (c.container, (c.started_at_ms, c.stopped_at_ms))).collect::<HashMap<_, _>>();
        // Container ids continue the last deploy's range; a new deploy takes the next one.
        if let Some(last) = containers.iter().map(|c| c.container).max() {
            self.endpoint_generation = last / 1_000_000 + 1;
        }
        let Some(previous) = &run.serverless else { return };
        let listed = within(self.timing.call_timeout, "serverless list", self.serverless.list(&service)).await;
        match listed.map(|all| all.into_iter().find(|e| e.id == previous.id)) {
            Ok(Some(endpoint)) => {
                tracing::info!(service = %service, url = %endpoint.url, "serverless endpoint adopted");
                self.endpoint = EndpointState::Up { endpoint, failures: 0, polling: false };
            }
            Ok(None) => {
                self.close_containers(gone_at);
                if let Err(error) = self.store.set_serverless(&service, None) {
                    tracing::warn!(%error, "cannot record the serverless endpoint");
                }
            }
            Err(error) => {
                // Unknown: deploy (idempotent by name) finds it again or makes it anew.
                self.failed("serverless list", &error);
            }
        }
    }

    /// Drains every backend (new requests are refused; streams on spot and serverless
    /// finish, bounded by the drain timeout), stops replicas that serve nothing at once,
    /// then the rest and the serverless endpoint. `hurry` (a second signal) ends the drain at
    /// once and every wait on a provider (a cloud that does not answer included) after a
    /// short grace: what has not stopped by then stays `terminating`, for `destroy` or the
    /// next run.
    pub(super) async fn teardown(&mut self, hurry: impl std::future::Future<Output = ()>) {
        let mut hurry = Hurry { signal: Box::pin(hurry), at: None };
        let now = self.clock.now_ms();
        self.stopping = true;
        for index in 0..self.replicas.len() {
            if self.replicas[index].phase == Phase::Ready {
                self.record(index, Phase::Draining, now, Some("deployment stopping"));
            }
        }
        self.publish();
        // Status calls decide nothing now. Launches and terminations under way finish
        // first (each has its deadline): a launch's reference must be known before it can
        // be terminated.
        self.calls.drop_reads();
        self.settle(&mut hurry).await;
        // Replicas that serve nothing need no drain.
        self.terminate_all(|phase| phase != Phase::Draining);
        let load = self.load.clone();
        let drained = async move {
            while load.snapshot().backends.iter().any(|b| b.inflight > 0) {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        };
        let waited = tokio::time::timeout(self.timing.drain_timeout, async {
            tokio::select! {
                () = drained => {}
                () = hurry.came() => tracing::warn!("not waiting for streams to finish"),
            }
        });
        let _ = waited.await;
        self.terminate_all(|_| true);
        if let EndpointState::Up { endpoint, .. } = std::mem::replace(&mut self.endpoint, EndpointState::Busy) {
            let destroy = within(self.timing.call_timeout, "serverless destroy", self.serverless.destroy(&endpoint));
            let since = tokio::time::Instant::now();
            let destroyed = tokio::select! {
                result = destroy => result,
                () = hurry.over(since) => Err(crate::provider::ProviderError::transient("not waited for (stopping at once)")),
            };
            match destroyed {
                Ok(containers) => {
                    self.save_containers(&containers);
                    if let Err(error) = self.store.set_serverless(self.service(), None) {
                        tracing::warn!(%error, "cannot record the serverless endpoint");
                    }
                }
                Err(error) => self.failed("serverless destroy", &error),
            }
        }
        // A terminate that failed is tried again a few times; what still will not stop
        // stays `terminating` in the record.
        for attempt in 0..3 {
            self.settle(&mut hurry).await;
            if self.replicas.is_empty() || hurry.at.is_some() {
                break;
            }
            if attempt < 2 {
                tokio::select! {
                    () = tokio::time::sleep(self.timing.retry) => {}
                    () = hurry.came() => break,
                }
                self.terminate_all(|_| true);
            }
        }
        // Anything else the provider still has of the service (a preempted cluster whose
        // removal failed, a launch that went on after its call gave up) goes too.
        if hurry.at.is_none() {
            let (spot, service) = (self.spot.clone(), self.service().to_string());
            let listed = within(self.timing.call_timeout, "spot list", spot.list(&service));
            let since = tokio::time::Instant::now();
            let listed = tokio::select! {
                listed = listed => Some(listed),
                () = hurry.over(since) => None,
            };
            if let Some(listed) = listed {
                self.sweep(listed);
                self.settle(&mut hurry).await;
            }
        }
        // Whatever is still under way is left to the provider (a teardown it was asked
        // for goes on there); the records say `terminating`.
        self.calls.abandon();
        for replica in &self.replicas {
            tracing::error!(replica = %replica.id(), "could not be terminated; `tandemn destroy` tries again");
        }
        self.publish();
        self.usage.serverless_running = 0;
        let now = self.clock.now_ms();
        let _ = self.store.update_usage(self.service(), &self.usage, self.note.as_deref(), now);
        if let Err(error) = self.store.end_run(self.service(), now) {
            tracing::warn!(%error, "cannot record the end of the run");
        }
    }

    /// Starts removing every resource the provider listed for the service that no replica
    /// here stands for.
    fn sweep(&mut self, listed: Result<Vec<Listed>, crate::provider::ProviderError>) {
        match listed {
            Ok(listed) => {
                for Listed { id, reference } in listed {
                    if self.index_of(&id).is_none() {
                        tracing::warn!(replica = %id, "removing a resource of the service left behind");
                        self.cleanup_preempted(reference);
                    }
                }
            }
            Err(error) => self.failed("spot list", &error),
        }
    }

    /// Takes in the calls under way as they finish, until none is left or, after `hurry`,
    /// the grace is over.
    async fn settle<F: std::future::Future<Output = ()>>(&mut self, hurry: &mut Hurry<F>) {
        let since = tokio::time::Instant::now();
        loop {
            let next = tokio::select! {
                next = self.calls.next() => next,
                () = hurry.over(since) => None,
            };
            match next {
                Some(done) => self.take(done),
                None => return,
            }
        }
    }

    /// Starts terminating every idle replica whose phase `which` picks.
    fn terminate_all(&mut self, which: impl Fn(Phase) -> bool) {
        let now = self.clock.now_ms();
        for index in 0..self.replicas.len() {
            let replica = &self.replicas[index];
            if replica.busy || !which(replica.phase) {
                continue;
            }
            if replica.phase != Phase::Terminating {
                self.record(index, Phase::Terminating, now, Some("deployment stopping"));
            }
            self.start_terminate(index);
        }
    }
}

/// How long calls under way get after the second stop signal: enough for a teardown
/// request to reach its provider (which carries it out without us), not for the cloud to
/// finish it.
const HURRY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The second stop signal.
struct Hurry<F> {
    signal: std::pin::Pin<Box<F>>,
    /// When it came.
    at: Option<tokio::time::Instant>,
}

impl<F: std::future::Future<Output = ()>> Hurry<F> {
    async fn came(&mut self) {
        if self.at.is_none() {
            self.signal.as_mut().await;
            self.at = Some(tokio::time::Instant::now());
        }
    }

    /// [`HURRY_GRACE`] after the signal, or after `since` (when a wait began) if that is
    /// later: calls started after the signal get the grace too.
    async fn over(&mut self, since: tokio::time::Instant) {
        self.came().await;
        if let Some(at) = self.at {
            tokio::time::sleep_until(at.max(since) + HURRY_GRACE).await;
        }
    }
}
