//! The behaviour every [`Store`] backend must have, as test functions over a factory of fresh, empty stores; each
//! backend's integration tests call [`run_all`] (or the functions one by one). They panic on the first difference.
//!
//! ```no_run
//! # use jitgate_engine::store::{MemStore, conformance};
//! conformance::run_all(MemStore::new);
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};

use super::{
    PendingInsert, RecordedVerdict, Spent, Store, StoreError, StoredEntity, VerdictError,
    VerdictWrite,
};
use crate::access::{AccessRequest, Approval, RequestFilter, RequestState, Verdict};
use crate::entity::EntityRef;
use crate::grant::{Grant, GrantStatus};

/// How many threads race for one thing in the concurrency tests.
const RACERS: usize = 8;

/// Runs every test of the suite, each on a store fresh from `fresh`.
pub fn run_all<S: Store + 'static>(fresh: impl Fn() -> S) {
    grants_round_trip(&fresh);
    load_grants_keeps_only_live(&fresh);
    revoke(&fresh);
    consume_use_window_and_limit(&fresh);
    consume_last_use_once(&fresh);
    consume_uses_all_or_nothing(&fresh);
    consume_uses_race_spends_each_use_once(&fresh);
    requests_round_trip_and_filters(&fresh);
    transitions(&fresh);
    approvals(&fresh);
    verdict_approves_at_quorum(&fresh);
    verdict_deny_ends_request(&fresh);
    verdict_conflicts_write_nothing(&fresh);
    concurrent_verdicts_one_wins(&fresh);
    pending_cap_counts_live_pending_requests_per_requester(&fresh);
    pending_reuse_finds_the_live_request_with_the_same_digest(&fresh);
    concurrent_held_retries_make_one_request(&fresh);
    pages_follow_the_listing_order_without_duplicates(&fresh);
    entities_round_trip_replace_and_delete(&fresh);
}

/// A grant of `User::"alice"` valid in `[100, 200)`.
pub fn grant(id: &str, max_uses: Option<u32>) -> Grant {
    Grant {
        id: id.into(),
        principal: EntityRef::new("User", "alice"),
        role: "db-admin".into(),
        scope: EntityRef::new("Service", "billing"),
        starts_at: 100,
        expires_at: 200,
        max_uses,
        uses: 0,
        status: GrantStatus::Active,
        approvers: vec![r#"User::"bob""#.into()],
        reason: "incident 42".into(),
        break_glass: false,
        request_digest: Some("abc".into()),
        request_id: Some("req-1".into()),
    }
}

/// A pending request by `who` made at `at`, pending until `at + 3600`.
pub fn request(id: &str, who: &str, at: i64) -> AccessRequest {
    AccessRequest {
        id: id.into(),
        requester: EntityRef::new("User", who),
        role: "db-admin".into(),
        scope: EntityRef::new("Service", "billing"),
        duration_secs: 1800,
        reason: "fix it".into(),
        ticket: Some("INC-1".into()),
        starts_at: None,
        state: RequestState::Pending,
        created_at: at,
        expires_at: at + 3600,
        decided_at: None,
        request_digest: None,
    }
}

fn approval(request_id: &str, approver: &str, verdict: Verdict, at: i64) -> Approval {
    Approval {
        request_id: request_id.into(),
        approver: format!("User::\"{approver}\""),
        verdict,
        comment: "ok".into(),
        at,
    }
}

fn verdict(request_id: &str, approver: &str, v: Verdict, at: i64, required: u32) -> VerdictWrite {
    VerdictWrite {
        approval: approval(request_id, approver, v, at),
        approvals_required: required,
        grant: Grant {
            id: format!("grant-of-{request_id}"),
            approvers: Vec::new(),
            request_id: Some(request_id.into()),
            ..grant("template", None)
        },
    }
}

fn ids(list: Vec<AccessRequest>) -> Vec<String> {
    list.into_iter().map(|r| r.id).collect()
}

/// `put_grant` then `get_grant` gives the grant back; a second put replaces it.
pub fn grants_round_trip<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    let g = grant("g1", Some(3));
    s.put_grant(&g).unwrap();
    assert_eq!(s.get_grant("g1").unwrap(), Some(g.clone()));
    assert_eq!(s.get_grant("nope").unwrap(), None);
    let changed = Grant {
        reason: "changed".into(),
        ..g
    };
    s.put_grant(&changed).unwrap();
    assert_eq!(s.get_grant("g1").unwrap(), Some(changed));
    assert_eq!(
        s.load_grants(120).unwrap().len(),
        1,
        "a replace keeps one grant"
    );
}

