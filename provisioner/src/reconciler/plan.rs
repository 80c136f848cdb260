//! Every decision of the control loop, as a pure function of what was observed and the
//! time: how many spot replicas to launch, which to drain, undrain or terminate (boot
//! timeouts and unhealthy replicas included), and when to deploy or replace the
//! serverless endpoint. No I/O, so each rule is a table test.

use crate::provider::ReplicaId;
use crate::state_store::Phase;

/// The time limits `plan` applies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Launch to its first healthy probe.
    pub boot_ms: u64,
    /// A ready replica failing the router's health checks.
    pub unhealthy_ms: u64,
    /// A draining replica's streams.
    pub drain_ms: u64,
    /// Failed status calls in a row after which the serverless endpoint is replaced.
    pub endpoint_failures: u32,
}

/// What `plan` sees of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaView {
    pub id: ReplicaId,
    pub phase: Phase,
    pub inflight: u32,
    /// When it entered its phase.
    pub since_ms: u64,
    pub launched_ms: u64,
    /// Since when the router has seen this ready replica fail its health checks.
    pub unready_since_ms: Option<u64>,
    /// A provider call on it is under way: nothing new is started on it.
    pub busy: bool,
    /// A failed terminate is retried from here.
    pub retry_at_ms: u64,
}

/// The serverless endpoint, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointView {
    /// None deployed, and none being deployed.
    Missing {
        retry_at_ms: u64,
    },
    /// A deploy or replacement is under way.
    Busy,
    Up {
        failures: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Live spot replicas the autoscaler asks for.
    pub desired: u32,
    pub replicas: Vec<ReplicaView>,
    /// False while launches back off after failures.
    pub launch_allowed: bool,
    pub endpoint: EndpointView,
}

/// How a terminated replica is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Stopped because it was not needed.
    Terminated,
    /// Stopped because it would not serve.
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Launch,
    /// Out of selection; its streams finish.
    Drain(ReplicaId),
    /// Demand came back while it drained: cheaper than a launch.
    Undrain(ReplicaId),
    /// Stop it; `None` keeps the ending a retried termination already has.
    Terminate(ReplicaId, Option<Ending>),
    DeployServerless,
    /// The endpoint stopped answering: remove it and deploy anew.
    ReplaceServerless,
}

