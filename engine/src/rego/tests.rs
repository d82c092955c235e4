#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::*;
use crate::decision::Effect;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::{AuthzRequest, Context, Principal, Resource};

/// Writes `files` into a fresh directory and loads them as package `t`.
fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<RegoBackend, Diagnostics>) {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .map(|(name, src)| {
            let p = dir.path().join(name);
            std::fs::write(&p, src).unwrap();
            p
        })
        .collect();
    let backend = RegoBackend::load(dir.path(), &paths, "t");
    (dir, backend)
}

fn backend(src: &str) -> (tempfile::TempDir, RegoBackend) {
    let (dir, b) = load(&[("p.rego", src)]);
    (dir, b.unwrap_or_else(|d| panic!("load failed: {d}")))
}

fn request(action: &str, groups: &[&str]) -> AuthzRequest {
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", "alice"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            group_type: None,
            attrs: Default::default(),
        },
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Database", "prod"),
            parents: vec![EntityRef::new("Service", "billing")],
            attrs: Default::default(),
        },
        context: Context::at(1_704_110_400),
        digest: None,
    }
}

fn grant(id: &str, role: &str) -> Arc<Grant> {
    Arc::new(Grant {
        id: id.into(),
        principal: EntityRef::new("User", "alice"),
        role: role.into(),
        scope: EntityRef::new("Service", "billing"),
        starts_at: 0,
        expires_at: i64::MAX,
        max_uses: None,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec![],
        reason: String::new(),
        break_glass: false,
        request_digest: None,
        request_id: None,
    })
}

const BASIC: &str = r#"package t
allow contains "read" if input.action == "read"
allow contains {"policy": "admin", "role": "db-admin"} if {
    some g in input.grants
    g.role == "db-admin"
}
deny contains "no-contractors" if "contractors" in input.principal.groups
hold contains "hold-delete" if input.action == "delete"
"#;

#[test]
fn parse_error_names_file_line_and_column() {
    let (dir, res) = load(&[
        ("good.rego", "package t\nallow contains \"x\" if true\n"),
        (
            "bad.rego",
            "package t\n\nallow contains \"y\" if {\n    input.x ==\n}\n",
        ),
        ("worse.rego", "package t\nallow contains if if\n"),
    ]);
    let diags = res.unwrap_err().0;
    assert_eq!(diags.len(), 2, "{diags:?}");
    let bad = diags
        .iter()
        .find(|d| d.file == dir.path().join("bad.rego"))
        .expect("bad.rego reported");
    assert_eq!(bad.line, Some(5), "{bad}");
    assert!(bad.column.is_some(), "{bad}");
    assert!(
        !bad.message.is_empty() && !bad.message.contains("-->"),
        "{bad}"
    );
    let worse = diags
        .iter()
        .find(|d| d.file == dir.path().join("worse.rego"))
        .expect("worse.rego reported");
    assert_eq!(worse.line, Some(2), "{worse}");
    assert!(
        worse
            .to_string()
            .starts_with(&format!("{}:2:", dir.path().join("worse.rego").display())),
        "{worse}"
    );
}

#[test]
fn regorus_messages_are_parsed_robustly() {
    let files = vec![PathBuf::from("/b/x:y.rego")];
    let msg = "\n--> /b/x:y.rego:12:7\n   |\n12 | allow if\n   |       ^\nerror: unexpected token";
    let d = diagnostic_from(msg, &files, None);
    assert_eq!(
        (d.file.as_path(), d.line, d.column),
        (Path::new("/b/x:y.rego"), Some(12), Some(7))
    );
    assert_eq!(d.message, "unexpected token");
    let d = diagnostic_from("something odd happened", &files, None);
    assert_eq!((d.line, d.column), (None, None));
    assert_eq!(d.file, PathBuf::from("/b/x:y.rego"));
    assert_eq!(compact_error(msg), "/b/x:y.rego:12:7: unexpected token");
}

#[test]
fn package_must_define_allow() {
    let (_d, res) = load(&[("p.rego", "package t\ndeny contains \"x\" if true\n")]);
    let msg = res.unwrap_err().to_string();
    assert!(msg.contains("declares no `allow`"), "{msg}");
    let (_d, res) = load(&[("p.rego", "package other\nallow contains \"x\" if true\n")]);
    let msg = res.unwrap_err().to_string();
    assert!(msg.contains("no policy file declares `package t`"), "{msg}");
}