/// `load_grants(now)` returns the active grants not expired at `now` (not yet started ones too), by id.
pub fn load_grants_keeps_only_live<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_grant(&grant("b", None)).unwrap();
    s.put_grant(&Grant {
        expires_at: 150,
        ..grant("a", None)
    })
    .unwrap();
    s.put_grant(&Grant {
        status: GrantStatus::Revoked,
        ..grant("c", None)
    })
    .unwrap();
    s.put_grant(&Grant {
        status: GrantStatus::Consumed,
        ..grant("d", Some(1))
    })
    .unwrap();
    let at = |now| -> Vec<String> {
        s.load_grants(now)
            .unwrap()
            .into_iter()
            .map(|g| g.id)
            .collect()
    };
    assert_eq!(
        at(50),
        vec!["a", "b"],
        "not yet started grants may still matter"
    );
    assert_eq!(at(149), vec!["a", "b"]);
    assert_eq!(at(150), vec!["b"], "expired at its expiry");
    assert!(at(200).is_empty());
}

/// `revoke_grant` ends an active grant once; an ended grant is returned as it is; an unknown one is `None`.
pub fn revoke<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_grant(&grant("g", Some(2))).unwrap();
    let revoked = s.revoke_grant("g", r#"User::"bob""#, 130).unwrap().unwrap();
    assert_eq!(revoked.status, GrantStatus::Revoked);
    assert_eq!(
        s.get_grant("g").unwrap().unwrap().status,
        GrantStatus::Revoked
    );
    assert!(s.load_grants(120).unwrap().is_empty());
    assert_eq!(
        s.consume_use("g", 130).unwrap(),
        None,
        "a revoked grant gives no use"
    );
    s.put_grant(&Grant {
        status: GrantStatus::Consumed,
        ..grant("used", Some(1))
    })
    .unwrap();
    let used = s.revoke_grant("used", "x", 131).unwrap().unwrap();
    assert_eq!(
        used.status,
        GrantStatus::Consumed,
        "an ended grant stays as it ended"
    );
    assert_eq!(s.revoke_grant("missing", "x", 1).unwrap(), None);
}

/// `consume_use` spends uses only inside the grant's window and up to its limit, then marks it consumed.
pub fn consume_use_window_and_limit<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_grant(&grant("g", Some(2))).unwrap();
    assert_eq!(s.consume_use("g", 99).unwrap(), None, "not yet started");
    assert_eq!(s.consume_use("g", 200).unwrap(), None, "expired");
    let one = s.consume_use("g", 150).unwrap().unwrap();
    assert_eq!((one.uses, one.status), (1, GrantStatus::Active));
    let two = s.consume_use("g", 150).unwrap().unwrap();
    assert_eq!((two.uses, two.status), (2, GrantStatus::Consumed));
    assert_eq!(s.consume_use("g", 150).unwrap(), None, "no use left");
    assert_eq!(s.get_grant("g").unwrap(), Some(two));
    assert_eq!(s.consume_use("missing", 150).unwrap(), None);
    s.put_grant(&grant("free", None)).unwrap();
    let free = s.consume_use("free", 150).unwrap().unwrap();
    assert_eq!(
        (free.uses, free.status),
        (1, GrantStatus::Active),
        "a grant without a limit counts its uses"
    );
}

/// Of many threads spending the last use of a grant at once, exactly one wins it.
pub fn consume_last_use_once<S: Store + 'static>(fresh: impl Fn() -> S) {
    let s = Arc::new(fresh());
    s.put_grant(&grant("one", Some(1))).unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.consume_use("one", 150).unwrap().is_some()
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 1, "exactly one caller gets the last use");
    let g = s.get_grant("one").unwrap().unwrap();
    assert_eq!((g.uses, g.status), (1, GrantStatus::Consumed));
}

