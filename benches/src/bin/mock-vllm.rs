//! `mock-vllm` as a binary of its own: the same flags and behaviour as
//! `tandemn mock-vllm`, for tests of this crate that need an engine process.

use std::process::ExitCode;

use clap::Parser;
use tandemn_bench::cli::{MockVllmArgs, ToolError, mock_vllm};

#[derive(Parser)]
#[command(name = "mock-vllm", about = "A vLLM-compatible OpenAI server that generates nothing but timing")]
struct Cli {
    #[command(flatten)]
    args: MockVllmArgs,
}

fn main() -> ExitCode {
    match mock_vllm(&Cli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mock-vllm: {error}");
            ExitCode::from(match error {
                ToolError::Usage(_) => 2,
                ToolError::Failed(_) => 1,
            })
        }
    }
}
