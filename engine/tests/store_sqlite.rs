#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SqliteStore against real database files: round trips, the one-use race, migrations, requests and approvals.

use std::sync::{Arc, Barrier};

use jitgate_engine::access::{AccessRequest, Approval, RequestFilter, RequestState, Verdict};
use jitgate_engine::sqlite::SqliteStore;
use jitgate_engine::store::{GrantStore, RequestStore, StoreError};
use jitgate_engine::{EntityRef, Grant, GrantStatus};

fn grant(id: &str, max_uses: Option<u32>) -> Grant {
    Grant {
        id: id.into(),
        principal: EntityRef::new("User", "alice"),
        role: "db-admin".into(),
        scope: r#"Service::"billing""#.parse().unwrap(),
        starts_at: 100,
        expires_at: 200,
        max_uses,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec![r#"User::"bob""#.into(), "policy".into()],
        reason: "incident 42".into(),
        break_glass: true,
        request_digest: Some("abc".into()),
        request_id: Some("req-1".into()),
    }
}

#[test]
fn grant_round_trip_and_load_filters_dead_grants() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories are created.
    let store = SqliteStore::open(&dir.path().join("nested/dir/state.db")).unwrap();
    let g = grant("g1", Some(3));
    store.put_grant(&g).unwrap();
    assert_eq!(store.get_grant("g1").unwrap(), Some(g.clone()));
    assert_eq!(store.get_grant("nope").unwrap(), None);

    let mut g2 = grant("g2", None);
    g2.expires_at = 150;
    store.put_grant(&g2).unwrap();
    // Replace keeps one row.
    g2.reason = "changed".into();
    store.put_grant(&g2).unwrap();
    assert_eq!(store.get_grant("g2").unwrap().unwrap().reason, "changed");

    assert_eq!(store.load_grants(120).unwrap().len(), 2);
    assert_eq!(
        store
            .load_grants(150)
            .unwrap()
            .iter()
            .map(|g| g.id.as_str())
            .collect::<Vec<_>>(),
        vec!["g1"]
    );

    let revoked = store
        .revoke_grant("g1", "User::\"bob\"", 130)
        .unwrap()
        .unwrap();
    assert_eq!(revoked.status, GrantStatus::Revoked);
    assert!(store.load_grants(120).unwrap().iter().all(|g| g.id != "g1"));
    assert_eq!(
        store.consume_use("g1", 130).unwrap(),
        None,
        "a revoked grant gives no use"
    );
    assert_eq!(store.revoke_grant("missing", "x", 1).unwrap(), None);
}

#[test]
fn consume_respects_window_and_marks_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    store.put_grant(&grant("g", Some(2))).unwrap();
    assert_eq!(
        store.consume_use("g", 99).unwrap(),
        None,
        "before starts_at"
    );
    assert_eq!(store.consume_use("g", 200).unwrap(), None, "at expires_at");
    let first = store.consume_use("g", 150).unwrap().unwrap();
    assert_eq!((first.uses, first.status), (1, GrantStatus::Active));
    let last = store.consume_use("g", 150).unwrap().unwrap();
    assert_eq!((last.uses, last.status), (2, GrantStatus::Consumed));
    assert_eq!(store.consume_use("g", 150).unwrap(), None);
    assert_eq!(store.get_grant("g").unwrap().unwrap().uses, 2);
}

fn race(stores: Vec<Arc<SqliteStore>>) -> usize {
    let barrier = Arc::new(Barrier::new(stores.len()));
    let handles: Vec<_> = stores
        .into_iter()
        .map(|s| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                s.consume_use("one", 150).unwrap()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(Option::is_some)
        .count()
}

#[test]
fn twenty_threads_one_use_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let shared = Arc::new(SqliteStore::open(&path).unwrap());
    shared.put_grant(&grant("one", Some(1))).unwrap();
    assert_eq!(race((0..20).map(|_| shared.clone()).collect()), 1);
    let g = shared.get_grant("one").unwrap().unwrap();
    assert_eq!((g.uses, g.status), (1, GrantStatus::Consumed));

    // The same race across separate connections (separate stores on one file): SQLite decides, not our mutex.
    shared.put_grant(&grant("one", Some(1))).unwrap();
    let stores = (0..20)
        .map(|_| Arc::new(SqliteStore::open(&path).unwrap()))
        .collect();
    assert_eq!(race(stores), 1);
    assert_eq!(shared.get_grant("one").unwrap().unwrap().uses, 1);
}

#[test]
fn migrations_are_idempotent_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let v = {
        let s = SqliteStore::open(&path).unwrap();
        s.put_grant(&grant("keep", None)).unwrap();
        s.schema_version().unwrap()
    };
    assert_eq!(v, jitgate_engine::sqlite::schema_version());
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.schema_version().unwrap(), v);
    assert!(s.get_grant("keep").unwrap().is_some());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let rows: i64 = conn
        .query_row("SELECT COUNT(*) FROM schema_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, v, "each migration recorded once");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn access_requests_and_approvals() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let req = |id: &str, who: &str, at: i64| AccessRequest {
        id: id.into(),
        requester: EntityRef::new("User", who),
        role: "db-admin".into(),
        scope: r#"Service::"billing""#.parse().unwrap(),
        duration_secs: 1800,
        reason: "fix it".into(),
        ticket: Some("INC-1".into()),
        starts_at: None,
        state: RequestState::Pending,
        created_at: at,
        expires_at: at + 3600,
        decided_at: None,
        request_digest: None,
    };
    store.put_access_request(&req("r1", "alice", 10)).unwrap();
    store.put_access_request(&req("r2", "alice", 20)).unwrap();
    store.put_access_request(&req("r3", "carol", 30)).unwrap();
    assert_eq!(
        store.get_access_request("r1").unwrap(),
        Some(req("r1", "alice", 10))
    );

    let alice = RequestFilter {
        requester: Some(EntityRef::new("User", "alice")),
        ..Default::default()
    };
    let ids: Vec<String> = store
        .list_access_requests(&alice)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["r2", "r1"], "newest first");

    assert!(
        store
            .transition_access_request("r1", RequestState::Pending, RequestState::Approved, 40)
            .unwrap()
    );
    assert!(
        !store
            .transition_access_request("r1", RequestState::Pending, RequestState::Denied, 41)
            .unwrap()
    );
    let pending = RequestFilter {
        state: Some(RequestState::Pending),
        limit: Some(1),
        ..Default::default()
    };
    let ids: Vec<String> = store
        .list_access_requests(&pending)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, vec!["r3"]);
    assert_eq!(
        store.get_access_request("r1").unwrap().unwrap().decided_at,
        Some(40)
    );

    let a = Approval {
        request_id: "r1".into(),
        approver: r#"User::"bob""#.into(),
        verdict: Verdict::Approve,
        comment: "ok".into(),
        at: 40,
    };
    store.add_approval(&a).unwrap();
    assert!(matches!(
        store.add_approval(&a),
        Err(StoreError::Conflict(_))
    ));
    let ghost = Approval {
        request_id: "nope".into(),
        ..a.clone()
    };
    assert!(matches!(
        store.add_approval(&ghost),
        Err(StoreError::NotFound(_))
    ));
    let b = Approval {
        approver: r#"User::"dan""#.into(),
        verdict: Verdict::Deny,
        at: 41,
        ..a.clone()
    };
    store.add_approval(&b).unwrap();
    assert_eq!(store.approvals_for("r1").unwrap(), vec![a, b]);
    assert!(store.approvals_for("r2").unwrap().is_empty());
}