/// `consume_uses` spends one use of every grant named, or none when one of them has no use left.
pub fn consume_uses_all_or_nothing<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_grant(&grant("a", Some(3))).unwrap();
    s.put_grant(&grant("b", Some(1))).unwrap();
    match s.consume_uses(&["b", "a"], 150).unwrap() {
        Spent::All(spent) => {
            let mut uses: Vec<(String, u32, GrantStatus)> = spent
                .into_iter()
                .map(|g| (g.id, g.uses, g.status))
                .collect();
            uses.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(
                uses,
                vec![
                    ("a".into(), 1, GrantStatus::Active),
                    ("b".into(), 1, GrantStatus::Consumed)
                ]
            );
        }
        other => panic!("both had a use left: {other:?}"),
    }
    assert_eq!(
        s.consume_uses(&["a", "b"], 150).unwrap(),
        Spent::Lost("b".into()),
        "b has no use left"
    );
    assert_eq!(
        s.get_grant("a").unwrap().unwrap().uses,
        1,
        "nothing spent when one grant had no use left"
    );
    assert_eq!(
        s.consume_uses(&["a", "missing"], 150).unwrap(),
        Spent::Lost("missing".into())
    );
    assert_eq!(s.get_grant("a").unwrap().unwrap().uses, 1);
    assert_eq!(
        s.consume_uses(&["a"], 250).unwrap(),
        Spent::Lost("a".into()),
        "expired"
    );
}

/// Many threads spending two grants at once (one with 3 uses, one unlimited): exactly 3 win, each win took a use
/// of both, and every loss took none.
pub fn consume_uses_race_spends_each_use_once<S: Store + 'static>(fresh: impl Fn() -> S) {
    let s = Arc::new(fresh());
    s.put_grant(&grant("three", Some(3))).unwrap();
    s.put_grant(&grant("free", None)).unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|_| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                matches!(
                    s.consume_uses(&["three", "free"], 150).unwrap(),
                    Spent::All(_)
                )
            })
        })
        .collect();
    let wins = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|won| *won)
        .count();
    assert_eq!(wins, 3, "exactly as many winners as uses");
    assert_eq!(s.get_grant("three").unwrap().unwrap().uses, 3);
    assert_eq!(
        s.get_grant("free").unwrap().unwrap().uses,
        3,
        "the unlimited grant was spent with each win only"
    );
}

/// Access requests round-trip, and list newest first, filtered by requester, state and role, up to a limit.
pub fn requests_round_trip_and_filters<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    s.put_access_request(&request("r2", "alice", 20)).unwrap();
    s.put_access_request(&AccessRequest {
        role: "hold".into(),
        request_digest: Some("d".into()),
        ..request("r3", "carol", 30)
    })
    .unwrap();
    s.put_access_request(&request("r0", "carol", 20)).unwrap();
    assert_eq!(
        s.get_access_request("r1").unwrap(),
        Some(request("r1", "alice", 10))
    );
    assert_eq!(s.get_access_request("nope").unwrap(), None);
    let list = |f: RequestFilter| ids(s.list_access_requests(&f).unwrap());
    assert_eq!(
        list(RequestFilter::default()),
        vec!["r3", "r0", "r2", "r1"],
        "newest first, then by id"
    );
    let alice = RequestFilter {
        requester: Some(EntityRef::new("User", "alice")),
        ..Default::default()
    };
    assert_eq!(list(alice.clone()), vec!["r2", "r1"]);
    assert_eq!(
        list(RequestFilter {
            limit: Some(1),
            ..alice
        }),
        vec!["r2"]
    );
    assert_eq!(
        list(RequestFilter {
            role: Some("hold".into()),
            ..Default::default()
        }),
        vec!["r3"]
    );
    // A put replaces the request.
    s.put_access_request(&AccessRequest {
        state: RequestState::Cancelled,
        ..request("r2", "alice", 20)
    })
    .unwrap();
    assert_eq!(
        list(RequestFilter {
            state: Some(RequestState::Pending),
            requester: Some(EntityRef::new("User", "alice")),
            ..Default::default()
        }),
        vec!["r1"]
    );
}

