//! `mock-vllm`: a vLLM-compatible OpenAI server that generates nothing but timing.
//! Streaming SSE, usage, queueing at `max_num_seqs`, a boot delay and injected faults
//! make it a stand-in for a GPU replica in tests and benchmarks.

pub mod config;
pub mod openai;
mod server;

pub use config::{Jitter, MockConfig};
pub use server::{MockVllm, StatsSnapshot};
