//! The engine's own entity types under `Jitgate::` (`base.cedarschema`): a schema that declares only its
//! application's types, an application `Role` and `User` that do not collide with the engine's, short names in
//! requests that resolve to the engine's types, the reserved namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use super::*;
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};
use crate::request::{AuthzRequest, Context as ReqContext, Principal, Resource};

/// An application schema without any of jitgate's types: its own `User` and `Role` (a wiki's roles, kept in its
/// entity data), its documents inside a `Jitgate::Service`, its users in the engine's groups and grants.
const APP_SCHEMA: &str = r#"
entity Role;
entity User in [Role, Jitgate::Group, Jitgate::JitGrant] = { title?: String, mentor?: User };
entity Page in [Jitgate::Service] = { author: User };
action read, edit, purge appliesTo { principal: [User], resource: [Page] };
action approve appliesTo { principal: [User], resource: [Jitgate::AccessRequest] };
"#;

const APP_POLICIES: &str = r#"
@id("staff-read")
permit (principal in Jitgate::Group::"staff", action == Action::"read", resource);

@id("app-editors")
permit (principal in Role::"editor", action == Action::"edit", resource);

@id("jit-purge")
permit (principal in Jitgate::JitRole::"wiki-admin", action == Action::"purge", resource in Jitgate::Service::"wiki");

@id("mentors-approve")
permit (principal, action == Action::"approve", resource)
when { resource.requester has mentor && resource.requester.mentor == principal };
"#;

struct App {
    dir: tempfile::TempDir,
}

impl App {
    fn new(schema: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.cedarschema"), schema).unwrap();
        App { dir }
    }

    fn load(&self, policies: &str, entities: Option<&str>) -> Result<CedarBackend, Diagnostics> {
        let p = self.dir.path().join("p.cedar");
        std::fs::write(&p, policies).unwrap();
        let mut data = Vec::new();
        if let Some(e) = entities {
            let f = self.dir.path().join("entities.json");
            std::fs::write(&f, e).unwrap();
            data.push(f);
        }
        CedarBackend::load(
            self.dir.path(),
            &self.dir.path().join("s.cedarschema"),
            &[p],
            &data,
            &[],
        )
    }
}

