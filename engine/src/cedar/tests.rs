#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::{AuthzRequest, Context as ReqContext, Principal, Resource};

const SCHEMA: &str = r#"entity Group;
entity Role;
entity Grant in [Role];
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { time: { epoch: Long, hour: Long, weekday: Long }, break_glass: Bool };
action writes;
action read appliesTo { principal: [User], resource: [Doc], context: Ctx };
action write, erase in [writes] appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(schema: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.cedarschema"), schema).unwrap();
        Fixture { dir }
    }

    fn load(&self, files: &[(&str, &str)]) -> Result<CedarBackend, Diagnostics> {
        let paths: Vec<PathBuf> = files
            .iter()
            .map(|(name, src)| {
                let p = self.dir.path().join(name);
                std::fs::write(&p, src).unwrap();
                p
            })
            .collect();
        CedarBackend::load(
            self.dir.path(),
            &self.dir.path().join("s.cedarschema"),
            &paths,
            &[],
            &[],
        )
    }
}

fn load(policies: &str) -> CedarBackend {
    Fixture::new(SCHEMA)
        .load(&[("p.cedar", policies)])
        .unwrap_or_else(|d| panic!("{d}"))
}

fn request(action: &str, groups: &[&str], time: i64) -> AuthzRequest {
    let mut attrs = serde_json::Map::new();
    attrs.insert("owner".into(), r#"User::"alice""#.into());
    attrs.insert("level".into(), 3.into());
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", "alice"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            group_type: None,
            attrs: Default::default(),
        },
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Doc", "d1"),
            parents: vec![],
            attrs,
        },
        context: ReqContext::at(time),
        digest: None,
    }
}

