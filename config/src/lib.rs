//! Tandemn's configuration: the YAML types, their defaults and validation, the
//! layering of files and flags, and the embedded GPU catalog with its prices.
//! Plain data only: no tokio, no Pingora, no HTTP clients.

pub mod api;
pub mod catalog;
mod document;
mod error;
mod load;
mod raw;
pub mod spec;
mod validate;

pub use catalog::Catalog;
pub use error::{ConfigError, Location, Violation};
pub use load::{Override, Sources};
pub use spec::{
    BackendAuthRef, BackendConfig, Choice, ColdStartMode, DeploymentSpec, LocalSettings, RouterConfig, ScalingPolicy,
    SecretRef, ServerlessPolicy, ServerlessProvider, SpotCloud, SpotPolicy,
};
pub use validate::{check_service_name, generate_service_name};

/// The candidate closest to a misspelt `word` (ignoring case), if any is close enough
/// to be a plausible typo: at most one edit (or swap of neighbours) per three characters.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    let limit = (word.len() / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (strsim::osa_distance(&word, &c.to_ascii_lowercase()), c))
        .filter(|&(distance, _)| distance <= limit)
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, c)| c)
}