#[test]
fn load_refuses_a_policy_that_errors_at_evaluation() {
    // Two values for one complete rule: a conflict regorus finds only when evaluating.
    let (_d, res) = load(&[(
        "p.rego",
        "package t\nx := 1 if true\nx := 2 if true\nallow contains \"a\" if x == 1\n",
    )]);
    let d = res.unwrap_err();
    assert!(d.0.iter().any(|d| d.line.is_some()), "{d}");
    // A boolean allow is the wrong shape.
    let (_d, res) = load(&[("p.rego", "package t\ndefault allow := false\n")]);
    let msg = res.unwrap_err().to_string();
    assert!(msg.contains("must be a set"), "{msg}");
}

#[test]
fn evaluation_error_denies_with_the_error() {
    // Errors only when the input carries a `boom` attribute; the probe input does not.
    let (_d, b) = backend(
        "package t\nallow contains \"a\" if true\ndeny contains \"d\" if to_number(input.resource.attrs.boom) > 1\n",
    );
    let ok = b.evaluate(&DecisionInput::materialized(&request("read", &[]), &[]));
    assert_eq!(ok.effect, Effect::Allow, "{ok:?}");
    let mut req = request("read", &[]);
    req.resource
        .attrs
        .insert("boom".into(), serde_json::json!("not a number"));
    let e = b.evaluate(&DecisionInput::materialized(&req, &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert!(e.policies.is_empty());
    assert_eq!(e.errors.len(), 1, "{e:?}");
}

#[test]
fn malformed_allow_elements_deny() {
    let (_d, b) = backend(
        "package t\nallow contains {\"policy\": \"a\", \"extra\": 1} if input.action == \"x\"\n",
    );
    let e = b.evaluate(&DecisionInput::materialized(&request("x", &[]), &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert!(
        e.errors
            .first()
            .is_some_and(|m| m.contains("neither a policy id")),
        "{e:?}"
    );
}

#[test]
fn deny_wins_over_allow() {
    let (_d, b) = backend(BASIC);
    let e = b.evaluate(&DecisionInput::materialized(
        &request("read", &["contractors"]),
        &[grant("g1", "db-admin")],
    ));
    assert_eq!(e.effect, Effect::Deny);
    assert_eq!(e.policies, vec!["no-contractors".to_string()]);
    assert!(e.errors.is_empty());
}

#[test]
fn no_allow_is_deny_without_policies() {
    let (_d, b) = backend(BASIC);
    let e = b.evaluate(&DecisionInput::materialized(&request("write", &[]), &[]));
    assert_eq!(
        e,
        Evaluation {
            effect: Effect::Deny,
            ..Default::default()
        }
    );
}

#[test]
fn hold_only_when_otherwise_allowed() {
    let (_d, b) = backend(BASIC);
    // Not allowed: the hold alone does nothing.
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&request("delete", &[]), &[]))
            .effect,
        Effect::Deny
    );
    let e = b.evaluate(&DecisionInput::materialized(
        &request("delete", &[]),
        &[grant("g1", "db-admin")],
    ));
    assert_eq!(e.effect, Effect::Hold);
    assert_eq!(e.policies, vec!["hold-delete".to_string()]);
    // The role the permit rests on is still named, so the engine can pick the grant.
    assert_eq!(e.roles, vec!["db-admin".to_string()]);
}

#[test]
fn object_elements_give_roles() {
    let (_d, b) = backend(BASIC);
    let e = b.evaluate(&DecisionInput::materialized(
        &request("read", &[]),
        &[grant("g1", "db-admin")],
    ));
    assert_eq!(e.effect, Effect::Allow);
    assert_eq!(e.policies, vec!["admin".to_string(), "read".to_string()]);
    assert_eq!(e.roles, vec!["db-admin".to_string()]);
    let e = b.evaluate(&DecisionInput::materialized(&request("read", &[]), &[]));
    assert_eq!(e.policies, vec!["read".to_string()]);
    assert!(e.roles.is_empty());
}

#[test]
fn input_carries_documented_fields() {
    let (_d, b) = backend(
        r#"package t
allow contains "fields" if {
    input.principal == {"type": "User", "id": "alice", "groups": ["eng"]}
    input.resource.parents == [{"type": "Service", "id": "billing"}]
    input.resource.attrs.owner == "bob"
    input.context.time == {"epoch": 1704110400, "hour": 12, "weekday": 1}
    input.context.source_ip == "0.0.0.0"
    input.context.query == ""
    input.context.ticket == "T-1"
    input.context.claims.sub == "alice"
    g := input.grants[0]
    g.id == "g1"
    g.scope == "Service::\"billing\""
    g.uses_left == -1
    g.break_glass == false
}
"#,
    );
    let mut req = request("x", &["eng"]);
    req.resource.attrs.insert("owner".into(), "bob".into());
    req.context.attrs.insert("ticket".into(), "T-1".into());
    req.context.claims.insert("sub".into(), "alice".into());
    let e = b.evaluate(&DecisionInput::materialized(&req, &[grant("g1", "r")]));
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
}

#[test]
fn clones_are_per_thread_and_reload_gets_fresh_ones() {
    let (dir, old) = backend("package t\nallow contains \"old\" if true\n");
    // Warm this thread's clone of the old backend.
    assert_eq!(
        old.evaluate(&DecisionInput::materialized(&request("x", &[]), &[]))
            .policies,
        vec!["old".to_string()]
    );
    // Same files, new content: a reload.
    let path = dir.path().join("p.rego");
    std::fs::write(&path, "package t\nallow contains \"new\" if true\n").unwrap();
    let new = RegoBackend::load(dir.path(), &[path], "t").unwrap();
    assert_eq!(
        new.evaluate(&DecisionInput::materialized(&request("x", &[]), &[]))
            .policies,
        vec!["new".to_string()]
    );
    assert_eq!(
        old.evaluate(&DecisionInput::materialized(&request("x", &[]), &[]))
            .policies,
        vec!["old".to_string()]
    );
    // Many threads share one backend.
    let new = Arc::new(new);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = Arc::clone(&new);
            std::thread::spawn(move || {
                (0..50).all(|_| {
                    b.evaluate(&DecisionInput::materialized(&request("x", &[]), &[]))
                        .policies
                        == ["new"]
                })
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
}

#[test]
fn policy_ids_are_scanned_from_the_deciding_package() {
    let (_d, res) = load(&[
        ("p.rego", BASIC),
        (
            "other.rego",
            "package t_test\nx := {\"policy\": \"not-ours\"}\n",
        ),
        (
            "c.rego",
            "package t\n# allow contains \"commented\" if true\nallow contains \"x\" if true\n",
        ),
    ]);
    let b = res.unwrap();
    assert_eq!(
        b.policy_ids(),
        vec!["admin", "hold-delete", "no-contractors", "read", "x"]
    );
}

#[test]
fn run_tests_reports_pass_fail_and_error() {
    let (_d, res) = load(&[
        ("p.rego", BASIC),
        (
            "p_test.rego",
            r#"package t.p_test
import data.t
test_read_allowed if "read" in t.allow with input as {"action": "read", "principal": {"groups": []}, "grants": []}
test_fails if "read" in t.allow with input as {"action": "write", "principal": {"groups": []}, "grants": []}
test_errors if to_number("x") == 1
helper(x) := x
"#,
        ),
    ]);
    let b = res.unwrap();
    let results = b.run_tests();
    let by_name = |n: &str| {
        results
            .iter()
            .find(|r| r.name == format!("data.t.p_test.{n}"))
            .unwrap()
    };
    assert_eq!(results.len(), 3, "{results:?}");
    assert!(by_name("test_read_allowed").passed);
    assert!(!by_name("test_fails").passed);
    assert!(
        by_name("test_fails")
            .message
            .as_deref()
            .unwrap()
            .contains("undefined")
    );
    assert!(!by_name("test_errors").passed);
    assert!(
        by_name("test_errors")
            .file
            .as_ref()
            .unwrap()
            .ends_with("p_test.rego")
    );
}

/// Loads the same files twice, with and without the action index.
fn both(dir: &Path, files: &[PathBuf], package: &str) -> (RegoBackend, RegoBackend) {
    let indexed = RegoBackend::load_with(dir, files, package, &[], true).unwrap();
    let plain = RegoBackend::load_with(dir, files, package, &[], false).unwrap();
    assert_eq!(plain.deciders.len(), 1);
    (indexed, plain)
}

fn write_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let paths = files
        .iter()
        .map(|(name, src)| {
            let p = dir.path().join(name);
            std::fs::write(&p, src).unwrap();
            p
        })
        .collect();
    (dir, paths)
}

const GUARDED: &str = r#"package t
import rego.v1
allow contains "a" if input.action == "a"
allow contains "b-or-c" if {
    "engineering" in input.principal.groups
    input.action in {"b", "c"}
}
allow contains {"policy": "admin", "role": "db-admin"} if {
    some g in input.grants
    g.role == "db-admin"
}
allow contains "eq-left" if "e" == input.action
deny contains "d" if {
    input.action == "d"
    not "sre" in input.principal.groups
}
hold contains "hold-c" if input.action in ["c"]
allow contains "negated" if not input.action == "a"
"#;

#[test]
fn action_index_splits_guarded_rules_and_decides_like_the_full_engine() {
    let (dir, files) = write_files(&[("p.rego", GUARDED)]);
    let (indexed, plain) = both(dir.path(), &files, "t");
    // Guarded actions a, b, c, d, e: one bucket each, plus the fallback.
    assert_eq!(
        indexed.deciders.len(),
        6,
        "{:?}",
        index::layout(&indexed.deciders)
    );
    assert_eq!(indexed.deciders.slot("unknown"), 5);
    assert_ne!(indexed.deciders.slot("b"), indexed.deciders.slot("c"));
    // A negated guard is not a guard: that rule stays in every bucket.
    let fallback = indexed
        .deciders
        .engines
        .get(5)
        .unwrap()
        .lock()
        .get_policies()
        .unwrap();
    let text = fallback.first().unwrap().contents().clone();
    assert!(text.contains("\"negated\""), "{text}");
    assert!(
        !text.contains("allow contains \"a\"") && !text.contains("deny contains"),
        "{text}"
    );
    // Left-out rules keep their lines: the admin rule is still on line 8.
    assert_eq!(
        text.lines().nth(7),
        Some("allow contains {\"policy\": \"admin\", \"role\": \"db-admin\"} if {")
    );

    // `jitgate check` names the rules that run for every action.
    assert_eq!(
        indexed.index_summary().unwrap(),
        "action index: 5 of 7 decision rules guarded by action, 6 buckets; evaluated for every action: admin, negated"
    );
    let mut checked = 0;
    for action in ["a", "b", "c", "d", "e", "unknown"] {
        for groups in [&[][..], &["engineering"], &["sre"]] {
            for grants in [vec![], vec![grant("g1", "db-admin")]] {
                let req = request(action, groups);
                let got = indexed.evaluate(&DecisionInput::materialized(&req, &grants));
                let want = plain.evaluate(&DecisionInput::materialized(&req, &grants));
                assert_eq!(got, want, "{action} {groups:?} {}", grants.len());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 36);
    // And the answers are the intended ones, not merely equal.
    let e = indexed.evaluate(&DecisionInput::materialized(
        &request("c", &["engineering"]),
        &[],
    ));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Hold, vec!["hold-c".to_string()])
    );
    let e = indexed.evaluate(&DecisionInput::materialized(
        &request("d", &[]),
        &[grant("g1", "db-admin")],
    ));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Deny, vec!["d".to_string()])
    );
    let e = indexed.evaluate(&DecisionInput::materialized(&request("a", &[]), &[]));
    assert_eq!(
        (e.effect, e.policies),
        (Effect::Allow, vec!["a".to_string()])
    );
}

