//! The shipped Cedar quickstart bundle (policies/quickstart-cedar) decides representative requests as
//! policies/QUICKSTART.md says: requests are built through the bundle's own routes and decided by `Bundle::decide`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use jitgate_engine::clock::parse_rfc3339;
use jitgate_engine::request::request_digest;
use jitgate_engine::{
    AuthzRequest, Bundle, Context, Effect, EntityRef, Grant, GrantStatus, Principal, Resource,
};

fn bundle() -> Bundle {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar");
    Bundle::load(&dir).unwrap_or_else(|d| panic!("quickstart-cedar does not load:\n{d}"))
}

/// Monday 2026-11-23, 10:00 UTC: business hours.
fn monday_10() -> i64 {
    parse_rfc3339("2026-11-23T10:00:00Z").unwrap()
}

#[derive(Clone)]
struct Call<'a> {
    who: EntityRef,
    groups: &'a [&'a str],
    method: &'a str,
    path: &'a str,
    time: i64,
    ip: &'a str,
}

fn user(name: &str, groups: &'static [&'static str]) -> Call<'static> {
    Call {
        who: EntityRef::new("User", name),
        groups,
        method: "GET",
        path: "/",
        time: monday_10(),
        ip: "10.1.2.3",
    }
}

impl<'a> Call<'a> {
    fn at(mut self, method: &'a str, path: &'a str) -> Self {
        self.method = method;
        self.path = path;
        self
    }

    fn request(&self, b: &Bundle) -> AuthzRequest {
        let m = b
            .routes
            .find(self.method, None, self.path)
            .unwrap_or_else(|| panic!("no route for {} {}", self.method, self.path));
        let mut context = Context::at(self.time);
        context.source_ip = Some(self.ip.to_string());
        context.method = Some(self.method.to_string());
        context.path = Some(self.path.to_string());
        let mut request = AuthzRequest {
            principal: Principal {
                entity: self.who.clone(),
                groups: self.groups.iter().map(|g| g.to_string()).collect(),
                group_type: None,
                attrs: Default::default(),
            },
            action: m.route.action.clone(),
            resource: m.resource,
            context,
            digest: None,
        };
        request.digest = Some(request_digest(&request, &[], b""));
        request
    }
}

fn grant(id: &str, who: &str, role: &str, scope: &str) -> Arc<Grant> {
    let now = monday_10();
    Arc::new(Grant {
        id: id.into(),
        principal: EntityRef::new("User", who),
        role: role.into(),
        scope: scope.parse().unwrap(),
        starts_at: now - 60,
        expires_at: now + 1800,
        max_uses: None,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec!["carol".into()],
        reason: "INC-1".into(),
        break_glass: role == "break-glass",
        request_digest: None,
        request_id: None,
    })
}

#[test]
fn loads_with_every_policy_of_the_contract() {
    let b = bundle();
    let mut ids = b.backend().policy_ids();
    ids.sort();
    let mut expected = vec![
        "public-health",
        "engineers-read",
        "ci-read-payments",
        "payments-writer",
        "refund-once",
        "db-admin",
        "break-glass",
        "refunds-business-hours",
        "db-writes-internal-only",
        "contractors-no-databases",
        "no-payment-deletes",
        "hold-database-delete",
        "request-access",
        "break-glass-self",
        "break-glass-sre-only",
        "approve-payments",
        "approve-db",
        "approve-held",
        "no-self-approval",
        "auto-approve-short-refunds",
        "revoke-approvers",
        "drop-own",
        "list-requests",
        "read-decisions",
        "operate-sre",
    ];
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(b.routes.len(), 11);
    assert_eq!(b.roles.len(), 4);
}

#[test]
fn health_is_public() {
    let b = bundle();
    let anon = Call {
        who: EntityRef::new("Anonymous", "anonymous"),
        groups: &[],
        ..user("x", &[])
    }
    .at("GET", "/healthz");
    let d = b.decide(&anon.request(&b), &[]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.policies, vec!["public-health"]);
}

#[test]
fn standing_read_without_grants() {
    let b = bundle();
    let d = b.decide(
        &user("alice", &["engineering"])
            .at("GET", "/payments/p-1")
            .request(&b),
        &[],
    );
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.policies, vec!["engineers-read"]);
    assert!(d.grants_used.is_empty());
    // Someone outside engineering gets nothing.
    let d = b.decide(
        &user("eve", &["contractors"])
            .at("GET", "/payments/p-1")
            .request(&b),
        &[],
    );
    assert_eq!(d.effect, Effect::Deny);
    assert!(d.policies.is_empty() && d.errors.is_empty(), "{d:?}");
}

