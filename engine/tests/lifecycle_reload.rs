#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Pending access requests across a bundle reload: an approval is judged by the role settings in force when it
//! is given, so a reload that tightens a role cannot be worked around by a request made before it.

mod common;
use common::*;
use std::path::PathBuf;
use std::sync::Arc;

use jitgate_engine::access::{RequestState, Verdict};
use jitgate_engine::lifecycle::{Lifecycle, LifecycleError, NewRequest};
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::{RequestStore, Store};
use jitgate_engine::{Authorizer, Bundle, Clock, Context, EntityRef, Principal};

struct Env {
    _dir: tempfile::TempDir,
    bundle_dir: PathBuf,
    store: Arc<SqliteStore>,
    authorizer: Arc<Authorizer>,
    lc: Lifecycle,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let bundle_dir = dir.path().join("bundle");
    copy_dir(&shipped("quickstart-cedar"), &bundle_dir);
    let bundle = Bundle::load(&bundle_dir).unwrap_or_else(|d| panic!("{d}"));
    let store = Arc::new(SqliteStore::open(&dir.path().join("state.db")).unwrap());
    let authorizer = Arc::new(
        Authorizer::new(bundle, store.clone() as Arc<dyn Store>, Clock::frozen(NOW)).unwrap(),
    );
    let lc = Lifecycle::new(authorizer.clone(), store.clone());
    Env {
        _dir: dir,
        bundle_dir,
        store,
        authorizer,
        lc,
    }
}

impl Env {
    /// Rewrites `bundle.toml` (`from` must occur) and makes the result the active bundle, as a reload would.
    fn reload(&self, from: &str, to: &str) {
        let file = self.bundle_dir.join("bundle.toml");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(from), "bundle.toml has no {from:?}");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let bundle = Bundle::load(&self.bundle_dir).unwrap_or_else(|d| panic!("{d}"));
        self.authorizer.swap_bundle(Arc::new(bundle));
    }

    fn ask(&self, role: &str, duration: &str, reason: &str) -> String {
        let v = self
            .lc
            .request_access(
                &who("alice", &["engineering"]),
                &Context::at(NOW),
                NewRequest {
                    role: role.into(),
                    scope: r#"Service::"payments""#.into(),
                    duration: duration.into(),
                    reason: reason.into(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(v.request.state, RequestState::Pending);
        v.request.id
    }
}

fn who(id: &str, groups: &[&str]) -> Principal {
    Principal {
        entity: EntityRef::new("User", id),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        group_type: None,
        attrs: Default::default(),
    }
}

/// After the reload, approving is refused (409) and changes nothing: no approval recorded, no grant, the request
/// still pending, and a deny still possible.
fn assert_cannot_approve(e: &Env, id: &str, expected: &str) {
    let pat = who("pat", &["payments-approvers"]);
    let err =
        e.lc.decide(id, &pat, &Context::at(NOW), Verdict::Approve, "")
            .err()
            .unwrap_or_else(|| panic!("approved against the reloaded role"));
    assert!(
        matches!(&err, LifecycleError::Conflict(m) if m.contains(expected)),
        "{err}"
    );
    assert!(
        e.store.approvals_for(id).unwrap().is_empty(),
        "an approval was recorded"
    );
    assert!(e.authorizer.grants().is_empty(), "a grant was made");
    let r = e.store.get_access_request(id).unwrap().unwrap();
    assert_eq!(r.state, RequestState::Pending);
    let denied =
        e.lc.decide(id, &pat, &Context::at(NOW), Verdict::Deny, "too long now")
            .unwrap();
    assert_eq!(denied.request.state, RequestState::Denied);
}

#[test]
fn an_approval_after_a_reload_that_shortens_the_role_is_refused() {
    let e = env();
    let id = e.ask("payments-writer", "1h", "incident");
    e.reload(
        "description = \"create and refund payments\"\nmax_duration = \"1h\"",
        "description = \"create and refund payments\"\nmax_duration = \"10m\"",
    );
    assert_cannot_approve(
        &e,
        &id,
        "it asks for 3600s and role `payments-writer` now allows at most 600s",
    );
}

#[test]
fn an_approval_after_a_reload_that_requires_a_reason_is_refused() {
    let e = env();
    let id = e.ask("refund-once", "10m", "");
    e.reload(
        "description = \"refund one payment\"\n",
        "description = \"refund one payment\"\nreason_required = true\n",
    );
    assert_cannot_approve(&e, &id, "role `refund-once` now requires a reason");
}

/// Sanity: without a reload the same request is approved, so the refusals above come from the reload.
#[test]
fn the_same_requests_are_approved_without_a_reload() {
    let e = env();
    for (role, duration, reason) in [
        ("payments-writer", "1h", "incident"),
        ("refund-once", "10m", ""),
    ] {
        let id = e.ask(role, duration, reason);
        let v =
            e.lc.decide(
                &id,
                &who("pat", &["payments-approvers"]),
                &Context::at(NOW),
                Verdict::Approve,
                "",
            )
            .unwrap();
        assert_eq!(v.request.state, RequestState::Approved, "{role}");
        assert!(v.grant.is_some(), "{role}");
    }
}