fn page_request(who: &str, groups: &[&str], action: &str) -> AuthzRequest {
    let mut attrs = serde_json::Map::new();
    attrs.insert("author".into(), r#"User::"zed""#.into());
    AuthzRequest {
        principal: Principal {
            // The short names an issuer gives by default: `User` is the application's (it declares one), the
            // groups' `Group` is the engine's (it does not).
            entity: EntityRef::new("User", who),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            group_type: None,
            attrs: Default::default(),
        },
        action: action.into(),
        resource: Resource {
            entity: EntityRef::new("Page", "home"),
            // `Service` is not declared by the application: it is `Jitgate::Service`.
            parents: vec![EntityRef::new("Service", "wiki")],
            attrs,
        },
        context: ReqContext::at(100),
        digest: None,
    }
}

fn grant(who: &str, role: &str) -> Arc<Grant> {
    Arc::new(Grant {
        id: format!("g-{who}-{role}"),
        principal: EntityRef::new("User", who),
        role: role.into(),
        scope: EntityRef::new("Service", "wiki"),
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

const ENTITIES: &str = r#"[
  {"uid": {"type": "Role", "id": "editor"}, "attrs": {}, "parents": []},
  {"uid": {"type": "User", "id": "ed"}, "attrs": {"title": "editor"}, "parents": [{"type": "Role", "id": "editor"}]},
  {"uid": {"type": "User", "id": "kim"}, "attrs": {"mentor": {"type": "User", "id": "ed"}},
   "parents": [{"type": "Jitgate::Group", "id": "staff"}]}
]"#;

/// A schema that declares none of jitgate's types loads: the engine brings them under `Jitgate::`, the token's
/// groups become `Jitgate::Group`s, the route's `Service` parent the `Jitgate::Service`, and a JIT grant makes the
/// caller a member of a `Jitgate::JitRole`, named as used.
#[test]
fn an_application_schema_needs_none_of_the_engines_types() {
    let b = App::new(APP_SCHEMA)
        .load(APP_POLICIES, Some(ENTITIES))
        .unwrap_or_else(|d| panic!("{d}"));
    assert!(b.warnings().is_empty(), "{:?}", b.warnings());

    let read = page_request("alice", &["staff"], "read");
    let e = b.evaluate(&DecisionInput::new(&read, &[]));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Allow, vec!["staff-read".to_string()]),
        "{e:?}"
    );
    let outsider = page_request("alice", &["guests"], "read");
    assert_eq!(
        b.evaluate(&DecisionInput::new(&outsider, &[])).effect,
        Effect::Deny
    );

    let purge = page_request("alice", &[], "purge");
    assert_eq!(
        b.evaluate(&DecisionInput::new(&purge, &[])).effect,
        Effect::Deny
    );
    let grants = [grant("alice", "wiki-admin")];
    let e = b.evaluate(&DecisionInput::new(&purge, &grants));
    assert_eq!(e.effect, Effect::Allow, "{e:?}");
    assert_eq!(e.policies, vec!["jit-purge".to_string()]);
    assert_eq!(e.roles, vec!["wiki-admin".to_string()], "{e:?}");
}

/// The application's own `Role` is not the engine's: membership in it comes from its entity data, never from a JIT
/// grant of the same name, and a grant for `editor` does not make anyone an app `Role::"editor"`.
#[test]
fn an_application_role_type_does_not_collide_with_the_engines() {
    let b = App::new(APP_SCHEMA)
        .load(APP_POLICIES, Some(ENTITIES))
        .unwrap_or_else(|d| panic!("{d}"));
    let by_data = page_request("ed", &[], "edit");
    let e = b.evaluate(&DecisionInput::new(&by_data, &[]));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Allow, vec!["app-editors".to_string()]),
        "{e:?}"
    );
    assert!(
        e.roles.is_empty(),
        "an application role is no JIT role: {e:?}"
    );
    let by_grant = page_request("alice", &[], "edit");
    let grants = [grant("alice", "editor")];
    assert_eq!(
        b.evaluate(&DecisionInput::new(&by_grant, &grants)).effect,
        Effect::Deny
    );
    // The data's membership in the engine's group counts like a token's group.
    let kim = page_request("kim", &[], "read");
    assert_eq!(
        b.evaluate(&DecisionInput::new(&kim, &[])).effect,
        Effect::Allow
    );
}

/// The engine's default types give way to the application's of the same name: with its own `User`, the engine
/// adds no `Jitgate::User`, and its `Jitgate::AccessRequest`'s `requester: User` is the application's user, so the
/// control plane's `User::"kim"` is typed by the application's schema (its `mentor` attribute from the data).
#[test]
fn default_types_give_way_to_the_applications() {
    let b = App::new(APP_SCHEMA)
        .load(APP_POLICIES, Some(ENTITIES))
        .unwrap_or_else(|d| panic!("{d}"));
    let types: Vec<String> = b.schema().entity_types().map(ToString::to_string).collect();
    assert!(
        types.contains(&"User".to_string()) && !types.contains(&"Jitgate::User".to_string()),
        "{types:?}"
    );
    assert!(
        types.contains(&"Jitgate::AccessRequest".to_string())
            && types.contains(&"Jitgate::Group".to_string()),
        "{types:?}"
    );
    let approve = |who: &str| {
        let mut r = page_request(who, &[], "approve");
        r.resource = Resource {
            entity: EntityRef::new("AccessRequest", "r1"),
            parents: vec![],
            attrs: serde_json::Map::from_iter([
                ("requester".to_string(), r#"User::"kim""#.into()),
                ("role".to_string(), "wiki-admin".into()),
            ]),
        };
        r
    };
    let e = b.evaluate(&DecisionInput::new(&approve("ed"), &[]));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Allow, vec!["mentors-approve".to_string()]),
        "{e:?}"
    );
    assert_eq!(
        b.evaluate(&DecisionInput::new(&approve("ann"), &[])).effect,
        Effect::Deny
    );
}