#[test]
fn a_bucket_without_allow_or_deny_definitions_denies_cleanly() {
    // Every decision rule is guarded: an action none names reaches a bucket with no `allow` and no `deny`.
    let src = "package t\nallow contains \"a\" if input.action == \"a\"\ndeny contains \"b\" if input.action == \"b\"\n";
    let (dir, files) = write_files(&[("p.rego", src)]);
    let (indexed, plain) = both(dir.path(), &files, "t");
    assert!(indexed.deciders.len() > 1);
    for action in ["a", "b", "zzz"] {
        let got = indexed.evaluate(&DecisionInput::materialized(&request(action, &[]), &[]));
        assert_eq!(
            got,
            plain.evaluate(&DecisionInput::materialized(&request(action, &[]), &[])),
            "{action}"
        );
        assert!(got.errors.is_empty(), "{action}: {got:?}");
    }
    assert_eq!(
        indexed
            .evaluate(&DecisionInput::materialized(&request("zzz", &[]), &[]))
            .effect,
        Effect::Deny
    );
}

#[test]
fn runtime_errors_in_an_indexed_bucket_keep_their_file_line_and_column() {
    let src = r#"package t
allow contains "a" if {
    input.action == "a"
}
allow contains "b" if {
    input.action == "b"
    to_number(input.resource.attrs.boom) > 1
}
"#;
    let (dir, files) = write_files(&[("p.rego", src)]);
    let (indexed, plain) = both(dir.path(), &files, "t");
    let mut req = request("b", &[]);
    req.resource
        .attrs
        .insert("boom".into(), serde_json::json!("not a number"));
    let got = indexed.evaluate(&DecisionInput::materialized(&req, &[]));
    assert_eq!(got, plain.evaluate(&DecisionInput::materialized(&req, &[])));
    assert_eq!(got.effect, Effect::Deny);
    let error = got.errors.first().expect("an error");
    assert!(error.contains("p.rego:7:"), "{error}");
}

