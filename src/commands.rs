//! One module per subcommand; `run` dispatches and `exit_code` classifies failures.

mod check;
mod cost;
mod deploy;
mod deployment;
mod destroy;
mod keys;
mod list;
mod preempt;
mod providers;
mod router;
mod show_gpus;
mod status;

use crate::cli::Command;

/// A mistake in how the command was called; exits with code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Deploy(args) => deploy::run(&args),
        Command::Check(args) => check::run(&args),
        Command::List(args) => list::run(&args),
        Command::ShowGpus(args) => show_gpus::run(&args),
        Command::Destroy(args) => destroy::run(&args),
        Command::Status(args) => status::run(&args),
        Command::Cost(args) => cost::run(&args),
        Command::Preempt(args) => preempt::run(&args),
        Command::Router(args) => router::run(&args),
        Command::MockVllm(args) => tool(tandemn_bench::cli::mock_vllm(&args)),
        Command::FakeSkypilot(args) => tool(tandemn_bench::cli::fake_skypilot(&args)),
        Command::Bench(args) => tool(tandemn_bench::cli::bench(&args).map(|report| crate::output::print(&report))),
    }
}

fn tool(result: Result<(), tandemn_bench::cli::ToolError>) -> anyhow::Result<()> {
    result.map_err(|error| match error {
        tandemn_bench::cli::ToolError::Usage(message) => UsageError(message).into(),
        failed @ tandemn_bench::cli::ToolError::Failed(_) => failed.into(),
    })
}

/// 2 for usage and configuration errors, 1 for everything else.
pub fn exit_code(error: &anyhow::Error) -> u8 {
    let usage = error.chain().any(|cause| {
        cause.downcast_ref::<UsageError>().is_some() || cause.downcast_ref::<tandemn_config::ConfigError>().is_some()
    });
    if usage { 2 } else { 1 }
}

/// The error and its causes, each said once. A `thiserror` message that ends with its
/// source's text (`"{path}: {source}"`) is followed by that source in the chain, which
/// `{:#}` would print again.
pub fn message(error: &anyhow::Error) -> String {
    let mut text = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let this = cause.to_string();
        if this.is_empty() || previous.ends_with(&this) {
            previous = this;
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&this);
        previous = this;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{path}: {source}")]
    struct Wrapping {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = || std::io::Error::other("disk on fire");
        let wrapped = anyhow::Error::from(Wrapping { path: "state.db", source: io() });
        assert_eq!(format!("{wrapped:#}"), "state.db: disk on fire: disk on fire", "what `{{:#}}` prints");
        assert_eq!(message(&wrapped), "state.db: disk on fire");
        let context = wrapped.context("opening the store");
        assert_eq!(message(&context), "opening the store: state.db: disk on fire");
        let distinct = anyhow::Error::from(io()).context("reading");
        assert_eq!(message(&distinct), "reading: disk on fire");
    }
}
