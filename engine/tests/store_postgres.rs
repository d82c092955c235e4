#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The PostgreSQL store beyond the conformance suite, against the real server named by `JITGATE_TEST_POSTGRES`
//! (skipped, and said so, without it): migrations under N concurrent openers, a newer schema refused, bad URLs
//! and unreachable servers named with their cause, and a change through one store reaching another store's
//! follower.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use jitgate_engine::access::AccessRequest;
use jitgate_engine::postgres::follow::{ChangeSink, FollowOptions, FollowStats, Follower};
use jitgate_engine::postgres::scratch::{Scratch, test_url};
use jitgate_engine::postgres::{PgStore, known_version};
use jitgate_engine::store::{Freshness, GrantStore, RequestStore, conformance};
use jitgate_engine::{Authorizer, Bundle, Clock, EntityRef, Grant, GrantStatus};

#[test]
fn eight_replicas_opening_a_new_schema_at_once_migrate_it_once() {
    let Some(base) = test_url("eight_replicas_opening_a_new_schema_at_once_migrate_it_once") else {
        return;
    };
    let scratch = Scratch::new(&base, "migrate").unwrap();
    let url = scratch.url();
    let barrier = Arc::new(Barrier::new(8));
    // All eight are spawned before any is joined: the barrier needs every one of them running.
    let openers: Vec<_> = (0..8)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                PgStore::open_migrated(&url).map(|(_, m)| m)
            })
        })
        .collect();
    let opened: Vec<_> = openers
        .into_iter()
        .map(|h| h.join().unwrap().unwrap())
        .collect();
    // Exactly one opener applied the migrations; the others found them applied.
    let applied = opened.iter().filter(|m| m.from == 0).count();
    assert_eq!(applied, 1, "{opened:?}");
    assert!(opened.iter().all(|m| m.to == known_version()));
    let store = PgStore::open(&url).unwrap();
    assert_eq!(store.schema_version().unwrap(), known_version());
    // One row per version: none applied twice.
    scratch
        .admin(&format!(
            "DO $$ BEGIN IF (SELECT COUNT(*) FROM jitgate_schema_version) <> {} THEN
               RAISE EXCEPTION 'versions applied more than once'; END IF; END $$",
            known_version()
        ))
        .unwrap();
}

#[test]
fn a_schema_newer_than_this_build_is_refused_and_left_alone() {
    let Some(base) = test_url("a_schema_newer_than_this_build_is_refused_and_left_alone") else {
        return;
    };
    let scratch = Scratch::new(&base, "newer").unwrap();
    let store = PgStore::open(&scratch.url()).unwrap();
    store.put_grant(&conformance::grant("g", None)).unwrap();
    scratch
        .admin("INSERT INTO jitgate_schema_version (version, applied_at) VALUES (999, 0)")
        .unwrap();
    let e = PgStore::open(&scratch.url()).unwrap_err().to_string();
    assert!(
        e.contains("version 999") && e.contains("newer than this jitgate knows"),
        "{e}"
    );
    // Nothing was changed: the data is there as it was.
    assert!(store.get_grant("g").unwrap().is_some());
}

#[test]
fn bad_urls_and_unreachable_servers_say_why() {
    let Some(base) = test_url("bad_urls_and_unreachable_servers_say_why") else {
        return;
    };
    let e = PgStore::open("mysql://x@127.0.0.1/db")
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a postgres:// URL"), "{e}");
    let e = PgStore::open("postgres://postgres:secret@127.0.0.1:1/test")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot connect to postgres://postgres:***@127.0.0.1:1/test")
            && e.contains("onnection refused")
            && !e.contains("secret"),
        "{e}"
    );
    let missing = base
        .rsplit_once('/')
        .map(|(head, _)| head)
        .unwrap()
        .to_string()
        + "/jitgate_no_such_database";
    let e = PgStore::open(&missing).unwrap_err().to_string();
    assert!(
        e.contains("database \"jitgate_no_such_database\" does not exist"),
        "{e}"
    );
}

/// Records what the follower told the replica.
#[derive(Default)]
struct Seen(parking_lot::Mutex<Vec<String>>);

impl ChangeSink for Seen {
    fn grant_changed(&self, grant: &Grant) {
        self.0
            .lock()
            .push(format!("grant {} {}", grant.id, grant.status.as_str()));
    }
    fn request_changed(&self, request: &AccessRequest) {
        self.0
            .lock()
            .push(format!("request {} {}", request.id, request.state.as_str()));
    }
}

