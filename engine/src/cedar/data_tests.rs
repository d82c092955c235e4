#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Entity data and template links in a Cedar bundle: loading (good data, bad data named by file, line and uid,
//! cycles, duplicates, links to missing templates or slots) and decisions that use the data.

use std::path::PathBuf;
use std::sync::Arc;

use super::*;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::{AuthzRequest, Context as ReqContext, Principal, Resource};

const SCHEMA: &str = r#"entity Group;
entity Role;
entity Grant in [Role];
entity Organization = { name: String };
entity Team in [Organization, Team] = { name: String };
entity User in [Group, Grant, Team] = { clearance?: Long, blocked?: Bool, home?: ipaddr };
entity Workload in [Group, Grant];
entity Anonymous;
entity Folder;
entity Doc in [Folder] = { owner: User, level: Long, budget?: decimal };
type Ctx = { time: { epoch: Long, hour: Long, weekday: Long }, break_glass: Bool };
action read, edit, erase appliesTo { principal: [User], resource: [Doc], context: Ctx };
"#;

const DATA: &str = r#"[
  { "uid": { "type": "Organization", "id": "acme" }, "attrs": { "name": "Acme" }, "parents": [] },
  { "uid": { "type": "Team", "id": "platform" }, "attrs": { "name": "Platform" },
    "parents": [{ "type": "Team", "id": "eng" }] },
  { "uid": { "type": "Team", "id": "eng" }, "attrs": { "name": "Engineering" },
    "parents": [{ "type": "Organization", "id": "acme" }] },
  { "uid": { "type": "User", "id": "alice" }, "attrs": { "clearance": 3, "home": { "__extn": { "fn": "ip", "arg": "10.0.0.0/8" } } },
    "parents": [{ "type": "Team", "id": "platform" }] },
  { "uid": { "type": "User", "id": "bob" }, "attrs": { "clearance": 1, "blocked": true }, "parents": [] },
  { "uid": { "type": "Folder", "id": "plans" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Doc", "id": "d1" },
    "attrs": { "owner": { "type": "User", "id": "bob" }, "level": 2, "budget": "12.50" },
    "parents": [{ "type": "Folder", "id": "plans" }] }
]
"#;

struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.cedarschema"), SCHEMA).unwrap();
        Bundle { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(
        &self,
        policies: &str,
        entities: &[(&str, &str)],
        links: &[(&str, &str)],
    ) -> Result<CedarBackend, Diagnostics> {
        let p = self.write("p.cedar", policies);
        let e: Vec<PathBuf> = entities.iter().map(|(n, t)| self.write(n, t)).collect();
        let l: Vec<PathBuf> = links.iter().map(|(n, t)| self.write(n, t)).collect();
        CedarBackend::load(
            self.dir.path(),
            &self.dir.path().join("s.cedarschema"),
            &[p],
            &e,
            &l,
        )
    }
}

fn ask(who: &str, action: &str, doc: &str, parents: &[&str]) -> AuthzRequest {
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", who),
            groups: vec![],
            group_type: None,
            attrs: Default::default(),
        },
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Doc", doc),
            parents: parents
                .iter()
                .map(|p| EntityRef::new("Folder", *p))
                .collect(),
            attrs: serde_json::Map::new(),
        },
        context: ReqContext::at(0),
        digest: None,
    }
}

fn decide(b: &CedarBackend, r: &AuthzRequest) -> (Effect, Vec<String>) {
    let e = b.evaluate(&DecisionInput::new(r, &[]));
    assert!(e.errors.is_empty() || e.effect == Effect::Deny, "{e:?}");
    (e.effect, e.policies)
}

const POLICIES: &str = r#"
@id("org-reads")
permit (principal in Organization::"acme", action == Action::"read", resource)
when { principal has clearance && principal.clearance >= resource.level };

@id("owner-blocked")
forbid (principal, action == Action::"edit", resource)
when { resource.owner has blocked && resource.owner.blocked };

@id("edit")
permit (principal, action == Action::"edit", resource in Folder::"plans")
when { resource has budget && resource.budget.lessThan(decimal("100.00")) };

@id("home-net")
permit (principal, action == Action::"erase", resource)
when { principal has home && ip("10.1.2.3").isInRange(principal.home) };
"#;

