//! `jitgate test`: finds suite files, runs them on their bundles (or `--bundle`), prints text, JSON or JUnit.
//! All the work is `jitgate_engine::testing`; this module only parses arguments and picks the output.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use jitgate_engine::testing::{self, Report, RunOptions};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Readable text: a line per case, details for failures, a summary and coverage.
    Text,
    /// The whole report as JSON.
    Json,
    /// JUnit XML for CI systems.
    Junit,
}

/// Arguments of `jitgate test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Suite files or directories (searched recursively for *.yaml, *.yml, *.json).
    #[arg(default_value = "policy-tests")]
    pub paths: Vec<PathBuf>,
    /// Only cases whose name matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub run: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Run every suite on this bundle directory instead of the bundles it lists (repeatable).
    #[arg(long = "bundle", value_name = "DIR")]
    pub bundles: Vec<PathBuf>,
}

/// Runs the suites and prints the report; the exit code says how it went.
pub fn run(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut opts = RunOptions::new().with_bundles(args.bundles);
    if let Some(pattern) = &args.run {
        opts = opts
            .with_filter(pattern)
            .with_context(|| format!("--run: invalid regular expression `{pattern}`"))?;
    }
    let report = testing::run(&args.paths, opts);
    print_report(&report, args.format)?;
    Ok(exit_code(&report))
}

/// Prints `report` in `format` on stdout.
pub fn print_report(report: &Report, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Text => out!("{}", testing::render_text(report)),
        Format::Json => outln!(
            "{}",
            testing::render_json(report).context("rendering JSON")?
        ),
        Format::Junit => outln!(
            "{}",
            testing::render_junit(report).context("rendering JUnit XML")?
        ),
    }
    Ok(())
}

/// The process exit code for a report (0, 1 or 2).
pub fn exit_code(report: &Report) -> ExitCode {
    ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2))
}