fn bundle() -> Bundle {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/quickstart-cedar");
    Bundle::load(&dir).unwrap()
}

fn live_grant(id: &str) -> Grant {
    let now = jitgate_engine::clock::now_system();
    Grant {
        starts_at: now - 60,
        expires_at: now + 3600,
        ..conformance::grant(id, Some(5))
    }
}

/// Waits (5 s at most) until `authorizer`'s index holds grant `id` with `status`; returns how long it took.
fn until_indexed(authorizer: &Authorizer, id: &str, status: GrantStatus) -> Duration {
    let start = Instant::now();
    let alice = EntityRef::new("User", "alice");
    loop {
        let found = authorizer
            .grants()
            .for_principal(&alice)
            .is_some_and(|l| l.iter().any(|g| g.id == id && g.status == status));
        if found {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "grant {id} never became {status:?} in the other replica's index"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_change_through_one_store_reaches_the_other_replicas_index() {
    let Some(base) = test_url("a_change_through_one_store_reaches_the_other_replicas_index") else {
        return;
    };
    let scratch = Scratch::new(&base, "follow").unwrap();
    let a = Arc::new(PgStore::open(&scratch.url()).unwrap());
    let b = Arc::new(PgStore::open(&scratch.url()).unwrap());
    let replica_a = Authorizer::new(bundle(), a.clone(), Clock::system()).unwrap();
    let freshness = Arc::new(Freshness::new(Duration::from_secs(2)));
    let replica_b = Arc::new(
        Authorizer::new(bundle(), b.clone(), Clock::system())
            .unwrap()
            .with_freshness(freshness.clone()),
    );
    let seen = Arc::new(Seen::default());
    let stats = Arc::new(FollowStats::default());
    let follower = Follower::start(
        b.clone(),
        replica_b.clone(),
        freshness.clone(),
        seen.clone(),
        stats.clone(),
        FollowOptions {
            resync_every: Duration::from_secs(60),
            heartbeat_every: Duration::from_millis(200),
        },
    )
    .unwrap();
    // Wait for the follower's first resync: from then on every commit is notified to it.
    let start = Instant::now();
    while stats.resyncs.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the follower never connected"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    replica_a.put_grant(live_grant("g1")).unwrap();
    until_indexed(&replica_b, "g1", GrantStatus::Active);
    replica_a.revoke_grant("g1", "User::\"carol\"").unwrap();
    let took = until_indexed(&replica_b, "g1", GrantStatus::Revoked);
    assert!(took < Duration::from_secs(1), "revocation took {took:?}");
    assert!(
        seen.0.lock().iter().any(|s| s == "grant g1 revoked"),
        "{:?}",
        seen.0.lock()
    );
    // A request decided through A reaches B's sink.
    a.put_access_request(&conformance::request("r1", "alice", 1))
        .unwrap();
    let start = Instant::now();
    while !seen.0.lock().iter().any(|s| s == "request r1 pending") {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            seen.0.lock()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // The heartbeat keeps the replica fresh while nothing changes.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !freshness.is_stale(),
        "silent for {:?}",
        freshness.silent_for()
    );
    assert!(
        stats
            .notifications
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3
    );

    // Its connections ended (as by a server restart): it reconnects, resyncs and misses nothing made meanwhile.
    let resyncs = stats.resyncs.load(std::sync::atomic::Ordering::Relaxed);
    assert!(scratch.terminate_connections().unwrap() >= 1);
    replica_a.put_grant(live_grant("g2")).unwrap();
    replica_a.revoke_grant("g2", "User::\"carol\"").unwrap();
    let start = Instant::now();
    while stats.resyncs.load(std::sync::atomic::Ordering::Relaxed) == resyncs {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no resync after reconnecting"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(stats.reconnects.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let alice = EntityRef::new("User", "alice");
    // The resync may have run between g2's grant and its revocation; then the revocation arrives as a
    // notification after it. Notifications come in commit order: once a grant made after the revocation is in
    // B's index, the revocation has been applied too.
    replica_a.put_grant(live_grant("g3")).unwrap();
    let start = Instant::now();
    while !replica_b
        .grants()
        .for_principal(&alice)
        .is_some_and(|l| l.iter().any(|g| g.id == "g3"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "a grant made after reconnecting never reached the replica's index"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let g2_active = replica_b.grants().for_principal(&alice).is_some_and(|l| {
        l.iter()
            .any(|g| g.id == "g2" && g.status == GrantStatus::Active)
    });
    assert!(
        !g2_active,
        "a grant revoked while the replica was cut off is active in its index"
    );
    follower.stop();
}
