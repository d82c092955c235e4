#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The caller as a full entity (issue 19, item 3) and schema-directed context (item 5): principal attributes from
//! token claims typed by the schema and merged with the entity data, groups of a configurable type whose hierarchy
//! in the data is transitive, and entity references and extension values anywhere in the context.

use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::entity::EntityRef;
use crate::request::{AuthzRequest, Context as ReqContext, Principal, Resource};

const SCHEMA: &str = r#"entity Group;
entity Role;
entity Grant in [Role];
entity Organization;
entity Team in [Organization, Team];
entity User in [Group, Grant, Team] = {
  job?: String, level?: Long, clearance?: Long, manager?: User,
  profile?: { home: ipaddr, since?: datetime, shift?: duration, budget?: decimal },
};
entity Workload in [Group, Grant];
entity Anonymous;
entity Doc;
type Claims = { tier?: Long, office?: ipaddr, teams?: Set<Team> };
type Ctx = {
  time: { epoch: Long, hour: Long, weekday: Long }, break_glass: Bool, claims: Claims,
  who?: User, src?: ipaddr, nested?: { owners?: Set<User>, window?: { from: datetime, length: duration } },
};
action read, edit, erase, audit, ctxcheck appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;

const DATA: &str = r#"[
  { "uid": { "type": "Organization", "id": "acme" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Team", "id": "eng" }, "attrs": {}, "parents": [{ "type": "Organization", "id": "acme" }] },
  { "uid": { "type": "Team", "id": "platform" }, "attrs": {}, "parents": [{ "type": "Team", "id": "eng" }] },
  { "uid": { "type": "User", "id": "alice" }, "attrs": { "clearance": 3, "job": "intern" }, "parents": [] },
  { "uid": { "type": "User", "id": "bob" }, "attrs": { "clearance": 9 }, "parents": [] }
]"#;

const POLICIES: &str = r#"
@id("engineers-of-acme-read")
permit (principal in Organization::"acme", action == Action::"read", resource)
when { principal has job && principal.job == "engineer" };

@id("level-above-clearance-edits")
permit (principal, action == Action::"edit", resource)
when { principal has level && principal has clearance && principal.level > principal.clearance };

@id("bobs-reports-audit")
permit (principal, action == Action::"audit", resource)
when {
  principal has manager && principal.manager == User::"bob" &&
  principal.manager has clearance && principal.manager.clearance == 9 &&
  principal has profile && ip("10.1.2.3").isInRange(principal.profile.home) &&
  principal.profile has shift && principal.profile.shift > duration("1h")
};

@id("alice-from-the-inside")
permit (principal, action == Action::"erase", resource)
when { context has who && context.who == User::"alice" && context has src && context.src.isInRange(ip("10.0.0.0/8")) };

@id("context-everywhere")
permit (principal, action == Action::"ctxcheck", resource)
when {
  context has nested && context.nested has owners && context.nested.owners.contains(User::"alice") &&
  context.nested has window && context.nested.window.from.offset(context.nested.window.length) > datetime("2026-01-01") &&
  context.claims has tier && context.claims.tier >= 2 &&
  context.claims has office && context.claims.office.isLoopback() &&
  context.claims has teams && context.claims.teams.contains(Team::"platform")
};
"#;

fn load() -> CedarBackend {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let schema = write("s.cedarschema", SCHEMA);
    let policies = write("p.cedar", POLICIES);
    let data: PathBuf = write("entities.json", DATA);
    CedarBackend::load(dir.path(), &schema, &[policies], &[data], &[])
        .unwrap_or_else(|d| panic!("{d}"))
}

fn ask(who: &str, action: &str) -> AuthzRequest {
    AuthzRequest {
        principal: Principal::new(EntityRef::new("User", who), Vec::new()),
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Doc", "d1"),
            parents: Vec::new(),
            attrs: serde_json::Map::new(),
        },
        context: ReqContext::at(0),
        digest: None,
    }
}

fn attrs(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().unwrap().clone()
}

fn decide(b: &CedarBackend, r: &AuthzRequest) -> Evaluation {
    b.evaluate(&DecisionInput::new(r, &[]))
}