#[test]
fn decisions_see_transitive_membership_and_the_resource_owners_attributes() {
    let b = Bundle::new()
        .load(POLICIES, &[("entities.json", DATA)], &[])
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(b.entity_count(), 7);
    // alice is in platform, in eng, in acme: transitive; her clearance comes from the data, the doc's level too.
    assert_eq!(
        decide(&b, &ask("alice", "read", "d1", &[])),
        (Effect::Allow, vec!["org-reads".to_string()])
    );
    // bob is in no team.
    assert_eq!(decide(&b, &ask("bob", "read", "d1", &[])).0, Effect::Deny);
    // The resource's owner (bob, an entity of the data reached through an attribute) is blocked.
    assert_eq!(
        decide(&b, &ask("alice", "edit", "d1", &[])),
        (Effect::Deny, vec!["owner-blocked".to_string()])
    );
    // The extension value of the caller (ip range) is there.
    assert_eq!(
        decide(&b, &ask("alice", "erase", "d1", &[])),
        (Effect::Allow, vec!["home-net".to_string()])
    );
    // A document the data does not know has no owner: the policy errs, the decision is a deny.
    let e = b.evaluate(&DecisionInput::new(
        &ask("alice", "edit", "nowhere", &[]),
        &[],
    ));
    assert_eq!(e.effect, Effect::Deny);
}