/// The actions that move the fleet toward `observed.desired` live replicas. Replicas that
/// will not serve (booting too long, unhealthy too long) are replaced; surplus replicas
/// that still boot stop first (they serve nothing), then the least busy ready ones drain;
/// a drained replica ends when its last stream does or the drain timeout passes; a
/// termination that failed is retried.
pub fn plan(limits: &Limits, observed: &Observed, now_ms: u64) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut replaced: Vec<&ReplicaId> = Vec::new();
    for r in observed.replicas.iter().filter(|r| !r.busy) {
        let boot_expired = matches!(r.phase, Phase::Provisioning | Phase::Booting)
            && now_ms.saturating_sub(r.launched_ms) >= limits.boot_ms;
        let unhealthy = r.phase == Phase::Ready
            && r.unready_since_ms.is_some_and(|since| now_ms.saturating_sub(since) >= limits.unhealthy_ms);
        let reason = if boot_expired {
            Some(format!("not ready {} s after launch; replaced", limits.boot_ms / 1000))
        } else if unhealthy {
            Some(format!("unhealthy for {} s; replaced", limits.unhealthy_ms / 1000))
        } else {
            None
        };
        if let Some(reason) = reason {
            actions.push(Action::Terminate(r.id.clone(), Some(Ending::Failed(reason))));
            replaced.push(&r.id);
        } else if r.phase == Phase::Terminating && now_ms >= r.retry_at_ms {
            actions.push(Action::Terminate(r.id.clone(), None));
        }
    }

    let desired = usize::try_from(observed.desired).unwrap_or(usize::MAX);
    let live: Vec<&ReplicaView> = observed
        .replicas
        .iter()
        .filter(|r| matches!(r.phase, Phase::Provisioning | Phase::Booting | Phase::Ready))
        .filter(|r| !replaced.contains(&&r.id))
        .collect();
    let mut draining: Vec<&ReplicaView> = observed.replicas.iter().filter(|r| r.phase == Phase::Draining).collect();
    if live.len() < desired {
        let mut missing = desired - live.len();
        // Busiest drainers first: they are the warmest.
        draining.sort_by_key(|r| std::cmp::Reverse(r.inflight));
        while missing > 0 && !draining.is_empty() {
            actions.push(Action::Undrain(draining.remove(0).id.clone()));
            missing -= 1;
        }
        if observed.launch_allowed {
            actions.extend(std::iter::repeat_n(Action::Launch, missing));
        }
    } else if live.len() > desired {
        let mut surplus: Vec<&ReplicaView> = live.iter().copied().filter(|r| !r.busy).collect();
        // Not ready first (newest first), then ready ones with the fewest streams.
        surplus.sort_by_key(|r| (r.phase == Phase::Ready, r.inflight, std::cmp::Reverse(r.since_ms)));
        for replica in surplus.into_iter().take(live.len() - desired) {
            actions.push(if replica.phase == Phase::Ready {
                Action::Drain(replica.id.clone())
            } else {
                Action::Terminate(replica.id.clone(), Some(Ending::Terminated))
            });
        }
    }
    for replica in draining.into_iter().filter(|r| !r.busy) {
        if replica.inflight == 0 || now_ms.saturating_sub(replica.since_ms) >= limits.drain_ms {
            actions.push(Action::Terminate(replica.id.clone(), Some(Ending::Terminated)));
        }
    }

    match observed.endpoint {
        EndpointView::Missing { retry_at_ms } if now_ms >= retry_at_ms => actions.push(Action::DeployServerless),
        EndpointView::Up { failures } if failures >= limits.endpoint_failures => {
            actions.push(Action::ReplaceServerless);
        }
        _ => {}
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { boot_ms: 10_000, unhealthy_ms: 5_000, drain_ms: 1_000, endpoint_failures: 3 };

    fn id(name: &str) -> ReplicaId {
        ReplicaId::parse(name).unwrap()
    }

    fn view(name: &str, phase: Phase, inflight: u32, since_ms: u64) -> ReplicaView {
        ReplicaView {
            id: id(name),
            phase,
            inflight,
            since_ms,
            launched_ms: since_ms,
            unready_since_ms: None,
            busy: false,
            retry_at_ms: 0,
        }
    }

    fn observed(desired: u32, replicas: Vec<ReplicaView>) -> Observed {
        Observed { desired, replicas, launch_allowed: true, endpoint: EndpointView::Up { failures: 0 } }
    }

    fn terminated(name: &str) -> Action {
        Action::Terminate(id(name), Some(Ending::Terminated))
    }

    #[test]
    fn launches_what_is_missing_unless_backing_off() {
        let mut seen = observed(3, vec![view("a", Phase::Ready, 0, 0)]);
        assert_eq!(plan(&LIMITS, &seen, 10), [Action::Launch, Action::Launch]);
        seen.launch_allowed = false;
        assert!(plan(&LIMITS, &seen, 10).is_empty());
        assert!(plan(&LIMITS, &observed(1, seen.replicas.clone()), 10).is_empty());
    }

    #[test]
    fn booting_surplus_stops_first_then_the_least_busy_ready_replica_drains() {
        let replicas = vec![
            view("busy", Phase::Ready, 5, 0),
            view("idle", Phase::Ready, 1, 0),
            view("booting", Phase::Booting, 0, 50),
        ];
        assert_eq!(plan(&LIMITS, &observed(2, replicas.clone()), 100), [terminated("booting")]);
        assert_eq!(
            plan(&LIMITS, &observed(0, replicas), 100),
            [terminated("booting"), Action::Drain(id("idle")), Action::Drain(id("busy"))]
        );
    }

    #[test]
    fn a_draining_replica_ends_when_its_streams_do_or_the_timeout_passes() {
        let replicas = vec![view("a", Phase::Draining, 2, 0), view("b", Phase::Draining, 0, 0)];
        assert_eq!(plan(&LIMITS, &observed(0, replicas.clone()), 500), [terminated("b")]);
        assert_eq!(plan(&LIMITS, &observed(0, replicas), 1_000), [terminated("a"), terminated("b")]);
    }

    #[test]
    fn returning_demand_takes_a_draining_replica_back_before_launching() {
        let replicas = vec![view("a", Phase::Draining, 3, 0), view("b", Phase::Draining, 0, 0)];
        assert_eq!(plan(&LIMITS, &observed(1, replicas.clone()), 10), [Action::Undrain(id("a")), terminated("b")]);
        assert_eq!(
            plan(&LIMITS, &observed(3, replicas), 10),
            [Action::Undrain(id("a")), Action::Undrain(id("b")), Action::Launch]
        );
    }

    #[test]
    fn a_replica_that_boots_too_long_or_stays_unhealthy_is_replaced() {
        let mut sick = view("sick", Phase::Ready, 0, 0);
        sick.unready_since_ms = Some(1_000);
        let replicas = vec![view("slow", Phase::Booting, 0, 0), sick];
        // Before the limits: nothing happens.
        assert!(plan(&LIMITS, &observed(2, replicas.clone()), 5_999).is_empty());
        let actions = plan(&LIMITS, &observed(2, replicas), 10_000);
        assert!(
            matches!(&actions[0], Action::Terminate(r, Some(Ending::Failed(why))) if r.as_str() == "slow" && why.contains("not ready"))
        );
        assert!(
            matches!(&actions[1], Action::Terminate(r, Some(Ending::Failed(why))) if r.as_str() == "sick" && why.contains("unhealthy"))
        );
        // Both are replaced at once, not only after they are gone.
        assert_eq!(actions[2..], [Action::Launch, Action::Launch]);
    }

    #[test]
    fn a_failed_termination_is_retried_after_its_delay_and_busy_replicas_are_left_alone() {
        let mut stuck = view("stuck", Phase::Terminating, 0, 0);
        stuck.retry_at_ms = 2_000;
        let mut launching = view("new", Phase::Provisioning, 0, 0);
        launching.busy = true;
        let replicas = vec![stuck, launching];
        assert!(plan(&LIMITS, &observed(1, replicas.clone()), 1_999).is_empty());
        assert_eq!(plan(&LIMITS, &observed(1, replicas.clone()), 2_000), [Action::Terminate(id("stuck"), None)]);
        // A busy replica is neither timed out nor chosen as surplus.
        assert_eq!(plan(&LIMITS, &observed(0, replicas), 2_000), [Action::Terminate(id("stuck"), None)]);
    }

    #[test]
    fn the_serverless_endpoint_is_deployed_when_missing_and_replaced_after_failures() {
        let mut seen = observed(0, vec![]);
        for (endpoint, now, expected) in [
            (EndpointView::Missing { retry_at_ms: 0 }, 0, vec![Action::DeployServerless]),
            (EndpointView::Missing { retry_at_ms: 500 }, 100, vec![]),
            (EndpointView::Busy, 100, vec![]),
            (EndpointView::Up { failures: 2 }, 100, vec![]),
            (EndpointView::Up { failures: 3 }, 100, vec![Action::ReplaceServerless]),
        ] {
            seen.endpoint = endpoint;
            assert_eq!(plan(&LIMITS, &seen, now), expected, "{endpoint:?}");
        }
    }
}