fn grant(id: &str, role: &str) -> Arc<Grant> {
    Arc::new(Grant {
        id: id.into(),
        principal: EntityRef::new("User", "alice"),
        role: role.into(),
        scope: EntityRef::new("Doc", "d1"),
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

/// A policy without `@id` loads, named by its place in its file as the Cedar CLI names it, and a warning at its line
/// says so; in a bundle of several files the file's name comes first.
#[test]
fn a_policy_without_an_id_gets_one_by_position() {
    let fixture = Fixture::new(SCHEMA);
    let b = fixture
        .load(&[("p.cedar", "@id(\"a\")\npermit (principal, action, resource);\n\n// no id\nforbid (principal, action, resource) when { resource.level > 5 };\n")])
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(b.policy_ids(), vec!["a".to_string(), "policy1".to_string()]);
    let w = b.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].file.ends_with("p.cedar"));
    assert_eq!((w[0].line, w[0].column), (Some(5), Some(1)), "{:?}", w[0]);
    assert!(w[0].message.contains("`policy1`"), "{:?}", w[0]);
    // The generated id decides like any other.
    let mut r = request("read", &[], 0);
    r.resource.attrs.insert("level".into(), 9.into());
    let e = b.evaluate(&DecisionInput::new(&r, &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert_eq!(e.policies, vec!["policy1".to_string()]);

    let two = fixture
        .load(&[
            ("p.cedar", "permit (principal, action, resource);\n"),
            ("q.cedar", "@id(\"q\")\nforbid (principal, action, resource) when { false };\npermit (principal, action, resource);\n"),
        ])
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(
        two.policy_ids(),
        vec![
            "p.cedar:policy0".to_string(),
            "q".to_string(),
            "q.cedar:policy1".to_string()
        ]
    );
}

/// A permit that relies on a role in its condition must name it (scope or `@role`), or its grants are never
/// spent nor recorded: the loader refuses it at its line. Forbids and annotated permits are fine.
#[test]
fn a_permit_relying_on_a_role_must_name_it() {
    let err = Fixture::new(SCHEMA)
        .load(&[(
            "p.cedar",
            "@id(\"ok\") @role(\"auditor\")\npermit (principal, action, resource) when { principal in Role::\"auditor\" };\n\n\
             @id(\"deny-contractors\")\nforbid (principal, action, resource) unless { principal in Role::\"staff\" };\n\n\
             @id(\"not-suspended\")\npermit (principal in Role::\"writer\", action, resource) unless { principal in Role::\"suspended\" };\n\n\
             @id(\"hidden\")\npermit (principal in Role::\"writer\", action, resource)\n  when { principal in Role::\"once\" || principal in Role::\"auditor\" };\n",
        )])
        .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    let d = &err.0[0];
    assert_eq!(d.line, Some(10), "{d}");
    assert!(
        d.message.contains(
            "policy `hidden` relies on role `auditor`, `once` outside its principal scope"
        ) && d.message.contains("@role(\"auditor,once\")"),
        "{d}"
    );
}

#[test]
fn duplicate_ids_across_files_are_reported_with_both_places() {
    let err = Fixture::new(SCHEMA)
        .load(&[
            (
                "a.cedar",
                "@id(\"x\")\npermit (principal, action, resource);\n",
            ),
            (
                "b.cedar",
                "\n\n@id(\"x\")\nforbid (principal, action, resource);\n",
            ),
        ])
        .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    let d = &err.0[0];
    assert!(d.file.ends_with("b.cedar"));
    assert_eq!(d.line, Some(3));
    assert!(
        d.message.contains("duplicate policy id `x`") && d.message.contains("a.cedar:1:1"),
        "{d}"
    );
}

#[test]
fn parse_errors_name_file_line_and_column_in_every_file() {
    let err = Fixture::new(SCHEMA)
        .load(&[
            (
                "a.cedar",
                "@id(\"a\")\npermit (principal, action, resource)\nwhen { 1 + };\n",
            ),
            (
                "b.cedar",
                "@id(\"b\")\npermit (principal, acton, resource);\n",
            ),
        ])
        .unwrap_err();
    let files: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
    assert!(files.iter().any(|d| d.contains("a.cedar:3:")), "{err}");
    assert!(files.iter().any(|d| d.contains("b.cedar:2:")), "{err}");
    assert!(
        err.0.iter().all(|d| d.line.is_some() && d.column.is_some()),
        "{err}"
    );
}

#[test]
fn schema_violations_point_at_the_offending_expression() {
    let src = "@id(\"ok\")\npermit (principal, action == Action::\"read\", resource);\n\n@id(\"bad\")\npermit (principal, action == Action::\"read\", resource)\nwhen { resource.colour == \"red\" };\n";
    let err = Fixture::new(SCHEMA).load(&[("p.cedar", src)]).unwrap_err();
    assert!(!err.0.is_empty());
    let d = &err.0[0];
    assert!(d.file.ends_with("p.cedar"), "{d}");
    assert_eq!(d.line, Some(6), "{d}");
    assert!(
        d.message.contains("policy `bad`") && d.message.contains("colour"),
        "{d}"
    );
}

#[test]
fn schema_errors_and_missing_engine_types() {
    let err = Fixture::new("entity User;\nentity Doc = { owner: Nope };\n")
        .load(&[(
            "p.cedar",
            "@id(\"a\")\npermit (principal, action, resource);\n",
        )])
        .unwrap_err();
    assert!(
        err.0.iter().any(|d| d.file.ends_with("s.cedarschema")),
        "{err}"
    );
    // A schema without the engine's types is an application schema: the engine adds its own under `Jitgate::`
    // (see base_tests.rs); one that names a type neither declares is still refused at the schema file.
    let b = Fixture::new(
        "entity User;\nentity Doc;\naction read appliesTo { principal: User, resource: Doc };\n",
    )
    .load(&[(
        "p.cedar",
        "@id(\"a\")\npermit (principal, action, resource);\n",
    )])
    .unwrap_or_else(|d| panic!("{d}"));
    assert!(
        b.schema()
            .entity_types()
            .any(|t| t.to_string() == "Jitgate::JitGrant")
    );
    let err = Fixture::new(
        "entity User in [Grant];\nentity Doc;\naction read appliesTo { principal: User, resource: Doc };\n",
    )
    .load(&[(
        "p.cedar",
        "@id(\"a\")\npermit (principal, action, resource);\n",
    )])
    .unwrap_err();
    let d = &err.0[0];
    assert!(d.file.ends_with("s.cedarschema"), "{d}");
    assert!(d.message.contains("Grant"), "{d}");
    let err = Fixture::new("entity User\n")
        .load(&[(
            "p.cedar",
            "@id(\"a\")\npermit (principal, action, resource);\n",
        )])
        .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|d| d.file.ends_with("s.cedarschema") && d.line.is_some()),
        "{err}"
    );
}

#[test]
fn hold_only_on_forbid() {
    let err = Fixture::new(SCHEMA)
        .load(&[(
            "p.cedar",
            "@id(\"h\")\n@hold(\"why\")\npermit (principal, action, resource);\n",
        )])
        .unwrap_err();
    assert!(err.0[0].message.contains("@hold"), "{err}");
}

#[test]
fn holds_fire_only_where_otherwise_allowed() {
    let b = load(
        r#"
@id("readers") permit (principal in Group::"r", action, resource);
@id("hold-erase") @hold("needs approval") forbid (principal, action == Action::"erase", resource) unless { principal in Role::"boss" };
@id("no-night") forbid (principal, action == Action::"erase", resource) when { context.time.hour >= 22 };
@id("boss") permit (principal in Role::"boss", action, resource);
"#,
    );
    let e = b.evaluate(&DecisionInput::materialized(
        &request("erase", &["r"], 3600 * 10),
        &[],
    ));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Hold, vec!["hold-erase".to_string()]),
        "{e:?}"
    );
    // Not otherwise allowed: deny, not hold.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("erase", &[], 3600 * 10),
        &[],
    ));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Deny, vec![]),
        "{e:?}"
    );
    // A forbid beats the hold.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("erase", &["r"], 3600 * 23),
        &[],
    ));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Deny, vec!["no-night".to_string()]),
        "{e:?}"
    );
    // The hold's own exception.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("erase", &[], 3600 * 10),
        &[grant("g", "boss")],
    ));
    assert_eq!(
        (e.effect, e.policies.clone(), e.roles.clone()),
        (
            Effect::Allow,
            vec!["boss".to_string()],
            vec!["boss".to_string()]
        )
    );
    // Holds of other actions do not apply.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("write", &["r"], 3600 * 10),
        &[],
    ));
    assert_eq!(e.effect, Effect::Allow);
}

