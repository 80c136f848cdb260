//! Provider calls run as tasks beside the loop, each under a deadline, so a launch that
//! takes minutes or a cloud that does not answer never delays a tick: routing updates,
//! health decisions and the stop signal go on, and the result is taken in when it comes.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::provider::{ContainerBill, Endpoint, EndpointStatus, ProviderError, ReplicaId, ReplicaRef, ReplicaStatus};

/// A finished call.
#[derive(Debug)]
pub enum Done {
    Launched(ReplicaId, Result<ReplicaRef, ProviderError>),
    /// The provider's status, and whether the engine answered its health check (only
    /// asked when it runs).
    Status(ReplicaId, Result<ReplicaStatus, ProviderError>, bool),
    Terminated(ReplicaId, Result<u64, ProviderError>),
    /// A preempted replica's cloud resource removed (nothing waits for it).
    CleanedUp(ReplicaId, Result<u64, ProviderError>),
    Deployed(Result<Endpoint, ProviderError>),
    EndpointStatus(Result<EndpointStatus, ProviderError>),
    /// The replaced endpoint's final containers, if its provider could still say.
    Replaced(Result<Vec<ContainerBill>, ProviderError>),
}

#[derive(Default)]
pub struct Calls {
    running: JoinSet<Done>,
}

/// Runs `call`, or fails it as transient once `deadline` passes.
pub async fn within<T>(
    deadline: Duration,
    what: &str,
    call: impl Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(ProviderError::transient(format!("{what} did not answer within {deadline:?}"))))
}

impl Calls {
    pub fn spawn(&mut self, call: impl Future<Output = Done> + Send + 'static) {
        self.running.spawn(call);
    }

    /// The calls that finished since the last look, without waiting.
    pub fn finished(&mut self) -> Vec<Done> {
        let mut done = Vec::new();
        while let Some(result) = self.running.try_join_next() {
            match result {
                Ok(call) => done.push(call),
                Err(error) => tracing::error!(%error, "a provider call panicked"),
            }
        }
        done
    }

    /// Waits for every call under way (bounded by each call's own deadline).
    pub async fn settle(&mut self) -> Vec<Done> {
        let mut done = Vec::new();
        while let Some(result) = self.running.join_next().await {
            match result {
                Ok(call) => done.push(call),
                Err(error) => tracing::error!(%error, "a provider call panicked"),
            }
        }
        done
    }
}