/// A schema that declares only some of jitgate's types without a namespace is an application schema like any
/// other: its `Group` is its own, so the token's groups are its groups, and grants are still `Jitgate::JitGrant`s.
#[test]
fn declaring_some_of_the_names_makes_them_the_applications() {
    let schema = r#"
        entity Group;
        entity Employee in [Group, Jitgate::JitGrant];
        entity Report in [Jitgate::Service];
        action view appliesTo { principal: [Employee], resource: [Report] };
    "#;
    let policies = r#"
        @id("finance") permit (principal in Group::"finance", action, resource);
        @id("auditors") permit (principal in Jitgate::JitRole::"auditor", action, resource);
    "#;
    let b = App::new(schema)
        .load(policies, None)
        .unwrap_or_else(|d| panic!("{d}"));
    let mut r = page_request("amy", &["finance"], "view");
    r.principal.entity = EntityRef::new("Employee", "amy");
    r.resource.entity = EntityRef::new("Report", "q3");
    r.resource.attrs.clear();
    let e = b.evaluate(&DecisionInput::new(&r, &[]));
    assert_eq!(
        (e.effect, e.policies.clone()),
        (Effect::Allow, vec!["finance".to_string()]),
        "{e:?}"
    );
    r.principal.groups.clear();
    let mut g = (*grant("amy", "auditor")).clone();
    g.principal = EntityRef::new("Employee", "amy");
    let e = b.evaluate(&DecisionInput::new(&r, &[Arc::new(g)]));
    assert_eq!(
        (e.effect, e.roles.clone()),
        (Effect::Allow, vec!["auditor".to_string()]),
        "{e:?}"
    );
}

/// `Jitgate` is the engine's namespace: a bundle cannot declare it; and a policy that names a type neither the
/// application nor the engine declares is refused by validation as before.
#[test]
fn the_engines_namespace_is_reserved() {
    let err = App::new("namespace Jitgate { entity Extra; }\nentity Doc;\naction read appliesTo { principal: [Jitgate::User], resource: [Doc] };\n")
        .load("@id(\"a\") permit (principal, action, resource);\n", None)
        .unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|d| d.file.ends_with("s.cedarschema")
                && d.message.contains("`Jitgate` is reserved")),
        "{err}"
    );
    let err = App::new(APP_SCHEMA)
        .load(
            "@id(\"old\") permit (principal in Grant::\"x\", action, resource);\n",
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("Grant"), "{err}");
}

/// A bundle that declares all of jitgate's types itself (the older form) keeps them: its `Role` is the JIT role.
#[test]
fn a_schema_declaring_the_engines_types_keeps_them() {
    let schema = r#"
        entity Group; entity Role; entity Grant in [Role];
        entity User in [Group, Grant]; entity Workload in [Group, Grant]; entity Anonymous;
        entity Page;
        action purge appliesTo { principal: [User], resource: [Page] };
    "#;
    let b = App::new(schema)
        .load(
            "@id(\"p\") permit (principal in Role::\"wiki-admin\", action, resource);\n",
            None,
        )
        .unwrap_or_else(|d| panic!("{d}"));
    let mut r = page_request("alice", &[], "purge");
    r.resource.parents.clear();
    r.resource.attrs.clear();
    let mut g = (*grant("alice", "wiki-admin")).clone();
    g.scope = EntityRef::new("Page", "home");
    let e = b.evaluate(&DecisionInput::new(&r, &[Arc::new(g)]));
    assert_eq!(
        (e.effect, e.roles.clone()),
        (Effect::Allow, vec!["wiki-admin".to_string()]),
        "{e:?}"
    );
}
