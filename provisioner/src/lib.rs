//! Tandemn's control plane: the providers that run replicas, the autoscaler, the
//! reconciler that drives them, the deployment state store and the cost ledger. It never
//! touches Pingora; it reaches the proxy only through `RouteSink` and `LoadSource`.

pub mod autoscaler;
pub mod credentials;
pub mod ledger;
pub mod local;
pub mod process;
pub mod provider;
pub mod reconciler;
pub mod replica_key;
pub mod rest;
pub mod service_lock;
pub mod skypilot;
pub mod state_store;

pub use service_lock::{LockError, ServiceLock};
pub use state_store::{Deployment, DeploymentStatus, Listing, StateStore, StoreError};
