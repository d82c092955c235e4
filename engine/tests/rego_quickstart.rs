//! The real quickstart-rego bundle, decided end to end through `Bundle::decide` (routes, grant filtering, the Rego
//! backend, grant selection and request-bound approvals), plus its own Rego unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use jitgate_engine::decision::Effect;
use jitgate_engine::rego::RegoBackend;
use jitgate_engine::request::request_digest;
use jitgate_engine::{
    AuthzRequest, Bundle, Context, Decision, EntityRef, Grant, GrantStatus, Principal,
};

/// Monday 2024-01-01T12:00:00Z.
const NOON: i64 = 1_704_110_400;

fn bundle_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-rego")
}

fn bundle() -> Bundle {
    Bundle::load(&bundle_dir()).unwrap_or_else(|d| panic!("quickstart-rego does not load:\n{d}"))
}

struct Req {
    who: EntityRef,
    groups: Vec<String>,
    method: &'static str,
    path: &'static str,
    time: i64,
    ip: &'static str,
}

fn user(name: &str, groups: &[&str]) -> Req {
    Req {
        who: EntityRef::new("User", name),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        method: "GET",
        path: "/",
        time: NOON,
        ip: "10.0.0.7",
    }
}

impl Req {
    fn to(mut self, method: &'static str, path: &'static str) -> Self {
        self.method = method;
        self.path = path;
        self
    }
    fn at(mut self, time: i64) -> Self {
        self.time = time;
        self
    }
    fn via_ip(mut self, ip: &'static str) -> Self {
        self.ip = ip;
        self
    }

