//! Runs every suite under `policy-tests/` through the runner, so `cargo test` fails when a shipped bundle stops
//! meeting its documented semantics; and checks that broken suite files are reported with file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use jitgate_engine::testing::{self, RunOptions, Suite};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[test]
fn shipped_policy_suites_pass_on_both_engines() {
    let report = testing::run(&[repo().join("policy-tests")], RunOptions::new());
    let broken: Vec<String> = report.broken.iter().map(|d| d.to_string()).collect();
    assert!(
        broken.is_empty(),
        "broken suites or bundles:\n{}",
        broken.join("\n")
    );
    let mut failing = Vec::new();
    for suite in &report.suites {
        for run in &suite.runs {
            for case in run.cases.iter().filter(|c| !c.passed) {
                failing.push(format!(
                    "[{}] {}: {}\n    {}\n    {}",
                    run.engine.as_str(),
                    suite.file.display(),
                    case.name,
                    case.failures.join("\n    "),
                    case.rerun
                ));
            }
        }
    }
    assert!(
        failing.is_empty(),
        "{} failing case run(s):\n{}",
        failing.len(),
        failing.join("\n")
    );
    let per_engine = report.cases_per_engine();
    for engine in ["cedar", "rego"] {
        let n = per_engine.get(engine).copied().unwrap_or(0);
        assert!(n >= 40, "only {n} cases ran on {engine}: {per_engine:?}");
    }
    assert_eq!(report.exit_code(), 0);
}

/// A wrong expectation must fail, name what differs, and give the exact command that re-runs only that case.
#[test]
fn a_wrong_expectation_fails_with_a_rerun_command() {
    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("wrong.yaml");
    let cedar = repo().join("policies/quickstart-cedar");
    let rego = repo().join("policies/quickstart-rego");
    std::fs::write(
        &suite,
        format!(
            r#"name: wrong on purpose
bundles: ["{}", "{}"]
now: 2026-11-23T10:00:00Z
context: {{ source_ip: 10.1.2.3 }}
principals: {{ 'User::"alice"': {{ groups: [engineering] }} }}
cases:
  - name: alice (wrongly) creates a payment
    principal: User::"alice"
    http: {{ method: POST, path: /payments }}
    expect: {{ decision: allow, policies: [payments-writer] }}
  - name: alice lists payments
    principal: User::"alice"
    http: {{ method: GET, path: /payments }}
    expect: {{ decision: allow }}
"#,
            cedar.display(),
            rego.display()
        ),
    )
    .unwrap();
    let report = testing::run(std::slice::from_ref(&suite), RunOptions::new());
    assert!(report.broken.is_empty(), "{:?}", report.broken);
    assert_eq!(report.failed(), 2, "the wrong case fails on each engine");
    assert!(
        !report.rego_tests.is_empty(),
        "the Rego bundle's test_* rules run too"
    );
    assert_eq!(report.passed(), 2 + report.rego_tests.len());
    assert_eq!(report.exit_code(), 1);
    let text = testing::render_text(&report);
    assert!(
        text.contains("decision: expected allow, got deny"),
        "{text}"
    );
    assert!(
        text.contains(r"--run '^alice \(wrongly\) creates a payment$'"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} passed, 2 failed", report.passed())),
        "{text}"
    );

    // The re-run filter selects exactly that case.
    let only = testing::run(
        &[suite],
        RunOptions::new()
            .with_filter(r"^alice \(wrongly\) creates a payment$")
            .unwrap(),
    );
    assert_eq!((only.passed(), only.failed()), (0, 2));
}

fn broken(name: &str, text: &str) -> jitgate_engine::Diagnostics {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let err = Suite::load(&path).expect_err("a broken suite must not load");
    assert!(err.0.iter().all(|d| d.file == path), "{err}");
    err
}

const HEAD: &str = "name: broken\nbundles: [x]\nnow: 2026-11-23T10:00:00Z\ncases:\n";

