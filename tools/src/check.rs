//! `jitgate check`: loads (fully validates) bundles, prints what they hold, and runs the suites they list.
//! A bundle that fails here would fail the reload gate too, with the same diagnostics.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use jitgate_engine::testing;

use crate::test::{Format, print_report};

/// Arguments of `jitgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Bundle directories.
    #[arg(required = true)]
    pub bundles: Vec<PathBuf>,
    /// Output format of the bundles' tests.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Checks each bundle; exit 2 if one does not load, else 1 if a listed test fails, else 0.
pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let mut worst = 0u8;
    for dir in &args.bundles {
        match testing::check(dir) {
            Err(diags) => {
                for d in &diags.0 {
                    eprintln!("error: {d}");
                }
                eprintln!(
                    "{}: invalid bundle ({} problem(s))",
                    dir.display(),
                    diags.0.len()
                );
                worst = 2;
            }
            Ok((bundle, tests)) => {
                println!(
                    "{}: ok — engine {}, revision {}, {} policies, {} routes, {} roles, {} test file(s)",
                    dir.display(),
                    bundle.engine().as_str(),
                    bundle.short_revision(),
                    bundle.backend().policy_ids().len(),
                    bundle.routes.len(),
                    bundle.roles.len(),
                    bundle.test_files.len()
                );
                if let Some(summary) = bundle.backend().index_summary() {
                    println!("  {summary}");
                }
                if let Some(report) = tests {
                    print_report(&report, args.format)?;
                    let code = u8::try_from(report.exit_code()).unwrap_or(2);
                    worst = worst.max(code);
                }
            }
        }
    }
    Ok(ExitCode::from(worst))
}