    /// Builds the request the way the proxy does: through the bundle's route table.
    fn build(&self, b: &Bundle) -> AuthzRequest {
        let m = b
            .routes
            .find(self.method, None, self.path)
            .unwrap_or_else(|| panic!("no route for {} {}", self.method, self.path));
        let mut context = Context::at(self.time);
        context.source_ip = Some(self.ip.into());
        context.method = Some(self.method.into());
        context.path = Some(self.path.into());
        let mut request = AuthzRequest {
            principal: Principal {
                entity: self.who.clone(),
                groups: self.groups.clone(),
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

    fn decide(&self, b: &Bundle, grants: &[Grant]) -> Decision {
        let grants: Vec<Arc<Grant>> = grants.iter().cloned().map(Arc::new).collect();
        b.decide(&self.build(b), &grants)
    }
}

fn grant(id: &str, who: &str, role: &str, scope: &str) -> Grant {
    Grant {
        id: id.into(),
        principal: EntityRef::new("User", who),
        role: role.into(),
        scope: scope.parse().unwrap(),
        starts_at: NOON - 600,
        expires_at: NOON + 1_800,
        max_uses: None,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec!["User::\"bob\"".into()],
        reason: "incident 42".into(),
        break_glass: role == "break-glass",
        request_digest: None,
        request_id: None,
    }
}

const PAYMENTS: &str = r#"Service::"payments""#;
const BILLING: &str = r#"Service::"billing""#;

fn assert_decision(d: &Decision, effect: Effect, policies: &[&str], grants_used: &[&str]) {
    assert!(d.errors.is_empty(), "unexpected errors: {d:?}");
    assert_eq!(d.effect, effect, "{d:?}");
    assert_eq!(d.policies, policies, "{d:?}");
    assert_eq!(d.grants_used, grants_used, "{d:?}");
}

#[test]
fn public_health_and_standing_reads() {
    let b = bundle();
    let anon = Req {
        who: EntityRef::new("Anonymous", "anonymous"),
        ..user("x", &[])
    }
    .to("GET", "/healthz");
    assert_decision(
        &anon.decide(&b, &[]),
        Effect::Allow,
        &["public-health"],
        &[],
    );
    let d = user("alice", &["engineering"])
        .to("GET", "/payments/p1")
        .decide(&b, &[]);
    assert_decision(&d, Effect::Allow, &["engineers-read"], &[]);
    let d = user("ci-bot", &["ci"])
        .to("GET", "/databases/prod")
        .decide(&b, &[]);
    assert_decision(&d, Effect::Deny, &[], &[]);
}

#[test]
fn write_needs_an_active_in_scope_grant() {
    let b = bundle();
    let alice = || user("alice", &["engineering"]).to("POST", "/payments");
    assert_decision(&alice().decide(&b, &[]), Effect::Deny, &[], &[]);

    let g = grant("g-pw", "alice", "payments-writer", PAYMENTS);
    assert_decision(
        &alice().decide(&b, std::slice::from_ref(&g)),
        Effect::Allow,
        &["payments-writer"],
        &["g-pw"],
    );

    // A grant scoped to billing does not open payments.
    let billing = grant("g-billing", "alice", "payments-writer", BILLING);
    assert_decision(&alice().decide(&b, &[billing]), Effect::Deny, &[], &[]);

    // Revoked, expired or someone else's grants give nothing.
    let revoked = Grant {
        status: GrantStatus::Revoked,
        ..g.clone()
    };
    assert_decision(&alice().decide(&b, &[revoked]), Effect::Deny, &[], &[]);
    let expired = Grant {
        expires_at: NOON,
        ..g.clone()
    };
    assert_decision(&alice().decide(&b, &[expired]), Effect::Deny, &[], &[]);
    let used_up = Grant {
        role: "refund-once".into(),
        max_uses: Some(1),
        uses: 1,
        ..g
    };
    let refund = user("alice", &["engineering"]).to("POST", "/payments/p1/refund");
    assert_decision(&refund.decide(&b, &[used_up]), Effect::Deny, &[], &[]);
}

#[test]
fn refunds_only_in_business_hours_unless_break_glass() {
    let b = bundle();
    let g = grant("g-r1", "alice", "refund-once", PAYMENTS);
    let refund = |t| user("alice", &[]).to("POST", "/payments/p1/refund").at(t);
    assert_decision(
        &refund(NOON).decide(&b, std::slice::from_ref(&g)),
        Effect::Allow,
        &["refund-once"],
        &["g-r1"],
    );
    // 08:00 is inside, 18:00 and 07:59 are outside.
    let wide = |id: &str| Grant {
        id: id.into(),
        starts_at: 0,
        expires_at: i64::MAX,
        ..g.clone()
    };
    let eight = NOON - 4 * 3_600;
    assert_eq!(refund(eight).decide(&b, &[wide("w")]).effect, Effect::Allow);
    assert_decision(
        &refund(eight - 1).decide(&b, &[wide("w")]),
        Effect::Deny,
        &["refunds-business-hours"],
        &[],
    );
    assert_decision(
        &refund(NOON + 6 * 3_600).decide(&b, &[wide("w")]),
        Effect::Deny,
        &["refunds-business-hours"],
        &[],
    );
    let bg = Grant {
        starts_at: 0,
        expires_at: i64::MAX,
        ..grant("g-bg", "alice", "break-glass", PAYMENTS)
    };
    let d = refund(NOON + 9 * 3_600).decide(&b, &[bg]);
    assert_decision(&d, Effect::Allow, &["break-glass"], &["g-bg"]);
    assert!(d.break_glass);
}

#[test]
fn contractors_never_reach_databases() {
    let b = bundle();
    let grants = [
        grant("g-db", "carol", "db-admin", BILLING),
        grant("g-bg", "carol", "break-glass", BILLING),
    ];
    let d = user("carol", &["contractors", "engineering"])
        .to("POST", "/databases/prod/query")
        .decide(&b, &grants);
    assert_decision(&d, Effect::Deny, &["contractors-no-databases"], &[]);
    let d = user("carol", &["contractors", "engineering"])
        .to("GET", "/databases")
        .decide(&b, &[]);
    assert_decision(&d, Effect::Deny, &["contractors-no-databases"], &[]);
}

#[test]
fn database_writes_are_internal_only() {
    let b = bundle();
    let g = [grant("g-db", "dave", "db-admin", BILLING)];
    let query = || user("dave", &["dba"]).to("POST", "/databases/prod/query");
    assert_decision(
        &query().decide(&b, &g),
        Effect::Allow,
        &["db-admin"],
        &["g-db"],
    );
    assert_decision(
        &query().via_ip("203.0.113.9").decide(&b, &g),
        Effect::Deny,
        &["db-writes-internal-only"],
        &[],
    );
}

#[test]
fn database_delete_is_held_until_that_request_is_approved() {
    let b = bundle();
    let db_admin = grant("g-db", "dave", "db-admin", BILLING);
    let delete = || {
        user("dave", &["dba"])
            .to("DELETE", "/databases/prod")
            .via_ip("127.0.0.1")
    };
    let d = delete().decide(&b, std::slice::from_ref(&db_admin));
    assert_decision(&d, Effect::Hold, &["hold-database-delete"], &["g-db"]);

    let digest = delete().build(&b).digest.unwrap();
    let approval = Grant {
        request_digest: Some(digest),
        role: "hold".into(),
        scope: r#"Database::"prod""#.parse().unwrap(),
        max_uses: Some(1),
        ..grant("g-approval", "dave", "hold", BILLING)
    };
    let d = delete().decide(&b, &[db_admin.clone(), approval.clone()]);
    assert_decision(
        &d,
        Effect::Allow,
        &["hold-database-delete"],
        &["g-db", "g-approval"],
    );

    // An approval for a different request does not release this one.
    let other = Grant {
        request_digest: Some("0".repeat(64)),
        ..approval
    };
    assert_eq!(delete().decide(&b, &[db_admin, other]).effect, Effect::Hold);
}

#[test]
fn break_glass_opens_everything_but_contractor_databases() {
    let b = bundle();
    let bg = grant("g-bg", "sam", "break-glass", PAYMENTS);
    let d = user("sam", &["sre"])
        .to("DELETE", "/payments/p1")
        .decide(&b, &[bg]);
    assert_decision(&d, Effect::Allow, &["break-glass"], &["g-bg"]);
    assert!(d.break_glass);
    // No hold and no internal-only rule with break glass, even from outside.
    let bg = grant("g-bg2", "sam", "break-glass", BILLING);
    let d = user("sam", &["sre"])
        .to("DELETE", "/databases/prod")
        .via_ip("203.0.113.9")
        .decide(&b, &[bg]);
    assert_decision(&d, Effect::Allow, &["break-glass"], &["g-bg2"]);
    // Without it, deleting a payment is forbidden even with a writer grant.
    let d = user("sam", &["sre"])
        .to("DELETE", "/payments/p1")
        .decide(&b, &[grant("g", "sam", "payments-writer", PAYMENTS)]);
    assert_decision(&d, Effect::Deny, &["no-payment-deletes"], &[]);
}

#[test]
fn policy_ids_cover_every_quickstart_policy() {
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
}

#[test]
fn the_bundles_rego_unit_tests_pass() {
    let b = bundle();
    let rego = RegoBackend::load(&b.dir, &b.policy_files, "jitgate.authz").unwrap();
    let results = rego.run_tests();
    assert!(results.len() >= 8, "{results:?}");
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    assert!(failed.is_empty(), "failing Rego tests: {failed:#?}");
}

/// A rough cost figure (printed, not asserted): run with `--nocapture`, ideally `--release`.
#[test]
fn decision_cost() {
    let b = bundle();
    let req = user("alice", &["engineering"])
        .to("POST", "/payments/p1/refund")
        .build(&b);
    let grants: Vec<Arc<Grant>> = ["payments-writer", "refund-once", "db-admin"]
        .iter()
        .enumerate()
        .map(|(i, r)| Arc::new(grant(&format!("g{i}"), "alice", r, PAYMENTS)))
        .collect();
    for _ in 0..200 {
        assert!(b.decide(&req, &grants).is_allow());
    }
    let n = 2_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        std::hint::black_box(b.decide(&req, &grants));
        samples.push(t.elapsed().as_nanos());
    }
    samples.sort_unstable();
    println!(
        "quickstart-rego decide: median {} ns/op, p99 {} ns/op",
        samples[n / 2],
        samples[n * 99 / 100]
    );
}