#[test]
fn write_needs_a_grant_and_names_it() {
    let b = bundle();
    let call = user("alice", &["engineering"]).at("POST", "/payments");
    let d = b.decide(&call.request(&b), &[]);
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    let g = grant("g-pw", "alice", "payments-writer", r#"Service::"payments""#);
    let d = b.decide(&call.request(&b), &[g]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.policies, vec!["payments-writer"]);
    assert_eq!(d.grants_used, vec!["g-pw"]);
    assert!(!d.break_glass);
}

#[test]
fn a_grant_for_another_service_opens_nothing_here() {
    let b = bundle();
    let g = grant("g-pw", "alice", "payments-writer", r#"Service::"billing""#);
    let d = b.decide(
        &user("alice", &["engineering"])
            .at("POST", "/payments")
            .request(&b),
        &[g],
    );
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert!(d.grants_used.is_empty());
}

#[test]
fn revoked_and_expired_grants_give_nothing() {
    let b = bundle();
    let call = user("alice", &["engineering"]).at("POST", "/payments");
    let mut revoked = (*grant("g-r", "alice", "payments-writer", r#"Service::"payments""#)).clone();
    revoked.status = GrantStatus::Revoked;
    let mut expired = (*grant("g-e", "alice", "payments-writer", r#"Service::"payments""#)).clone();
    expired.expires_at = monday_10();
    let d = b.decide(&call.request(&b), &[Arc::new(revoked), Arc::new(expired)]);
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
}

#[test]
fn refunds_only_in_business_hours() {
    let b = bundle();
    let g = grant("g-pw", "alice", "payments-writer", r#"Service::"payments""#);
    let day = user("alice", &[]).at("POST", "/payments/p-1/refund");
    let d = b.decide(&day.request(&b), std::slice::from_ref(&g));
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    let mut night = user("alice", &[]).at("POST", "/payments/p-1/refund");
    night.time = parse_rfc3339("2026-11-23T18:00:00Z").unwrap();
    let mut g_night = (*g).clone();
    g_night.starts_at = night.time - 60;
    g_night.expires_at = night.time + 60;
    let d = b.decide(&night.request(&b), &[Arc::new(g_night)]);
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert_eq!(d.policies, vec!["refunds-business-hours"]);
}

#[test]
fn contractors_never_touch_databases() {
    let b = bundle();
    let g = grant("g-db", "mallory", "db-admin", r#"Service::"billing""#);
    let d = b.decide(
        &user("mallory", &["contractors"])
            .at("POST", "/databases/prod/query")
            .request(&b),
        &[g],
    );
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert_eq!(d.policies, vec!["contractors-no-databases"]);
    let bg = grant("g-bg", "mallory", "break-glass", r#"Service::"billing""#);
    let d = b.decide(
        &user("mallory", &["contractors"])
            .at("GET", "/databases/prod")
            .request(&b),
        &[bg],
    );
    assert_eq!(
        d.effect,
        Effect::Deny,
        "break glass does not override: {d:?}"
    );
}

#[test]
fn db_writes_only_from_internal_addresses() {
    let b = bundle();
    let g = grant("g-db", "dave", "db-admin", r#"Database::"prod""#);
    let mut outside = user("dave", &["dba"]).at("POST", "/databases/prod/query");
    outside.ip = "203.0.113.9";
    let d = b.decide(&outside.request(&b), std::slice::from_ref(&g));
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert_eq!(d.policies, vec!["db-writes-internal-only"]);
    let inside = user("dave", &["dba"]).at("POST", "/databases/prod/query");
    let d = b.decide(&inside.request(&b), &[g]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.grants_used, vec!["g-db"]);
}

#[test]
fn database_delete_is_held_until_that_request_is_approved() {
    let b = bundle();
    let g = grant("g-db", "dave", "db-admin", r#"Service::"billing""#);
    let mut call = user("dave", &["dba"]).at("DELETE", "/databases/prod");
    call.ip = "127.0.0.1";
    let req = call.request(&b);
    let d = b.decide(&req, std::slice::from_ref(&g));
    assert_eq!(d.effect, Effect::Hold, "{d:?}");
    assert_eq!(d.policies, vec!["hold-database-delete"]);
    assert_eq!(d.grants_used, vec!["g-db"]);

    // An approval bound to this exact request turns the hold into an allow, naming both grants.
    let mut approval = (*grant("g-hold", "dave", "hold", r#"Database::"prod""#)).clone();
    approval.request_digest = req.digest.clone();
    approval.max_uses = Some(1);
    let d = b.decide(&req, &[g.clone(), Arc::new(approval.clone())]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.grants_used, vec!["g-db", "g-hold"]);

    // The approval does not match a different request.
    let mut other = call.clone();
    other.path = "/databases/other";
    approval.request_digest = other.request(&b).digest;
    let d = b.decide(&req, &[g, Arc::new(approval)]);
    assert_eq!(d.effect, Effect::Hold, "{d:?}");
}

#[test]
fn break_glass_opens_everything_loudly() {
    let b = bundle();
    let bg = grant("g-bg", "sam", "break-glass", r#"Service::"billing""#);
    let mut call = user("sam", &["sre"]).at("DELETE", "/databases/prod");
    call.ip = "203.0.113.9";
    let d = b.decide(&call.request(&b), &[bg]);
    assert_eq!(
        d.effect,
        Effect::Allow,
        "no hold, no network rule under break glass: {d:?}"
    );
    assert_eq!(d.policies, vec!["break-glass"]);
    assert_eq!(d.grants_used, vec!["g-bg"]);
    assert!(d.break_glass);
    let bg = grant("g-bg2", "sam", "break-glass", r#"Service::"payments""#);
    let d = b.decide(
        &user("sam", &["sre"])
            .at("DELETE", "/payments/p-1")
            .request(&b),
        &[bg],
    );
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    let d = b.decide(
        &user("sam", &["sre"])
            .at("DELETE", "/payments/p-1")
            .request(&b),
        &[],
    );
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.policies, vec!["no-payment-deletes"]);
}

fn access_request(requester: &str, role: &str, duration: i64, ticket: &str) -> Resource {
    let mut attrs = serde_json::Map::new();
    attrs.insert("requester".into(), format!(r#"User::"{requester}""#).into());
    attrs.insert("role".into(), role.into());
    attrs.insert("scope".into(), r#"Service::"payments""#.into());
    attrs.insert("duration".into(), duration.into());
    attrs.insert("reason".into(), "INC-1".into());
    attrs.insert("ticket".into(), ticket.into());
    Resource {
        entity: EntityRef::new("AccessRequest", "r-1"),
        parents: vec![],
        attrs,
    }
}

fn control(who: &str, groups: &[&str], action: &str, resource: Resource) -> AuthzRequest {
    AuthzRequest {
        principal: Principal {
            entity: EntityRef::new("User", who),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            group_type: None,
            attrs: Default::default(),
        },
        action: action.into(),
        resource,
        context: Context::at(monday_10()),
        digest: None,
    }
}

#[test]
fn control_plane_separation_of_duties() {
    let b = bundle();
    let req = access_request("bob", "payments-writer", 3600, "");
    let d = b.decide(
        &control("carol", &["payments-approvers"], "approve", req.clone()),
        &[],
    );
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    assert_eq!(d.policies, vec!["approve-payments"]);
    // The requester (an entity reference, converted from text) cannot approve their own request.
    let d = b.decide(
        &control("bob", &["payments-approvers"], "approve", req.clone()),
        &[],
    );
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    assert_eq!(d.policies, vec!["no-self-approval"]);
    // Only SREs request break glass.
    let bg = access_request("bob", "break-glass", 900, "");
    let d = b.decide(
        &control("bob", &["engineering"], "requestAccess", bg.clone()),
        &[],
    );
    assert_eq!(d.policies, vec!["break-glass-sre-only"]);
    let d = b.decide(&control("sam", &["sre"], "requestAccess", bg), &[]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    // Auto-approval needs a ticket; `scope` stays a string (declared String) and drop-own matches the requester.
    let d = b.decide(
        &control(
            "bob",
            &[],
            "autoApprove",
            access_request("bob", "refund-once", 900, "T-1"),
        ),
        &[],
    );
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    let d = b.decide(
        &control(
            "bob",
            &[],
            "autoApprove",
            access_request("bob", "refund-once", 900, ""),
        ),
        &[],
    );
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
    let d = b.decide(&control("bob", &[], "drop", req.clone()), &[]);
    assert_eq!(d.effect, Effect::Allow, "{d:?}");
    let d = b.decide(&control("eve", &[], "drop", req), &[]);
    assert_eq!(d.effect, Effect::Deny, "{d:?}");
}
