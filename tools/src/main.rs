//! The `jitgate` command: one subcommand per job (`test`, `check`; `serve` and the grant and decision-log commands
//! join later), each in its own module. Errors become messages and exit codes here, at the edge.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod access;
mod check;
mod decisions;
mod serve;
mod test;

/// jitgate: a just-in-time access proxy for HTTP APIs.
#[derive(Debug, Parser)]
#[command(name = "jitgate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands; each variant's arguments live in its module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run policy test suites against their bundles (exit 0: all pass, 1: a case failed, 2: a broken suite or bundle).
    Test(test::TestArgs),
    /// Load and validate bundles, and run the tests they list (exit codes as for `test`).
    Check(check::CheckArgs),
    /// Run the proxy (`--config FILE`), or the quickstart when no config is given.
    Serve(serve::ServeArgs),
    /// Read, export and verify the decision log.
    #[command(subcommand)]
    Decisions(decisions::DecisionsCommand),
    /// Access requests, approvals and grants (through the admin API).
    #[command(flatten)]
    Access(access::AccessCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Check(args) => check::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Decisions(cmd) => decisions::run(cmd),
        Command::Access(cmd) => access::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