#[test]
fn evaluation_errors_deny_even_when_another_permit_allows() {
    let b = load(
        r#"
@id("open") permit (principal, action, resource);
@id("overflow") permit (principal, action == Action::"write", resource) when { context.time.epoch * 100000000000 > 0 };
@id("hold-overflow") @hold("x") forbid (principal, action == Action::"erase", resource) when { context.time.epoch * 100000000000 > 0 };
"#,
    );
    let t = 1_700_000_000;
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&request("read", &[], t), &[]))
            .effect,
        Effect::Allow
    );
    for action in ["write", "erase"] {
        let e = b.evaluate(&DecisionInput::materialized(&request(action, &[], t), &[]));
        assert_eq!(e.effect, Effect::Deny, "{action}: {e:?}");
        assert!(
            !e.errors.is_empty() && e.policies.is_empty(),
            "{action}: {e:?}"
        );
    }
}

/// #19: an erroring policy still denies, and the evaluation names it with Cedar's message and keeps what Cedar itself
/// answered (it skips the erroring policy): allow through `open` for `write`, hold for `erase` (the erroring hold
/// policy skipped, nothing holds: allow).
#[test]
fn erroring_policies_are_named_with_cedars_own_answer() {
    let b = load(
        r#"
@id("open") permit (principal, action, resource);
@id("overflow") permit (principal, action == Action::"write", resource) when { context.time.epoch * 100000000000 > 0 };
@id("hold-overflow") @hold("x") forbid (principal, action == Action::"erase", resource) when { context.time.epoch * 100000000000 > 0 };
@id("forbid-overflow") forbid (principal, action == Action::"read", resource) when { context.time.epoch * 100000000000 > 0 };
"#,
    );
    let t = 1_700_000_000;
    let e = b.evaluate(&DecisionInput::materialized(&request("write", &[], t), &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert_eq!(e.policy_errors.len(), 1, "{e:?}");
    assert_eq!(e.policy_errors[0].policy, "overflow");
    assert!(
        e.policy_errors[0].message.contains("overflow"),
        "{:?}",
        e.policy_errors[0]
    );
    assert!(
        !e.policy_errors[0]
            .message
            .contains("error while evaluating policy")
    );
    assert_eq!(
        e.engine_answer,
        Some(EngineAnswer {
            effect: Effect::Allow,
            policies: vec!["open".into()]
        })
    );
    let e = b.evaluate(&DecisionInput::materialized(&request("erase", &[], t), &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert_eq!(e.policy_errors[0].policy, "hold-overflow", "{e:?}");
    assert_eq!(
        e.engine_answer.map(|a| a.effect),
        Some(Effect::Allow),
        "the erroring hold skipped, Cedar allows"
    );
    // An erroring forbid: Cedar alone allows through the permit; jitgate denies.
    let e = b.evaluate(&DecisionInput::materialized(&request("read", &[], t), &[]));
    assert_eq!(
        (e.effect, e.policy_errors[0].policy.as_str()),
        (Effect::Deny, "forbid-overflow")
    );
    assert_eq!(e.engine_answer.map(|a| a.effect), Some(Effect::Allow));
    assert!(e.nearest.is_empty(), "errors are explained by the errors");
}

/// #19: a deny no permit determined names the permits that came nearest: first those whose scope matched (their
/// condition was false), then the others with their scope; at most three. Allows and forbid-determined denies carry
/// none.
#[test]
fn a_deny_no_permit_matched_names_the_nearest_permits() {
    let b = load(
        r#"
@id("high-level") permit (principal, action == Action::"read", resource) when { resource.level > 5 };
@id("admins") permit (principal in Role::"admin", action == Action::"read", resource);
@id("group-r") permit (principal in Group::"r", action == Action::"read", resource);
@id("zz-group-z") permit (principal in Group::"z", action == Action::"read", resource);
@id("writers") permit (principal, action == Action::"write", resource);
@id("no-bob") forbid (principal == User::"bob", action, resource);
"#,
    );
    let e = b.evaluate(&DecisionInput::materialized(&request("read", &[], 0), &[]));
    assert_eq!((e.effect, e.policies.clone()), (Effect::Deny, vec![]));
    let got: Vec<(&str, &str)> = e
        .nearest
        .iter()
        .map(|c| (c.policy.as_str(), c.why.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("high-level", "condition false"),
            (
                "admins",
                "scope not matched: principal in Role::\"admin\", action == Action::\"read\", resource"
            ),
            (
                "group-r",
                "scope not matched: principal in Group::\"r\", action == Action::\"read\", resource"
            ),
        ]
    );
    // Allowed: nothing to explain.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("read", &["r"], 0),
        &[],
    ));
    assert_eq!(e.effect, Effect::Allow);
    assert!(e.nearest.is_empty());
    // Denied by a forbid: the forbid is the reason.
    let mut r = request("write", &[], 0);
    r.principal.entity = EntityRef::new("User", "bob");
    let e = b.evaluate(&DecisionInput::materialized(&r, &[]));
    assert_eq!(e.policies, vec!["no-bob".to_string()]);
    assert!(e.nearest.is_empty());
}

/// #19: the explanation evaluates each policy of the action's partition on its own: scope matched or not, condition
/// held, false or erred, and which determined the decision.
#[test]
fn explain_traces_scope_and_condition_of_each_policy() {
    let b = load(
        r#"
@id("high-level") permit (principal, action == Action::"read", resource) when { resource.level > 5 };
@id("admins") permit (principal in Role::"admin", action == Action::"read", resource);
@id("group-r") permit (principal in Group::"r", action == Action::"read", resource);
@id("overflow") forbid (principal, action == Action::"read", resource) when { context.time.epoch * 100000000000 > 0 };
@id("writers") permit (principal, action == Action::"write", resource);
"#,
    );
    let r = request("read", &["r"], 1_700_000_000);
    let grants = [grant("g1", "admin")];
    let input = DecisionInput::materialized(&r, &grants);
    let e = b.evaluate(&input);
    assert_eq!(e.effect, Effect::Deny);
    let answer = e.engine_answer.clone().unwrap();
    assert_eq!(answer.effect, Effect::Allow);
    assert_eq!(
        answer.policies,
        vec!["admins".to_string(), "group-r".to_string()]
    );
    let traces = b.explain(&input, &answer.policies);
    let got: Vec<(&str, &str, bool, &str, bool)> = traces
        .policies
        .iter()
        .map(|p| {
            (
                p.id.as_str(),
                p.effect,
                p.scope_matched,
                p.condition.as_str(),
                p.determining,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("admins", "permit", true, "held", true),
            ("group-r", "permit", true, "held", true),
            ("high-level", "permit", true, "false", false),
            ("overflow", "forbid", true, "error", false),
        ],
        "writers is not in the read partition"
    );
    // Without the grant and the group, the role's and the group's scopes do not match.
    let r = request("read", &[], 1_700_000_000);
    let traces = b.explain(&DecisionInput::materialized(&r, &[]), &[]);
    let admins = traces.policies.iter().find(|p| p.id == "admins").unwrap();
    assert!(!admins.scope_matched);
    assert_eq!(admins.condition, crate::explain::Condition::Skipped);
    assert_eq!(
        admins.scope,
        "principal in Role::\"admin\", action == Action::\"read\", resource"
    );
}

#[test]
fn roles_come_from_the_scope_or_the_annotation() {
    let schema = r#"entity Group;
entity Role;
entity Grant in [Role] = { uses_left: Long };
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { grants: Set<Grant> };
action read, write, erase appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;
    let load = |src: &str| {
        Fixture::new(schema)
            .load(&[("p.cedar", src)])
            .unwrap_or_else(|d| panic!("{d}"))
    };
    let b = load(
        r#"
@id("by-scope") permit (principal in Role::"writer", action == Action::"write", resource);
@id("by-note") @role("auditor") permit (principal, action == Action::"write", resource) when { context has break_glass && principal in Role::"auditor" };
@id("standing") permit (principal in Group::"r", action == Action::"read", resource);
"#,
    );
    let e = b.evaluate(&DecisionInput::materialized(
        &request("write", &[], 0),
        &[grant("g1", "writer"), grant("g2", "auditor")],
    ));
    assert_eq!(e.effect, Effect::Allow);
    assert_eq!(e.policies, vec!["by-note", "by-scope"]);
    let mut roles = e.roles.clone();
    roles.sort();
    assert_eq!(roles, vec!["auditor", "writer"]);
    let e = b.evaluate(&DecisionInput::materialized(
        &request("read", &["r"], 0),
        &[grant("g1", "writer")],
    ));
    assert_eq!((e.effect, e.roles.len()), (Effect::Allow, 0), "{e:?}");
    // A grant for another role opens nothing.
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &request("write", &[], 0),
            &[grant("g3", "reader")]
        ))
        .effect,
        Effect::Deny
    );
}