#[test]
fn unknown_field_names_file_line_and_field() {
    let text = format!(
        "{HEAD}  - name: a\n    principal: User::\"a\"\n    action: x\n    resource: Service::\"s\"\n    expct: {{ decision: allow }}\n"
    );
    let err = broken("unknown.yaml", &text);
    let d = &err.0[0];
    assert_eq!(d.line, Some(9), "{err}");
    assert!(d.message.contains("unknown field `expct`"), "{err}");
    assert!(d.to_string().contains("unknown.yaml:9:"), "{err}");
}

#[test]
fn bad_entity_ref_names_its_line() {
    let text = format!(
        "{HEAD}  - name: a\n    principal: alice\n    action: x\n    resource: Service::\"s\"\n    expect: {{ decision: allow }}\n"
    );
    let err = broken("entity.yaml", &text);
    assert_eq!(err.0[0].line, Some(6), "{err}");
    assert!(
        err.0[0]
            .message
            .contains("invalid entity reference `alice`"),
        "{err}"
    );
}

#[test]
fn bad_time_names_its_line() {
    let text = "name: broken\nbundles: [x]\nnow: 2026-11-23 10:00\ncases: []\n";
    let err = broken("time.yaml", text);
    assert_eq!(err.0[0].line, Some(3), "{err}");
    assert!(err.0[0].message.contains("RFC 3339"), "{err}");
    let text = format!(
        "{HEAD}  - name: a\n    principal: User::\"a\"\n    action: x\n    resource: Service::\"s\"\n    at: soon\n    expect: {{ decision: allow }}\n"
    );
    let err = broken("at.yaml", &text);
    assert_eq!(err.0[0].line, Some(9), "{err}");
}

#[test]
fn json_suites_are_accepted_and_checked_the_same_way() {
    let text = r#"{"name": "j", "bundles": ["x"], "now": "2026-11-23T10:00:00Z",
 "cases": [{"name": "a", "principal": "User::\"a\"", "action": "x", "resource": "Service::\"s\"",
            "expect": {"decision": "maybe"}}]}"#;
    let err = broken("suite.json", text);
    assert_eq!(err.0[0].line, Some(3), "{err}");
    assert!(
        err.0[0].message.contains("unknown variant `maybe`"),
        "{err}"
    );
}

#[test]
fn case_shape_errors_are_reported() {
    // neither action nor http; unmatched without http; duplicate names
    let text = format!(
        "{HEAD}  - name: a\n    principal: User::\"a\"\n    expect: {{ decision: allow }}\n"
    );
    assert!(
        broken("shape.yaml", &text)
            .to_string()
            .contains("missing `action`")
    );
    let text = format!(
        "{HEAD}  - name: a\n    principal: User::\"a\"\n    action: x\n    resource: Service::\"s\"\n    expect: {{ decision: unmatched }}\n"
    );
    assert!(
        broken("unmatched.yaml", &text)
            .to_string()
            .contains("needs an `http` case")
    );
    let case = "  - name: same\n    principal: User::\"a\"\n    action: x\n    resource: Service::\"s\"\n    expect: { decision: allow }\n";
    let err = broken("dup.yaml", &format!("{HEAD}{case}{case}"));
    let dup: Vec<_> = err
        .0
        .iter()
        .filter(|d| d.message.contains("duplicate case name"))
        .collect();
    assert_eq!(dup.len(), 1, "{err}");
    assert_eq!(dup[0].line, Some(10), "{err}");
}