/// A transition is a compare-and-set from the state the caller saw, and only a pending request moves.
pub fn transitions<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    assert!(
        !s.transition_access_request("r1", RequestState::Approved, RequestState::Denied, 39)
            .unwrap(),
        "not in the state the caller saw"
    );
    assert!(
        s.transition_access_request("r1", RequestState::Pending, RequestState::Approved, 40)
            .unwrap()
    );
    assert!(
        !s.transition_access_request("r1", RequestState::Pending, RequestState::Denied, 41)
            .unwrap(),
        "a second decider loses"
    );
    assert!(
        !s.transition_access_request("r1", RequestState::Approved, RequestState::Expired, 42)
            .unwrap(),
        "a decided request never moves again"
    );
    let r = s.get_access_request("r1").unwrap().unwrap();
    assert_eq!((r.state, r.decided_at), (RequestState::Approved, Some(40)));
    assert!(
        !s.transition_access_request("nope", RequestState::Pending, RequestState::Expired, 1)
            .unwrap()
    );
}

/// One verdict per approver and request, listed oldest first; an unknown request is not found.
pub fn approvals<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    let a = approval("r1", "bob", Verdict::Approve, 40);
    s.add_approval(&a).unwrap();
    assert!(matches!(s.add_approval(&a), Err(StoreError::Conflict(_))));
    assert!(matches!(
        s.add_approval(&approval("nope", "bob", Verdict::Approve, 40)),
        Err(StoreError::NotFound(_))
    ));
    let b = approval("r1", "dan", Verdict::Deny, 39);
    s.add_approval(&b).unwrap();
    assert_eq!(s.approvals_for("r1").unwrap(), vec![b, a], "oldest first");
    assert!(s.approvals_for("nope").unwrap().is_empty());
}

/// Approvals below the quorum are recorded and leave the request pending; the one that reaches it approves the
/// request and writes the grant, whose approvers are the approving approvers.
pub fn verdict_approves_at_quorum<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    let first = s
        .record_verdict(&verdict("r1", "bob", Verdict::Approve, 40, 2))
        .unwrap();
    assert_eq!(first.request.state, RequestState::Pending);
    assert_eq!(first.approvals.len(), 1);
    assert_eq!(first.grant, None);
    assert_eq!(s.get_grant("grant-of-r1").unwrap(), None);
    let second = s
        .record_verdict(&verdict("r1", "carol", Verdict::Approve, 41, 2))
        .unwrap();
    let RecordedVerdict {
        request: r,
        approvals,
        grant,
    } = second;
    assert_eq!((r.state, r.decided_at), (RequestState::Approved, Some(41)));
    assert_eq!(s.get_access_request("r1").unwrap(), Some(r));
    assert_eq!(approvals, s.approvals_for("r1").unwrap());
    assert_eq!(approvals.len(), 2);
    let grant = grant.expect("the quorum writes the grant");
    assert_eq!(grant.approvers, vec![r#"User::"bob""#, r#"User::"carol""#]);
    assert_eq!(s.get_grant("grant-of-r1").unwrap(), Some(grant));
}

/// A deny moves the request to `denied` at once and writes no grant.
pub fn verdict_deny_ends_request<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    let out = s
        .record_verdict(&verdict("r1", "bob", Verdict::Deny, 40, 2))
        .unwrap();
    assert_eq!(out.request.state, RequestState::Denied);
    assert_eq!(out.grant, None);
    let stored = s.get_access_request("r1").unwrap().unwrap();
    assert_eq!(
        (stored.state, stored.decided_at),
        (RequestState::Denied, Some(40))
    );
    assert_eq!(s.approvals_for("r1").unwrap().len(), 1);
    assert_eq!(s.get_grant("grant-of-r1").unwrap(), None);
}

