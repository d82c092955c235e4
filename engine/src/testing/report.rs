//! Renders a [`Report`] as readable text, JSON, or JUnit XML for CI.
//! Pure formatting: nothing here decides whether a case passed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use super::runner::{CaseResult, Report, list};
use super::suite::ExpectErrors;

/// Human-readable output: one line per case and bundle, details and a re-run command for each failure, then the
/// summary and coverage lines.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    for suite in report.suites.iter().filter(|s| !s.runs.is_empty()) {
        let _ = writeln!(out, "{}: {}", suite.file.display(), suite.name);
        for run in &suite.runs {
            let rev = run.revision.get(..12).unwrap_or(&run.revision);
            let _ = writeln!(
                out,
                "  [{}] {} @ {rev}",
                run.engine.as_str(),
                run.bundle.display()
            );
            for case in &run.cases {
                if case.passed {
                    let _ = writeln!(out, "    ok    {}", case.name);
                    erred(&mut out, case, "          ");
                } else {
                    let _ = writeln!(out, "    FAIL  {}", case.name);
                    failure_details(
                        &mut out,
                        &suite.file.display().to_string(),
                        case,
                        "          ",
                    );
                }
            }
        }
    }
    let mut last_bundle = None;
    for t in &report.rego_tests {
        if last_bundle != Some(&t.bundle) {
            let _ = writeln!(out, "Rego test rules of {}", t.bundle.display());
            last_bundle = Some(&t.bundle);
        }
        if t.passed {
            let _ = writeln!(out, "    ok    {}", t.name);
        } else {
            let _ = writeln!(out, "    FAIL  {}", t.name);
            if let Some(m) = &t.message {
                let _ = writeln!(out, "          {m}");
            }
        }
    }
    for line in disagreements(report) {
        let _ = writeln!(out, "{line}");
    }
    for d in &report.broken {
        let _ = writeln!(out, "error: {d}");
    }
    let _ = writeln!(out, "{}", summary(report));
    for line in coverage_lines(report) {
        let _ = writeln!(out, "{line}");
    }
    out
}

fn failure_details(out: &mut String, file: &str, case: &CaseResult, pad: &str) {
    if let Some(line) = case.line {
        let _ = writeln!(out, "{pad}at:       {file}:{line}");
    }
    let e = &case.expected;
    let mut expected = format!("decision {}", e.decision.as_str());
    if let Some(p) = &e.policies {
        let _ = write!(expected, ", policies {}", list(p));
    }
    if let Some(g) = &e.grants_used {
        let _ = write!(expected, ", grants {}", list(g));
    }
    if let Some(b) = e.break_glass {
        let _ = write!(expected, ", break_glass {b}");
    }
    match &e.errors {
        ExpectErrors::Any(true) => expected.push_str(", with errors"),
        ExpectErrors::Policies(p) => {
            let _ = write!(expected, ", errors in {}", list(p));
        }
        ExpectErrors::Any(false) => {}
    }
    let a = &case.actual;
    let mut actual = format!("decision {}", a.decision);
    if let (Some(action), Some(resource)) = (&a.action, &a.resource) {
        let _ = write!(actual, " ({action} on {resource})");
    }
    let _ = write!(
        actual,
        ", policies {}, grants {}, break_glass {}",
        list(&a.policies),
        list(&a.grants_used),
        a.break_glass
    );
    if !a.errors.is_empty() {
        let _ = write!(actual, ", errors: {}", a.errors.join("; "));
    }
    let _ = writeln!(out, "{pad}expected: {expected}");
    let _ = writeln!(out, "{pad}actual:   {actual}");
    erred(out, case, pad);
    for f in &case.failures {
        let _ = writeln!(out, "{pad}mismatch: {f}");
    }
    let _ = writeln!(out, "{pad}rerun:    {}", case.rerun);
}

/// The erroring policies of a case, each with its message, and what the language itself answered (jitgate denied).
fn erred(out: &mut String, case: &CaseResult, pad: &str) {
    let a = &case.actual;
    for e in &a.policy_errors {
        let _ = writeln!(out, "{pad}erred:    {}: {}", e.policy, e.message);
    }
    if let Some(answer) = &a.engine_answer {
        let _ = writeln!(
            out,
            "{pad}alone:    the language itself would {} ({}); jitgate denies: an error is a deny",
            answer.effect.as_str(),
            if answer.policies.is_empty() {
                "no policy determined it".to_string()
            } else {
                format!("policies {}", list(&answer.policies))
            }
        );
    }
}

/// Cases that passed on some bundles and failed on others: the languages disagree about the semantics, which is
/// worth saying louder than two separate failures.
fn disagreements(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for suite in &report.suites {
        let mut order: Vec<&str> = Vec::new();
        let mut by_case: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new();
        for run in &suite.runs {
            for case in &run.cases {
                by_case
                    .entry(case.name.as_str())
                    .or_insert_with(|| {
                        order.push(case.name.as_str());
                        Vec::new()
                    })
                    .push((run.engine.as_str(), case.passed));
            }
        }
        for name in order {
            let Some(results) = by_case.get(name) else {
                continue;
            };
            if results.iter().any(|r| r.1) && results.iter().any(|r| !r.1) {
                let failing: Vec<&str> = results.iter().filter(|r| !r.1).map(|r| r.0).collect();
                out.push(format!(
                    "engines disagree: {}: `{name}` fails only on {}",
                    suite.file.display(),
                    failing.join(", ")
                ));
            }
        }
    }
    out
}

