//! The `jitgate` command: one subcommand per job (`test`, `check`; `serve` and the grant and decision-log commands
//! join later), each in its own module. Errors become messages and exit codes here, at the edge.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod check;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
