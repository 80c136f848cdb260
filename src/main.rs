//! The `tandemn` command line. It parses flags, wires the crates together and maps
//! failures to exit codes: 0 ok, 1 the operation failed, 2 usage or configuration error.

mod cli;
mod commands;
mod output;

use std::process::ExitCode;

/// jemalloc returns memory from long-lived streams to the OS better than glibc's
/// per-thread arenas, which grew the router's RSS under thousands of streams.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // A long-running server logs its access lines; one-shot commands stay quiet.
    let serving = matches!(cli.command, cli::Command::Router(_));
    init_logging(cli.verbose, serving);
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let code = commands::exit_code(&error);
            crate::output::eprintln(&format!("error: {}", commands::message(&error)));
            ExitCode::from(code)
        }
    }
}

fn init_logging(verbose: bool, serving: bool) {
    let default = match (verbose, serving) {
        (true, _) => "debug",
        (false, true) => "info",
        (false, false) => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colors = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| output::LogWriter).with_ansi(colors).init();
}
