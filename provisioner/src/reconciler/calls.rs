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
    /// Status calls: they change nothing, so a teardown drops them instead of waiting.
    reads: JoinSet<Done>,
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

    /// Runs a call that only reads (a status), which [`Calls::drop_reads`] may abandon.
    pub fn spawn_read(&mut self, call: impl Future<Output = Done> + Send + 'static) {
        self.reads.spawn(call);
    }

    /// Abandons the status calls under way: a cloud that does not answer them must not
    /// hold up a teardown.
    pub fn drop_reads(&mut self) {
        self.reads.abort_all();
        while self.reads.try_join_next().is_some() {}
    }

    /// Abandons every call under way (the requests they sent go on at the provider).
    pub fn abandon(&mut self) {
        self.drop_reads();
        self.running.abort_all();
        while self.running.try_join_next().is_some() {}
    }

    /// The calls that finished since the last look, without waiting.
    pub fn finished(&mut self) -> Vec<Done> {
        let mut done = Vec::new();
        for set in [&mut self.running, &mut self.reads] {
            while let Some(result) = set.try_join_next() {
                match result {
                    Ok(call) => done.push(call),
                    Err(error) if error.is_cancelled() => {}
                    Err(error) => tracing::error!(%error, "a provider call panicked"),
                }
            }
        }
        done
    }

    /// The next call (not a read) to finish, `None` when none is under way; bounded by
    /// each call's own deadline. Cancel safe: a caller may stop waiting at any time.
    pub async fn next(&mut self) -> Option<Done> {
        loop {
            match self.running.join_next().await? {
                Ok(call) => return Some(call),
                Err(error) if error.is_cancelled() => {}
                Err(error) => tracing::error!(%error, "a provider call panicked"),
            }
        }
    }
}
