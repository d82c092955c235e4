//! The `jitgate` command: one subcommand per job (serve, test, check, decisions, reload, shadow, replay, ...),
//! each in its own module. Errors become messages and exit codes here, at the edge.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

// The proxy allocates per request on several threads; glibc's allocator spent ~20% of the proxy's CPU under load
// (perf, benches/load.sh). mimalloc's thread-local heaps remove that contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `println!` for data: stdout, and a reader that went away (`| head`) ends the command quietly, never a panic.
macro_rules! outln {
    ($($t:tt)*) => { $crate::out::line(format_args!($($t)*)) };
}

/// `print!` for data, as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => { $crate::out::text(format_args!($($t)*)) };
}

mod access;
mod check;
mod decisions;
mod devtoken;
mod entities;
mod eval;
mod exit;
mod import;
mod migrate;
mod out;
mod reload;
mod replay;
mod serve;
mod shadow;
mod test;

/// jitgate: a just-in-time access proxy for HTTP APIs.
#[derive(Debug, Parser)]
#[command(name = "jitgate", version, about, after_help = exit::CODES)]
struct Cli {
    /// Log format on stderr: `text` (default) or `json` (one object per line, for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How log lines are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands; each variant's arguments live in its module.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run policy test suites against their bundles (exit 0: all pass, 1: a case failed, 2: a broken suite or bundle).
    Test(test::TestArgs),
    /// Load and validate bundles, and run the tests they list; with `--config FILE`, check a `serve` config and
    /// everything it names as start-up would, without starting (exit codes as for `test`).
    Check(check::CheckArgs),
    /// Decide one request against a bundle, its entity data and grant fixtures, as `opa eval` / `cedar authorize`
    /// do; `--explain` says why (exit 0: allowed, 1: denied, held or unrouted, 2: bad input).
    Eval(Box<eval::EvalArgs>),
    /// Convert another engine's application into a jitgate bundle and suite (`import cedar-app DIR --out BUNDLE`:
    /// a Cedar application's policies, schema, entities.json, template links and ALLOW/DENY requests).
    #[command(subcommand)]
    Import(import::ImportCommand),
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
    /// Entity data kept in the store (put, get, delete), through the admin API.
    #[command(subcommand)]
    Entities(entities::EntitiesCommand),
    /// Access requests, approvals and grants (through the admin API).
    #[command(flatten)]
    Access(access::AccessCommand),
    /// Print a shell completion script: `jitgate completions bash > /etc/bash_completion.d/jitgate`,
    /// `jitgate completions zsh > "${fpath[1]}/_jitgate"`, `jitgate completions fish > ~/.config/fish/completions/jitgate.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Whether a serve config asks for JSON log lines (`[telemetry] log_format = "json"`). Read before the config is
/// loaded, so that loading it already logs in that format; a file that does not parse says nothing here (loading
/// it reports why).
fn config_wants_json_logs(path: &std::path::Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("telemetry")?
                .get("log_format")?
                .as_str()
                .map(|f| f.trim() == "json")
        })
        .unwrap_or(false)
}

fn main() -> ExitCode {
    out::quiet_on_closed_pipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version on stdout (exit 0); usage errors on stderr, exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { 0 });
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json_logs = cli.log_format == LogFormat::Json
        || std::env::var("JITGATE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
        || matches!(&cli.command, Command::Serve(a) if a.config.as_deref().is_some_and(config_wants_json_logs));
    if json_logs {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colours for a person at a terminal; plain text for files, journald and log shippers.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    let result = match cli.command {
        Command::Test(args) => test::run(args),
        Command::Check(args) => check::run(args),
        Command::Eval(args) => eval::run(*args),
        Command::Import(cmd) => import::run(cmd),
        Command::Serve(args) => serve::run(args),
        Command::Decisions(cmd) => decisions::run(cmd),
        Command::Migrate(args) => migrate::run(args),
        Command::DevToken(args) => devtoken::run(args),
        Command::Reload(args) => reload::run_reload(args),
        Command::Status(args) => reload::run_status(args),
        Command::Shadow(args) => shadow::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Access(cmd) => access::run(cmd),
        Command::Entities(cmd) => entities::run(cmd),
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "jitgate", &mut buf);
            out!("{}", String::from_utf8_lossy(&buf));
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::of_error(&e))
        }
    }
}
