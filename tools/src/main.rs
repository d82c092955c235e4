//! The `jitgate` command: one subcommand per job (serve, test, check, decisions, reload, shadow, replay, ...),
//! each in its own module. Errors become messages and exit codes here, at the edge.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The proxy allocates per request on several threads; glibc's allocator spent ~20% of the proxy's CPU under load
// (perf, benches/load.sh). mimalloc's thread-local heaps remove that contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod access;
mod check;
mod decisions;
mod devtoken;
mod migrate;
mod reload;
mod replay;
mod serve;
mod shadow;
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
    /// Load and validate bundles, and run the tests they list; with `--config FILE`, check a `serve` config and
    /// everything it names as start-up would, without starting (exit codes as for `test`).
    Check(check::CheckArgs),
    /// Run the proxy (`--config FILE`), or the quickstart when no config is given.
    Serve(serve::ServeArgs),
    /// Mint a session token with jitgate's own signing key (development and load testing).
    DevToken(devtoken::DevTokenArgs),
    /// Bring the store's schema up to date (`--config FILE`: its `[store] url` or `[store] path`), as `serve`
    /// does at start, and print its version.
    Migrate(migrate::MigrateArgs),
    /// Read, export and verify the decision log.
    #[command(subcommand)]
    Decisions(decisions::DecisionsCommand),
    /// Ask a running proxy to reload its bundle now; prints the outcome (exit 1 when the bundle failed the gate).
    Reload(reload::ReloadArgs),
    /// Show a running proxy's active bundle and last reload attempt.
    Status(reload::StatusArgs),
    /// Show shadow-evaluation disagreements of a running proxy, or set/clear its candidate bundle.
    Shadow(shadow::ShadowArgs),
    /// Re-decide logged decisions against a candidate bundle and report which would change (exit 1 when some
    /// would). See `--help` for what the log cannot reconstruct.
    Replay(replay::ReplayArgs),
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
        // Colours for a person at a terminal; plain text for files, journald and log shippers.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Check(args) => check::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Decisions(cmd) => decisions::run(cmd),
        Command::Migrate(args) => migrate::run(args),
        Command::DevToken(args) => devtoken::run(args),
        Command::Reload(args) => reload::run_reload(args),
        Command::Status(args) => reload::run_status(args),
        Command::Shadow(args) => shadow::run(args),
        Command::Replay(args) => replay::run(args),
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