/// A case whose principal is not a fixture would run as a stranger with no groups, so a typo in it would make
/// every expected deny pass: it is refused at its own line, unless the case gives its groups itself or asks as the
/// engine's anonymous caller. A case named like a word on an earlier line is still placed at its own `name:` line.
#[test]
fn a_case_principal_must_be_a_fixture() {
    let head = "name: p\nbundles: [x]\nnow: 2026-11-23T10:00:00Z\nprincipals: { 'User::\"alice\"': { groups: [engineering] } }\ncases:\n";
    let case = |name: &str, who: &str, extra: &str| {
        format!(
            "  - name: {name}\n    principal: {who}\n    action: x\n    resource: Service::\"s\"\n{extra}    expect: {{ decision: deny }}\n"
        )
    };
    let text = format!(
        "{head}{}{}{}{}",
        case("alice", "User::\"alice\"", ""),
        case("a", "User::\"alcie\"", ""),
        case("with groups", "User::\"zed\"", "    groups: []\n"),
        case("anon", "Anonymous::\"anonymous\"", ""),
    );
    let err = broken("principals.yaml", &text);
    assert_eq!(err.0.len(), 1, "{err}");
    // The second case starts on line 11; a name `a` must not match the `name: p` or `- name: alice` lines.
    assert_eq!(err.0[0].line, Some(11), "{err}");
    assert!(
        err.0[0].message.contains(
            "case `a`: principal `User::\"alcie\"` is not under `principals` (declare it, with `{}` for one with no \
             groups, or give the case `groups`); declared: User::\"alice\""
        ),
        "{err}"
    );
}

/// The JSON Schema describes the format the loader accepts: every shipped suite and the annotated example validate
/// against it and load; and it rejects what the loader rejects (an unknown field, a case with neither target).
#[test]
fn schema_agrees_with_the_loader() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schemas/policy-suite.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let mut files = testing::discover(&[repo().join("policy-tests")]).unwrap();
    files.push(repo().join("schemas/examples/policy-suite.yaml"));
    assert!(files.len() >= 2);
    for f in &files {
        let value: serde_json::Value =
            serde_yaml::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(errors.is_empty(), "{}: {}", f.display(), errors.join("; "));
        Suite::load(f).unwrap();
    }
    let example = testing::run(
        &[repo().join("schemas/examples/policy-suite.yaml")],
        RunOptions::new(),
    );
    assert_eq!(
        (example.failed(), example.broken.len()),
        (0, 0),
        "{}",
        testing::render_text(&example)
    );

    let bad: serde_json::Value = serde_json::json!({
        "name": "x", "now": "2026-11-23T10:00:00Z",
        "cases": [{ "name": "a", "principal": "User::\"a\"", "expect": { "decision": "allow" }, "expct": 1 }]
    });
    assert!(!validator.is_valid(&bad));
    let no_target = serde_json::json!({
        "name": "x", "now": "2026-11-23T10:00:00Z",
        "cases": [{ "name": "a", "principal": "User::\"a\"", "expect": { "decision": "allow" } }]
    });
    assert!(!validator.is_valid(&no_target));
    let good = serde_json::json!({
        "name": "x", "now": "2026-11-23T10:00:00Z",
        "cases": [{ "name": "a", "principal": "User::\"a\"", "action": "x", "resource": "Service::\"s\"", "at": "-1s",
                    "expect": { "decision": "allow" } }]
    });
    assert!(validator.is_valid(&good));
    let mut bad_time = good.clone();
    bad_time["now"] = "yesterday".into();
    assert!(!validator.is_valid(&bad_time));
    let mut bad_ref = good;
    bad_ref["cases"][0]["principal"] = "alice".into();
    assert!(!validator.is_valid(&bad_ref));
}