#[test]
fn the_quickstart_rego_bundle_is_indexed_and_decides_like_the_full_engine() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-rego");
    let files = vec![root.join("policies/authz.rego")];
    let (indexed, plain) = both(&root, &files, "jitgate.authz");
    assert!(indexed.deciders.len() > 10, "{}", indexed.deciders.len());
    let actions = [
        "health",
        "listPayments",
        "readPayment",
        "createPayment",
        "refundPayment",
        "deletePayment",
        "listDatabases",
        "readDatabase",
        "queryDatabase",
        "updateDatabaseConfig",
        "deleteDatabase",
        "requestAccess",
        "approve",
        "deny",
        "autoApprove",
        "revoke",
        "drop",
        "issueToken",
        "listRequests",
        "readDecisions",
        "operate",
        "noSuchAction",
    ];
    let groups: [&[&str]; 6] = [
        &[],
        &["engineering"],
        &["contractors"],
        &["sre"],
        &["dba"],
        &["ci"],
    ];
    let roles = ["payments-writer", "refund-once", "db-admin", "break-glass"];
    let mut checked = 0;
    for action in actions {
        for g in groups {
            for hour_ts in [1_704_110_400_i64, 1_704_139_200] {
                for ip in ["10.1.2.3", "192.0.2.7"] {
                    let mut grant_sets = vec![vec![]];
                    grant_sets.extend(roles.iter().map(|r| vec![grant("g", r)]));
                    for grants in grant_sets {
                        let mut req = request(action, g);
                        req.context = Context::at(hour_ts);
                        req.context.source_ip = Some(ip.into());
                        req.resource
                            .attrs
                            .insert("role".into(), serde_json::json!("db-admin"));
                        req.resource
                            .attrs
                            .insert("requester".into(), serde_json::json!("User::\"bob\""));
                        let got = indexed.evaluate(&DecisionInput::materialized(&req, &grants));
                        assert_eq!(
                            got,
                            plain.evaluate(&DecisionInput::materialized(&req, &grants)),
                            "{action} {g:?} {hour_ts} {ip}"
                        );
                        assert!(got.errors.is_empty(), "{got:?}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 22 * 6 * 2 * 2 * 5);
}

#[test]
fn many_generated_rules_spread_over_at_most_max_buckets() {
    let mut src = String::from("package t\nimport rego.v1\n");
    for i in 0..600 {
        src.push_str(&format!(
            "allow contains {{\"policy\": \"gen-{i}\", \"role\": \"r{i}\"}} if {{\n\tinput.action == \"op{i}\"\n\tsome g in input.grants\n\tg.role == \"r{i}\"\n}}\n"
        ));
    }
    let (dir, files) = write_files(&[("p.rego", &src)]);
    let (indexed, plain) = both(dir.path(), &files, "t");
    assert_eq!(indexed.deciders.len(), index::MAX_BUCKETS + 1);
    for i in [0, 1, 255, 256, 599] {
        for role in [format!("r{i}"), "r9999".to_string()] {
            let req = request(&format!("op{i}"), &[]);
            let grants = vec![grant("g", &role)];
            let got = indexed.evaluate(&DecisionInput::materialized(&req, &grants));
            assert_eq!(
                got,
                plain.evaluate(&DecisionInput::materialized(&req, &grants))
            );
            assert_eq!(
                got.effect == Effect::Allow,
                role == format!("r{i}"),
                "{got:?}"
            );
        }
    }
}

#[test]
fn a_bundle_that_uses_with_outside_tests_is_not_indexed() {
    // `allow with input.action as "b"` asks for the rules of action "b" while deciding "a": a bucket for "a" would
    // have left them out and this deny would never fire.
    let src = r#"package t
import rego.v1
allow contains "a" if input.action == "a"
allow contains "b" if input.action == "b"
deny contains "b-also-allowed" if {
    input.action == "a"
    count(allow) > 0 with input.action as "b"
}
"#;
    let (dir, files) = write_files(&[("p.rego", src)]);
    let (indexed, plain) = both(dir.path(), &files, "t");
    assert_eq!(indexed.deciders.len(), 1);
    let e = indexed.evaluate(&DecisionInput::materialized(&request("a", &[]), &[]));
    assert_eq!(
        e,
        plain.evaluate(&DecisionInput::materialized(&request("a", &[]), &[]))
    );
    assert_eq!(
        (e.effect, e.policies),
        (Effect::Deny, vec!["b-also-allowed".to_string()])
    );
    assert!(
        indexed
            .index_summary()
            .unwrap()
            .starts_with("action index: not used")
    );
    // `with` in a test rule, in a comment or in a string does not turn the index off.
    let src = r#"package t
import rego.v1
# with this comment
allow contains "a" if input.action == "a"
allow contains "b" if { input.action == "b"; input.principal.id != "with" }
test_a if { allow["a"] with input as {"action": "a"} }
"#;
    let (dir, files) = write_files(&[("p.rego", src)]);
    let (indexed, _) = both(dir.path(), &files, "t");
    assert_eq!(indexed.deciders.len(), 3);
}

/// OPA bundle data: each `data.json` / `data.yaml` is placed under `data` by its directory, in every action bucket;
/// a file that does not parse names its line, two files that set the same key are refused.
#[test]
fn opa_data_files_are_placed_by_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("people/eu")).unwrap();
    std::fs::write(d.join("data.json"), r#"{"limits": {"max": 3}}"#).unwrap();
    std::fs::write(d.join("people/eu/data.yaml"), "alice:\n  teams: [dba]\n").unwrap();
    let policy = d.join("p.rego");
    std::fs::write(
        &policy,
        "package t\nimport rego.v1\n\
         allow contains \"dba\" if {\n\tinput.action == \"read\"\n\t\"dba\" in data.people.eu[input.principal.id].teams\n\tdata.limits.max == 3\n}\n\
         allow contains \"w\" if {\n\tinput.action == \"write\"\n\tdata.limits.max == 3\n}\n",
    )
    .unwrap();
    let files = [d.join("data.json"), d.join("people/eu/data.yaml")];
    let b = RegoBackend::load_with_data(d, std::slice::from_ref(&policy), "t", &files)
        .unwrap_or_else(|e| panic!("{e}"));
    let e = b.evaluate(&DecisionInput::new(&request("read", &[]), &[]));
    assert_eq!(
        (e.effect, e.policies),
        (Effect::Allow, vec!["dba".to_string()])
    );
    let e = b.evaluate(&DecisionInput::new(&request("write", &[]), &[]));
    assert_eq!(e.effect, Effect::Allow, "{e:?}");

    // Without the data the same policies allow nothing.
    let b = RegoBackend::load(d, std::slice::from_ref(&policy), "t").unwrap();
    assert_eq!(
        b.evaluate(&DecisionInput::new(&request("read", &[]), &[]))
            .effect,
        Effect::Deny
    );

    // A syntax error names its line; a key set twice is refused, naming the file.
    std::fs::write(d.join("people/eu/data.yaml"), "alice:\n  teams: [dba\n").unwrap();
    let err =
        RegoBackend::load_with_data(d, std::slice::from_ref(&policy), "t", &files).unwrap_err();
    assert!(err.0[0].file.ends_with("people/eu/data.yaml"), "{err}");
    assert!(err.0[0].line.is_some(), "{err}");
    std::fs::write(d.join("people/eu/data.yaml"), "alice: {}\n").unwrap();
    std::fs::write(d.join("data.json"), r#"{"people": {"eu": {"alice": 1}}}"#).unwrap();
    let err =
        RegoBackend::load_with_data(d, std::slice::from_ref(&policy), "t", &files).unwrap_err();
    assert!(err.0[0].file.ends_with("people/eu/data.yaml"), "{err}");
}

/// An OPA bundle directory as OPA builds it (a `.manifest` with roots, a Rego v0 library named by
/// `file_rego_versions`, data files placed by their directory, tests beside the policies) loads as it is with a
/// `bundle.toml` that only adds the routes; the manifest is part of the revision; a bad manifest, data or a package
/// outside the roots refuse the bundle with the manifest's file and line.
#[test]
fn an_opa_bundle_with_a_manifest_loads_as_it_is() {
    // The bundle through the crate's re-export: this file is test code, but proxy/tests/module_graph.rs reads it as a
    // module of `rego`, which `bundle` depends on.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("people/eu")).unwrap();
    std::fs::create_dir_all(d.join("lib")).unwrap();
    std::fs::write(
        d.join("bundle.toml"),
        "name = \"opa\"\nengine = \"rego\"\npolicies = [\".\"]\n[rego]\npackage = \"jitgate.authz\"\n\
         [[routes]]\nmethod = \"GET\"\npath = \"/x\"\nservice = \"x\"\naction = \"read\"\n",
    )
    .unwrap();
    let manifest = "{\n  \"revision\": \"2026-12-07.1\",\n  \"roots\": [\"jitgate\", \"lib\", \"people/eu\"],\n  \
                    \"metadata\": {\"owner\": \"security\"},\n  \"file_rego_versions\": {\"/lib/helpers.rego\": 0}\n}\n";
    std::fs::write(d.join(".manifest"), manifest).unwrap();
    // Rego v0: a rule body without `if`, a partial set written `deny[x]`.
    std::fs::write(
        d.join("lib/helpers.rego"),
        "package lib.helpers\n\nis_dba[u] { some u; data.people.eu[u].teams[_] == \"dba\" }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("authz.rego"),
        "package jitgate.authz\nimport rego.v1\n\
         allow contains \"dbas-read\" if {\n\tinput.action == \"read\"\n\tdata.lib.helpers.is_dba[input.principal.id]\n}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("people/eu/data.json"),
        r#"{"alice": {"teams": ["dba"]}, "bob": {"teams": []}}"#,
    )
    .unwrap();
    let bundle = crate::Bundle::load(d).unwrap_or_else(|e| panic!("{e}"));
    let mut alice = request("read", &[]);
    alice.principal.entity = EntityRef::new("User", "alice");
    let e = bundle.backend().evaluate(&DecisionInput::new(&alice, &[]));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Allow, vec!["dbas-read".to_string()]),
        "{e:?}"
    );
    let mut bob = alice.clone();
    bob.principal.entity = EntityRef::new("User", "bob");
    assert_eq!(
        bundle
            .backend()
            .evaluate(&DecisionInput::new(&bob, &[]))
            .effect,
        Effect::Deny
    );
    let rev = bundle.revision.clone();

    // The manifest is part of the bundle: another revision string is another revision.
    std::fs::write(
        d.join(".manifest"),
        manifest.replace("2026-12-07.1", "2026-12-07.2"),
    )
    .unwrap();
    assert_ne!(crate::Bundle::load(d).unwrap().revision, rev);

    // Without the manifest's word the library is Rego v1 and does not parse.
    std::fs::write(d.join(".manifest"), manifest.replace("0}", "1}")).unwrap();
    let err = crate::Bundle::load(d).unwrap_err();
    assert!(
        err.0.iter().any(|x| x.file.ends_with("lib/helpers.rego")),
        "{err}"
    );

    // Data outside the roots: refused at the manifest's `roots` line, naming the data file.
    std::fs::write(
        d.join(".manifest"),
        manifest.replace("people/eu", "people/us"),
    )
    .unwrap();
    let err = crate::Bundle::load(d).unwrap_err();
    let x = &err.0[0];
    assert!(x.file.ends_with(".manifest") && x.line == Some(3), "{err}");
    assert!(
        x.message.contains("do not permit data at `/people/eu`")
            && x.message.contains("people/eu/data.json"),
        "{err}"
    );

    // A package outside the roots.
    std::fs::write(d.join(".manifest"), manifest.replace("\"lib\", ", "")).unwrap();
    let err = crate::Bundle::load(d).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|x| x.message.contains("do not permit package `lib.helpers`")),
        "{err}"
    );

    // A field of the wrong type names the field and its line.
    std::fs::write(
        d.join(".manifest"),
        manifest.replace("{\"owner\": \"security\"}", "\"security\""),
    )
    .unwrap();
    let err = crate::Bundle::load(d).unwrap_err();
    let x = &err.0[0];
    assert!(x.file.ends_with(".manifest") && x.line == Some(4), "{err}");
    assert_eq!(x.message, "metadata: expected an object, got a string");
}
