//! Tandemn's load tools: the vLLM-compatible simulator (`mock-vllm`), the load
//! generator (`bench`) and loopback fakes of cloud APIs (`fakes`). They serve tests
//! and benchmarks and ship in the CLI.

pub mod cli;
pub mod fakes;
pub mod loadgen;
pub mod mock_vllm;