/// Each refused verdict is a typed conflict and writes nothing: a second vote by the same approver, a verdict on
/// a request no longer pending or past its pending TTL, on an unknown request, or on a pending request that holds
/// a deny.
pub fn verdict_conflicts_write_nothing<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    s.record_verdict(&verdict("r1", "bob", Verdict::Approve, 40, 2))
        .unwrap();
    let again = s.record_verdict(&verdict("r1", "bob", Verdict::Deny, 41, 2));
    assert!(
        matches!(again, Err(VerdictError::AlreadyVoted { ref approver, .. }) if approver == r#"User::"bob""#),
        "{again:?}"
    );
    assert_eq!(s.approvals_for("r1").unwrap().len(), 1);
    assert_eq!(
        s.get_access_request("r1").unwrap().unwrap().state,
        RequestState::Pending
    );

    s.put_access_request(&request("r2", "alice", 10)).unwrap();
    assert!(
        s.transition_access_request("r2", RequestState::Pending, RequestState::Cancelled, 20)
            .unwrap()
    );
    let late = s.record_verdict(&verdict("r2", "bob", Verdict::Approve, 40, 1));
    assert!(
        matches!(
            late,
            Err(VerdictError::NotPending {
                state: RequestState::Cancelled,
                ..
            })
        ),
        "{late:?}"
    );
    assert!(s.approvals_for("r2").unwrap().is_empty());
    assert_eq!(s.get_grant("grant-of-r2").unwrap(), None);

    s.put_access_request(&request("r3", "alice", 10)).unwrap();
    let due = s.record_verdict(&verdict("r3", "bob", Verdict::Approve, 3610, 1));
    assert!(matches!(due, Err(VerdictError::PastTtl { .. })), "{due:?}");
    assert!(s.approvals_for("r3").unwrap().is_empty());
    assert_eq!(
        s.get_access_request("r3").unwrap().unwrap().state,
        RequestState::Pending
    );

    let ghost = s.record_verdict(&verdict("nope", "bob", Verdict::Approve, 40, 1));
    assert!(matches!(ghost, Err(VerdictError::NotFound(_))), "{ghost:?}");

    s.put_access_request(&request("r4", "alice", 10)).unwrap();
    s.add_approval(&approval("r4", "dan", Verdict::Deny, 30))
        .unwrap();
    let denied = s.record_verdict(&verdict("r4", "bob", Verdict::Approve, 40, 1));
    assert!(matches!(denied, Err(VerdictError::Denied(_))), "{denied:?}");
    assert_eq!(s.approvals_for("r4").unwrap().len(), 1);
    assert_eq!(s.get_grant("grant-of-r4").unwrap(), None);
}

/// Of several approvers deciding a one-approval request at once, exactly one decides it (and writes the grant);
/// every other gets `NotPending` and leaves no approval behind.
pub fn concurrent_verdicts_one_wins<S: Store + 'static>(fresh: impl Fn() -> S) {
    let s = Arc::new(fresh());
    s.put_access_request(&request("r1", "alice", 10)).unwrap();
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                let v = if i % 2 == 0 {
                    Verdict::Approve
                } else {
                    Verdict::Deny
                };
                barrier.wait();
                s.record_verdict(&verdict("r1", &format!("approver-{i}"), v, 40, 1))
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<&RecordedVerdict> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one verdict decides: {results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, VerdictError::NotPending { .. }), "{e:?}");
        }
    }
    let won = winners[0];
    assert_eq!(
        s.get_access_request("r1").unwrap().as_ref(),
        Some(&won.request)
    );
    assert_eq!(
        s.approvals_for("r1").unwrap().len(),
        1,
        "losers leave no approval"
    );
    assert_eq!(
        s.get_grant("grant-of-r1").unwrap().is_some(),
        won.request.state == RequestState::Approved
    );
}

