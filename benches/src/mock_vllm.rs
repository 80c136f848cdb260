//! `mock-vllm`: a vLLM-compatible OpenAI server that generates nothing but timing.
//! Streaming SSE, usage, queueing at `max_num_seqs`, a boot delay and injected faults
//! make it a stand-in for a GPU replica in tests and benchmarks. In serverless mode it
//! stands in for a whole serverless endpoint: containers that cold-start, scale out,
//! scale to zero and are billed.

pub mod config;
pub mod openai;
mod server;
mod serverless;

pub use config::{Jitter, MockConfig, ServerlessSim};
pub use server::{MockVllm, StatsSnapshot};
pub use serverless::{BilledContainer, Billing};