/// Fixtures that no real request can meet are refused for each bundle, at their line, before any case runs: a
/// grant for a role the bundle does not define (the lifecycle never creates one), an entity type or action the
/// Cedar schema does not declare, a resource the action does not apply to, more uses spent than a grant has.
#[test]
fn fixtures_that_cannot_happen_on_the_bundle_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cedar = repo().join("policies/quickstart-cedar");
    let rego = repo().join("policies/quickstart-rego");
    let suite = dir.path().join("impossible.yaml");
    std::fs::write(
        &suite,
        format!(
            r#"name: impossible
bundles: ["{}", "{}"]
now: 2026-11-23T10:00:00Z
principals: {{ 'User::"alice"': {{ groups: [engineering] }} }}
grants:
  - {{ id: g-typo, principal: User::"alice", role: db-admn, scope: Service::"billing", duration: 1h }}
  - {{ id: g-type, principal: Usr::"alice", role: db-admin, scope: Service::"billing", duration: 1h }}
cases:
  - name: reads a payment
    principal: User::"alice"
    action: raedPayment
    resource: Payment::"p1"
    expect: {{ decision: deny }}
  - name: lists on a payment
    principal: User::"alice"
    action: listPayments
    resource: Payment::"p1"
    expect: {{ decision: deny }}
"#,
            cedar.display(),
            rego.display()
        ),
    )
    .unwrap();
    let report = testing::run(std::slice::from_ref(&suite), RunOptions::new());
    let problems: Vec<String> = report.broken.iter().map(|d| d.to_string()).collect();
    let has = |line: usize, piece: &str, bundle: &std::path::Path| {
        problems.iter().any(|b| {
            b.starts_with(&format!("{}:{line}:1: ", suite.display()))
                && b.contains(piece)
                && b.contains(&format!("(bundle {})", bundle.display()))
        })
    };
    let all = problems.join("\n");
    for bundle in [&cedar, &rego] {
        assert!(
            has(
                6,
                "grant `g-typo`: role `db-admn` is not defined in the bundle's [roles] (it defines: break-glass, db-admin, payments-writer, refund-once)",
                bundle
            ),
            "{all}"
        );
    }
    assert!(
        has(
            7,
            "grant `g-type`: principal: entity type `Usr` is not declared in the schema",
            &cedar
        ),
        "{all}"
    );
    assert!(
        has(
            9,
            "case `reads a payment`: action `raedPayment` is not declared in the schema",
            &cedar
        ),
        "{all}"
    );
    assert!(
        has(
            14,
            "case `lists on a payment`: action `listPayments` does not apply to resource type `Payment`",
            &cedar
        ),
        "{all}"
    );
    // Rego has no schema: only the role is checked there.
    assert_eq!(problems.len(), 5, "{all}");
    assert!(
        report.suites.iter().all(|s| s.runs.is_empty()),
        "no case ran"
    );
    assert_ne!(report.exit_code(), 0);

    // More uses than the grant has is refused when the suite loads, at the grant's line.
    let text = format!(
        "{HEAD}  - name: a\n    principal: User::\"a\"\n    groups: []\n    action: x\n    resource: Service::\"s\"\n    expect: {{ decision: deny }}\ngrants:\n  - {{ id: g1, principal: User::\"a\", role: r, scope: Service::\"s\", duration: 1h, max_uses: 2, uses: 3 }}\n"
    );
    let err = broken("uses.yaml", &text);
    assert_eq!(err.0[0].line, Some(12), "{err}");
    assert!(
        err.0[0]
            .message
            .contains("grant `g1`: field `uses` (3) is more than `max_uses` (2)"),
        "{err}"
    );
}

/// A case name written as a block scalar is placed at its own `name:` line, so a later case with the same name is
/// reported at the later line.
#[test]
fn a_block_scalar_case_name_is_placed_at_its_own_line() {
    let case = |name: &str| {
        format!(
            "  - name: {name}\n    principal: User::\"a\"\n    groups: []\n    action: x\n    resource: Service::\"s\"\n    expect: {{ decision: deny }}\n"
        )
    };
    // Lines 5-11 are the first case (its name on line 6), line 12 starts the second.
    let text = format!("{HEAD}{}{}", case(">-\n      first"), case("first"));
    let err = broken("block.yaml", &text);
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].message.contains("duplicate case name"), "{err}");
    assert_eq!(err.0[0].line, Some(12), "{err}");
}
