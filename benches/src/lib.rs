//! Tandemn's load tools: the vLLM-compatible simulator (`mock-vllm`) and the load
//! generator (`bench`). Both serve tests and benchmarks and ship in the CLI.

pub mod cli;
pub mod loadgen;
pub mod mock_vllm;