#[test]
fn entity_typed_attributes_become_references() {
    let b = load(
        r#"@id("own") permit (principal, action == Action::"read", resource) when { resource.owner == principal && resource.level == 3 };"#,
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&request("read", &[], 0), &[]))
            .effect,
        Effect::Allow
    );
}

#[test]
fn the_index_keeps_only_policies_that_can_apply() {
    let b = load(
        r#"
@id("any") permit (principal in Group::"a", action, resource);
@id("read") permit (principal, action == Action::"read", resource);
@id("list") permit (principal, action in [Action::"read", Action::"erase"], resource);
@id("group") forbid (principal, action in Action::"writes", resource) when { context.time.hour < 1 };
@id("hold") @hold("h") forbid (principal, action in [Action::"writes"], resource) when { context.time.hour > 22 };
"#,
    );
    assert_eq!(b.policies_for_action("read"), vec!["any", "list", "read"]);
    assert_eq!(b.policies_for_action("write"), vec!["any", "group", "hold"]);
    assert_eq!(
        b.policies_for_action("erase"),
        vec!["any", "group", "hold", "list"]
    );
    assert_eq!(b.policies_for_action("unknown"), vec!["any"]);
    // Group membership through the schema's action groups is seen at evaluation time.
    let e = b.evaluate(&DecisionInput::materialized(
        &request("write", &["a"], 1800),
        &[],
    ));
    assert_eq!(
        (e.effect, e.policies),
        (Effect::Deny, vec!["group".to_string()])
    );
    // An action the schema does not know is decided by the any-action policies alone.
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &request("unknown", &["a"], 7200),
            &[]
        ))
        .effect,
        Effect::Allow
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &request("unknown", &[], 7200),
            &[]
        ))
        .effect,
        Effect::Deny
    );
    let mut ids = b.policy_ids();
    ids.sort();
    assert_eq!(ids, vec!["any", "group", "hold", "list", "read"]);
}

