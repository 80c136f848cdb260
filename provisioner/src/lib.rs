//! Tandemn's control plane: provider credentials and APIs, the deployment state
//! store, and (in later work) the reconciler, autoscaler and cost ledger. It never
//! touches Pingora; it reaches the proxy only through small traits.

pub mod credentials;
pub mod state_store;

pub use state_store::{Deployment, DeploymentStatus, StateStore, StoreError};