/// `N passed, M failed` with the per-engine breakdown.
pub fn summary(report: &Report) -> String {
    let per_engine: Vec<String> = report
        .cases_per_engine()
        .iter()
        .map(|(e, n)| format!("{e}: {n}"))
        .collect();
    let mut s = format!("{} passed, {} failed", report.passed(), report.failed());
    let mut parts = Vec::new();
    if !per_engine.is_empty() {
        parts.push(format!("case runs per engine: {}", per_engine.join(", ")));
    }
    if !report.rego_tests.is_empty() {
        parts.push(format!("Rego test rules: {}", report.rego_tests.len()));
    }
    if !parts.is_empty() {
        let _ = write!(s, " ({})", parts.join("; "));
    }
    if !report.broken.is_empty() {
        let _ = write!(s, ", {} broken", report.broken.len());
    }
    if report.passed() + report.failed() == 0 && report.broken.is_empty() {
        s.push_str(" — no case matched");
    }
    s
}

/// One `coverage:` line per bundle.
pub fn coverage_lines(report: &Report) -> Vec<String> {
    report
        .coverage
        .iter()
        .map(|c| {
            let covered = c.policies.saturating_sub(c.uncovered.len());
            let mut s = format!(
                "coverage: {} [{}] {covered}/{} policies determined a decision",
                c.bundle.display(),
                c.engine.as_str(),
                c.policies
            );
            if !c.uncovered.is_empty() {
                let _ = write!(s, "; never: {}", c.uncovered.join(", "));
            }
            s
        })
        .collect()
}

#[derive(Serialize)]
struct JsonReport<'a> {
    passed: usize,
    failed: usize,
    exit_code: i32,
    #[serde(flatten)]
    report: &'a Report,
}

/// The whole report as pretty JSON, with `passed`, `failed` and `exit_code` on top.
pub fn render_json(report: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&JsonReport {
        passed: report.passed(),
        failed: report.failed(),
        exit_code: report.exit_code(),
        report,
    })
}

/// JUnit XML: one `<testsuite>` per suite and bundle, one `<testcase>` per case; broken inputs become errors.
pub fn render_junit(report: &Report) -> Result<String, quick_junit::SerializeError> {
    let mut junit = quick_junit::Report::new("jitgate policy tests");
    for suite in &report.suites {
        let file = suite.file.display().to_string();
        for run in &suite.runs {
            let mut ts = TestSuite::new(format!("{} [{}]", suite.name, run.engine.as_str()));
            ts.add_property(("file", file.as_str()));
            ts.add_property(("bundle", run.bundle.display().to_string().as_str()));
            ts.add_property(("revision", run.revision.as_str()));
            for case in &run.cases {
                let status = if case.passed {
                    TestCaseStatus::success()
                } else {
                    let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    st.set_message(case.failures.join("; "));
                    let mut details = String::new();
                    failure_details(&mut details, &file, case, "");
                    st.set_description(details);
                    st
                };
                let mut tc = TestCase::new(case.name.clone(), status);
                tc.set_classname(format!("{file}.{}", run.engine.as_str()));
                tc.set_time(case.elapsed);
                ts.add_test_case(tc);
            }
            junit.add_test_suite(ts);
        }
    }
    if !report.rego_tests.is_empty() {
        let mut ts = TestSuite::new("rego test rules");
        for t in &report.rego_tests {
            let status = if t.passed {
                TestCaseStatus::success()
            } else {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                st.set_message(
                    t.message
                        .clone()
                        .unwrap_or_else(|| "test rule did not evaluate to true".into()),
                );
                st
            };
            let mut tc = TestCase::new(t.name.clone(), status);
            tc.set_classname(t.bundle.display().to_string());
            ts.add_test_case(tc);
        }
        junit.add_test_suite(ts);
    }
    if !report.broken.is_empty() {
        let mut ts = TestSuite::new("broken inputs");
        for d in &report.broken {
            let mut st = TestCaseStatus::non_success(NonSuccessKind::Error);
            st.set_message(d.to_string());
            let mut tc = TestCase::new(d.file.display().to_string(), st);
            tc.set_classname("load");
            ts.add_test_case(tc);
        }
        junit.add_test_suite(ts);
    }
    junit.to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::decision::EngineKind;
    use crate::testing::runner::{Actual, BundleRun, SuiteReport};
    use crate::testing::suite::{Expect, ExpectErrors, ExpectedDecision};

    fn case(passed: bool) -> CaseResult {
        CaseResult {
            name: "c".into(),
            line: Some(3),
            passed,
            failures: if passed {
                vec![]
            } else {
                vec!["decision: expected allow, got deny".into()]
            },
            expected: Expect {
                decision: ExpectedDecision::Allow,
                policies: None,
                grants_used: None,
                break_glass: None,
                errors: ExpectErrors::Any(false),
            },
            actual: Actual {
                decision: if passed { "allow" } else { "deny" }.into(),
                ..Actual::default()
            },
            rerun: "jitgate test s.yaml --run '^c$'".into(),
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn text_and_junit_name_the_failure_and_the_disagreement() {
        let run = |engine, passed| BundleRun {
            bundle: PathBuf::from("b"),
            engine,
            revision: "0123456789abcdef".into(),
            cases: vec![case(passed)],
        };
        let report = Report {
            suites: vec![SuiteReport {
                file: PathBuf::from("s.yaml"),
                name: "s".into(),
                runs: vec![run(EngineKind::Cedar, true), run(EngineKind::Rego, false)],
            }],
            ..Report::default()
        };
        let text = render_text(&report);
        assert!(
            text.contains("engines disagree: s.yaml: `c` fails only on rego"),
            "{text}"
        );
        assert!(text.contains("at:       s.yaml:3"), "{text}");
        assert!(text.contains("1 passed, 1 failed"), "{text}");
        let xml = render_junit(&report).unwrap();
        assert!(
            xml.contains("<testsuites") && xml.contains("<failure"),
            "{xml}"
        );
        assert_eq!(report.exit_code(), 1);
    }
}