#[test]
fn cached_caller_entities_follow_grant_changes_groups_and_bundles() {
    let schema = r#"entity Group;
entity Role;
entity Grant in [Role] = { uses_left: Long };
entity User in [Group, Grant];
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc = { owner: User, level: Long };
type Ctx = { grants: Set<Grant> };
action read, write, erase appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;
    let load = |src: &str| {
        Fixture::new(schema)
            .load(&[("p.cedar", src)])
            .unwrap_or_else(|d| panic!("{d}"))
    };
    let b = load(
        r#"
@id("by-scope") permit (principal in Role::"writer", action == Action::"write", resource);
@id("uses") permit (principal, action == Action::"read", resource) when { context.grants.contains(Grant::"g1") && Grant::"g1".uses_left == 2 };
@id("group") permit (principal in Group::"r", action == Action::"erase", resource);
"#,
    );
    let writer = grant("g1", "writer");
    let req = request("write", &[], 0);
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &req,
            std::slice::from_ref(&writer)
        ))
        .effect,
        Effect::Allow
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &req,
            std::slice::from_ref(&writer)
        ))
        .effect,
        Effect::Allow
    );
    // The same grant id, changed (a new Arc): decided on the new content, also when the old Arc is gone.
    let reader = grant("g1", "reader");
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &req,
            std::slice::from_ref(&reader)
        ))
        .effect,
        Effect::Deny
    );
    drop(writer);
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&req, &[reader]))
            .effect,
        Effect::Deny
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&req, &[])).effect,
        Effect::Deny
    );
    // Attribute changes of a grant are seen.
    let mut limited = (*grant("g1", "writer")).clone();
    limited.max_uses = Some(3);
    limited.uses = 1;
    let read = request("read", &[], 0);
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &read,
            &[Arc::new(limited.clone())]
        ))
        .effect,
        Effect::Allow
    );
    limited.uses = 2;
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&read, &[Arc::new(limited)]))
            .effect,
        Effect::Deny
    );
    // Groups are part of the caller's side.
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &request("erase", &["r"], 0),
            &[]
        ))
        .effect,
        Effect::Allow
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(&request("erase", &[], 0), &[]))
            .effect,
        Effect::Deny
    );
    assert_eq!(
        b.evaluate(&DecisionInput::materialized(
            &request("erase", &["r"], 0),
            &[]
        ))
        .effect,
        Effect::Allow
    );
    // Another bundle (whose schema puts `write` in the action group `writes`) never sees this one's entities.
    let other = self::load(r#"@id("w") permit (principal, action in Action::"writes", resource);"#);
    let g = grant("g2", "reader");
    for _ in 0..2 {
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&req, std::slice::from_ref(&g)))
                .effect,
            Effect::Deny
        );
        assert_eq!(
            other
                .evaluate(&DecisionInput::materialized(&req, std::slice::from_ref(&g)))
                .effect,
            Effect::Allow
        );
    }
}