/// `insert_within_pending_cap` counts only the requester's pending requests within their TTL, and writes nothing
/// when the cap is reached; a decided (or past-TTL) request frees its slot.
pub fn pending_cap_counts_live_pending_requests_per_requester<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    assert!(
        s.insert_within_pending_cap(&request("a1", "alice", 100), 2)
            .unwrap()
    );
    assert!(
        s.insert_within_pending_cap(&request("a2", "alice", 100), 2)
            .unwrap()
    );
    // Someone else's requests do not count.
    assert!(
        s.insert_within_pending_cap(&request("b1", "bob", 100), 2)
            .unwrap()
    );
    assert!(
        !s.insert_within_pending_cap(&request("a3", "alice", 100), 2)
            .unwrap()
    );
    assert!(
        s.get_access_request("a3").unwrap().is_none(),
        "refused: nothing written"
    );
    // A decided request frees its slot.
    assert!(
        s.transition_access_request("a1", RequestState::Pending, RequestState::Approved, 101)
            .unwrap()
    );
    assert!(
        s.insert_within_pending_cap(&request("a3", "alice", 101), 2)
            .unwrap()
    );
    assert!(
        !s.insert_within_pending_cap(&request("a4", "alice", 102), 2)
            .unwrap()
    );
    // Past their pending TTL (3600 s), still-pending rows do not count.
    assert!(
        s.insert_within_pending_cap(&request("a4", "alice", 100 + 3700), 2)
            .unwrap()
    );
    // A cap of 0 refuses everything.
    assert!(
        !s.insert_within_pending_cap(&request("c1", "carol", 100), 0)
            .unwrap()
    );
}

/// A held request of `who` at `at` with request digest `digest` (role `hold`).
pub fn held(id: &str, who: &str, at: i64, digest: &str) -> AccessRequest {
    AccessRequest {
        role: "hold".into(),
        request_digest: Some(digest.into()),
        ..request(id, who, at)
    }
}

/// `insert_pending_or_reuse` returns the requester's live pending request with the same role and digest instead
/// of inserting; anything else (another digest, requester or role, a decided or past-TTL request, no digest) is
/// no match, and a new request is inserted within the pending cap.
pub fn pending_reuse_finds_the_live_request_with_the_same_digest<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    let ins = |r: &AccessRequest, cap: u32| s.insert_pending_or_reuse(r, cap).unwrap();
    assert_eq!(
        ins(&held("h1", "alice", 100, "d1"), 10),
        PendingInsert::Inserted
    );
    let stored = s.get_access_request("h1").unwrap().unwrap();
    assert_eq!(stored, held("h1", "alice", 100, "d1"));
    // A retry: the stored one comes back, nothing is written.
    assert_eq!(
        ins(&held("h2", "alice", 150, "d1"), 10),
        PendingInsert::Existing(Box::new(stored.clone()))
    );
    assert!(s.get_access_request("h2").unwrap().is_none());
    // Another digest, another requester, another role: no match.
    assert_eq!(
        ins(&held("h3", "alice", 150, "d2"), 10),
        PendingInsert::Inserted
    );
    assert_eq!(
        ins(&held("h4", "bob", 150, "d1"), 10),
        PendingInsert::Inserted
    );
    let other_role = AccessRequest {
        role: "db-admin".into(),
        ..held("h5", "alice", 150, "d1")
    };
    assert_eq!(ins(&other_role, 10), PendingInsert::Inserted);
    // Requests without a digest are never reused.
    assert_eq!(
        ins(&request("p1", "carol", 150), 10),
        PendingInsert::Inserted
    );
    assert_eq!(
        ins(&request("p2", "carol", 150), 10),
        PendingInsert::Inserted
    );
    // A decided request is not reused: its retry makes a new one.
    assert!(
        s.transition_access_request("h3", RequestState::Pending, RequestState::Denied, 160)
            .unwrap()
    );
    assert_eq!(
        ins(&held("h6", "alice", 170, "d2"), 10),
        PendingInsert::Inserted
    );
    // Past its pending TTL (3600 s) a pending request is not reused either.
    assert_eq!(
        ins(&held("h7", "alice", 100 + 3600, "d1"), 10),
        PendingInsert::Inserted
    );
    // The cap still holds for new digests, and writes nothing; a retry of a live one is answered all the same.
    assert_eq!(
        ins(&held("h8", "dave", 100, "x"), 1),
        PendingInsert::Inserted
    );
    assert_eq!(
        ins(&held("h9", "dave", 100, "y"), 1),
        PendingInsert::CapReached
    );
    assert!(s.get_access_request("h9").unwrap().is_none());
    assert!(matches!(
        ins(&held("h10", "dave", 101, "x"), 1),
        PendingInsert::Existing(r) if r.id == "h8"
    ));
}

