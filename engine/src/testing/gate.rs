//! The reload gate: a candidate bundle goes live only if the suites it lists (and, for Rego, its `test_*` rules)
//! pass against that very snapshot. Failures come back as diagnostics naming the suite file and case line.

use std::sync::Arc;

use crate::bundle::Bundle;
use crate::diag::{Diagnostic, Diagnostics};
use crate::testing::runner::{RunOptions, Runner};

/// Runs `bundle`'s own tests against it; `Ok` when it lists none or all pass.
pub fn gate(bundle: &Arc<Bundle>) -> Result<(), Diagnostics> {
    let mut runner = Runner::new(RunOptions::new().with_bundles(vec![bundle.dir.clone()]));
    runner.insert_bundle(&bundle.dir, bundle.clone());
    let mut report = crate::testing::Report::default();
    runner.rego_tests_of(bundle, &bundle.dir);
    if !bundle.test_files.is_empty() {
        runner.run_paths_into(&bundle.test_files, &mut report);
    }
    problems(&runner.finish(report)).into_result()
}

/// The gate's verdict on a report of a bundle's own tests: one diagnostic per broken suite, failed case and failed
/// Rego test (none when all pass). `jitgate check` prints the report itself and the proxy's start-up refuses on these.
pub fn problems(report: &crate::testing::Report) -> Diagnostics {
    let mut problems: Vec<Diagnostic> = report.broken.clone();
    for suite in &report.suites {
        for run in &suite.runs {
            for case in run.cases.iter().filter(|c| !c.passed) {
                let message = format!(
                    "bundle test failed: case `{}`: {}",
                    case.name,
                    case.failures.join("; ")
                );
                problems.push(match case.line {
                    Some(l) => Diagnostic::at(&suite.file, l, 1, message),
                    None => Diagnostic::file(&suite.file, message),
                });
            }
        }
    }
    for t in report.rego_tests.iter().filter(|t| !t.passed) {
        problems.push(Diagnostic::file(
            &t.bundle,
            format!(
                "Rego test `{}` failed{}",
                t.name,
                t.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
        ));
    }
    Diagnostics(problems)
}
