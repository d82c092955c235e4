//! Policy unit tests: suite files (fixtures, a frozen clock, JIT grants, expected decisions) run against bundles.
//! Parsing is [`suite`], evaluation [`runner`], output [`report`]; the `jitgate` command and `cargo test` drive them.

pub mod gate;
pub mod report;
pub mod runner;
pub mod suite;

pub use gate::gate;
pub use report::{render_json, render_junit, render_text};
pub use runner::{CaseResult, Report, RunOptions, Runner, check};
pub use suite::{Suite, discover};

/// Runs every suite found under `paths` with `opts`.
pub fn run(paths: &[std::path::PathBuf], opts: RunOptions) -> Report {
    Runner::new(opts).run_paths(paths)
}