/// Of many retries of one held request at once (same requester and digest), exactly one inserts a request and
/// every other gets that request back: one pending request between them.
pub fn concurrent_held_retries_make_one_request<S: Store + 'static>(fresh: impl Fn() -> S) {
    let s = Arc::new(fresh());
    let barrier = Arc::new(Barrier::new(RACERS));
    let handles: Vec<_> = (0..RACERS)
        .map(|i| {
            let (s, barrier) = (s.clone(), barrier.clone());
            std::thread::spawn(move || {
                let r = held(&format!("retry-{i}"), "alice", 100, "same");
                barrier.wait();
                (r.id.clone(), s.insert_pending_or_reuse(&r, 100).unwrap())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let inserted: Vec<&String> = results
        .iter()
        .filter(|(_, r)| *r == PendingInsert::Inserted)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(inserted.len(), 1, "exactly one retry inserts: {results:?}");
    for (_, r) in &results {
        match r {
            PendingInsert::Inserted => {}
            PendingInsert::Existing(existing) => assert_eq!(&existing.id, inserted[0]),
            PendingInsert::CapReached => panic!("no cap was reached: {results:?}"),
        }
    }
    let mine = RequestFilter {
        requester: Some(EntityRef::new("User", "alice")),
        state: None,
        role: None,
        limit: None,
        after: None,
    };
    assert_eq!(
        ids(s.list_access_requests(&mine).unwrap()),
        [inserted[0].clone()]
    );
}

/// `RequestFilter::after` pages a listing: the pages, in order, are the whole listing, each row once.
pub fn pages_follow_the_listing_order_without_duplicates<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    // Several requests per second, so equal times are ordered by id.
    for i in 0..25 {
        s.put_access_request(&request(&format!("r{i:02}"), "alice", 100 + i / 4))
            .unwrap();
    }
    let all = ids(s.list_access_requests(&RequestFilter::default()).unwrap());
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_access_requests(&RequestFilter {
                limit: Some(7),
                after: after.clone(),
                ..Default::default()
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        paged.extend(ids(page));
    }
    assert_eq!(paged, all);
}

fn stored(ty: &str, id: &str, owner: &str, at: i64) -> StoredEntity {
    StoredEntity {
        uid: EntityRef::new(ty, id),
        data: serde_json::json!({
            "uid": {"type": ty, "id": id},
            "attrs": {"owner": owner, "note": "quote \" and \u{e9}"},
            "parents": []
        }),
        updated_at: at,
    }
}

/// Entity data: a put inserts or replaces by uid (all of a batch at once), a load lists every entity by type then
/// id with its JSON as written, a delete removes the named uids and counts only those that were there.
pub fn entities_round_trip_replace_and_delete<S: Store>(fresh: impl Fn() -> S) {
    let s = fresh();
    assert!(s.load_entities().unwrap().is_empty());
    assert_eq!(s.delete_entities(&[EntityRef::new("Doc", "x")]).unwrap(), 0);
    s.put_entities(&[
        stored("Doc", "b", "User::\"alice\"", 10),
        stored("Doc", "a", "User::\"bob\"", 10),
        stored("App::Team", "t\"1", "x", 10),
    ])
    .unwrap();
    let all = s.load_entities().unwrap();
    let uids: Vec<String> = all.iter().map(|e| e.uid.to_string()).collect();
    assert_eq!(uids, ["App::Team::\"t\\\"1\"", "Doc::\"a\"", "Doc::\"b\""]);
    assert_eq!(all[1], stored("Doc", "a", "User::\"bob\"", 10));
    // Replaced whole, by uid; the other rows are untouched.
    s.put_entities(&[stored("Doc", "a", "User::\"carol\"", 20)])
        .unwrap();
    let all = s.load_entities().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1], stored("Doc", "a", "User::\"carol\"", 20));
    assert_eq!(
        s.delete_entities(&[EntityRef::new("Doc", "a"), EntityRef::new("Doc", "zz")])
            .unwrap(),
        1
    );
    let uids: Vec<String> = s
        .load_entities()
        .unwrap()
        .iter()
        .map(|e| e.uid.to_string())
        .collect();
    assert_eq!(uids, ["App::Team::\"t\\\"1\"", "Doc::\"b\""]);
    s.put_entities(&[]).unwrap();
    assert_eq!(s.load_entities().unwrap().len(), 2);
}