#[test]
fn claims_become_typed_attributes_and_groups_of_a_configured_type_reach_the_organization() {
    let b = load();
    let mut r = ask("carol", "read");
    r.principal.groups = vec!["platform".into()];
    r.principal.group_type = Some("Team".into());
    r.principal.attrs = attrs(json!({ "job": "engineer" }));
    let e = decide(&b, &r);
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
    assert_eq!(e.policies, ["engineers-of-acme-read"]);
    // The same caller with another job claim: not served from the cached caller side of the first.
    r.principal.attrs = attrs(json!({ "job": "manager" }));
    assert_eq!(decide(&b, &r).effect, Effect::Deny);
    // The same groups as flat `Group`s reach no organization.
    r.principal.attrs = attrs(json!({ "job": "engineer" }));
    r.principal.group_type = None;
    let e = decide(&b, &r);
    assert_eq!((e.effect, e.errors.len()), (Effect::Deny, 0), "{e:?}");
    // The data's job for alice is overridden by her token's.
    let mut r = ask("alice", "read");
    r.principal.groups = vec!["eng".into()];
    r.principal.group_type = Some("Team".into());
    assert_eq!(decide(&b, &r).effect, Effect::Deny, "the data says intern");
    r.principal.attrs = attrs(json!({ "job": "engineer" }));
    assert_eq!(decide(&b, &r).effect, Effect::Allow);
}

#[test]
fn token_attributes_merge_with_the_data_and_reach_entities_it_names() {
    let b = load();
    // clearance 3 from the data, level from the token.
    let mut r = ask("alice", "edit");
    r.principal.attrs = attrs(json!({ "level": 5 }));
    assert_eq!(decide(&b, &r).effect, Effect::Allow);
    r.principal.attrs = attrs(json!({ "level": 2 }));
    assert_eq!(decide(&b, &r).effect, Effect::Deny);
    // An entity reference by plain id (bob's clearance comes from the data), a record with extension values.
    let mut r = ask("carol", "audit");
    r.principal.attrs = attrs(json!({
        "manager": "bob",
        "profile": { "home": "10.0.0.0/8", "since": "2026-01-02", "shift": "8h", "budget": "12.50" }
    }));
    let e = decide(&b, &r);
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
    r.principal.attrs = attrs(json!({
        "manager": "User::\"alice\"", "profile": { "home": "10.0.0.0/8", "shift": "8h" }
    }));
    assert_eq!(decide(&b, &r).effect, Effect::Deny);
    // A claim that does not fit the declared type: a deny, with an error that says where.
    let mut r = ask("alice", "edit");
    r.principal.attrs = attrs(json!({ "level": "high" }));
    let e = decide(&b, &r);
    assert_eq!(e.effect, Effect::Deny);
    assert!(
        e.errors
            .iter()
            .any(|m| m.contains("principal.level: expected a Long")),
        "{e:?}"
    );
    r.principal.attrs = attrs(json!({ "manager": "Team::\"eng\"" }));
    let e = decide(&b, &r);
    assert!(
        e.errors
            .iter()
            .any(|m| m.contains("principal.manager: expected an entity of type User")),
        "{e:?}"
    );
}

#[test]
fn entity_references_and_extension_values_anywhere_in_the_context() {
    let b = load();
    let mut r = ask("bob", "erase");
    r.context.attrs = attrs(json!({ "who": "User::\"alice\"", "src": "10.9.8.7" }));
    assert_eq!(decide(&b, &r).effect, Effect::Allow, "{:?}", decide(&b, &r));
    r.context.attrs = attrs(
        json!({ "who": { "__entity": { "type": "User", "id": "alice" } }, "src": "192.168.1.1" }),
    );
    assert_eq!(decide(&b, &r).effect, Effect::Deny);
    r.context.attrs =
        attrs(json!({ "who": "alice", "src": { "__extn": { "fn": "ip", "arg": "10.0.0.1" } } }));
    assert_eq!(decide(&b, &r).effect, Effect::Allow);

    let mut r = ask("bob", "ctxcheck");
    r.context.attrs = attrs(json!({
        "nested": { "owners": ["bob", "User::\"alice\""], "window": { "from": "2025-12-31", "length": "2d" } }
    }));
    r.context.claims = attrs(json!({ "tier": 2, "office": "127.0.0.1", "teams": "platform" }));
    let e = decide(&b, &r);
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
    r.context.claims = attrs(json!({ "tier": 2, "office": "127.0.0.1", "teams": ["eng"] }));
    assert_eq!(decide(&b, &r).effect, Effect::Deny);
    // A bad value names its place in the context.
    r.context.claims = attrs(json!({ "tier": 2, "office": "not an address" }));
    let e = decide(&b, &r);
    assert_eq!(e.effect, Effect::Deny);
    assert!(
        e.errors
            .iter()
            .any(|m| m.starts_with("context.claims.office: ")),
        "{e:?}"
    );
    r.context.claims = attrs(json!({}));
    r.context.attrs = attrs(json!({ "nested": { "owners": ["alice", 7] } }));
    let e = decide(&b, &r);
    assert!(
        e.errors
            .iter()
            .any(|m| m.starts_with("context.nested.owners[1]: expected an entity of type User")),
        "{e:?}"
    );
}