#[test]
fn a_resource_that_is_also_the_principal_keeps_the_principal_entity() {
    let b = load(
        r#"@id("self") permit (principal, action == Action::"read", resource) when { principal in Group::"r" };"#,
    );
    let mut r = request("read", &["r"], 0);
    r.resource.entity = EntityRef::new("User", "alice");
    r.resource.attrs.clear();
    for _ in 0..2 {
        assert_eq!(
            b.evaluate(&DecisionInput::materialized(&r, &[])).effect,
            Effect::Allow
        );
    }
}

#[test]
fn bad_request_values_deny_with_an_error() {
    let b = load(r#"@id("open") permit (principal, action, resource);"#);
    let mut r = request("read", &[], 0);
    r.context.source_ip = Some("not an ip".into());
    let e = b.evaluate(&DecisionInput::materialized(&r, &[]));
    assert_eq!(e.effect, Effect::Deny);
    assert!(!e.errors.is_empty(), "{e:?}");
}

/// `[cedar] validation = "warn"`: a policy strict validation rejects loads, with the validator's finding as a warning
/// at its file and line; when it errs, the decision is a deny naming it. The default (strict) refuses the bundle.
#[test]
fn validation_warn_loads_what_strict_validation_refuses() {
    let fixture = Fixture::new(SCHEMA);
    let src = "@id(\"bad\")\npermit (principal, action == Action::\"read\", resource)\n  when { resource.level > \"3\" };\n\n\
               @id(\"fine\")\npermit (principal, action == Action::\"read\", resource) when { resource.level > 5 };\n";
    let err = fixture.load(&[("p.cedar", src)]).unwrap_err();
    assert!(err.to_string().contains("policy `bad`"), "{err}");
    let b = CedarBackend::load_with(
        fixture.dir.path(),
        &fixture.dir.path().join("s.cedarschema"),
        &[fixture.dir.path().join("p.cedar")],
        &[],
        &[],
        crate::manifest::CedarValidation::Warn,
    )
    .unwrap_or_else(|d| panic!("{d}"));
    let w = b.warnings();
    assert!(
        w.iter().any(|d| d.file.ends_with("p.cedar")
            && d.line == Some(3)
            && d.message.contains("policy `bad`")
            && d.message.contains("validation = \"warn\"")),
        "{w:?}"
    );
    let e = b.evaluate(&DecisionInput::new(&request("read", &[], 0), &[]));
    assert_eq!(e.effect, Effect::Deny, "{e:?}");
    let erred: Vec<&str> = e.policy_errors.iter().map(|p| p.policy.as_str()).collect();
    assert_eq!(erred, vec!["bad"], "{e:?}");
}
