#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `starts_at` of an access request: capped per role (`max_start_delay`, by default the role's `pending_ttl`) so
//! that access cannot be banked for a date long after the request was reviewed, and visible to the control-plane
//! policies (Cedar `resource.starts_at`, Rego `input.resource.attrs.starts_at`), so that a policy can refuse it.

mod common;
use common::*;
use std::path::Path;
use std::sync::Arc;

use jitgate_engine::access::RequestState;
use jitgate_engine::lifecycle::{Lifecycle, LifecycleError, NewRequest};
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::Store;
use jitgate_engine::{Authorizer, Bundle, Clock, Context, EntityRef, Principal};

/// A lifecycle over a copy of the shipped bundle `name`, changed by `edit` (given the copy's directory).
fn lifecycle(name: &str, edit: impl FnOnce(&Path)) -> (tempfile::TempDir, Lifecycle) {
    let dir = tempfile::tempdir().unwrap();
    let bundle_dir = dir.path().join("bundle");
    copy_dir(&shipped(name), &bundle_dir);
    edit(&bundle_dir);
    let bundle = Bundle::load(&bundle_dir).unwrap_or_else(|d| panic!("{d}"));
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let authorizer = Arc::new(
        Authorizer::new(bundle, store.clone() as Arc<dyn Store>, Clock::frozen(NOW)).unwrap(),
    );
    let lc = Lifecycle::new(authorizer, store);
    (dir, lc)
}

fn rfc3339(t: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(t).unwrap());
    humantime::format_rfc3339_seconds(t).to_string()
}

fn ask(lc: &Lifecycle, starts_at: i64) -> Result<RequestState, LifecycleError> {
    lc.request_access(
        &Principal {
            entity: EntityRef::new("User", "alice"),
            groups: vec!["engineering".into()],
            group_type: None,
            attrs: Default::default(),
        },
        &Context::at(NOW),
        NewRequest {
            role: "payments-writer".into(),
            scope: r#"Service::"payments""#.into(),
            duration: "30m".into(),
            reason: "incident".into(),
            starts_at: Some(rfc3339(starts_at)),
            ..Default::default()
        },
    )
    .map(|v| v.request.state)
}

fn assert_refused_for_starts_at(r: Result<RequestState, LifecycleError>, limit: &str) {
    match r {
        Err(LifecycleError::BadInput { field, reason }) => {
            assert_eq!(field, "starts_at");
            assert!(reason.contains(limit), "{reason}");
            assert!(reason.contains("max_start_delay"), "{reason}");
        }
        other => panic!("expected a 400 naming starts_at, got {other:?}"),
    }
}

#[test]
fn starts_at_beyond_the_roles_pending_ttl_is_refused_by_default() {
    let (_d, lc) = lifecycle("quickstart-cedar", |_| {});
    // The quickstart's payments-writer keeps pending requests 24h: a start 2099 or a day and a second ahead is
    // refused, naming the limit; one within it is taken.
    assert_refused_for_starts_at(ask(&lc, 4_070_908_800), "86400s");
    assert_refused_for_starts_at(ask(&lc, NOW + 86_401), "86400s");
    assert_eq!(ask(&lc, NOW + 86_400).unwrap(), RequestState::Pending);
}

#[test]
fn max_start_delay_caps_starts_at_per_role() {
    let (_d, lc) = lifecycle("quickstart-cedar", |dir| {
        let file = dir.join("bundle.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        let from = "description = \"create and refund payments\"\n";
        assert!(text.contains(from));
        let text = text.replacen(from, &format!("{from}max_start_delay = \"1h\"\n"), 1);
        std::fs::write(&file, text).unwrap();
    });
    assert_refused_for_starts_at(ask(&lc, NOW + 7_200), "3600s");
    assert_eq!(ask(&lc, NOW + 1_800).unwrap(), RequestState::Pending);
}

fn assert_forbidden(r: Result<RequestState, LifecycleError>, policy: &str) {
    match r {
        Err(LifecycleError::Forbidden { reason, .. }) => {
            assert!(reason.contains(policy), "{reason}")
        }
        other => panic!("expected the policy {policy} to refuse, got {other:?}"),
    }
}

#[test]
fn a_cedar_policy_can_refuse_a_request_by_its_starts_at() {
    let (_d, lc) = lifecycle("quickstart-cedar", |dir| {
        std::fs::write(
            dir.join("policies/late-start.cedar"),
            "@id(\"no-late-start\")\n\
             forbid (principal, action == Action::\"requestAccess\", resource)\n\
             when { resource.starts_at > context.time.epoch + 3600 };\n",
        )
        .unwrap();
    });
    assert_forbidden(ask(&lc, NOW + 7_200), "no-late-start");
    assert_eq!(ask(&lc, NOW + 600).unwrap(), RequestState::Pending);
}

#[test]
fn a_rego_policy_can_refuse_a_request_by_its_starts_at() {
    let (_d, lc) = lifecycle("quickstart-rego", |dir| {
        std::fs::write(
            dir.join("policies/late_start.rego"),
            "package jitgate.authz\n\n\
             deny contains \"no-late-start\" if {\n\
             \tinput.action == \"requestAccess\"\n\
             \tinput.resource.attrs.starts_at > input.context.time.epoch + 3600\n\
             }\n",
        )
        .unwrap();
    });
    assert_forbidden(ask(&lc, NOW + 7_200), "no-late-start");
    assert_eq!(ask(&lc, NOW + 600).unwrap(), RequestState::Pending);
}