#[test]
fn route_parents_and_request_attributes_merge_with_the_data() {
    let b = Bundle::new()
        .load(
            r#"@id("in-plans") permit (principal, action == Action::"read", resource in Folder::"plans")
               when { resource.level == 7 };"#,
            &[("entities.json", DATA)],
            &[],
        )
        .unwrap_or_else(|d| panic!("{d}"));
    // d1 is in plans by the data; the request's own attribute wins on a clash.
    let mut r = ask("alice", "read", "d1", &[]);
    assert_eq!(decide(&b, &r).0, Effect::Deny);
    r.resource.attrs.insert("level".into(), 7.into());
    assert_eq!(decide(&b, &r).0, Effect::Allow);
    // A document the data does not know is in plans by its route's parents.
    let mut r = ask("alice", "read", "d9", &["plans"]);
    r.resource.attrs.insert("level".into(), 7.into());
    r.resource
        .attrs
        .insert("owner".into(), r#"User::"bob""#.into());
    assert_eq!(decide(&b, &r).0, Effect::Allow);
}

#[test]
fn entity_data_that_does_not_fit_the_schema_names_file_line_and_uid() {
    let bad = r#"[
  { "uid": { "type": "Organization", "id": "acme" }, "attrs": { "name": "Acme" }, "parents": [] },
  { "uid": { "type": "User", "id": "alice" }, "attrs": { "clearance": "high" }, "parents": [] }
]"#;
    let err = Bundle::new()
        .load(POLICIES, &[("entities.json", bad)], &[])
        .unwrap_err();
    assert!(!err.0.is_empty(), "{err}");
    let d = &err.0[0];
    assert!(d.file.ends_with("entities.json"), "{d}");
    assert_eq!(d.line, Some(3), "{d}");
    assert!(d.message.contains(r#"User::"alice""#), "{d}");
    assert!(d.message.contains("clearance"), "{d}");

    // An unknown extension function, an unknown entity type, a parent of a type the schema does not allow.
    let bad = r#"[
  { "uid": { "type": "User", "id": "a" }, "attrs": { "home": { "__extn": { "fn": "ipv9", "arg": "x" } } }, "parents": [] },
  { "uid": { "type": "Robot", "id": "r" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Folder", "id": "f" }, "attrs": {}, "parents": [{ "type": "Organization", "id": "acme" }] }
]"#;
    let err = Bundle::new()
        .load(POLICIES, &[("entities.json", bad)], &[])
        .unwrap_err();
    for (line, uid) in [
        (2, r#"User::"a""#),
        (3, r#"Robot::"r""#),
        (4, r#"Folder::"f""#),
    ] {
        assert!(
            err.0
                .iter()
                .any(|d| d.line == Some(line) && d.message.contains(uid)),
            "no error at line {line} naming {uid}: {err}"
        );
    }
    assert!(err.0.iter().all(|d| matches!(d.line, Some(2..=4))), "{err}");

    // Not JSON: the position of the syntax error.
    let err = Bundle::new()
        .load(POLICIES, &[("entities.json", "[\n  {\"uid\": }\n]")], &[])
        .unwrap_err();
    assert_eq!(err.0[0].line, Some(2), "{err}");
}

#[test]
fn a_parent_cycle_and_a_repeated_uid_are_refused() {
    let cycle = r#"[
  { "uid": { "type": "Team", "id": "a" }, "attrs": { "name": "A" }, "parents": [{ "type": "Team", "id": "b" }] },
  { "uid": { "type": "Team", "id": "b" }, "attrs": { "name": "B" }, "parents": [{ "type": "Team", "id": "a" }] }
]"#;
    let err = Bundle::new()
        .load(POLICIES, &[("entities.json", cycle)], &[])
        .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    let d = &err.0[0];
    assert!(d.message.contains("cycle"), "{d}");
    assert!(
        d.message.contains(r#"Team::"a""#) && d.message.contains(r#"Team::"b""#),
        "{d}"
    );
    assert!(d.line.is_some(), "{d}");

    let twice = r#"[
  { "uid": { "type": "Folder", "id": "f" }, "attrs": {}, "parents": [] }
]"#;
    let err = Bundle::new()
        .load(POLICIES, &[("a.json", twice), ("b.json", twice)], &[])
        .unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.0[0].file.ends_with("b.json"), "{err}");
    assert!(err.0[0].message.contains("a.json:2"), "{err}");
}

const TEMPLATE: &str = r#"
@id("viewer")
permit (principal == ?principal, action == Action::"read", resource in ?resource);
"#;

#[test]
fn links_become_policies_named_by_their_id() {
    let links = r#"[
  { "id": "bob-reads-plans", "template": "viewer",
    "values": { "?principal": { "type": "User", "id": "bob" }, "?resource": { "type": "Folder", "id": "plans" } } }
]"#;
    let b = Bundle::new()
        .load(
            TEMPLATE,
            &[("entities.json", DATA)],
            &[("links.json", links)],
        )
        .unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(b.policy_ids(), vec!["bob-reads-plans".to_string()]);
    // d1 is in plans through the data.
    assert_eq!(
        decide(&b, &ask("bob", "read", "d1", &[])),
        (Effect::Allow, vec!["bob-reads-plans".to_string()])
    );
    assert_eq!(decide(&b, &ask("alice", "read", "d1", &[])).0, Effect::Deny);
}

#[test]
fn bad_links_name_file_line_and_link() {
    let links = r#"[
  { "id": "ok", "template": "viewer",
    "values": { "?principal": { "type": "User", "id": "bob" }, "?resource": { "type": "Folder", "id": "plans" } } },
  { "id": "missing", "template": "nope", "values": {} },
  { "id": "slot", "template": "viewer",
    "values": { "?principal": { "type": "User", "id": "bob" }, "?resource": { "type": "Folder", "id": "plans" },
                "?other": { "type": "User", "id": "x" } } },
  { "id": "unfilled", "template": "viewer", "values": { "?principal": { "type": "User", "id": "bob" } } },
  { "id": "wrong-type", "template": "viewer",
    "values": { "?principal": { "type": "Folder", "id": "plans" }, "?resource": { "type": "Folder", "id": "plans" } } }
]"#;
    let err = Bundle::new()
        .load(TEMPLATE, &[], &[("links.json", links)])
        .unwrap_err();
    let got: Vec<(Option<usize>, String)> = err
        .0
        .iter()
        .map(|d| {
            assert!(d.file.ends_with("links.json"), "{d}");
            (d.line, d.message.clone())
        })
        .collect();
    let has = |line: usize, parts: &[&str]| {
        got.iter()
            .any(|(l, m)| *l == Some(line) && parts.iter().all(|p| m.contains(p)))
    };
    assert!(has(4, &["link `missing`", "no template `nope`"]), "{err}");
    assert!(has(5, &["link `slot`", "?other"]), "{err}");
    assert!(has(8, &["link `unfilled`", "?resource"]), "{err}");
    // Validation of the linked policy against the schema, at the link.
    assert!(has(9, &["wrong-type"]), "{err}");
    // The good link is not blamed.
    assert!(got.iter().all(|(l, _)| *l != Some(2)), "{err}");
}

/// The data is built once per load: a thousand requests against a large data set touch only what they reach.
#[test]
fn a_request_takes_only_the_entities_it_reaches() {
    let mut data = String::from("[");
    for i in 0..2000 {
        data.push_str(&format!(
            r#"{{ "uid": {{ "type": "User", "id": "u{i}" }}, "attrs": {{ "clearance": {i} }}, "parents": [{{ "type": "Team", "id": "t{}" }}] }},"#,
            i % 10
        ));
    }
    for t in 0..10 {
        data.push_str(&format!(
            r#"{{ "uid": {{ "type": "Team", "id": "t{t}" }}, "attrs": {{ "name": "T" }}, "parents": [{{ "type": "Organization", "id": "acme" }}] }},"#
        ));
    }
    data.push_str(r#"{ "uid": { "type": "Organization", "id": "acme" }, "attrs": { "name": "Acme" }, "parents": [] },"#);
    data.push_str(r#"{ "uid": { "type": "Doc", "id": "d1" }, "attrs": { "owner": { "type": "User", "id": "u7" }, "level": 2 }, "parents": [] }]"#);
    let b = Bundle::new()
        .load(POLICIES, &[("entities.json", &data)], &[])
        .unwrap_or_else(|d| panic!("{d}"));
    let r = ask("u5", "read", "d1", &[]);
    let idx = b.by_action.get("read").unwrap();
    let (_, entities) = b.entities.build(&DecisionInput::new(&r, &[]), idx).unwrap();
    let uids: Vec<String> = entities.iter().map(|e| e.uid().to_string()).collect();
    // The principal, the resource, its owner (through an attribute), the action, the organization (a literal of
    // a policy): not the other 2,000 users.
    assert!(uids.len() < 10, "{uids:?}");
    assert!(uids.contains(&r#"User::"u7""#.to_string()), "{uids:?}");
    assert_eq!(decide(&b, &r).0, Effect::Allow);
    assert_eq!(decide(&b, &ask("u1", "read", "d1", &[])).0, Effect::Deny);
}

#[test]
fn grants_and_groups_still_join_the_data() {
    let b = Bundle::new()
        .load(
            r#"@id("erase") permit (principal in Role::"admin", action == Action::"erase", resource)
               when { principal in Organization::"acme" };"#,
            &[("entities.json", DATA)],
            &[],
        )
        .unwrap_or_else(|d| panic!("{d}"));
    let g = Arc::new(Grant {
        id: "g1".into(),
        principal: EntityRef::new("User", "alice"),
        role: "admin".into(),
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
    });
    let r = ask("alice", "erase", "d1", &[]);
    let e = b.evaluate(&DecisionInput::new(&r, std::slice::from_ref(&g)));
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
    assert_eq!(e.roles, vec!["admin".to_string()]);
    // bob has the grant's role but is in no team of acme.
    let mut r = ask("bob", "erase", "d1", &[]);
    r.principal.groups = vec!["x".into()];
    let g2 = Arc::new(Grant {
        principal: EntityRef::new("User", "bob"),
        ..(*g).clone()
    });
    assert_eq!(
        b.evaluate(&DecisionInput::new(&r, &[g2])).effect,
        Effect::Deny
    );
}

/// A resource the data holds and a policy names as a literal: the caller's side carries the data's own entity, and the
/// request adds nothing (the data's entity serves), adds a route parent the data lacks, or adds attributes (both
/// built and merged): each decides on what it says.
#[test]
fn a_resource_named_by_a_policy_and_held_by_the_data_decides_with_what_the_request_adds() {
    const NAMED: &str = r#"
@id("d1-level")
permit (principal, action == Action::"read", resource == Doc::"d1")
when { resource.level >= 2 && resource in Folder::"plans" };

@id("archived")
forbid (principal, action == Action::"read", resource in Folder::"archive");
"#;
    let b = Bundle::new()
        .load(
            NAMED,
            &[(
                "entities.json",
                &DATA.replace(
                    r#"{ "uid": { "type": "Folder", "id": "plans" }, "attrs": {}, "parents": [] },"#,
                    r#"{ "uid": { "type": "Folder", "id": "plans" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "Folder", "id": "archive" }, "attrs": {}, "parents": [] },"#,
                ),
            )],
            &[],
        )
        .unwrap_or_else(|d| panic!("{d}"));
    // As the data says: level 2, in plans (also when the route names plans).
    for parents in [&[][..], &["plans"][..]] {
        assert_eq!(
            decide(&b, &ask("alice", "read", "d1", parents)),
            (Effect::Allow, vec!["d1-level".to_string()]),
            "{parents:?}"
        );
    }
    // The route puts it in the archive too: built with that parent, and the forbid holds.
    assert_eq!(
        decide(&b, &ask("alice", "read", "d1", &["archive"])),
        (Effect::Deny, vec!["archived".to_string()])
    );
    // The request's own level wins over the data's.
    let mut low = ask("alice", "read", "d1", &[]);
    low.resource
        .attrs
        .insert("level".into(), serde_json::json!(1));
    assert_eq!(decide(&b, &low).0, Effect::Deny);
    // The same caller again (its side cached on this thread), back to the first resource: the set built for the
    // archive request is not reused for it, nor the plain one for the archive.
    for _ in 0..2 {
        assert_eq!(
            decide(&b, &ask("alice", "read", "d1", &[])).0,
            Effect::Allow
        );
        assert_eq!(
            decide(&b, &ask("alice", "read", "d1", &["archive"])).0,
            Effect::Deny
        );
    }
}

/// `[cedar] validation = "warn"`: entity data the schema refuses (a type it does not declare, a parent type it does
/// not allow) is read as `cedar authorize` without `--schema` reads it, with a warning naming file, line and uid per
/// entity, and decisions see it; strict refuses it, and data that is broken in itself is refused either way.
#[test]
fn validation_warn_reads_entity_data_the_schema_refuses_without_the_schema() {
    let data = r#"[
  { "uid": { "type": "Organization", "id": "acme" }, "attrs": { "name": "Acme" }, "parents": [] },
  { "uid": { "type": "Club", "id": "chess" }, "attrs": {}, "parents": [{ "type": "Organization", "id": "acme" }] },
  { "uid": { "type": "User", "id": "alice" }, "attrs": { "clearance": 3 }, "parents": [{ "type": "Club", "id": "chess" }] },
  { "uid": { "type": "Doc", "id": "d1" },
    "attrs": { "owner": { "__entity": { "type": "User", "id": "bob" } }, "level": 2 }, "parents": [] }
]"#;
    let bundle = Bundle::new();
    let err = bundle
        .load(POLICIES, &[("entities.json", data)], &[])
        .unwrap_err();
    assert!(
        err.0.iter().any(|d| d.message.contains(r#"Club::"chess""#)),
        "{err}"
    );

    let load_warn = |text: &str| {
        let p = bundle.write("p.cedar", POLICIES);
        let e = bundle.write("entities.json", text);
        CedarBackend::load_with(
            bundle.dir.path(),
            &bundle.dir.path().join("s.cedarschema"),
            &[p],
            &[e],
            &[],
            crate::manifest::CedarValidation::Warn,
        )
    };
    let b = load_warn(data).unwrap_or_else(|d| panic!("{d}"));
    let w = b.warnings();
    for (line, uid) in [(3, r#"Club::"chess""#), (4, r#"User::"alice""#)] {
        assert!(
            w.iter().any(|d| d.file.ends_with("entities.json")
                && d.line == Some(line)
                && d.message.contains(uid)
                && d.message.contains("read without the schema")),
            "no warning at line {line} naming {uid}: {w:?}"
        );
    }
    assert_eq!(b.entity_count(), 4);
    // alice is in the organization through the club the schema does not know, as Cedar without a schema sees it.
    let (effect, policies) = decide(&b, &ask("alice", "read", "d1", &[]));
    assert_eq!(
        (effect, policies),
        (Effect::Allow, vec!["org-reads".to_string()])
    );

    // Broken in itself: an entity without an id, a parent cycle; refused under "warn" too.
    let no_id = r#"[
  { "uid": { "type": "Club", "id": "chess" }, "attrs": {}, "parents": [] },
  { "uid": { "type": "User" }, "attrs": {}, "parents": [] }
]"#;
    let err = load_warn(no_id).unwrap_err();
    assert!(err.0.iter().any(|d| d.line == Some(3)), "{err}");
    let cycle = r#"[
  { "uid": { "type": "Club", "id": "a" }, "attrs": {}, "parents": [{ "type": "Club", "id": "b" }] },
  { "uid": { "type": "Club", "id": "b" }, "attrs": {}, "parents": [{ "type": "Club", "id": "a" }] }
]"#;
    let err = load_warn(cycle).unwrap_err();
    assert!(err.0.iter().any(|d| d.message.contains("cycle")), "{err}");
}
